"""``fedtee server start --config server.toml``: run a federation server until stopped.

``fedtee server forget-client CLIENT_ID --config server.toml`` clears a client's stored TPM
counters, so that a rebooted TPM can enrol again (docs/deploy/tpm.md).

server.toml (``fedtee init`` writes a commented one; docs/config.md documents every key)::

    [federation]     id, initial_model (safetensors file) or model ("module:Trainer")
    [server]         address, tls_cert, tls_key, state_dir, malloc_arenas (optional),
                     http2_bdp_probe, max_transfers, transfer_wait_s,
                     transfer_idle_s, send_chunk_bytes, fold_threads, trim_interval_s
                     (optional)
    [rounds]         rounds, clients_per_round, min_clients, round_timeout_s, start_wait_s,
                     max_update_norm (optional), retry_after_s (optional)
    [rounds.config]  string hyper-parameters handed to clients with each task
    [attestation]    policy, sim_root (optional), collateral_dir (optional), pcs_url /
                     kds_url / collateral_cache_dir (optional collateral fetchers),
                     nonce_ttl_s, credential_ttl_s, and trust anchors beyond the embedded
                     vendor roots: tpm_ek_ca (PEM certificates of TPM EK CAs),
                     psa_iak / cca_cpak (PEM public keys: PSA IAKs, CCA CPAKs)
    [server_attestation]  mutual attestation, off by default: tee ("off", "auto", or a TEE
                     name), tcti / ek_chain (tpm), sim_root_cert / sim_root_key (sim),
                     max_evidence_per_s; clients then verify this server before enrolling

Unknown tables or keys are errors. Relative paths resolve against the config file's folder.
The server keeps serving after the last round (clients hear FINISHED) until SIGINT/SIGTERM,
or ``--exit-after-finish`` seconds after it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from fedtee import tensors
from fedtee.attest.model import CollateralSource, TeeType, TrustAnchors
from fedtee.cli._files import read_bounded as _read
from fedtee.cli._files import read_text as _read_text
from fedtee.errors import ConfigError
from fedtee.memory import DEFAULT_MALLOC_ARENAS, MAX_MALLOC_ARENAS, limit_malloc_arenas
from fedtee.server.slots import (
    DEFAULT_MAX_TRANSFERS,
    DEFAULT_SEND_CHUNK_BYTES,
    DEFAULT_TRANSFER_IDLE_S,
    DEFAULT_TRANSFER_WAIT_S,
    MAX_TRANSFER_IDLE_S,
    MAX_TRANSFER_WAIT_S,
    MAX_TRANSFERS,
    MIN_SEND_CHUNK_BYTES,
)
from fedtee.server.strategy import MAX_FOLD_THREADS
from fedtee.wire.limits import DEFAULT_LIMITS

MAX_CONFIG_BYTES = 64 * 1024
MAX_MODEL_FILE_BYTES = 1 << 32
# [server] trim_interval_s: after transfers end, freed heap pages go back to the system at
# most this often (fedtee.memory.FreedMemoryTrimmer; figures in docs/config.md, "Memory").
DEFAULT_TRIM_INTERVAL_S = 1.0
MAX_TRIM_INTERVAL_S = 3600.0

_SCHEMA: dict[str, set[str]] = {
    "federation": {"id", "initial_model", "model"},
    "server": {
        "address",
        "tls_cert",
        "tls_key",
        "state_dir",
        "malloc_arenas",
        "http2_bdp_probe",
        "fold_threads",
        "max_transfers",
        "transfer_wait_s",
        "transfer_idle_s",
        "trim_interval_s",
        "send_chunk_bytes",
    },
    "rounds": {
        "rounds",
        "clients_per_round",
        "min_clients",
        "round_timeout_s",
        "start_wait_s",
        "max_update_norm",
        "retry_after_s",
        "config",
    },
    "attestation": {
        "policy",
        "sim_root",
        "collateral_dir",
        "pcs_url",
        "kds_url",
        "collateral_cache_dir",
        "nonce_ttl_s",
        "credential_ttl_s",
        "tpm_ek_ca",
        "psa_iak",
        "cca_cpak",
    },
    "server_attestation": {
        "tee",
        "tcti",
        "ek_chain",
        "sim_root_cert",
        "sim_root_key",
        "max_evidence_per_s",
    },
}
SERVER_TEES = ("off", "auto", *(t.value for t in TeeType if t is not TeeType.PSA))
_REQUIRED: dict[str, set[str]] = {
    "federation": {"id"},
    "server": {"address", "tls_cert", "tls_key"},
    "attestation": {"policy"},
}


@dataclass(frozen=True, kw_only=True)
class ServerAttestationFileConfig:
    """``[server_attestation]``: the aggregator's own TEE (mutual attestation)."""

    tee: str  # a TeeType value or "auto"; the table is absent (or tee = "off") when off
    tcti: str | None = None  # tpm: how to reach the server's TPM
    ek_chain: Path | None = None  # tpm: PEM intermediates from the EK certificate to its CA
    sim_root_cert: Path | None = None  # sim: the sim root that certifies this server
    sim_root_key: Path | None = None
    max_evidence_per_s: float = 10.0  # GetServerEvidence rate limit (it is unauthenticated)


