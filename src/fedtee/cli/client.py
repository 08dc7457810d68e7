"""``fedtee client start --config client.toml [--tee TEE]``: run one federation client.

The client measures its training code (the trainer's module file plus its factory name),
attests with its TEE over the server's nonce and its fresh identity key, enrols, and then
trains every round it is given until the federation finishes. Exit codes: 0 finished,
3 enrolment rejected (the reason is printed), 4 server unreachable, 5 turned away later (e.g.
quarantined after a rejected update), 6 the server failed mutual attestation, 2 any other
fedtee error.

With a ``[server_attestation]`` table the client first pins the server's TLS certificate (one
handshake checked against the CA), dials gRPC pinned to it, and verifies the server's TEE
evidence with the server policy before each enrolment (:mod:`fedtee.client.server_attestation`);
a server that fails gets nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedtee.attest.model import Attester, TeeType
from fedtee.cli._files import read_bounded, read_text
from fedtee.client.config import MAX_CONFIG_BYTES, PROFILES, ClientConfig, parse_client_config
from fedtee.client.runtime import (
    ClientEvent,
    ClientRuntime,
    EnrolmentRejected,
    RuntimeOptions,
    measure_trainer,
)
from fedtee.client.transport import ServerUnavailable, Transport
from fedtee.codec import Encoding
from fedtee.errors import AttestationError, ConfigError, ProtocolError
from fedtee.memory import limit_malloc_arenas

if TYPE_CHECKING:
    from fedtee.client.server_attestation import PinnedServer

EXIT_FINISHED = 0
EXIT_REJECTED = 3
EXIT_UNREACHABLE = 4
EXIT_TURNED_AWAY = 5
EXIT_SERVER_REFUSED = 6
CHEATS = ("tamper-update",)
DEVICE_ROOT = "/"  # where --tee auto looks for devices (tests point it at a fake tree)


def build_attester(config: ClientConfig, measurement: bytes) -> Attester:
    """The attester for the configured TEE (the only place a device is opened)."""
    if config.tee is TeeType.SIM:
        assert config.sim_root_cert is not None and config.sim_root_key is not None
        from fedtee.attest.attesters import sim

        try:
            root = sim.SimRoot.from_pem(
                read_bounded(config.sim_root_cert), read_bounded(config.sim_root_key)
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load the sim root: {exc}") from exc
        platform = sim.SimPlatform.generate(root)
        attester: Attester = sim.SimAttester(
            platform=platform, measurement=measurement, debug=config.sim_debug, svn=config.sim_svn
        )
        return attester
    if config.tee in (TeeType.TDX, TeeType.SEV_SNP, TeeType.CCA):
        from fedtee.attest.attesters.configfs_tsm import ConfigfsTsmAttester

        return ConfigfsTsmAttester(expect_tee=config.tee)
    if config.tee is TeeType.SGX:
        from fedtee.attest.attesters.gramine import GramineAttester

        return GramineAttester()
    if config.tee is TeeType.TPM:
        from fedtee.attest.attesters.tpm import TpmAttester

        ek_chain = b"" if config.ek_chain is None else read_bounded(config.ek_chain)
        tpm = TpmAttester(tcti=config.tcti, ek_chain=ek_chain)
        try:
            # The code measurement goes into PCR 23 at start: the quote then proves it.
            tpm.extend_code_pcr(measurement)
        except BaseException:
            tpm.close()
            raise
        return tpm
    raise ConfigError(f"no attester for TEE type {config.tee.value!r} on a client")


def connect(config: ClientConfig, *, pinned: PinnedServer | None = None) -> Transport:
    """The gRPC transport; pinned to ``pinned``'s certificate when given (mutual attestation)."""
    from fedtee.client.grpc_transport import GrpcTransport

    _stage("gRPC and the wire modules imported")
    return GrpcTransport.connect(
        address=config.server_address,
        ca_pem=pinned.certificate_pem if pinned is not None else _ca_pem(config),
        server_name=config.server_name,
    )


def _ca_pem(config: ClientConfig) -> bytes:
    return read_bounded(config.ca_cert)


def pin(config: ClientConfig) -> PinnedServer:
    """One TLS handshake: the server's certificate, checked against the federation CA."""
    from fedtee.client.server_attestation import pin_server

    return pin_server(config.server_address, ca_pem=_ca_pem(config), server_name=config.server_name)


