"""``fedtee init DIR``: create a new federation in a directory.

Writes (private keys mode 0600, nothing overwritten unless ``--force``):

- ``ca.pem`` / ``ca.key``: the federation CA (ECDSA P-256). Clients trust the server's TLS
  certificate through it.
- ``server.pem`` / ``server.key``: the server's TLS certificate for ``localhost``,
  ``127.0.0.1`` and every ``--host`` name or address.
- ``sim-root.pem`` / ``sim-root.key`` (only with ``--with-sim``): a simulated TEE root. Anyone
  holding its key can mint sim platforms, which is why no policy accepts sim unless it says
  ``allow_simulated = true`` and every result marks sim as not hardware-backed.
- ``policy.toml``: what the server accepts; with ``--with-sim`` it lists the measurement of
  the example trainer (:mod:`fedtee.client.examples.digits`), so the demo's honest clients
  pass and a client running any other code does not.
- ``server.toml``, ``client.toml``: commented example configs pointing at these files.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedtee.errors import ConfigError
from fedtee.wire import tls

DEFAULT_TRAINER = "fedtee.client.examples.digits:DigitsTrainer"
DEFAULT_PORT = 50051
CA_DAYS = 5 * 365
SERVER_DAYS = 365


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    directory: Path
    federation_id: str
    hosts: tuple[str, ...] = ()
    with_sim: bool = False
    port: int = DEFAULT_PORT
    rounds: int = 10
    clients_per_round: int = 5
    min_clients: int = 3
    trainer: str = DEFAULT_TRAINER
    force: bool = False


# --- certificates ----------------------------------------------------------------------------


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or len(host) > 253 or not all(c.isalnum() or c in "-." for c in host):
            raise ConfigError(f"--host {host!r} is neither an IP address nor a DNS name") from None


# --- files -------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, *, private: bool = False, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to overwrite")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if private:
        path.chmod(0o600)


def trainer_measurement(trainer: str) -> bytes:
    from fedtee.client.runtime import measure_trainer
    from fedtee.client.trainer import TrainerSpec

    return measure_trainer(TrainerSpec(target=trainer))


def initial_model(trainer: str, *, seed: int = 0) -> bytes:
    """Round 1's global model: the trainer module's ``initial_arrays(seed)`` as safetensors."""
    import importlib

    from fedtee import tensors
    from fedtee.client.trainer import TrainerSpec

    spec = TrainerSpec(target=trainer)
    make = getattr(importlib.import_module(spec.module), "initial_arrays", None)
    if not callable(make):
        raise ConfigError(
            f"{spec.module} has no initial_arrays(seed); write initial-model.safetensors yourself"
        )
    return tensors.encode(make(seed))


def _sim_root_pems() -> tuple[bytes, bytes]:
    """A fresh sim root as (certificate PEM, private key PEM), from the sim backend."""
    from fedtee.attest.attesters.sim import SimRoot

    root = SimRoot.generate()
    return root.cert_pem(), root.key_pem()


def policy_toml(*, with_sim: bool, measurement_hex: str, trainer: str) -> str:
    lines = [
        "# fedtee appraisal policy (version 1). The server accepts a TEE type only if it has",
        "# a [tee.<type>] table here; anything not allowed is rejected with a reason code.",
        "# Reference values are compared exactly; add more with",
        "#   fedtee policy add-reference policy.toml --tee sim --name measurement --value HEX",
        "version = 1",
        "",
    ]
    if with_sim:
        lines += [
            "# The simulated TEE: software keys, NOT hardware-backed. For development and the",
            "# demo only; every result that accepts it says so.",
            "[tee.sim]",
            "allow_simulated = true",
            'debug = "forbid"            # a debug sim report is rejected (debug_enabled)',
            'accepted_tcb = ["NotApplicable"]  # sim has no TCB levels',
            "max_evidence_age_s = 300",
            "",
            "[tee.sim.reference]",
            "# SHA-384 code measurement of the trainer",
            f"#   {trainer}",
            "# (its module file and factory name),",
            "# as computed by fedtee.attest.attesters.measure.measure_code. One changed byte",
            "# in that file gives another value, and the client is rejected",
            "# (measurement_not_allowed).",
            "measurement = [",
            f'  "{measurement_hex}",',
            "]",
            "",
            "[tee.sim.min_svn]",
            "svn = 1",
            "",
        ]
    else:
        lines += [
            "# Example for AMD SEV-SNP confidential VMs (uncomment and fill in):",
            "# [tee.sev-snp]",
            '# debug = "forbid"',
            '# accepted_tcb = ["UpToDate"]',
            "# [tee.sev-snp.reference]",
            '# measurement = ["<96 hex chars: the launch measurement of your VM image>"]',
            "",
        ]
    return "\n".join(lines)


def _round_config(trainer: str) -> str:
    """The trainer module's ``DEFAULTS`` (its hyper-parameters) as TOML lines, so a federation
    starts with values that suit its model; the digits example's when it has none."""
    import importlib

    from fedtee.client.trainer import TrainerSpec

    defaults = getattr(
        importlib.import_module(TrainerSpec(target=trainer).module), "DEFAULTS", None
    )
    if not isinstance(defaults, dict) or not all(
        isinstance(k, str) and k.isidentifier() and isinstance(v, str) for k, v in defaults.items()
    ):
        defaults = {"lr": "0.5", "local_epochs": "5", "batch_size": "32"}
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in defaults.items())