@dataclass(frozen=True, kw_only=True)
class ServerFileConfig:
    federation_id: str
    initial_model: Path | None  # safetensors file of round 1's global model
    model: str | None  # or "package.module:Trainer": the module's initial_arrays()
    rounds: int
    clients_per_round: int
    min_clients: int
    round_timeout_s: float
    start_wait_s: float
    max_update_norm: float | None
    retry_after_s: float
    address: str
    tls_cert: Path
    tls_key: Path
    state_dir: Path
    policy: Path
    sim_root: Path | None
    collateral_dir: Path | None
    nonce_ttl_s: float
    credential_ttl_s: float
    tpm_ek_ca: tuple[Path, ...] = ()  # PEM files of trusted TPM EK CAs (roots or not)
    psa_iak: tuple[Path, ...] = ()  # PEM public keys of trusted PSA IAKs
    cca_cpak: tuple[Path, ...] = ()  # PEM public keys of trusted CCA CPAKs
    pcs_url: str | None = None  # Intel PCS / PCCS base URL: fetch missing Intel collateral
    kds_url: str | None = None  # AMD KDS base URL: fetch missing VCEKs and CRLs
    collateral_cache_dir: Path | None = None  # fetched collateral kept here (a bundle)
    train_config: Mapping[str, str] = field(default_factory=dict)
    server_attestation: ServerAttestationFileConfig | None = None  # mutual attestation
    malloc_arenas: int = DEFAULT_MALLOC_ARENAS  # the server process's (0: glibc's default)
    http2_bdp_probe: bool = False  # grow HTTP/2 receive windows by BDP probing (memory x N)
    max_transfers: int = DEFAULT_MAX_TRANSFERS  # model transfers at once (0: unlimited)
    transfer_wait_s: float = DEFAULT_TRANSFER_WAIT_S  # a transfer's wait for a slot
    transfer_idle_s: float = DEFAULT_TRANSFER_IDLE_S  # a slot holder moving no chunk: cut
    fold_threads: int = 0  # threads FedAvg folds a large tensor on (0: one a core, up to 8)
    trim_interval_s: float = DEFAULT_TRIM_INTERVAL_S  # freed heap back to the system (0: never)
    send_chunk_bytes: int = DEFAULT_SEND_CHUNK_BYTES  # data bytes in one ModelChunk sent


def _typed(section: str, table: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"[{section}] {key} must be {kind.__name__}, got {value!r}")
    return value


def _url(section: str, table: Mapping[str, Any], key: str) -> str | None:
    """An optional http(s) base URL (a collateral fetcher is off unless one is given)."""
    if key not in table:
        return None
    from fedtee.attest.trust.fetch import check_base_url

    return check_base_url(_typed(section, table, key, str, ""), f"[{section}] {key}")


