"""``fedtee policy``: reference values in a policy file.

``fedtee policy add-reference POLICY_FILE --tee TEE --name NAME --value HEX [--comment TEXT]``
adds one allowed value under ``[tee.<TEE>.reference]`` (creating the file, with
``version = 1``, and the table when they do not exist), after checking the value's length
for that measurement. The file's text is edited in place, so the operator's comments stay;
the edit is re-parsed and checked before the file is replaced (atomically).

``fedtee policy show POLICY_FILE [--json]`` prints what the policy allows, and whether the
policy engine (:mod:`fedtee.attest.policy`) accepts the file.

Policy format (shared with the verifier library)::

    version = 1
    [tee.sev-snp]
    debug = "forbid"
    accepted_tcb = ["UpToDate"]
    [tee.sev-snp.reference]
    measurement = [
      "b07af962...",  # OVMF 2024.02, kernel 6.8.0-45, cmdline "console=ttyS0"
    ]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fedtee.cli._toml_edit import append_string
from fedtee.errors import ConfigError, FedteeError, PolicyError, Reason

POLICY_VERSION = 1
MAX_POLICY_BYTES = 1024 * 1024
MAX_COMMENT_CHARS = 200
TEES: tuple[str, ...] = ("sgx", "tdx", "sev-snp", "tpm", "psa", "cca", "sim")

# Measurement name -> allowed value sizes in bytes, per TEE. Names as the verifiers put them
# in VerifiedEvidence.measurements; sizes from the hardware formats (SGX/TDX/SNP reports,
# the TPM SHA-256 PCR bank, PSA/CCA hash algorithms).
_DIGESTS = (32, 48, 64)
MEASUREMENTS: Mapping[str, tuple[tuple[str, tuple[int, ...]], ...]] = MappingProxyType(
    {
        "sgx": (("mrenclave|mrsigner", (32,)),),
        "tdx": (
            (
                "mrtd|rtmr[0-3]|mrseam|mrsignerseam|mrconfigid|mrowner|mrownerconfig|mrservicetd",
                (48,),
            ),
        ),
        "sev-snp": (
            ("measurement|id_key_digest|author_key_digest", (48,)),
            ("host_data", (32,)),
            ("family_id|image_id", (16,)),
        ),
        "tpm": (("pcr(?:[0-9]|1[0-9]|2[0-3])", (32,)),),
        "psa": (("sw:[A-Za-z0-9_.-]+", _DIGESTS),),
        "cca": (("rim|rem[0-3]", _DIGESTS), ("sw:[A-Za-z0-9_.-]+", _DIGESTS)),
        "sim": (("measurement", (48,)),),
    }
)

_NEW_FILE = (
    "# fedtee attestation policy: a TEE is accepted only if it has a [tee.<name>] table.\n"
    f"version = {POLICY_VERSION}\n"
)
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def expected_sizes(tee: str, name: str) -> tuple[int, ...]:
    """Allowed sizes in bytes of reference value ``name`` for ``tee``; ConfigError if unknown."""
    if tee not in MEASUREMENTS:
        raise ConfigError(f"unknown TEE {tee!r}; choose one of {', '.join(TEES)}")
    for pattern, sizes in MEASUREMENTS[tee]:
        if re.fullmatch(pattern, name):
            return sizes
    known = ", ".join(p for p, _ in MEASUREMENTS[tee])
    raise ConfigError(f"{name!r} is not a {tee} measurement name; known: {known}")


def normalise_value(tee: str, name: str, value: str) -> str:
    """Lower-case hex of the right length for ``tee``/``name``, or ConfigError."""
    sizes = expected_sizes(tee, name)
    text = value.strip().lower()
    text = text.removeprefix("0x")
    if not _HEX.fullmatch(text):
        raise ConfigError(f"--value must be hex digits (an even number of them); got {value!r}")
    size = len(text) // 2
    if size not in sizes:
        wanted = " or ".join(str(s) for s in sizes)
        raise ConfigError(
            f"{tee} {name} is {wanted} bytes ({' or '.join(str(2 * s) for s in sizes)} hex "
            f"digits); got {size} bytes"
        )
    return text


def _check_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if len(comment) > MAX_COMMENT_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in comment):
        raise ConfigError(
            f"--comment must be one line of at most {MAX_COMMENT_CHARS} printable characters"
        )
    return comment.strip() or None


def _read_policy_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy file {path} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {path} is not UTF-8: {exc}") from exc


def _parse(text: str, path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise PolicyError(f"{path} is not valid TOML: {exc}") from exc
    version = doc.get("version")
    if version != POLICY_VERSION:
        raise PolicyError(
            f"{path}: version is {version!r}; this fedtee reads policy version {POLICY_VERSION}"
        )
    return doc


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_reference(
    text: str, *, tee: str, name: str, value: str, comment: str | None = None
) -> tuple[str, bool]:
    """The policy text with ``value`` allowed for ``tee``'s ``name``; and whether it changed."""
    hex_value = normalise_value(tee, name, value)
    edited = append_string(
        text, ("tee", tee, "reference"), name, hex_value, _check_comment(comment)
    )
    return edited, edited != text


def _load_with_engine(text: str) -> tuple[str, Any]:
    """What the policy engine says about this text ("ok" or its error), and the policy."""
    try:
        module = importlib.import_module("fedtee.attest.policy")
    except ImportError:
        return "not checked (fedtee.attest.policy is not available)", None
    try:
        return "ok", module.Policy.from_toml(text)
    except FedteeError as exc:
        return f"rejected: {exc}", None