def server_toml(opts: InitOptions) -> str:
    sim_root = (
        'sim_root = "sim-root.pem"        # trust this sim root (policy.toml allows sim)'
        if opts.with_sim
        else '# sim_root = "sim-root.pem"      # only for development with the simulated TEE'
    )
    return f"""\
# fedtee server configuration (fedtee server start --config server.toml).
# Paths are relative to this file.

[federation]
id = "{opts.federation_id}"   # names this federation in receipts, credentials and the ledger
initial_model = "initial-model.safetensors"  # round 1's global model (safetensors)

[server]
address = "127.0.0.1:{opts.port}"    # host:port to listen on ("0.0.0.0:{opts.port}" for all)
tls_cert = "server.pem"         # signed by ca.pem (fedtee init made both)
tls_key = "server.key"
state_dir = "state"             # state.db, artifacts/, ledger.jsonl, the server's key
# malloc_arenas = 2             # glibc malloc arenas of this process (0: glibc's default)
# http2_bdp_probe = false       # grow HTTP/2 windows by BDP probing (memory grows with N)
# max_transfers = 8             # model transfers at once (0: no limit); past it: wait
# transfer_wait_s = 60.0        # how long a transfer waits on the server for a slot
# transfer_idle_s = 120.0       # a transfer moving no chunk this long loses its slot
# fold_threads = 0              # threads folding a large tensor (0: one a core, up to 8)
# trim_interval_s = 1.0         # freed heap back to the system at most this often (0: never)
# send_chunk_bytes = 524288     # model bytes per chunk sent (262144: less memory, more CPU)

[rounds]
rounds = {opts.rounds}                      # rounds to run, then FINISHED
clients_per_round = {opts.clients_per_round}       # enrolled clients asked to train in a round
min_clients = {opts.min_clients}                 # fewest accepted updates to aggregate a round
round_timeout_s = 60            # a round closes at this deadline with what arrived
start_wait_s = 10               # before round 1, wait this long for clients_per_round clients
# max_update_norm = 100.0       # reject updates further than this (L2) from the global model

[rounds.config]                 # hyper-parameters sent to every client's trainer, as strings
{_round_config(opts.trainer)}

[attestation]
policy = "policy.toml"          # what evidence is accepted (see docs/quickstart.md)
{sim_root}
nonce_ttl_s = 60                # a challenge nonce is single use and expires after this
credential_ttl_s = 600          # enrolled clients re-attest after this
# Trust anchors besides the embedded vendor roots (Intel SGX/TDX, AMD SEV-SNP). Each is a
# list of PEM files; without them no TPM, PSA or CCA evidence can verify.
# tpm_ek_ca = ["ek-ca.pem"]     # TPM EK CAs (the TPM vendor's EK root or intermediate);
#                                 a file may hold several certificates
# psa_iak = ["iak.pem"]         # PSA Initial Attestation Keys (PEM public keys, EC)
# cca_cpak = ["cpak.pem"]       # Arm CCA Platform Attestation Keys (PEM public keys, EC)
"""


def client_toml(
    opts: InitOptions, *, client_id: str = "client-1", partition: int = 0, seed: int = 0
) -> str:
    sim_lines = (
        'sim_root_cert = "sim-root.pem"  # the sim root that certifies this client\'s platform\n'
        'sim_root_key = "sim-root.key"   # (sim only: a real TEE is certified by its vendor)\n'
        if opts.with_sim
        else '# sim_root_cert = "sim-root.pem"\n# sim_root_key = "sim-root.key"\n'
    )
    tee = "sim" if opts.with_sim else "sev-snp"
    return f"""\
# fedtee client configuration (fedtee client start --config client.toml).
# Paths are relative to this file.

[client]
id = "{client_id}"                 # unique in the federation; [A-Za-z0-9._-]

[server]
address = "127.0.0.1:{opts.port}"    # the server's host:port
ca_cert = "ca.pem"              # the federation CA that signed the server's certificate
# server_name = "localhost"     # TLS name to expect if it differs from the address host

[tee]
type = "{tee}"  # sim, sgx, tdx, sev-snp, tpm, cca, or auto (what this machine has; never sim)
{sim_lines}# debug = false                # sim only: claim a debug TEE (policies reject it)
# svn = 1                       # sim only: security version number
# tcti = "device:/dev/tpmrm0"   # tpm only: how to reach the TPM (or "swtpm:host=...,port=...")
# ek_chain = "ek-chain.pem"     # tpm only: PEM intermediates from the EK certificate up to
#                                 the EK CA the server trusts (the TPM does not store them)

[trainer]
# The training code. Its module file is measured into the evidence: change one byte and the
# server's policy no longer recognises this client.
target = "{opts.trainer}"
partition = {partition}                   # which share of the data this client holds
num_partitions = {opts.clients_per_round}              # into how many shares the data is split
seed = {seed}                        # the split's seed (same for every client)

[runtime]
max_reconnect_attempts = 8      # consecutive network failures before giving up
backoff_initial_s = 0.2         # first retry delay; doubles each time, with jitter
backoff_max_s = 5.0             # longest retry delay
# max_busy_s = 600.0            # how long to keep asking a server that sheds load
# profile = "default"           # "iot": small-device defaults (docs/iot.md); --profile wins
# chunk_bytes = 1048576         # upload chunk size, at most 1 MiB (iot default: 65536)
# malloc_arenas = 2             # glibc malloc arenas of this process (iot default: 1)
"""


