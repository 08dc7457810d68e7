"""client.toml -> a typed, checked :class:`ClientConfig` (pure: text and a base dir in).

The CLI reads the file; this module only parses. Relative paths resolve against the config
file's directory, so a federation directory made by ``fedtee init`` can be moved as a whole.
Unknown tables or keys are errors: a typo must not silently fall back to a default. See
``examples/client.toml`` for every key, documented.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtee.attest.model import TeeType
from fedtee.client.trainer import TrainerSpec
from fedtee.codec import Encoding
from fedtee.errors import ConfigError, FedteeError
from fedtee.memory import MAX_MALLOC_ARENAS

MAX_CONFIG_BYTES = 64 * 1024

_SCHEMA: dict[str, set[str]] = {
    "client": {"id"},
    "server": {"address", "ca_cert", "server_name"},
    "tee": {"type", "sim_root_cert", "sim_root_key", "debug", "svn", "tcti", "ek_chain"},
    "trainer": {"target", "partition", "num_partitions", "seed"},
    "runtime": {
        "max_reconnect_attempts",
        "max_busy_s",
        "backoff_initial_s",
        "backoff_max_s",
        "chunk_bytes",
        "profile",
        "encoding",
        "topk_fraction",
        "max_model_mib",
        "malloc_arenas",
    },
    "server_attestation": {
        "require",
        "policy",
        "sim_root",
        "tpm_ek_ca",
        "psa_iak",
        "cca_cpak",
        "collateral_dir",
    },
}
_REQUIRED: dict[str, set[str]] = {
    "client": {"id"},
    "server": {"address", "ca_cert"},
    "tee": {"type"},
    "trainer": {"target"},
}


@dataclass(frozen=True, kw_only=True)
class ServerAttestationConfig:
    """``[server_attestation]``: verify the aggregator's TEE evidence before enrolling
    (:mod:`fedtee.client.server_attestation`), with this policy and these trust anchors
    besides the embedded vendor roots."""

    require: bool  # refuse a server without a TEE (one whose evidence fails is refused anyway)
    policy: Path  # same format as the server's policy (fedtee.attest.policy)
    sim_root: Path | None = None  # PEM: trust this sim root (the policy must allow sim)
    tpm_ek_ca: tuple[Path, ...] = ()  # PEM certificates of the server TPM's EK CA
    psa_iak: tuple[Path, ...] = ()
    cca_cpak: tuple[Path, ...] = ()
    collateral_dir: Path | None = None  # SGX/TDX/SNP collateral for the server's evidence


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    client_id: str
    server_address: str  # host:port
    ca_cert: Path  # the federation CA that signed the server's TLS certificate
    server_name: str | None  # TLS name to expect, when it differs from the address host
    tee: TeeType
    sim_root_cert: Path | None
    sim_root_key: Path | None
    sim_debug: bool
    sim_svn: int
    tcti: str  # tpm only: how to reach the TPM (tpm2-tss TCTI string)
    ek_chain: Path | None  # tpm only: PEM intermediates between the EK cert and the EK CA
    trainer: TrainerSpec
    partition: int
    num_partitions: int
    seed: int
    max_reconnect_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    chunk_bytes: int
    profile: str = "default"  # "iot": small chunks, int8 updates, lean imports (docs/iot.md)
    encoding: str = "safetensors"  # update compression, a fedtee.codec.Encoding value
    topk_fraction: float = 0.01  # top-k encodings: the share of each tensor sent
    max_model_bytes: int = 1 << 30  # largest global model this client downloads (silos)
    max_busy_s: float = 600.0  # how long a load-shedding server is asked again
    malloc_arenas: int = 2  # glibc malloc arenas of `fedtee client start` (0: glibc's default)
    server_attestation: ServerAttestationConfig | None = None  # mutual attestation, off if None


def _get(table: Mapping[str, Any], section: str, key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"[{section}] {key} must be {kind.__name__}, got {value!r}")
    return value


PROFILES = ("default", "iot")
# What a profile changes, unless the config sets the key itself.
_PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "default": {"chunk_bytes": 1 << 20, "encoding": "safetensors", "malloc_arenas": 2},
    "iot": {"chunk_bytes": 64 * 1024, "encoding": "int8", "malloc_arenas": 1},
}
ENCODINGS = tuple(e.value for e in Encoding)


MAX_MODEL_MIB = 1 << 16  # 64 GiB: the download is one buffer of this size, bounded first


def _max_model_mib(table: Mapping[str, Any]) -> int:
    mib: int = _get(table, "runtime", "max_model_mib", int, 1024)
    if not 1 <= mib <= MAX_MODEL_MIB:
        raise ConfigError(f"[runtime] max_model_mib must be 1..{MAX_MODEL_MIB}, got {mib}")
    return mib


def _max_busy_s(table: Mapping[str, Any]) -> float:
    busy: float = _get(table, "runtime", "max_busy_s", float, 600.0)
    if not 0.0 <= busy <= 86_400.0:
        raise ConfigError(f"[runtime] max_busy_s must be 0..86400 seconds, got {busy}")
    return busy


def _runtime_profile(table: Mapping[str, Any], override: str | None) -> dict[str, Any]:
    """``[runtime]`` profile, chunk_bytes, encoding, topk_fraction, malloc_arenas
    (``--profile`` wins)."""
    profile = override or _get(table, "runtime", "profile", str, "default")
    if profile not in PROFILES:
        raise ConfigError(f"[runtime] profile must be one of {list(PROFILES)}, got {profile!r}")
    defaults = _PROFILE_DEFAULTS[profile]
    encoding = _get(table, "runtime", "encoding", str, defaults["encoding"])
    if encoding not in ENCODINGS:
        raise ConfigError(f"[runtime] encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
    fraction = _get(table, "runtime", "topk_fraction", float, 0.01)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"[runtime] topk_fraction must be in (0, 1], got {fraction}")
    arenas = _get(table, "runtime", "malloc_arenas", int, defaults["malloc_arenas"])
    if not 0 <= arenas <= MAX_MALLOC_ARENAS:
        raise ConfigError(
            f"[runtime] malloc_arenas must be within 0..{MAX_MALLOC_ARENAS} "
            f"(0: glibc's default), got {arenas}"
        )
    return {
        "malloc_arenas": arenas,
        "chunk_bytes": _get(table, "runtime", "chunk_bytes", int, defaults["chunk_bytes"]),
        "profile": profile,
        "encoding": encoding,
        "topk_fraction": fraction,
    }


def parse_client_config(
    text: str,
    *,
    base_dir: Path,
    tee_override: str | None = None,
    detect_tee: Callable[[], str] | None = None,
    profile_override: str | None = None,
) -> ClientConfig:
    """Parse client.toml; ``tee_override`` (``--tee``) replaces ``[tee] type``.

    A type of ``"auto"`` asks ``detect_tee`` (the CLI passes device detection, which never
    picks sim) for the TEE name; without ``detect_tee`` it is a :class:`ConfigError`."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError(f"client config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"client config is not valid TOML: {exc}") from exc
    unknown = set(doc) - set(_SCHEMA)
    if unknown:
        raise ConfigError(f"client config: unknown tables {sorted(unknown)}")
    for section, keys in _SCHEMA.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"client config: [{section}] must be a table")
        extra = set(table) - keys
        if extra:
            raise ConfigError(f"client config: unknown keys in [{section}]: {sorted(extra)}")
        missing = _REQUIRED.get(section, set()) - set(table)
        if missing:
            raise ConfigError(f"client config: [{section}] needs {sorted(missing)}")

    def path(section: str, key: str) -> Path | None:
        raw = doc.get(section, {}).get(key)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"[{section}] {key} must be a path string")
        return (base_dir / raw).resolve()

    client, server = doc["client"], doc["server"]
    tee_t, trainer_t, runtime_t = doc["tee"], doc["trainer"], doc.get("runtime", {})
    client_id = _get(client, "client", "id", str, None)
    if not 0 < len(client_id) <= 128 or not all(
        (c.isascii() and c.isalnum()) or c in "-_." for c in client_id
    ):
        raise ConfigError(f"[client] id {client_id!r} must be 1..128 of [A-Za-z0-9._-]")
    address = _get(server, "server", "address", str, None)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"[server] address must be host:port, got {address!r}")
    tee_name = tee_override or _get(tee_t, "tee", "type", str, None)
    if tee_name == "auto":
        if detect_tee is None:
            raise ConfigError("[tee] type 'auto' needs device detection (fedtee client start)")
        tee_name = detect_tee()
    try:
        tee = TeeType.parse(tee_name)
    except FedteeError as exc:
        raise ConfigError(f"[tee] type: {exc.message}") from exc
    partition = _get(trainer_t, "trainer", "partition", int, 0)
    num_partitions = _get(trainer_t, "trainer", "num_partitions", int, 1)
    if not 0 <= partition < num_partitions:
        raise ConfigError(f"[trainer] partition {partition} must be 0..num_partitions-1")
    config = ClientConfig(
        client_id=client_id,
        server_address=address,
        ca_cert=path("server", "ca_cert") or Path(),
        server_name=_get(server, "server", "server_name", str, "") or None,
        tee=tee,
        sim_root_cert=path("tee", "sim_root_cert"),
        sim_root_key=path("tee", "sim_root_key"),
        sim_debug=_get(tee_t, "tee", "debug", bool, False),
        sim_svn=_get(tee_t, "tee", "svn", int, 1),
        tcti=_get(tee_t, "tee", "tcti", str, "device:/dev/tpmrm0"),
        ek_chain=path("tee", "ek_chain"),
        trainer=TrainerSpec(target=_get(trainer_t, "trainer", "target", str, None)),
        partition=partition,
        num_partitions=num_partitions,
        seed=_get(trainer_t, "trainer", "seed", int, 0),
        max_reconnect_attempts=_get(runtime_t, "runtime", "max_reconnect_attempts", int, 8),
        backoff_initial_s=_get(runtime_t, "runtime", "backoff_initial_s", float, 0.2),
        backoff_max_s=_get(runtime_t, "runtime", "backoff_max_s", float, 5.0),
        max_busy_s=_max_busy_s(runtime_t),
        max_model_bytes=_max_model_mib(runtime_t) << 20,
        **_runtime_profile(runtime_t, profile_override),
    )
    if tee is TeeType.SIM and (config.sim_root_cert is None or config.sim_root_key is None):
        raise ConfigError("[tee] type = 'sim' needs sim_root_cert and sim_root_key")
    if "server_attestation" in doc:
        config = dataclasses.replace(
            config, server_attestation=_server_attestation(doc["server_attestation"], base_dir)
        )
    return config


def _server_attestation(table: Mapping[str, Any], base_dir: Path) -> ServerAttestationConfig:
    section = "server_attestation"

    def one(key: str) -> Path | None:
        raw = table.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"[{section}] {key} must be a path string")
        return (base_dir / raw).resolve()

    def many(key: str) -> tuple[Path, ...]:
        raw = table.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
            raise ConfigError(f"[{section}] {key} must be a list of file paths, got {raw!r}")
        return tuple((base_dir / v).resolve() for v in raw)

    policy = one("policy")
    if policy is None:
        raise ConfigError("[server_attestation] needs policy (the server policy file)")
    return ServerAttestationConfig(
        require=_get(table, section, "require", bool, True),
        policy=policy,
        sim_root=one("sim_root"),
        tpm_ek_ca=many("tpm_ek_ca"),
        psa_iak=many("psa_iak"),
        cca_cpak=many("cca_cpak"),
        collateral_dir=one("collateral_dir"),
    )


__all__ = ["ClientConfig", "ServerAttestationConfig", "parse_client_config"]