def parse_server_config(text: str, *, base_dir: Path) -> ServerFileConfig:
    """Pure: TOML text and the folder it came from -> a checked config."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError(f"server config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"server config is not valid TOML: {exc}") from exc
    unknown = set(doc) - set(_SCHEMA)
    if unknown:
        raise ConfigError(f"server config: unknown tables {sorted(unknown)}")
    for section, keys in _SCHEMA.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        if set(table) - keys:
            raise ConfigError(f"[{section}]: unknown keys {sorted(set(table) - keys)}")
        missing = _REQUIRED.get(section, set()) - set(table)
        if missing:
            raise ConfigError(f"[{section}]: missing keys {sorted(missing)}")
    fed, srv, att = doc["federation"], doc["server"], doc["attestation"]
    rnd = doc.get("rounds", {})
    train = rnd.get("config", {})
    if not isinstance(train, dict) or not all(isinstance(v, str) for v in train.values()):
        raise ConfigError("[rounds.config] values must be strings")
    if ("initial_model" in fed) == ("model" in fed):
        raise ConfigError("[federation] needs exactly one of initial_model or model")

    def path(section: str, table: Mapping[str, Any], key: str) -> Path | None:
        if key not in table:
            return None
        value: str = _typed(section, table, key, str, "")
        return base_dir / value

    def paths(section: str, table: Mapping[str, Any], key: str) -> tuple[Path, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"[{section}] {key} must be a list of file paths, got {value!r}")
        return tuple(base_dir / v for v in value)

    norm = rnd.get("max_update_norm")
    cfg = ServerFileConfig(
        federation_id=_typed("federation", fed, "id", str, ""),
        initial_model=path("federation", fed, "initial_model"),
        model=_typed("federation", fed, "model", str, "") or None,
        rounds=_typed("rounds", rnd, "rounds", int, 10),
        clients_per_round=_typed("rounds", rnd, "clients_per_round", int, 5),
        min_clients=_typed("rounds", rnd, "min_clients", int, 1),
        round_timeout_s=_typed("rounds", rnd, "round_timeout_s", float, 60.0),
        start_wait_s=_typed("rounds", rnd, "start_wait_s", float, 10.0),
        retry_after_s=_typed("rounds", rnd, "retry_after_s", float, 0.5),
        max_update_norm=None
        if norm is None
        else _typed("rounds", rnd, "max_update_norm", float, 0),
        address=_typed("server", srv, "address", str, ""),
        tls_cert=path("server", srv, "tls_cert") or base_dir,
        tls_key=path("server", srv, "tls_key") or base_dir,
        state_dir=path("server", srv, "state_dir") or base_dir / "state",
        malloc_arenas=_typed("server", srv, "malloc_arenas", int, DEFAULT_MALLOC_ARENAS),
        http2_bdp_probe=_typed("server", srv, "http2_bdp_probe", bool, False),
        max_transfers=_typed("server", srv, "max_transfers", int, DEFAULT_MAX_TRANSFERS),
        transfer_wait_s=_typed("server", srv, "transfer_wait_s", float, DEFAULT_TRANSFER_WAIT_S),
        transfer_idle_s=_typed("server", srv, "transfer_idle_s", float, DEFAULT_TRANSFER_IDLE_S),
        fold_threads=_typed("server", srv, "fold_threads", int, 0),
        trim_interval_s=_typed("server", srv, "trim_interval_s", float, DEFAULT_TRIM_INTERVAL_S),
        send_chunk_bytes=_typed("server", srv, "send_chunk_bytes", int, DEFAULT_SEND_CHUNK_BYTES),
        policy=path("attestation", att, "policy") or base_dir,
        sim_root=path("attestation", att, "sim_root"),
        collateral_dir=path("attestation", att, "collateral_dir"),
        nonce_ttl_s=_typed("attestation", att, "nonce_ttl_s", float, 60.0),
        credential_ttl_s=_typed("attestation", att, "credential_ttl_s", float, 600.0),
        tpm_ek_ca=paths("attestation", att, "tpm_ek_ca"),
        psa_iak=paths("attestation", att, "psa_iak"),
        cca_cpak=paths("attestation", att, "cca_cpak"),
        pcs_url=_url("attestation", att, "pcs_url"),
        kds_url=_url("attestation", att, "kds_url"),
        collateral_cache_dir=path("attestation", att, "collateral_cache_dir"),
        train_config=dict(train),
    )
    cfg = _with_server_attestation(cfg, doc.get("server_attestation", {}), base_dir)
    if not cfg.federation_id or len(cfg.federation_id) > 256:
        raise ConfigError("[federation] id must be 1..256 characters")
    if cfg.min_clients < 1 or cfg.clients_per_round < cfg.min_clients or cfg.rounds < 1:
        raise ConfigError("need rounds >= 1 and 1 <= min_clients <= clients_per_round")
    if min(cfg.round_timeout_s, cfg.nonce_ttl_s, cfg.credential_ttl_s, cfg.start_wait_s) <= 0:
        raise ConfigError("timeouts and TTLs must be positive")
    if not 0.02 <= cfg.retry_after_s <= 3600:
        raise ConfigError("[rounds] retry_after_s must be within 0.02..3600")
    if not 0 <= cfg.malloc_arenas <= MAX_MALLOC_ARENAS:
        raise ConfigError(
            f"[server] malloc_arenas must be within 0..{MAX_MALLOC_ARENAS} (0: glibc's default)"
        )
    if not 0 <= cfg.max_transfers <= MAX_TRANSFERS:
        raise ConfigError(
            f"[server] max_transfers must be within 0..{MAX_TRANSFERS} (0: unlimited), "
            f"got {cfg.max_transfers}"
        )
    if not 0 <= cfg.transfer_wait_s <= MAX_TRANSFER_WAIT_S:
        raise ConfigError(
            f"[server] transfer_wait_s must be within 0..{MAX_TRANSFER_WAIT_S:g} seconds "
            f"(0: refuse at once), got {cfg.transfer_wait_s}"
        )
    if not 1 <= cfg.transfer_idle_s <= MAX_TRANSFER_IDLE_S:
        raise ConfigError(
            f"[server] transfer_idle_s must be within 1..{MAX_TRANSFER_IDLE_S:g} seconds, "
            f"got {cfg.transfer_idle_s}"
        )
    if not 0 <= cfg.fold_threads <= MAX_FOLD_THREADS:
        raise ConfigError(
            f"[server] fold_threads must be within 0..{MAX_FOLD_THREADS} (0: one a core, up to "
            f"{MAX_FOLD_THREADS}), got {cfg.fold_threads}"
        )
    if not MIN_SEND_CHUNK_BYTES <= cfg.send_chunk_bytes <= DEFAULT_LIMITS.chunk_bytes:
        raise ConfigError(
            f"[server] send_chunk_bytes must be within {MIN_SEND_CHUNK_BYTES}.."
            f"{DEFAULT_LIMITS.chunk_bytes} (what a client accepts in one chunk), "
            f"got {cfg.send_chunk_bytes}"
        )
    if not 0 <= cfg.trim_interval_s <= MAX_TRIM_INTERVAL_S:
        raise ConfigError(
            f"[server] trim_interval_s must be within 0..{MAX_TRIM_INTERVAL_S:g} seconds "
            f"(0: never), got {cfg.trim_interval_s}"
        )
    if ":" not in cfg.address:
        raise ConfigError(f"[server] address must be host:port, got {cfg.address!r}")
    return cfg


def _with_server_attestation(
    cfg: ServerFileConfig, table: Mapping[str, Any], base_dir: Path
) -> ServerFileConfig:
    import dataclasses

    tee = _typed("server_attestation", table, "tee", str, "off")
    if tee not in SERVER_TEES:
        raise ConfigError(
            f"[server_attestation] tee must be one of {list(SERVER_TEES)}, not {tee!r}"
        )
    if tee == "off":
        extra = sorted(set(table) - {"tee"})
        if extra:
            raise ConfigError(f"[server_attestation] {extra} set, but tee is off")
        return cfg

    def path(key: str) -> Path | None:
        return (
            base_dir / _typed("server_attestation", table, key, str, "") if key in table else None
        )

    sa = ServerAttestationFileConfig(
        tee=tee,
        tcti=_typed("server_attestation", table, "tcti", str, "") or None,
        ek_chain=path("ek_chain"),
        sim_root_cert=path("sim_root_cert"),
        sim_root_key=path("sim_root_key"),
        max_evidence_per_s=_typed("server_attestation", table, "max_evidence_per_s", float, 10.0),
    )
    if sa.max_evidence_per_s <= 0:
        raise ConfigError("[server_attestation] max_evidence_per_s must be positive")
    if tee == "sim" and (sa.sim_root_cert is None or sa.sim_root_key is None):
        raise ConfigError("[server_attestation] tee = 'sim' needs sim_root_cert and sim_root_key")
    if tee not in ("tpm", "auto") and (sa.tcti or sa.ek_chain):
        raise ConfigError("[server_attestation] tcti and ek_chain apply only to tee = 'tpm'")
    return dataclasses.replace(cfg, server_attestation=sa)


def _file_chunks(path: Path, limit: int) -> Callable[[], Iterator[bytes]]:
    """A model file as a function yielding 1 MiB chunks: the server streams it into its
    artifact store instead of holding it in memory. Size checked now and while reading."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if size > limit:
        raise ConfigError(f"{path} is larger than {limit} bytes")

    def chunks() -> Iterator[bytes]:
        read = 0
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    read += len(chunk)
                    if read > limit:
                        raise ConfigError(f"{path} is larger than {limit} bytes")
                    yield chunk
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc

    return chunks


