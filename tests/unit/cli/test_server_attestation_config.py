"""[server_attestation] in server.toml and client.toml (mutual attestation): parsing, and what
the CLI builds from them with real files written by fedtee init."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.attest.model import TeeType
from fedtee.cli.init import InitOptions, client_toml, server_toml
from fedtee.cli.main import build_parser
from fedtee.cli.server import build_server, parse_server_config
from fedtee.client.config import parse_client_config
from fedtee.errors import ConfigError, PolicyError


def server_text(fed: Path, table: str) -> str:
    opts = InitOptions(directory=fed, federation_id="fed", with_sim=True)
    return server_toml(opts) + "\n[server_attestation]\n" + table


def client_text(fed: Path, table: str) -> str:
    opts = InitOptions(directory=fed, federation_id="fed", with_sim=True)
    return client_toml(opts, client_id="c1", partition=0) + "\n[server_attestation]\n" + table


# --- server.toml --------------------------------------------------------------------------------


def test_server_attestation_is_off_by_default(fed: Path) -> None:
    opts = InitOptions(directory=fed, federation_id="fed", with_sim=True)
    assert parse_server_config(server_toml(opts), base_dir=fed).server_attestation is None
    off = parse_server_config(server_text(fed, 'tee = "off"\n'), base_dir=fed)
    assert off.server_attestation is None


def test_server_attestation_tpm_table(fed: Path) -> None:
    text = server_text(
        fed, 'tee = "tpm"\ntcti = "swtpm:port=2321"\nek_chain = "ek.pem"\nmax_evidence_per_s = 2\n'
    )
    sa = parse_server_config(text, base_dir=fed).server_attestation
    assert sa is not None and sa.tee == "tpm" and sa.tcti == "swtpm:port=2321"
    assert sa.ek_chain == fed / "ek.pem" and sa.max_evidence_per_s == 2.0


@pytest.mark.parametrize(
    "table",
    [
        'tee = "nitro"\n',  # unknown TEE
        'tee = "psa"\n',  # no PSA attester on a Linux server
        'tee = "sim"\nsim_root_cert = "sim-root.pem"\n',  # sim needs the root key too
        'tee = "sev-snp"\ntcti = "device:/dev/tpmrm0"\n',  # tcti is for tpm only
        'tee = "off"\ntcti = "device:/dev/tpmrm0"\n',  # settings for a disabled feature
        'tee = "tpm"\nmax_evidence_per_s = 0\n',
        'tee = "tpm"\nrequire = true\n',  # a client key in the server's table
    ],
)
def test_bad_server_attestation_tables_are_config_errors(fed: Path, table: str) -> None:
    with pytest.raises(ConfigError):
        parse_server_config(server_text(fed, table), base_dir=fed)


def test_build_server_with_a_sim_server_attester(fed: Path) -> None:
    text = server_text(
        fed, 'tee = "sim"\nsim_root_cert = "sim-root.pem"\nsim_root_key = "sim-root.key"\n'
    )
    server = build_server(parse_server_config(text, base_dir=fed))
    assert server.config.attester is not None and server.config.attester.tee is TeeType.SIM


# --- client.toml --------------------------------------------------------------------------------


def test_client_server_attestation_table(fed: Path) -> None:
    text = client_text(
        fed,
        'require = true\npolicy = "server-policy.toml"\nsim_root = "sim-root.pem"\n'
        'tpm_ek_ca = ["ek-ca.pem", "ek-ca2.pem"]\n',
    )
    sa = parse_client_config(text, base_dir=fed).server_attestation
    assert sa is not None and sa.require
    assert sa.policy == (fed / "server-policy.toml").resolve()
    assert sa.sim_root == (fed / "sim-root.pem").resolve()
    assert sa.tpm_ek_ca == ((fed / "ek-ca.pem").resolve(), (fed / "ek-ca2.pem").resolve())
    assert sa.collateral_dir is None


def test_client_without_the_table_checks_no_server(fed: Path) -> None:
    opts = InitOptions(directory=fed, federation_id="fed", with_sim=True)
    text = client_toml(opts, client_id="c1", partition=0)
    assert parse_client_config(text, base_dir=fed).server_attestation is None


@pytest.mark.parametrize(
    "table",
    [
        "require = true\n",  # no policy
        'policy = "p.toml"\nrequire = "yes"\n',
        'policy = "p.toml"\ntpm_ek_ca = "ek.pem"\n',  # must be a list
        'policy = "p.toml"\ntee = "sim"\n',  # a server key in the client's table
    ],
)
def test_bad_client_server_attestation_tables_are_config_errors(fed: Path, table: str) -> None:
    with pytest.raises(ConfigError):
        parse_client_config(client_text(fed, table), base_dir=fed)


def test_client_cli_builds_the_check_from_the_files(fed: Path) -> None:
    from fedtee.cli.client import server_verifier
    from fedtee.client.server_attestation import PinnedServer

    (fed / "server-policy.toml").write_text(
        'version = 1\n[tee.sim]\nallow_simulated = true\n[tee.sim.reference]\nmeasurement = ["'
        + "ab" * 48
        + '"]\n'
    )
    text = client_text(fed, 'policy = "server-policy.toml"\nsim_root = "sim-root.pem"\n')
    config = parse_client_config(text, base_dir=fed)
    pinned = PinnedServer(certificate_pem=b"", public_key=b"k")
    check = server_verifier(config, object(), pinned)
    assert check is not None
    (fed / "server-policy.toml").write_text("version = 1\n")  # accepts no TEE
    with pytest.raises(PolicyError):
        server_verifier(config, object(), pinned)


def test_server_measure_is_registered_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["server", "measure"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "measurement" in out and "pcr23" in out


def _uncomment_from(text: str, marker: str) -> str:
    head, _, tail = text.partition("\n" + marker + "\n")
    lines = [line.removeprefix("# ") for line in (marker + "\n" + tail).splitlines()]
    return head + "\n" + "\n".join(lines) + "\n"


def test_the_commented_example_tables_parse() -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    server = _uncomment_from((examples / "server.toml").read_text(), "# [server_attestation]")
    sa = parse_server_config(server, base_dir=examples).server_attestation
    assert sa is not None and sa.tee == "tpm" and sa.tcti == "device:/dev/tpmrm0"
    client = _uncomment_from((examples / "client.toml").read_text(), "# [server_attestation]")
    csa = parse_client_config(client, base_dir=examples).server_attestation
    assert csa is not None and csa.require and csa.policy.name == "server-policy.toml"
