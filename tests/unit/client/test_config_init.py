from __future__ import annotations

import contextlib
import stat
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.model import TeeType
from fedtee.cli.init import InitOptions, client_toml, init_federation
from fedtee.client.config import parse_client_config
from fedtee.errors import ConfigError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_init_creates_a_ca_and_a_server_certificate_for_loopback_and_extra_hosts(
    tmp_path: Path,
) -> None:
    files = init_federation(
        InitOptions(directory=tmp_path, federation_id="fed", hosts=("fl.example", "10.0.0.7")),
        now=NOW,
    )
    ca = x509.load_pem_x509_certificate(files["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(files["server_cert"].read_bytes())
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fl.example"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.7"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in ("ca_key", "server_key"):
        assert stat.S_IMODE(files[key].stat().st_mode) == 0o600
    assert "version = 1" in files["policy"].read_text()
    assert 'id = "fed"' in files["server_config"].read_text()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    opts = InitOptions(directory=tmp_path, federation_id="fed")
    first = init_federation(opts, now=NOW)["ca"].read_bytes()
    with pytest.raises(ConfigError):
        init_federation(opts, now=NOW)
    assert (tmp_path / "ca.pem").read_bytes() == first
    init_federation(InitOptions(directory=tmp_path, federation_id="fed", force=True), now=NOW)
    assert (tmp_path / "ca.pem").read_bytes() != first


def test_init_rejects_a_bad_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        init_federation(
            InitOptions(directory=tmp_path, federation_id="f", hosts=("bad host",)), now=NOW
        )


def test_generated_client_toml_parses_with_paths_relative_to_its_directory(tmp_path: Path) -> None:
    text = client_toml(InitOptions(directory=tmp_path, federation_id="f", with_sim=True))
    config = parse_client_config(text, base_dir=tmp_path)
    assert config.client_id == "client-1"
    assert config.tee is TeeType.SIM
    assert config.ca_cert == (tmp_path / "ca.pem").resolve()
    assert config.sim_root_key == (tmp_path / "sim-root.key").resolve()
    assert config.trainer.target.endswith("digits:DigitsTrainer")
    assert config.num_partitions == 5 and config.partition == 0


@pytest.mark.parametrize(
    ("mutation", "needle"),
    [
        (("[runtime]", "[runtimes]"), "unknown tables"),
        (('id = "client-1"', 'id = "client 1"'), "[client] id"),
        (('id = "client-1"', 'idd = "client-1"'), "unknown keys"),
        (("partition = 0", "partition = 9"), "partition"),
        (("seed = 0", 'seed = "zero"'), "seed must be int"),
        (("127.0.0.1:50051", "127.0.0.1"), "host:port"),
        (("127.0.0.1:50051", "127.0.0.1:5²"), "host:port"),
        (('id = "client-1"', 'id = "clïent"'), "[client] id"),
        (('sim_root_key = "sim-root.key"', "# no key"), "sim_root_key"),
        (("[client]", "[client"), "not valid TOML"),
    ],
)
def test_client_config_rejects_mistakes_with_a_config_error(
    tmp_path: Path, mutation: tuple[str, str], needle: str
) -> None:
    text = client_toml(InitOptions(directory=tmp_path, federation_id="f", with_sim=True))
    assert mutation[0] in text
    with pytest.raises(ConfigError) as info:
        parse_client_config(text.replace(mutation[0], mutation[1], 1), base_dir=tmp_path)
    assert needle in str(info.value)


def test_unknown_tee_type_is_rejected(tmp_path: Path) -> None:
    text = client_toml(InitOptions(directory=tmp_path, federation_id="f", with_sim=True))
    with pytest.raises(ConfigError) as info:
        parse_client_config(text.replace('type = "sim"', 'type = "sgx2"'), base_dir=tmp_path)
    assert "sgx2" in str(info.value)


def test_init_with_sim_writes_a_loadable_sim_root_and_a_policy_naming_the_trainer(
    tmp_path: Path,
) -> None:
    import tomllib

    from fedtee import tensors
    from fedtee.attest.attesters.sim import SimRoot
    from fedtee.attest.policy import Policy
    from fedtee.cli.init import DEFAULT_TRAINER, trainer_measurement
    from fedtee.client.examples import digits

    files = init_federation(
        InitOptions(directory=tmp_path, federation_id="f", with_sim=True), now=NOW
    )
    SimRoot.from_pem(files["sim_root"].read_bytes(), files["sim_root_key"].read_bytes())
    assert stat.S_IMODE(files["sim_root_key"].stat().st_mode) == 0o600
    text = files["policy"].read_text()
    Policy.from_toml(text)
    listed = tomllib.loads(text)["tee"]["sim"]["reference"]["measurement"]
    assert listed == [trainer_measurement(DEFAULT_TRAINER).hex()]
    model = tensors.decode(files["initial_model"].read_bytes())
    assert set(model) == {"weights", "bias"}
    assert np.array_equal(model["weights"], digits.initial_arrays(0)["weights"])


def test_init_without_sim_accepts_no_tee_until_the_operator_says_so(tmp_path: Path) -> None:
    files = init_federation(InitOptions(directory=tmp_path, federation_id="f"), now=NOW)
    assert not (tmp_path / "sim-root.pem").exists()
    assert "[tee.sim]" not in files["policy"].read_text()


_TEMPLATE = client_toml(InitOptions(directory=Path("."), federation_id="f", with_sim=True))


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda pos, junk: _TEMPLATE[:pos] + junk + _TEMPLATE[pos + len(junk) :],
            st.integers(min_value=0, max_value=len(_TEMPLATE)),
            st.text(max_size=8),
        ),
    )
)
def test_client_config_parser_raises_only_config_errors(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_client_config(text, base_dir=Path("/nonexistent"))


def test_tee_override_replaces_the_configured_type(tmp_path: Path) -> None:
    text = client_toml(InitOptions(directory=tmp_path, federation_id="f", with_sim=True))
    assert parse_client_config(text, base_dir=tmp_path, tee_override="tpm").tee is TeeType.TPM
    with pytest.raises(ConfigError):
        parse_client_config(text, base_dir=tmp_path, tee_override="nope")