def _initial_model(target: str) -> bytes:
    module_name = target.partition(":")[0]
    try:
        module = importlib.import_module(module_name)  # from the operator's own config
    except ImportError as exc:
        raise ConfigError(f"cannot import model module {module_name!r}: {exc}") from exc
    make = getattr(module, "initial_arrays", None)
    if not callable(make):
        raise ConfigError(f"{module_name} has no initial_arrays() for round 1's model")
    return tensors.encode(make())


def _trust(cfg: ServerFileConfig) -> TrustAnchors:
    return trust_anchors(
        sim_root=cfg.sim_root, tpm_ek_ca=cfg.tpm_ek_ca, psa_iak=cfg.psa_iak, cca_cpak=cfg.cca_cpak
    )


def trust_anchors(
    *,
    sim_root: Path | None = None,
    tpm_ek_ca: Sequence[Path] = (),
    psa_iak: Sequence[Path] = (),
    cca_cpak: Sequence[Path] = (),
) -> TrustAnchors:
    """The embedded vendor roots plus the configured anchors (PEM files). Shared by
    server.toml's [attestation] and client.toml's [server_attestation]."""
    from fedtee.attest.trust import embedded_anchors

    embedded = embedded_anchors()
    roots: dict[TeeType, tuple[Any, ...]] = {t: tuple(v) for t, v in embedded.roots.items()}
    keys: dict[TeeType, tuple[Any, ...]] = {t: tuple(v) for t, v in embedded.keys.items()}
    if sim_root is not None:
        from fedtee.wire.tls import load_cert

        roots[TeeType.SIM] = (load_cert(_read(sim_root)),)
    ek_cas = tuple(cert for path in tpm_ek_ca for cert in _certificates(path))
    if ek_cas:
        roots[TeeType.TPM] = (*roots.get(TeeType.TPM, ()), *ek_cas)
    for tee, files in ((TeeType.PSA, psa_iak), (TeeType.CCA, cca_cpak)):
        if files:
            keys[tee] = (*keys.get(tee, ()), *(_ec_public_key(path) for path in files))
    return TrustAnchors(roots=roots, keys=keys)


