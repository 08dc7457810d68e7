"""server.toml parsing (against what fedtee init writes) and the CLI registration."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.main import build_parser
from fedtee.cli.server import parse_server_config
from fedtee.errors import ConfigError


def test_parses_what_fedtee_init_writes(tmp_path: Path) -> None:
    opts = InitOptions(directory=tmp_path, federation_id="fed-x", with_sim=True, port=7443)
    cfg = parse_server_config(server_toml(opts), base_dir=tmp_path)
    assert cfg.federation_id == "fed-x"
    assert cfg.address == "127.0.0.1:7443"
    assert (cfg.rounds, cfg.clients_per_round, cfg.min_clients) == (10, 5, 3)
    assert cfg.tls_cert == tmp_path / "server.pem"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.sim_root == tmp_path / "sim-root.pem"
    assert cfg.policy == tmp_path / "policy.toml"
    assert cfg.initial_model == tmp_path / "initial-model.safetensors"
    assert cfg.train_config.get("lr") == "0.5"


def test_without_sim_root_trusts_no_sim(tmp_path: Path) -> None:
    opts = InitOptions(directory=tmp_path, federation_id="f", with_sim=False)
    assert parse_server_config(server_toml(opts), base_dir=tmp_path).sim_root is None


@pytest.mark.parametrize(
    "text",
    [
        "not toml [",
        '[federation]\nid="f"\nmodel="m:T"\ntypo=1\n[server]\naddress="h:1"\ntls_cert="c"\n'
        'tls_key="k"\n[attestation]\npolicy="p"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[server]\naddress="h:1"\ntls_cert="c"\ntls_key="k"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[rounds]\nmin_clients=4\nclients_per_round=2\n[server]\n'
        'address="h:1"\ntls_cert="c"\ntls_key="k"\n[attestation]\npolicy="p"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[rounds]\nrounds="10"\n[server]\naddress="h:1"\n'
        'tls_cert="c"\ntls_key="k"\n[attestation]\npolicy="p"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[server]\naddress="h:1"\ntls_cert="c"\n'
        'tls_key="k"\n[attestation]\npolicy="p"\n[rounds.config]\nlr=0.1\n',
        '[federation]\nid="f"\nmodel="m:T"\ninitial_model="x"\n[server]\naddress="h:1"\n'
        'tls_cert="c"\ntls_key="k"\n[attestation]\npolicy="p"\n',
    ],
)
def test_bad_configs_are_config_errors(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_server_config(text, base_dir=tmp_path)


def test_server_start_help_explains_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", "start", "--help"])
    out = capsys.readouterr().out
    assert "--config" in out and "--exit-after-finish" in out


# --- trust anchors beyond the embedded vendor roots ([attestation] tpm_ek_ca, psa_iak, cca_cpak)

DATA = Path(__file__).parents[2] / "data"
_MINIMAL = (
    '[federation]\nid="f"\nmodel="m:T"\n[server]\naddress="h:1"\ntls_cert="c"\ntls_key="k"\n'
    '[attestation]\npolicy="p"\n'
)


class _NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        from fedtee.errors import CollateralError, Reason

        raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)


def _cpak_pem() -> bytes:
    """The CCA example token's CPAK (a JWK in tests/data/cca) as the PEM server.toml takes."""
    import base64
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    jwk = json.loads((DATA / "cca" / "cpak-pub.json").read_text())

    def num(value: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    key = ec.EllipticCurvePublicNumbers(num(jwk["x"]), num(jwk["y"]), ec.SECP384R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_configured_anchors_verify_real_psa_and_cca_tokens_and_a_tpm_ek(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fedtee.attest.model import Evidence, TeeType
    from fedtee.attest.registry import verifier_for
    from fedtee.attest.testing.tpm import FakeEkCa
    from fedtee.attest.verify.tpm import verify_ek_chain
    from fedtee.cli.server import _trust

    ca = FakeEkCa.generate()
    pem = serialization.Encoding.PEM
    # One file may hold several EK CAs: here the root and its intermediate.
    (tmp_path / "ek-ca.pem").write_bytes(ca.root.public_bytes(pem) + ca.issuer.public_bytes(pem))
    (tmp_path / "iak.pem").write_bytes((DATA / "psa" / "tfm_iak_public.pem").read_bytes())
    (tmp_path / "cpak.pem").write_bytes(_cpak_pem())
    text = _MINIMAL + 'tpm_ek_ca = ["ek-ca.pem"]\npsa_iak = ["iak.pem"]\ncca_cpak = ["cpak.pem"]\n'
    cfg = parse_server_config(text, base_dir=tmp_path)
    assert cfg.tpm_ek_ca == (tmp_path / "ek-ca.pem",)
    trust = _trust(cfg)
    assert trust.roots_for(TeeType.TPM) == (ca.root, ca.issuer)

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ek = ca.ek_cert(ec.generate_private_key(ec.SECP384R1()).public_key())
    chain = verify_ek_chain(ek, intermediates=(), roots=trust.roots_for(TeeType.TPM),
                            collateral=_NoCollateral(), now=now)  # fmt: skip
    assert chain.anchor == ca.issuer
    for tee, token in (
        (TeeType.PSA, DATA / "psa" / "psa-2_0_0_sign1.bin"),
        (TeeType.CCA, DATA / "cca" / "cca-example-token.cbor"),
    ):
        verified = verifier_for(tee.value).verify(
            Evidence(tee=tee, data=token.read_bytes()),
            trust=trust,
            collateral=_NoCollateral(),
            now=now,
        )
        assert verified.tee is tee


def test_without_configured_anchors_psa_tokens_do_not_verify(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from fedtee.attest.model import Evidence, TeeType
    from fedtee.attest.registry import verifier_for
    from fedtee.cli.server import _trust
    from fedtee.errors import AttestationError, Reason

    trust = _trust(parse_server_config(_MINIMAL, base_dir=tmp_path))
    assert trust.roots_for(TeeType.TPM) == ()
    with pytest.raises(AttestationError) as exc:
        verifier_for("psa").verify(
            Evidence(tee=TeeType.PSA, data=(DATA / "psa" / "psa-2_0_0_sign1.bin").read_bytes()),
            trust=trust,
            collateral=_NoCollateral(),
            now=datetime(2026, 1, 1, tzinfo=UTC),
        )
    assert exc.value.reason is Reason.CHAIN_UNTRUSTED_ROOT


@pytest.mark.parametrize(
    ("line", "files"),
    [
        ('tpm_ek_ca = "ek-ca.pem"', {}),  # a string, not a list
        ("psa_iak = [1]", {}),
        ('tpm_ek_ca = ["absent.pem"]', {}),
        ('tpm_ek_ca = ["ek-ca.pem"]', {"ek-ca.pem": b"not a certificate"}),
        ('psa_iak = ["iak.pem"]', {"iak.pem": b"-----BEGIN PUBLIC KEY-----\nAAAA\n"}),
        ('cca_cpak = ["cpak.pem"]', {"cpak.pem": "rsa"}),
        ('tpm_ek_ca = ["big.pem"]', {"big.pem": b"x" * (2 << 20)}),
    ],
)
def test_bad_trust_anchor_settings_are_config_errors_naming_the_file(
    line: str, files: dict[str, bytes | str], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from fedtee.cli.server import _trust

    for name, content in files.items():
        if content == "rsa":
            content = (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        assert isinstance(content, bytes)
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        _trust(parse_server_config(_MINIMAL + line + "\n", base_dir=tmp_path))
    if files or "absent" in line:
        assert str(tmp_path) in exc.value.message


def test_a_policy_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    from fedtee.cli.server import load_policy
    from fedtee.errors import ConfigError

    bad = tmp_path / "policy.toml"
    bad.write_bytes(b"version = 1\n# \xff\xfe not UTF-8\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_policy(bad)


def test_a_server_config_that_is_not_utf8_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedtee.cli.main import main

    bad = tmp_path / "server.toml"
    bad.write_bytes(b'[federation]\nid = "\xff"\n')
    assert main(["server", "start", "--config", str(bad)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