def server_verifier(config: ClientConfig, transport: Any, pinned: PinnedServer) -> Any:
    """The mutual-attestation check for ``[server_attestation]`` (reads its files)."""
    from fedtee.attest.trust.collateral import NoCollateral
    from fedtee.cli.server import directory_collateral, load_policy, trust_anchors
    from fedtee.client.server_attestation import ServerVerifier

    sa = config.server_attestation
    assert sa is not None
    return ServerVerifier(
        source=transport,
        pinned=pinned,
        policy=load_policy(sa.policy),
        trust=trust_anchors(
            sim_root=sa.sim_root, tpm_ek_ca=sa.tpm_ek_ca, psa_iak=sa.psa_iak, cca_cpak=sa.cca_cpak
        ),
        collateral=directory_collateral(sa.collateral_dir) or NoCollateral(),
        require=sa.require,
    )


def _printer(client_id: str) -> Any:
    def show(event: ClientEvent) -> None:
        parts = [f"[{client_id}] {event.kind}"]
        if event.round:
            parts.append(f"round={event.round}")
        if event.reason:
            parts.append(f"reason={event.reason}")
        if event.detail:
            parts.append(event.detail)
        print(" ".join(parts), flush=True)
        _stage(f"event {event.kind}")

    return show


def detect_tee() -> str:
    """``--tee auto``: the TEE this machine offers; says which, and why not the others."""
    from fedtee.attest.attesters import detect_with_reasons

    found = detect_with_reasons(root=DEVICE_ROOT)
    print(f"fedtee client: --tee auto picked {found.tee}", flush=True)
    for line in found.skipped:
        print(f"  not picked: {line}", flush=True)
    return found.tee


REPORT_ENV = "FEDTEE_CLIENT_REPORT"  # a file: at exit, loaded modules and peak RSS (JSON)
_STAGES: list[dict[str, Any]] = []  # (with REPORT_ENV) memory after each stage of the run