def _certificates(path: Path) -> tuple[Any, ...]:
    """Every certificate in a PEM file (a trust-anchor file may hold several)."""
    from cryptography import x509

    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise ConfigError(f"{path}: not PEM certificates: {exc}") from exc
    return tuple(certs)


def _ec_public_key(path: Path) -> Any:
    """A PEM public key (SubjectPublicKeyInfo): PSA IAKs and CCA CPAKs are EC keys."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        kind = type(key).__name__
        raise ConfigError(f"{path}: a PSA IAK / CCA CPAK must be an EC key, not {kind}")
    return key


def _collateral(cfg: ServerFileConfig) -> CollateralSource | None:
    """The bundle (collateral_dir) first, then the fetchers server.toml names, cached."""
    if cfg.collateral_dir is None and cfg.pcs_url is None and cfg.kds_url is None:
        return None
    import datetime as dt

    from fedtee.attest.trust.collateral import collateral_source

    return collateral_source(
        directory=cfg.collateral_dir,
        pcs_url=cfg.pcs_url,
        kds_url=cfg.kds_url,
        cache_dir=cfg.collateral_cache_dir,
        clock=lambda: dt.datetime.now(dt.UTC),
    )


def directory_collateral(directory: Path | None) -> CollateralSource | None:
    """Collateral from a directory (None when none is configured)."""
    if directory is None:
        return None
    from fedtee.attest.trust.collateral import DirectoryCollateral

    return DirectoryCollateral(directory)


def _policy(cfg: ServerFileConfig) -> Any:
    return load_policy(cfg.policy)


def load_policy(path: Path) -> Any:
    """A policy file through the policy engine (PolicyError / ConfigError when wrong)."""
    from fedtee.attest.policy import Policy

    return Policy.from_toml(_read_text(path))


def server_attester(sa: ServerAttestationFileConfig) -> Any:
    """The aggregator's attester for [server_attestation] (opens the device; TPM: extends
    the code PCR with the server's measurement)."""
    from fedtee.server.self_attestation import build_server_attester, measure_server

    measurement = measure_server()
    options: dict[str, Any] = {}
    if sa.tee == "sim":
        from fedtee.attest.attesters.sim import SimRoot

        assert sa.sim_root_cert is not None and sa.sim_root_key is not None
        options["sim_root"] = SimRoot.from_pem(_read(sa.sim_root_cert), _read(sa.sim_root_key))
    if sa.tcti:
        options["tcti"] = sa.tcti
    if sa.ek_chain is not None:
        options["ek_chain"] = _read(sa.ek_chain)
    attester = build_server_attester(sa.tee, measurement=measurement, **options)
    log = logging.getLogger(__name__)
    log.info("server code measurement %s (%s TEE)", measurement.hex(), attester.tee.value)
    return attester