def init_federation(opts: InitOptions, *, now: datetime | None = None) -> dict[str, Path]:
    """Create the federation's files in ``opts.directory``; return them by role."""
    now = now or datetime.now(UTC)
    d = opts.directory
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    for host in opts.hosts:
        _check_host(host)
    ca = tls.make_ca(name=f"fedtee federation CA {opts.federation_id}", now=now, days=CA_DAYS)
    server = tls.make_server_cert(ca, names=opts.hosts, now=now, days=SERVER_DAYS)
    measurement = trainer_measurement(opts.trainer) if opts.with_sim else b""
    files: list[tuple[str, str, bytes, bool]] = [
        ("ca", "ca.pem", ca.cert_pem, False),
        ("ca_key", "ca.key", ca.key_pem, True),
        ("server_cert", "server.pem", server.cert_pem, False),
        ("server_key", "server.key", server.key_pem, True),
    ]
    if opts.with_sim:
        cert_pem, key_pem = _sim_root_pems()
        files += [("sim_root", "sim-root.pem", cert_pem, False)]
        files += [("sim_root_key", "sim-root.key", key_pem, True)]
    files += [
        (
            "policy",
            "policy.toml",
            policy_toml(
                with_sim=opts.with_sim, measurement_hex=measurement.hex(), trainer=opts.trainer
            ).encode(),
            False,
        ),
        ("initial_model", "initial-model.safetensors", initial_model(opts.trainer), False),
        ("server_config", "server.toml", server_toml(opts).encode(), False),
        ("client_config", "client.toml", client_toml(opts).encode(), False),
    ]
    if not opts.force:
        clashes = [name for _, name, _, _ in files if (d / name).exists()]
        if clashes:
            raise ConfigError(f"{d} already holds {clashes}; use --force to overwrite")
    for role, name, data, private in files:
        _write(d / name, data, private=private, force=True)
        out[role] = d / name
    return out


def _run(args: argparse.Namespace) -> int:
    opts = InitOptions(
        directory=Path(args.directory),
        federation_id=args.federation_id or Path(args.directory).resolve().name or "fedtee",
        hosts=tuple(args.host),
        with_sim=args.with_sim,
        port=args.port,
        rounds=args.rounds,
        clients_per_round=args.clients,
        min_clients=max(1, min(args.clients, args.min_clients)),
        trainer=args.trainer,
        force=args.force,
    )
    files = init_federation(opts)
    print(f"created federation {opts.federation_id!r} in {opts.directory}:")
    for role, path in files.items():
        print(f"  {path.name:<14} {role}")
    print("next: fedtee server start --config", opts.directory / "server.toml")
    print("      fedtee client start --config", opts.directory / "client.toml")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init",
        help="create a new federation (CA, server certificate, policy, example configs)",
        description=sys.modules[__name__].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="directory to create the files in")
    parser.add_argument(
        "--federation-id", default="", help="federation name (default: the directory's name)"
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address for the server certificate (repeatable); "
        "localhost and 127.0.0.1 are always included",
    )
    parser.add_argument(
        "--with-sim",
        action="store_true",
        help="also create a simulated-TEE root and a policy that accepts sim clients running "
        "the example trainer (development and the demo only)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port (configs)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds to run (server.toml)")
    parser.add_argument(
        "--clients", type=int, default=5, help="clients per round and data partitions"
    )
    parser.add_argument(
        "--min-clients", type=int, default=3, help="fewest updates to aggregate a round"
    )
    parser.add_argument(
        "--trainer",
        default=DEFAULT_TRAINER,
        metavar="MODULE:FACTORY",
        help="training code whose measurement the policy lists (default: the digits example)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(handler=_run)


__all__ = [
    "InitOptions",
    "client_toml",
    "init_federation",
    "policy_toml",
    "register",
    "server_toml",
    "trainer_measurement",
]