def _proc_status() -> dict[str, int]:
    """VmHWM (peak resident set), VmRSS and VmPeak (peak address space) in KiB; empty when
    /proc is not there (not Linux)."""
    status: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "VmPeak"):
                status[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return status


def _stage(name: str) -> None:
    """With REPORT_ENV set, note the process's memory now (bench/bench_iot.py shows where a
    round's memory goes: imports, attester, gRPC channel, enrolment, training, upload)."""
    if os.environ.get(REPORT_ENV):
        status = _proc_status()
        _STAGES.append(
            {
                "stage": name,
                "vm_hwm_kib": status.get("VmHWM", 0),
                "vm_rss_kib": status.get("VmRSS", 0),
                "modules": len(sys.modules),
            }
        )


def _resident_by_mapping() -> dict[str, int]:
    """Resident KiB per mapping now (/proc/self/smaps): a library under site-packages by its
    path there (``numpy/_core/...so``, ``grpc/_cython/...so``), any other file by its name,
    anonymous memory as [anon] (Python objects, arrays, malloc), [heap] and [stack]. Empty
    when not Linux."""
    totals: dict[str, int] = {}
    name = "[anon]"
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                fields = line.split()
                if not fields:
                    continue
                if "-" in fields[0] and not fields[0].endswith(":"):
                    path = " ".join(fields[5:]) if len(fields) > 5 else "[anon]"
                    _, site, under = path.partition("/site-packages/")
                    name = under if site else path.rsplit("/", 1)[-1]
                elif fields[0] == "Rss:":
                    totals[name] = totals.get(name, 0) + int(fields[1])
    except (OSError, ValueError, IndexError):
        return {}
    return {key: kib for key, kib in totals.items() if kib}


def _write_report(path: str) -> None:
    """For tests and bench/bench_iot.py: which top-level modules this client process loaded
    (the IoT profile's import allow-list is checked against them), its peak RSS and address
    space, its memory after each stage (:func:`_stage`) and what is resident at exit, per
    mapping."""
    status = _proc_status()  # not Linux: the module list still counts
    report = {
        "modules": sorted({name.partition(".")[0] for name in sys.modules}),
        "vm_hwm_kib": status.get("VmHWM", 0),  # peak resident set
        "vm_peak_kib": status.get("VmPeak", 0),  # peak address space (what prlimit --as caps)
        "stages": _STAGES,
        "resident_kib": _resident_by_mapping(),
    }
    Path(path).write_text(json.dumps(report) + "\n")


def _start(args: argparse.Namespace) -> int:
    _stage("started: the CLI and the client's modules imported")
    try:
        return _run(args)
    finally:
        report = os.environ.get(REPORT_ENV)
        if report:
            _write_report(report)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    config = parse_client_config(
        read_text(path, MAX_CONFIG_BYTES),
        base_dir=path.resolve().parent,
        tee_override=args.tee,
        detect_tee=detect_tee,
        profile_override=args.profile,
    )
    # Before gRPC starts its threads: each would otherwise keep an arena of freed chunks.
    limit_malloc_arenas(config.malloc_arenas)
    trainer = config.trainer.build(
        partition=config.partition, num_partitions=config.num_partitions, seed=config.seed
    )
    measurement = measure_trainer(config.trainer)
    print(f"[{config.client_id}] code measurement {measurement.hex()}", flush=True)
    _stage("trainer built and measured")
    attester = build_attester(config, measurement)
    _stage("attester ready")
    check = None
    if config.server_attestation is None:
        transport = connect(config)
        _stage("gRPC channel made")
    else:
        try:
            pinned = pin(config)
        except ServerUnavailable as exc:
            print(f"[{config.client_id}] server unreachable: {exc}", file=sys.stderr, flush=True)
            return EXIT_UNREACHABLE
        except AttestationError as exc:
            print(f"[{config.client_id}] server refused: {exc}", file=sys.stderr, flush=True)
            return EXIT_SERVER_REFUSED
        print(
            f"[{config.client_id}] server TLS key pinned: sha256:{pinned.fingerprint}", flush=True
        )
        transport = connect(config, pinned=pinned)
        check = server_verifier(config, transport, pinned)
    if args.cheat == "tamper-update":
        from fedtee.client.cheats import TamperingTransport

        transport = TamperingTransport(transport)
    runtime = ClientRuntime(
        client_id=config.client_id,
        transport=transport,
        attester=attester,
        trainer=trainer,
        measurement=measurement,
        options=RuntimeOptions(
            chunk_bytes=config.chunk_bytes,
            max_reconnect_attempts=config.max_reconnect_attempts,
            max_busy_s=config.max_busy_s,
            backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s,
            encoding=Encoding(config.encoding),
            topk_fraction=config.topk_fraction,
            max_model_bytes=config.max_model_bytes,
        ),
        on_event=_printer(config.client_id),
        server_check=check,
    )
    try:
        summary = runtime.run()
    except EnrolmentRejected as exc:
        print(f"[{config.client_id}] enrolment rejected: {exc}", file=sys.stderr, flush=True)
        return EXIT_REJECTED
    except AttestationError as exc:
        from fedtee.client.server_attestation import ServerAttestationFailed

        if not isinstance(exc, ServerAttestationFailed):
            raise
        print(
            f"[{config.client_id}] server refused, nothing sent to it: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_SERVER_REFUSED
    except ServerUnavailable as exc:
        print(f"[{config.client_id}] server unreachable: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNREACHABLE
    except ProtocolError as exc:
        # e.g. client_quarantined after a rejected update, or a revoked credential
        print(f"[{config.client_id}] turned away: {exc}", file=sys.stderr, flush=True)
        return EXIT_TURNED_AWAY
    finally:
        transport.close()
    print(
        f"[{config.client_id}] done: {summary.accepted} updates accepted, "
        f"{len(summary.rejected)} rejected, {summary.enrolments} enrolments",
        flush=True,
    )
    return EXIT_FINISHED


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("client", help="run a federation client")
    commands = group.add_subparsers(dest="client_command", metavar="COMMAND")
    start = commands.add_parser(
        "start",
        help="attest, enrol and train until the federation finishes",
        description=sys.modules[__name__].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument(
        "--config", required=True, metavar="FILE", help="client config (see examples/client.toml)"
    )
    start.add_argument(
        "--tee",
        default=None,
        choices=["auto", *(t.value for t in TeeType)],
        help="override the config's [tee] type (auto: use the TEE this machine has, never "
        "sim, and say which; sim: development only)",
    )
    start.add_argument(
        "--cheat",
        default=None,
        choices=CHEATS,
        help="DEMO/TESTING ONLY: misbehave on purpose to show the server's defences "
        "(tamper-update: change each update after signing its receipt)",
    )
    start.add_argument(
        "--profile",
        default=None,
        choices=PROFILES,
        help="override the config's [runtime] profile (iot: 64 KiB chunks and int8-compressed "
        "updates unless the config says otherwise, for devices with tens of MB; see docs/iot.md)",
    )
    start.set_defaults(handler=_start)
    group.set_defaults(handler=lambda _args: group.print_help() or 2)


__all__ = ["build_attester", "connect", "detect_tee", "register"]