def build_server(cfg: ServerFileConfig) -> Any:
    from fedtee.server.app import FederationServer, ServerConfig
    from fedtee.server.gate import GateSettings
    from fedtee.server.rounds import RoundSettings

    extra: dict[str, Any] = {}
    if cfg.server_attestation is not None:
        extra["attester"] = server_attester(cfg.server_attestation)
        extra["server_evidence_per_s"] = cfg.server_attestation.max_evidence_per_s
    collateral = _collateral(cfg)
    if collateral is not None:
        extra["collateral"] = collateral
    config = ServerConfig(
        federation_id=cfg.federation_id,
        address=cfg.address,
        tls_cert_pem=_read(cfg.tls_cert),
        tls_key_pem=_read(cfg.tls_key),
        state_dir=cfg.state_dir,
        http2_bdp_probe=cfg.http2_bdp_probe,
        max_transfers=cfg.max_transfers,
        transfer_wait_s=cfg.transfer_wait_s,
        transfer_idle_s=cfg.transfer_idle_s,
        fold_threads=cfg.fold_threads or None,
        trim_interval_s=cfg.trim_interval_s,
        send_chunk_bytes=cfg.send_chunk_bytes,
        policy=_policy(cfg),
        trust=_trust(cfg),
        initial_model=(
            _file_chunks(cfg.initial_model, MAX_MODEL_FILE_BYTES)
            if cfg.initial_model is not None
            else _initial_model(cfg.model or "")
        ),
        rounds=RoundSettings(
            rounds=cfg.rounds,
            clients_per_round=cfg.clients_per_round,
            min_clients=cfg.min_clients,
            round_timeout_ms=int(cfg.round_timeout_s * 1000),
            start_wait_ms=int(cfg.start_wait_s * 1000),
            retry_after_ms=int(cfg.retry_after_s * 1000),
            max_update_norm=cfg.max_update_norm,
            config=dict(cfg.train_config),
        ),
        gate=GateSettings(
            nonce_ttl_ms=int(cfg.nonce_ttl_s * 1000),
            credential_ttl_ms=int(cfg.credential_ttl_s * 1000),
        ),
        **extra,
    )
    return FederationServer(config)