def _policy_check(text: str) -> str:
    return _load_with_engine(text)[0]


def _effective(policy: Any) -> list[str]:
    """The settings the engine will apply, defaults included, one line per TEE."""
    lines: list[str] = []
    try:
        for tee, tp in policy.tees.items():
            age = tp.max_evidence_age
            parts = [
                "debug " + ("allowed" if tp.debug_allowed else "forbidden"),
                "accepted_tcb " + (",".join(sorted(str(t) for t in tp.accepted_tcb)) or "-"),
                "warn_tcb " + (",".join(sorted(str(t) for t in tp.warn_tcb)) or "-"),
                "max_evidence_age " + (f"{int(age.total_seconds())}s" if age else "none"),
            ]
            if getattr(tee, "value", tee) == "tpm":
                parts.append(f"on_reset {tp.on_reset}")
            if tp.allow_simulated:
                parts.append("SIMULATED TEE ACCEPTED")
            lines.append(f"{getattr(tee, 'value', tee)}: " + "; ".join(parts))
    except (AttributeError, TypeError):
        return []  # an engine whose shape this display does not know: show nothing wrong
    return lines


def _cmd_add_reference(args: argparse.Namespace) -> int:
    path = Path(args.policy_file)
    text = _read_policy_text(path) if path.exists() else _NEW_FILE
    tables = _parse(text, path).get("tee")
    had_tee = isinstance(tables, dict) and isinstance(tables.get(args.tee), dict)
    edited, changed = add_reference(
        text, tee=args.tee, name=args.name, value=args.value, comment=args.comment
    )
    hex_value = normalise_value(args.tee, args.name, args.value)
    if not changed:
        print(f"{path}: tee.{args.tee}.reference.{args.name} already allows {hex_value}")
        return 0
    _write_atomically(path, edited)
    print(f"{path}: tee.{args.tee}.reference.{args.name} += {hex_value}")
    if not had_tee:
        print(
            f"note: {path} had no [tee.{args.tee}] table; adding a reference created one, so "
            f"the policy now accepts {args.tee} evidence under the policy engine's defaults "
            f"(debug forbidden). Set accepted_tcb and min_svn too; review with "
            f"`fedtee policy show {path}`.",
            file=sys.stderr,
        )
    check = _policy_check(edited)
    if check.startswith("rejected"):
        print(f"note: the policy engine does not load the file yet: {check}", file=sys.stderr)
    return 0


def _summary(doc: Mapping[str, Any]) -> list[str]:
    lines = [f"version {doc.get('version')}"]
    tees = doc.get("tee", {})
    if not isinstance(tees, dict) or not tees:
        lines.append("no [tee.*] tables: this policy accepts no evidence")
        return lines
    for tee, table in tees.items():
        lines.append(f"[tee.{tee}]")
        if not isinstance(table, dict):
            lines.append(f"  (not a table: {table!r})")
            continue
        for key, val in table.items():
            if key in ("reference", "min_svn") and isinstance(val, dict):
                continue
            lines.append(f"  {key} = {json.dumps(val)}")
        refs = table.get("reference", {})
        for name, values in refs.items() if isinstance(refs, dict) else ():
            shown = values if isinstance(values, list) else [values]
            lines.append(f"  reference {name}: {len(shown)} allowed")
            lines.extend(f"    {v}" for v in shown)
        svns = table.get("min_svn", {})
        for name, minimum in svns.items() if isinstance(svns, dict) else ():
            lines.append(f"  min_svn {name} >= {minimum}")
    return lines


def _cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.policy_file)
    text = _read_policy_text(path)
    doc = _parse(text, path)
    check, policy = _load_with_engine(text)
    effective = _effective(policy) if policy is not None else []
    if args.json:
        shown = {"file": str(path), "policy": doc, "check": check, "effective": effective}
        print(json.dumps(shown, indent=2))
    else:
        print(f"{path}:")
        for line in _summary(doc):
            print(f"  {line}")
        print(f"policy engine: {check}")
        for line in effective:
            print(f"  effective {line}")
    if check.startswith("rejected"):
        raise PolicyError(f"{path} does not load: {check}", reason=Reason.POLICY_INVALID)
    return 0


def register(subparsers: Any) -> None:
    policy = subparsers.add_parser(
        "policy", help="edit and inspect attestation policy files (reference values)"
    )
    sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    sub.required = True

    add = sub.add_parser(
        "add-reference",
        help="allow one more reference value (measurement) for a TEE",
        description=(
            "Add HEX to [tee.TEE.reference] NAME in POLICY_FILE, creating the file and the "
            "table if needed. Comments in the file are kept."
        ),
    )
    add.add_argument("policy_file", metavar="POLICY_FILE")
    add.add_argument("--tee", required=True, choices=TEES)
    add.add_argument(
        "--name",
        required=True,
        help="measurement name: sgx mrenclave|mrsigner; tdx mrtd|rtmr0..3|...; sev-snp "
        "measurement|host_data; tpm pcr0..23; psa/cca sw:<type>, cca rim|rem0..3; sim "
        "measurement",
    )
    add.add_argument("--value", required=True, metavar="HEX")
    add.add_argument("--comment", metavar="TEXT", help="kept next to the value in the file")
    add.set_defaults(handler=_cmd_add_reference)

    show = sub.add_parser("show", help="print what a policy file allows and check it loads")
    show.add_argument("policy_file", metavar="POLICY_FILE")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_cmd_show)


__all__ = [
    "MEASUREMENTS",
    "POLICY_VERSION",
    "TEES",
    "add_reference",
    "expected_sizes",
    "normalise_value",
    "register",
]
