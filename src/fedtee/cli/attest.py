"""``fedtee attest``: verify, appraise and show TEE evidence offline.

``fedtee attest verify EVIDENCE --type T`` reads an evidence blob (and the files it names),
verifies it with :func:`fedtee.attest.evaluate` (signatures, vendor chains, collateral at
``--at``), appraises it against ``--policy`` and prints the claims, the TCB status, the trust
vector, every warning and every violation with its reason code.

Exit codes of ``verify``: **0** affirming; **1** contraindicated (rejected: the reason codes
say why); **3** warning (accepted with warnings, e.g. an allowed out-of-date TCB or the
simulated TEE); **2** the inputs could not be used (unreadable file, bad option, malformed
policy), as for every fedtee command.

``fedtee attest show EVIDENCE [--type T]`` parses a blob (no signature checks) and prints
every field; without ``--type`` it tries every parser and uses the only one that accepts the
blob. Exit codes: 0 parsed; 1 not parseable as the type given (or as any type); 2 bad input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime as dt
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedtee.attest.model import MAX_AUX_BYTES, MAX_EVIDENCE_BYTES, Evidence, TeeType, TrustAnchors
from fedtee.attest.result import TIER_AFFIRMING, TIER_CONTRAINDICATED, TIER_NONE, TIER_WARNING
from fedtee.errors import AttestationError, ConfigError, Reason

EXIT_AFFIRMING = 0
EXIT_CONTRAINDICATED = 1
EXIT_WARNING = 3
MAX_TRUST_FILE_BYTES = 256 * 1024
MAX_POLICY_FILE_BYTES = 1024 * 1024

# TEE type -> the parser module in fedtee.attest.evidence (each has evidence_from_files and
# describe).
_PARSERS: Mapping[TeeType, str] = {
    TeeType.SGX: "sgx",
    TeeType.TDX: "tdx",
    TeeType.SEV_SNP: "snp",
    TeeType.TPM: "tpm",
    TeeType.PSA: "psa",
    TeeType.CCA: "cca",
    TeeType.SIM: "sim",
}
_TIERS = {
    TIER_NONE: "none",
    TIER_AFFIRMING: "affirming",
    TIER_WARNING: "warning",
    TIER_CONTRAINDICATED: "contraindicated",
}
_AUX_HELP = (
    "an auxiliary evidence file NAME=FILE (repeatable), as the TEE type names them: sev-snp "
    "'certs' (the kernel's certificate table) or 'vcek' (DER); tpm 'signature', 'pcrs', "
    "'ak_public' or 'ak_public_der', 'ek_cert', 'ek_chain', 'activated_secret' (the Azure-style "
    "JSON carries its own); sim 'platform_cert'"
)
_TYPES = [t.value for t in TeeType]


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "attest",
        help="verify, appraise and show TEE evidence offline",
        description=(
            "Verify TEE evidence (SGX, TDX, SEV-SNP, TPM 2.0, Arm PSA and CCA, sim) against "
            "the vendors' roots and collateral at a given time, appraise it against a policy, "
            "or pretty-print a parsed blob."
        ),
    )
    commands = group.add_subparsers(dest="attest_command", metavar="COMMAND")

    verify = commands.add_parser(
        "verify",
        help="verify and appraise one evidence blob; exit 0 only if affirming",
        description=(
            "Verify EVIDENCE (signatures, certificate chains to the embedded vendor roots and "
            "any --trust anchors, CRLs and collateral, all at --at) and appraise it against "
            "--policy. Prints the claims, TCB status, trust vector, warnings and every "
            "violation with its reason code. Exit codes: 0 affirming, 1 contraindicated, "
            "3 warning (accepted with warnings), 2 unusable input."
        ),
    )
    verify.add_argument("evidence", type=Path, help="the evidence file (quote, report, token)")
    verify.add_argument(
        "--type", dest="tee", required=True, choices=_TYPES, help="the evidence type"
    )
    _add_aux(verify)
    verify.add_argument(
        "--collateral",
        type=Path,
        metavar="DIR",
        help=(
            "offline collateral bundle, <DIR>/<kind>/<key> (Intel TCB info, QE identity, "
            "CRLs, TCB signing chain; AMD VCEKs and CRLs); see docs/attestation.md"
        ),
    )
    verify.add_argument(
        "--pcs-url",
        metavar="URL",
        help=(
            "fetch missing Intel collateral from this Intel PCS or PCCS base URL (e.g. "
            "https://api.trustedservices.intel.com); off unless given"
        ),
    )
    verify.add_argument(
        "--kds-url",
        metavar="URL",
        help=(
            "fetch missing AMD VCEKs and CRLs from this AMD KDS base URL (e.g. "
            "https://kdsintf.amd.com); off unless given"
        ),
    )
    verify.add_argument(
        "--collateral-cache",
        type=Path,
        metavar="DIR",
        help="keep fetched collateral in DIR (itself a bundle) while it is current",
    )
    policy = verify.add_mutually_exclusive_group()
    policy.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help=(
            "policy TOML of reference values (docs/config.md); without it: the type's "
            "defaults (debug forbidden, TCB UpToDate, no reference values, sim refused)"
        ),
    )
    policy.add_argument(
        "--unsafe-policy",
        action="store_true",
        help="accept any verified evidence, debug and sim included (development only; warns)",
    )
    verify.add_argument(
        "--nonce",
        metavar="HEX",
        help=(
            "expected nonce: with --public-key, report_data must be fedtee's binding "
            "H(tag || nonce || key); without it, report_data must be HEX followed by zeros"
        ),
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the client key (DER or PEM SubjectPublicKeyInfo) bound with --nonce",
    )
    verify.add_argument(
        "--at",
        metavar="ISO-TIME",
        help=(
            "verify as of this time (e.g. 2025-03-20T00:00:00Z; no zone means UTC); "
            "default: now. Old evidence verifies at the time its collateral was valid"
        ),
    )
    verify.add_argument(
        "--trust",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help=(
            "extra trust anchors for this type, added to the embedded Intel and AMD roots: "
            "PEM certificates (TPM EK CA, sim root), PEM public keys or EC JWKs (PSA IAK, "
            "CCA CPAK)"
        ),
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=_verify)

    show = commands.add_parser(
        "show",
        help="parse an evidence blob and print every field (no verification)",
        description=(
            "Parse EVIDENCE and print its fields. No signature is checked: use 'verify' for "
            "that. Without --type every parser is tried; the blob's type must be unambiguous."
        ),
    )
    show.add_argument("evidence", type=Path, help="the evidence file")
    show.add_argument("--type", dest="tee", choices=_TYPES, help="the evidence type")
    _add_aux(show)
    show.add_argument("--json", action="store_true", help="print the fields as JSON")
    show.set_defaults(handler=_show)
    group.set_defaults(handler=lambda _args: (group.print_help(), 2)[1])


def _add_aux(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--aux", action="append", default=[], metavar="NAME=FILE", help=_AUX_HELP)


# --- inputs ---------------------------------------------------------------------------


def _read(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes: one more than allowed lets the parser say 'too large'."""
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _aux(items: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ConfigError(f"--aux expects NAME=FILE, not {item!r}")
        if name in out:
            raise ConfigError(f"--aux {name} is given twice")
        out[name] = _read(Path(file), MAX_AUX_BYTES)
    return out


def parse_time(text: str | None) -> dt.datetime:
    """``--at``: ISO 8601, ``Z`` allowed, no zone means UTC; default now."""
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--at {text!r} is not an ISO 8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _b64url_int(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("coordinate is not a string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def jwk_public_key(data: bytes) -> Any:
    """An EC public key from a JWK (``kty`` EC, ``crv`` P-256/P-384/P-521), e.g. a CCA CPAK."""
    from cryptography.hazmat.primitives.asymmetric import ec

    curves: dict[str, ec.EllipticCurve] = {
        "P-256": ec.SECP256R1(),
        "P-384": ec.SECP384R1(),
        "P-521": ec.SECP521R1(),
    }
    try:
        jwk = json.loads(data)
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") not in curves:
            raise ValueError("not an EC JWK on P-256, P-384 or P-521")
        numbers = ec.EllipticCurvePublicNumbers(
            _b64url_int(jwk.get("x")), _b64url_int(jwk.get("y")), curves[jwk["crv"]]
        )
        return numbers.public_key()
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise ConfigError(f"not a usable EC JWK: {exc}") from exc


def load_trust_file(data: bytes, name: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """``(certificates, public keys)`` from a PEM certificate bundle, a PEM public key or a JWK."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if len(data) > MAX_TRUST_FILE_BYTES:
        raise ConfigError(f"{name} is larger than {MAX_TRUST_FILE_BYTES} bytes")
    text = data.lstrip()
    try:
        if text.startswith(b"{"):
            return (), (jwk_public_key(data),)
        if b"-----BEGIN CERTIFICATE-----" in data:
            return tuple(x509.load_pem_x509_certificates(data)), ()
        if b"-----BEGIN PUBLIC KEY-----" in data:
            return (), (serialization.load_pem_public_key(data),)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise ConfigError(f"{name}: unreadable trust anchor: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc.message}") from exc
    raise ConfigError(f"{name}: expected PEM certificates, a PEM public key or an EC JWK")


def trust_anchors(tee: TeeType, files: Sequence[Path]) -> TrustAnchors:
    """The embedded vendor roots plus the anchors in ``files``, for ``tee``."""
    from fedtee.attest.trust import embedded_anchors

    embedded = embedded_anchors()
    roots = list(embedded.roots_for(tee))
    keys = list(embedded.keys_for(tee))
    for path in files:
        certs, more_keys = load_trust_file(_read(path, MAX_TRUST_FILE_BYTES), str(path))
        roots.extend(certs)
        keys.extend(more_keys)
    return TrustAnchors(roots={tee: tuple(roots)}, keys={tee: tuple(keys)})


def _public_key_der(path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data = _read(path, MAX_TRUST_FILE_BYTES)
    try:
        key = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a public key (DER or PEM): {exc}") from exc
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _policy(args: argparse.Namespace, tee: TeeType) -> Any:
    from fedtee.attest.policy import Policy

    if args.unsafe_policy:
        return Policy.unsafe_allow_all()
    if args.policy is None:
        return Policy.from_dict({"version": 1, "tee": {tee.value: {}}})
    data = _read(args.policy, MAX_POLICY_FILE_BYTES)
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{args.policy} is not UTF-8 text") from exc
    return Policy.from_toml(text)


def load_evidence(tee: TeeType, data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """The parser module's ``evidence_from_files`` for ``tee`` (raises EvidenceFormatError)."""
    module = importlib.import_module(f"fedtee.attest.evidence.{_PARSERS[tee]}")
    evidence: Evidence = module.evidence_from_files(data, aux)
    return evidence


def describe(evidence: Evidence) -> dict[str, Any]:
    module = importlib.import_module(f"fedtee.attest.evidence.{_PARSERS[evidence.tee]}")
    fields: dict[str, Any] = module.describe(evidence)
    return fields


# --- verify ---------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    from fedtee.attest.policy import evaluate, rejected
    from fedtee.attest.result import Status
    from fedtee.attest.trust.collateral import collateral_source

    tee = TeeType(args.tee)
    now = parse_time(args.at)
    nonce = _hex_option(args.nonce, "--nonce") if args.nonce is not None else None
    if args.public_key is not None:
        from fedtee.attest.binding import MAX_NONCE_BYTES, MIN_NONCE_BYTES

        if nonce is None:
            raise ConfigError("--public-key needs --nonce (the binding covers both)")
        if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise ConfigError(
                f"--nonce for a key binding must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes"
            )
    public_key = _public_key_der(args.public_key) if args.public_key is not None else None
    policy = _policy(args, tee)
    trust = trust_anchors(tee, args.trust)
    collateral = collateral_source(
        directory=args.collateral,
        pcs_url=args.pcs_url,
        kds_url=args.kds_url,
        cache_dir=args.collateral_cache,
        clock=lambda: now,
    )
    data = _read(args.evidence, MAX_EVIDENCE_BYTES)
    aux = _aux(args.aux)
    verified = None
    try:
        evidence = load_evidence(tee, data, aux)
    except AttestationError as exc:
        result = rejected(exc, tee=tee, now=now)
    else:
        evaluation = evaluate(
            evidence,
            policy=policy,
            trust=trust,
            collateral=collateral,
            now=now,
            nonce=nonce if public_key is not None else None,
            public_key=public_key,
        )
        result, verified = evaluation.result, evaluation.verified
        if verified is not None and nonce is not None and public_key is None:
            expected = nonce.ljust(len(verified.report_data), b"\0")
            if len(nonce) > len(verified.report_data) or verified.report_data != expected:
                violation = _nonce_violation(verified.report_data, expected)
                result = dataclasses.replace(
                    result,
                    status=Status.CONTRAINDICATED,
                    violations=(*result.violations, violation),
                )
    if args.json:
        print(result.to_json())
    else:
        _print_result(result, verified)
    if result.status is Status.AFFIRMING:
        return EXIT_AFFIRMING
    return EXIT_WARNING if result.status is Status.WARNING else EXIT_CONTRAINDICATED


def _hex_option(text: str, option: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"{option} must be hex, not {text!r}") from exc
    if not value or len(value) > 64:
        raise ConfigError(f"{option} must be 1 to 64 bytes")
    return value


def _nonce_violation(found: bytes, expected: bytes) -> Any:
    from fedtee.attest.result import Violation

    return Violation(Reason.NONCE_MISMATCH, "report_data", found.hex(), expected.hex())


def _print_result(result: Any, verified: Any) -> None:
    out = sys.stdout
    tee = result.tee.value if result.tee else "unknown"
    kind = "hardware-backed" if result.hardware_backed else "NOT hardware-backed"
    if result.tee is TeeType.SIM:
        kind = "SIMULATED TEE, not hardware-backed"
    if verified is None:
        kind = "not verified"
    print(f"evidence:      {tee} ({kind})", file=out)
    print(f"status:        {result.status.value}", file=out)
    if verified is not None:
        print(f"tcb status:    {verified.tcb_status.value}", file=out)
        if verified.advisory_ids:
            print(f"advisories:    {', '.join(verified.advisory_ids)}", file=out)
    if result.code_identity:
        print(f"code identity: {result.code_identity.hex()}", file=out)
    if result.platform_id:
        print(f"platform id:   {result.platform_id.hex()}", file=out)
    if result.appraised_at:
        print(f"verified at:   {result.appraised_at.isoformat()}", file=out)
    if result.claims:
        print("claims:", file=out)
        _print_tree(result.claims, 1)
    if result.trust_vector:
        print("trust vector:", file=out)
        for claim, tier in result.trust_vector.items():
            print(f"  {claim}: {tier} ({_TIERS.get(tier, '?')})", file=out)
    if result.warnings:
        print("warnings:", file=out)
        for warning in result.warnings:
            print(f"  - {warning}", file=out)
    if result.violations:
        print("violations:", file=out)
        for violation in result.violations:
            print(f"  - {violation}", file=out)
    verdict = {
        "affirming": "ACCEPTED",
        "warning": "ACCEPTED WITH WARNINGS",
        "contraindicated": "REJECTED",
    }[result.status.value]
    reasons = ", ".join(r.value for r in result.reasons)
    print(f"verdict:       {verdict}" + (f" ({reasons})" if reasons else ""), file=out)


def _nested(value: Any) -> bool:
    """A non-empty table, or a list holding tables or lists: printed over several lines."""
    if isinstance(value, Mapping):
        return bool(value)
    return isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value)


def _print_tree(value: Any, depth: int) -> None:
    pad = "  " * depth
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _nested(item):
                print(f"{pad}{key}:")
                _print_tree(item, depth + 1)
            else:
                print(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if _nested(item):
                print(f"{pad}-")
                _print_tree(item, depth + 1)
            else:
                print(f"{pad}- {_scalar(item)}")
    else:
        print(f"{pad}{_scalar(value)}")


def _scalar(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value)
    return str(value)


# --- show -----------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    data = _read(args.evidence, MAX_EVIDENCE_BYTES)
    aux = _aux(args.aux)
    tees = [TeeType(args.tee)] if args.tee is not None else list(_PARSERS)
    parsed: list[tuple[TeeType, dict[str, Any]]] = []
    failures: list[str] = []
    for tee in tees:
        try:
            fields = describe(load_evidence(tee, data, aux))
        except AttestationError as exc:
            failures.append(f"{tee.value}: [{exc.reason.value}] {exc.message}")
            continue
        parsed.append((tee, fields))
    if len(parsed) != 1:
        if parsed:
            names = ", ".join(t.value for t, _ in parsed)
            print(f"fedtee: the blob parses as {names}: give --type", file=sys.stderr)
            return 2
        print(f"fedtee: {args.evidence} does not parse:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    tee, fields = parsed[0]
    if args.json:
        print(json.dumps(fields, indent=2, default=_json_default))
    else:
        print(f"parsed as: {tee.value} (not verified: use 'fedtee attest verify')")
        _print_tree(fields, 0)
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


__all__ = [
    "EXIT_AFFIRMING",
    "EXIT_CONTRAINDICATED",
    "EXIT_WARNING",
    "describe",
    "jwk_public_key",
    "load_evidence",
    "load_trust_file",
    "parse_time",
    "register",
    "trust_anchors",
]