OPEN_FILES_CAP = 1 << 20  # when the hard limit is unlimited


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (as Go programs and
    most servers do) and return the soft limit now in force.

    The server holds a file per TLS connection, and a round close opens the round's updates
    (two descriptors each: Python's mmap keeps one per map, and the fold reads blocks with
    pread through another) in batches of an eighth of this limit
    (:func:`fedtee.server.rounds.maps_at_once`), one batch fast, the rest one at a time, so
    a round of a few thousand clients wants a few thousand descriptors; Debian's default
    soft limit is 1,024.
    """
    try:
        import resource
    except ImportError:  # not a Unix: nothing to raise
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logging.getLogger(__name__).warning(
                "could not raise the open-files limit from %d to %d: %s", soft, target, exc
            )
    return int(soft)


def _start(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path: Path = args.config
    cfg = parse_server_config(_read_text(path, MAX_CONFIG_BYTES), base_dir=path.parent)
    # Process-wide, so here (the CLI owns the process) and before the server's threads start.
    limit_malloc_arenas(cfg.malloc_arenas)
    open_files = raise_open_files_limit()
    logging.getLogger(__name__).info("open-files limit: %d", open_files)
    server = build_server(cfg)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    port = server.start()
    print(f"fedtee server: federation {cfg.federation_id} on port {port} (TLS)", flush=True)
    try:
        while not stop.wait(0.5):
            if server.finished and args.exit_after_finish is not None:
                stop.wait(args.exit_after_finish)
                break
    finally:
        server.stop()
        close = getattr(server.config.attester, "close", None)
        if callable(close):
            close()  # e.g. flush the TPM's AK
    print("fedtee server: stopped", flush=True)
    return 0


def _measure(args: argparse.Namespace) -> int:
    del args
    from fedtee.server.self_attestation import measure_server

    measurement = measure_server()
    print(f"measurement (sim, [tee.sim.reference] measurement): {measurement.hex()}")
    try:
        from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value
    except ImportError:  # pragma: no cover - the TPM verifier needs only cryptography
        return 0
    pcr = code_pcr_value(measurement).hex()
    print(f"pcr{CODE_PCR} (tpm, [tee.tpm.reference] pcr{CODE_PCR}): {pcr}")
    return 0


def _forget_client(args: argparse.Namespace) -> int:
    import datetime as dt

    from fedtee.server.app import StatePaths
    from fedtee.server.store import StateStore

    path: Path = args.config
    cfg = parse_server_config(_read_text(path, MAX_CONFIG_BYTES), base_dir=path.parent)
    database = StatePaths.of(cfg.state_dir).database
    if not database.is_file():  # opening would create an empty store
        raise ConfigError(f"no state store at {database}: has this server run yet?")
    store = StateStore.open(str(database))
    try:
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        cleared = store.clear_tpm_counters(args.client_id, now_ms=now_ms)
    finally:
        store.close()
    if not cleared:
        print(f"fedtee server: client {args.client_id!r} has no stored TPM counters; nothing done")
        return 1
    print(
        f"fedtee server: cleared the TPM counters of {args.client_id!r}; its next enrolment is "
        "not compared with them, and its ledger entry says an operator allowed it"
    )
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run a federation server",
        description="Run the federation server: enrolment gate, rounds, aggregation, ledger.",
    )
    sub = parser.add_subparsers(dest="server_command", metavar="SUBCOMMAND")
    start = sub.add_parser(
        "start",
        help="start serving a federation from server.toml",
        description=(
            "Start (or resume) the federation described by server.toml: listen on its address "
            "over TLS, enrol clients whose evidence the policy accepts, run the rounds, and "
            "record everything in the ledger under state_dir. A restarted server resumes from "
            "the last completed round."
        ),
    )
    start.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="PATH",
        help="server.toml (see docs/config.md; fedtee init writes a commented example)",
    )
    start.add_argument(
        "--exit-after-finish",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit this many seconds after the last round (default: serve until stopped)",
    )
    start.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    start.set_defaults(handler=_start)
    measure = sub.add_parser(
        "measure",
        help="print this server's code measurement (for clients' server policies)",
        description=(
            "Print the aggregator's code measurement (SHA-384 over the installed fedtee "
            "package), and the TPM code PCR value it gives, for the reference values of the "
            "server policy clients use with [server_attestation]."
        ),
    )
    measure.set_defaults(handler=_measure)
    forget = sub.add_parser(
        "forget-client",
        help="let a client whose TPM was reset or rebooted enrol again",
        description=(
            "Clear the TPM counters stored for CLIENT_ID, so that its next enrolment is not "
            "refused with tpm_reset (the platform rebooted or its TPM was reset since it "
            "last attested). The enrolment is still verified and appraised in full, and its "
            "attestation result in the ledger carries the warning tpm_counters_cleared. Works "
            "whether or not the server is running. Exit 1 if the client has no stored "
            "counters."
        ),
    )
    forget.add_argument("client_id", metavar="CLIENT_ID", help="the client id to let back")
    forget.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="PATH",
        help="the server's server.toml (its [server] state_dir holds the state store)",
    )
    forget.set_defaults(handler=_forget_client)
    parser.set_defaults(handler=lambda _args: (parser.print_help(), 2)[1])


__all__ = [
    "ServerAttestationFileConfig",
    "ServerFileConfig",
    "build_server",
    "directory_collateral",
    "load_policy",
    "parse_server_config",
    "register",
    "server_attester",
    "trust_anchors",
]
