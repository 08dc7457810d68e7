"""TPM 2.0: parser, verifier, EK chain, credential activation and counters.

Real evidence: the Azure vTPM quote in tests/data/tpm (see PROVENANCE.md). Negative cases use
the fake AK / EK CA builders of fedtee.attest.testing.tpm with a fixed ``now``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.challenge import extension_for
from fedtee.attest.evidence import tpm as ev
from fedtee.attest.model import Evidence, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.registry import verifier_for
from fedtee.attest.testing.tpm import (
    AK_ATTRIBUTES,
    FIXED_NOW,
    FakeEkCa,
    FakeTpm,
    tpmt_public_rsa,
)
from fedtee.attest.verify._tpm_credential import kdfa, kdfe
from fedtee.attest.verify.tpm import (
    CODE_PCR,
    TpmChallenge,
    TpmVerifier,
    check_counters,
    code_pcr_value,
    spki_der,
)
from fedtee.errors import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Reason,
    VerificationError,
)

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

DATA = Path(__file__).resolve().parents[2] / "data" / "tpm"
AZURE = (DATA / "azure_vtpm_quote.json").read_bytes()
EXPECTED = json.loads((DATA / "expected.json").read_text())
# The vector carries no certificates, so any time works; fixed for reproducibility.
AZURE_AT = datetime(2025, 3, 20, tzinfo=UTC)
NONCE32 = bytes(range(32))


class DictCollateral:
    def __init__(self, items: Mapping[tuple[str, str], bytes] | None = None) -> None:
        self.items = dict(items or {})

    def get(self, kind: str, key: str) -> bytes:
        try:
            return self.items[(kind, key)]
        except KeyError:
            raise CollateralError(f"{kind}/{key}", reason=Reason.COLLATERAL_MISSING) from None


NO_COLLATERAL = DictCollateral()


def azure() -> Evidence:
    return ev.evidence_from_files(AZURE, {})


def verify(evidence: Evidence, trust: TrustAnchors | None = None, **kw: Any) -> VerifiedEvidence:
    return TpmVerifier().verify(
        evidence,
        trust=trust or TrustAnchors(),
        collateral=kw.get("collateral", NO_COLLATERAL),
        now=kw.get("now", FIXED_NOW),
    )


def replace(evidence: Evidence, *, data: bytes | None = None, **aux: bytes | None) -> Evidence:
    items = dict(evidence.aux)
    for k, v in aux.items():
        if v is None:
            items.pop(k, None)
        else:
            items[k] = v
    return Evidence(tee=evidence.tee, data=evidence.data if data is None else data, aux=items)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def reason_of(fn: Any) -> Reason:
    with pytest.raises(AttestationError) as info:
        fn()
    return info.value.reason


# --- the real Azure vTPM quote ----------------------------------------------------------


def test_azure_quote_verifies_with_the_expected_claims() -> None:
    # Act
    v = verify(azure(), now=AZURE_AT)
    # Assert
    want = EXPECTED["attest"]
    assert v.tee is TeeType.TPM and v.hardware_backed and not v.debug
    assert v.report_data.hex() == want["extraData"]
    assert v.claims["clock"] == want["clock"]
    assert v.claims["reset_count"] == want["resetCount"]
    assert v.claims["restart_count"] == want["restartCount"]
    assert int(v.claims["safe"]) == want["safe"]
    assert int(v.claims["firmware_version"], 16) == int(want["firmwareVersion"], 16)
    assert v.claims["pcr_digest"] == want["pcrDigest"]
    assert v.claims["pcr_select"] == {"sha256": list(range(24))}
    assert dict(v.svns) == {"reset_count": 2, "restart_count": 0}
    assert set(v.measurements) == {f"pcr{i}" for i in range(24)}
    assert v.code_identity == v.measurements[f"pcr{CODE_PCR}"]
    # No EK certificate and a DER AK: verification says what it could not check.
    assert v.platform_id is None and v.claims["ek_verified"] is False
    assert any(w.startswith("ek_cert_absent") for w in v.warnings)
    assert any(w.startswith("ak_attributes_unknown") for w in v.warnings)


def test_azure_pcr_digest_is_sha256_of_the_supplied_values() -> None:
    e = azure()
    assert hashlib.sha256(e.aux["pcrs"]).hexdigest() == EXPECTED["attest"]["pcrDigest"]


def test_registry_returns_the_tpm_verifier() -> None:
    assert isinstance(verifier_for("tpm"), TpmVerifier)
    assert isinstance(extension_for(TeeType.TPM), TpmChallenge)


@pytest.mark.parametrize("pcr", [0, 7, 16, 23])
def test_changed_pcr_value_is_a_digest_mismatch(pcr: int) -> None:
    e = azure()
    pcrs = flip(e.aux["pcrs"], pcr * 32 + 31)
    assert reason_of(lambda: verify(replace(e, pcrs=pcrs))) is Reason.PCR_DIGEST_MISMATCH


# Offsets into the Azure TPMS_ATTEST of fields whose bits can flip without breaking the
# structure: qualifiedSigner (8), extraData (44), clock (110), resetCount (118),
# restartCount (122), firmwareVersion (127), pcrDigest (last byte).
SIGNED_FIELD_OFFSETS = {
    "qualified_signer": 12,
    "extra_data": 44,
    "clock": 110,
    "reset_count": 118,
    "restart_count": 122,
    "firmware_version": 127,
    "pcr_digest": -1,
}


@pytest.mark.parametrize("field", sorted(SIGNED_FIELD_OFFSETS))
def test_flipped_bit_in_signed_quote_is_rejected(field: str) -> None:
    e = azure()
    offset = SIGNED_FIELD_OFFSETS[field] % len(e.data)
    mutated = replace(e, data=flip(e.data, offset))
    # The signature is checked before the PCR digest, so a changed pcrDigest fails there too.
    assert reason_of(lambda: verify(mutated)) is Reason.SIGNATURE_INVALID


def test_flipped_bit_in_signature_is_rejected() -> None:
    e = azure()
    sig = flip(e.aux["signature"], 100)
    assert reason_of(lambda: verify(replace(e, signature=sig))) is Reason.SIGNATURE_INVALID


def test_sha1_signatures_and_small_rsa_aks_are_refused() -> None:
    # A real RSASSA-SHA1 signature by a fake AK, and a real SHA-256 one by an RSA-1024 AK.
    small = FakeTpm(ak_key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    e = small.quote(NONCE32)
    assert reason_of(lambda: verify(e)) is Reason.SIGNATURE_INVALID
    tpm = FakeTpm.generate()
    e = tpm.quote(NONCE32)
    assert isinstance(tpm.ak_key, rsa.RSAPrivateKey)
    sha1 = tpm.ak_key.sign(e.data, padding.PKCS1v15(), hashes.SHA1())
    tpmt = ev.TPM_ALG_RSASSA.to_bytes(2, "big") + ev.TPM_ALG_SHA1.to_bytes(2, "big")
    sig = tpmt + len(sha1).to_bytes(2, "big") + sha1
    with pytest.raises(VerificationError, match="SHA-1") as info:
        verify(replace(e, signature=sig))
    assert info.value.reason is Reason.SIGNATURE_INVALID


def test_quote_signed_by_another_key_is_rejected() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    e = replace(azure(), ak_public_der=spki_der(other))
    assert reason_of(lambda: verify(e)) is Reason.SIGNATURE_INVALID


def test_truncated_and_extended_quotes_are_rejected() -> None:
    e = azure()
    assert reason_of(lambda: verify(replace(e, data=e.data[:-1]))) is Reason.EVIDENCE_TRUNCATED
    assert reason_of(lambda: verify(replace(e, data=e.data[:20]))) is Reason.EVIDENCE_TRUNCATED
    assert (
        reason_of(lambda: verify(replace(e, data=e.data + b"\x00")))
        is Reason.EVIDENCE_TRAILING_DATA
    )


def test_wrong_magic_and_type_are_unsupported_versions() -> None:
    e = azure()
    assert (
        reason_of(lambda: verify(replace(e, data=flip(e.data, 0))))
        is Reason.EVIDENCE_VERSION_UNSUPPORTED
    )
    assert (
        reason_of(lambda: verify(replace(e, data=flip(e.data, 5))))
        is Reason.EVIDENCE_VERSION_UNSUPPORTED
    )


def test_pcr_values_of_the_wrong_length_are_rejected() -> None:
    e = azure()
    for pcrs in (e.aux["pcrs"][:-1], e.aux["pcrs"] + b"\x00"):
        assert reason_of(lambda p=pcrs: verify(replace(e, pcrs=p))) is Reason.EVIDENCE_FIELD_INVALID


def test_missing_and_unknown_items_are_rejected() -> None:
    e = azure()
    assert reason_of(lambda: verify(replace(e, signature=None))) is Reason.EVIDENCE_FIELD_INVALID
    assert reason_of(lambda: verify(replace(e, pcrs=None))) is Reason.EVIDENCE_FIELD_INVALID
    assert (
        reason_of(lambda: verify(replace(e, ak_public_der=None))) is Reason.EVIDENCE_FIELD_INVALID
    )
    assert reason_of(lambda: verify(replace(e, extra=b"x"))) is Reason.EVIDENCE_FIELD_INVALID


def test_describe_is_json_and_shows_the_quote() -> None:
    d = ev.describe(azure())
    json.dumps(d)
    assert d["extra_data"] == EXPECTED["attest"]["extraData"]
    assert d["signature"] == {"alg": "rsassa", "hash": "sha256"}
    assert d["firmware_version"] == EXPECTED["attest"]["firmwareVersion"]


def test_evidence_from_files_accepts_raw_quote_and_aux_files() -> None:
    e = azure()
    again = ev.evidence_from_files(e.data, dict(e.aux))
    assert verify(again).report_data == verify(e).report_data


# --- fake TPM: AK forms, attributes, EK chains ------------------------------------------


@pytest.fixture(scope="module")
def ca() -> FakeEkCa:
    return FakeEkCa.generate()


@pytest.fixture(scope="module")
def ek_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def fake() -> FakeTpm:
    return FakeTpm.generate(ecc=True)


@pytest.fixture(scope="module")
def fake_rsa() -> FakeTpm:
    return FakeTpm.generate()


def trust_of(*certs: Any) -> TrustAnchors:
    return TrustAnchors(roots={TeeType.TPM: certs})


@pytest.mark.parametrize("which", ["fake", "fake_rsa"])
def test_fake_quote_with_certified_ek_verifies(
    which: str, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey, request: pytest.FixtureRequest
) -> None:
    tpm: FakeTpm = request.getfixturevalue(which)
    e = tpm.quote(NONCE32, ek_cert=ca.ek_cert(ek_key.public_key()), ek_chain=ca.chain_pem())
    v = verify(e, trust_of(ca.root))
    assert v.platform_id == hashlib.sha256(spki_der(ek_key.public_key())).digest()
    assert v.claims["ek_verified"] is True and v.claims["ek_crl_checked"] is False
    # quote_body's qualifiedSigner is all zeros: not a primary key of any hierarchy.
    assert v.claims["ak_hierarchy"] == "unknown"
    assert v.report_data == NONCE32
    assert v.claims["ak_name"] == ev.parse_public(tpm.ak_public()).name.hex()
    assert v.warnings == ()


def test_issuing_ca_may_itself_be_the_trusted_anchor(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    e = fake.quote(NONCE32, ek_cert=ca.ek_cert(ek_key.public_key()))
    assert verify(e, trust_of(ca.issuer)).claims["ek_ca"] == ca.issuer.subject.rfc4514_string()


@pytest.mark.parametrize(
    ("attribute", "present"),
    [
        (ev.ATTR_RESTRICTED, False),
        (ev.ATTR_FIXED_TPM, False),
        (ev.ATTR_FIXED_PARENT, False),
        (ev.ATTR_SENSITIVE_DATA_ORIGIN, False),
        (ev.ATTR_DECRYPT, True),
    ],
)
def test_ak_that_is_not_a_restricted_tpm_key_is_rejected(attribute: int, present: bool) -> None:
    tpm = FakeTpm.generate(ecc=True)
    tpm.ak_attributes = AK_ATTRIBUTES | attribute if present else AK_ATTRIBUTES & ~attribute
    assert reason_of(lambda: verify(tpm.quote(NONCE32))) is Reason.AK_ATTRIBUTES_INVALID


def test_ek_cert_from_an_untrusted_ca_is_rejected(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    other = FakeEkCa.generate()
    e = fake.quote(NONCE32, ek_cert=ca.ek_cert(ek_key.public_key()), ek_chain=ca.chain_pem())
    assert reason_of(lambda: verify(e, trust_of(other.root))) is Reason.CHAIN_UNTRUSTED_ROOT
    assert reason_of(lambda: verify(e, TrustAnchors())) is Reason.CHAIN_UNTRUSTED_ROOT


def test_ca_with_the_same_name_but_another_key_is_untrusted(
    fake: FakeTpm, ek_key: rsa.RSAPrivateKey
) -> None:
    real, impostor = FakeEkCa.generate("Same Name"), FakeEkCa.generate("Same Name")
    e = fake.quote(
        NONCE32, ek_cert=impostor.ek_cert(ek_key.public_key()), ek_chain=impostor.chain_pem()
    )
    assert reason_of(lambda: verify(e, trust_of(real.root))) is Reason.CHAIN_UNTRUSTED_ROOT


def test_missing_intermediate_is_untrusted(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    e = fake.quote(NONCE32, ek_cert=ca.ek_cert(ek_key.public_key()))
    assert reason_of(lambda: verify(e, trust_of(ca.root))) is Reason.CHAIN_UNTRUSTED_ROOT


def test_expired_and_not_yet_valid_ek_certs_are_rejected(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    expired = ca.ek_cert(ek_key.public_key(), not_after=FIXED_NOW - timedelta(days=1))
    future = ca.ek_cert(ek_key.public_key(), not_before=FIXED_NOW + timedelta(days=1))
    for cert, reason in ((expired, Reason.CERT_EXPIRED), (future, Reason.CERT_NOT_YET_VALID)):
        e = fake.quote(NONCE32, ek_cert=cert, ek_chain=ca.chain_pem())
        assert reason_of(lambda e=e: verify(e, trust_of(ca.root))) is reason


def test_revoked_ek_cert_is_rejected_through_collateral(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    cert = ca.ek_cert(ek_key.public_key(), serial=0x77)
    e = fake.quote(NONCE32, ek_cert=cert, ek_chain=ca.chain_pem())
    key = hashlib.sha256(spki_der(ca.issuer_key.public_key())).hexdigest()
    revoking = DictCollateral({("tpm-ek-crl", key): ca.crl(revoked=[0x77])})
    clean = DictCollateral({("tpm-ek-crl", key): ca.crl(revoked=[0x78])})
    stale = DictCollateral(
        {("tpm-ek-crl", key): ca.crl(revoked=[], next_update=FIXED_NOW - timedelta(days=1))}
    )
    forged = DictCollateral({("tpm-ek-crl", key): FakeEkCa.generate().crl(revoked=[])})
    trust = trust_of(ca.root)
    assert reason_of(lambda: verify(e, trust, collateral=revoking)) is Reason.CERT_REVOKED
    assert verify(e, trust, collateral=clean).claims["ek_crl_checked"] is True
    assert any(w.startswith("crl_stale") for w in verify(e, trust, collateral=stale).warnings)
    assert reason_of(lambda: verify(e, trust, collateral=forged)) is Reason.CRL_INVALID


def test_malformed_ek_cert_is_rejected(fake: FakeTpm, ca: FakeEkCa) -> None:
    e = replace(fake.quote(NONCE32), ek_cert=b"\x30\x03\x02\x01\x01")
    assert reason_of(lambda: verify(e, trust_of(ca.root))) is Reason.CERT_MALFORMED


def test_quote_without_code_pcr_is_rejected(fake: FakeTpm) -> None:
    from fedtee.attest.testing.tpm import quote_body

    body = quote_body(extra_data=NONCE32, pcr_values=[bytes(32)] * 8, pcrs=list(range(8)))
    e = Evidence(
        tee=TeeType.TPM,
        data=body,
        aux={"signature": fake.sign(body), "pcrs": bytes(256), "ak_public": fake.ak_public()},
    )
    assert reason_of(lambda: verify(e)) is Reason.EVIDENCE_FIELD_INVALID


def test_code_identity_is_the_code_pcr(fake: FakeTpm) -> None:
    tpm = FakeTpm(ak_key=fake.ak_key)
    tpm.pcr_values = list(tpm.pcr_values)
    tpm.pcr_values[CODE_PCR] = code_pcr_value(b"the code")
    v = verify(tpm.quote(NONCE32))
    assert v.code_identity == code_pcr_value(b"the code")
    assert (
        v.code_identity == hashlib.sha256(bytes(32) + hashlib.sha256(b"the code").digest()).digest()
    )


# --- counters -----------------------------------------------------------------------------


def test_check_counters_accepts_the_same_power_cycle_and_rejects_resets(fake: FakeTpm) -> None:
    first = verify(fake.quote(NONCE32, reset_count=3, restart_count=1, clock=100)).claims
    later = verify(fake.quote(NONCE32, reset_count=3, restart_count=1, clock=200)).claims
    reset = verify(fake.quote(NONCE32, reset_count=4, restart_count=0, clock=300)).claims
    restart = verify(fake.quote(NONCE32, reset_count=3, restart_count=2, clock=300)).claims
    back = verify(fake.quote(NONCE32, reset_count=3, restart_count=1, clock=50)).claims
    check_counters(first, later)
    for bad in (reset, restart, back):
        with pytest.raises(VerificationError) as info:
            check_counters(first, bad)
        assert info.value.reason is Reason.TPM_RESET


# --- credential activation ----------------------------------------------------------------


def _activate_rsa(ek: rsa.RSAPrivateKey, name: bytes, to_client: Mapping[str, bytes]) -> bytes:
    """TPM2_ActivateCredential written out from Part 1, 24, for an RSA-2048 standard EK."""
    blob, secret = to_client["credential_blob"], to_client["encrypted_secret"]
    assert int.from_bytes(secret[:2], "big") == len(secret) - 2
    algo = hashes.SHA256()
    seed = ek.decrypt(
        secret[2:], padding.OAEP(mgf=padding.MGF1(algo), algorithm=algo, label=b"IDENTITY\x00")
    )
    body = blob[2:]
    hmac_len = int.from_bytes(body[:2], "big")
    outer, enc = body[2 : 2 + hmac_len], body[2 + hmac_len :]
    hmac_key = kdfa("sha256", seed, b"INTEGRITY", b"", b"", 256)
    if not hmac.compare_digest(outer, hmac.new(hmac_key, enc + name, "sha256").digest()):
        raise ValueError("integrity check failed")
    sym = kdfa("sha256", seed, b"STORAGE", name, b"", 128)
    dec = Cipher(algorithms.AES(sym), CFB(bytes(16))).decryptor()
    plain = dec.update(enc) + dec.finalize()
    return plain[2 : 2 + int.from_bytes(plain[:2], "big")]


def test_kdfa_and_kdfe_follow_the_counter_construction() -> None:
    # One block of KDFa is HMAC(key, 1 || label 0 || u || v || bits).
    one = hmac.new(b"k", b"\x00\x00\x00\x01STORAGE\x00uv\x00\x00\x00\x80", "sha256").digest()
    assert kdfa("sha256", b"k", b"STORAGE", b"u", b"v", 128) == one[:16]
    two = hashlib.sha256(b"\x00\x00\x00\x01zIDENTITY\x00uv").digest()
    assert kdfe("sha256", b"z", b"IDENTITY", b"u", b"v", 256) == two
    assert len(kdfa("sha384", b"k", b"X", b"", b"", 512)) == 64


def test_challenge_round_trip_binds_the_ak(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    # Arrange
    cert = ca.ek_cert(ek_key.public_key())
    der = cert.public_bytes(serialization.Encoding.DER)
    request = {"ek_cert": der, "ek_chain": ca.chain_pem(), "ak_public": fake.ak_public()}
    ch = TpmChallenge()
    # Act
    prepared = ch.prepare(nonce=NONCE32, request=request, trust=trust_of(ca.root), now=FIXED_NOW)
    name = ev.parse_public(fake.ak_public()).name
    secret = _activate_rsa(ek_key, name, prepared.to_client)
    e = replace(fake.quote(NONCE32, ek_cert=cert, ek_chain=ca.chain_pem()), activated_secret=secret)
    v = verify(e, trust_of(ca.root))
    # Assert
    assert secret == prepared.kept["secret"] and prepared.kept["ak_name"] == name
    assert prepared.kept["ek_public_hash"] == v.platform_id
    ch.check(evidence=e, verified=v, kept=prepared.kept)
    # Another name cannot open the credential (the HMAC covers the AK's name).
    with pytest.raises(ValueError, match="integrity"):
        _activate_rsa(ek_key, name[:-1] + bytes([name[-1] ^ 1]), prepared.to_client)


def test_challenge_rejects_wrong_secret_other_ak_and_other_ek(
    fake: FakeTpm, fake_rsa: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    cert = ca.ek_cert(ek_key.public_key())
    request = {
        "ek_cert": cert.public_bytes(serialization.Encoding.DER),
        "ek_chain": ca.chain_pem(),
        "ak_public": fake.ak_public(),
    }
    ch = TpmChallenge()
    prepared = ch.prepare(nonce=NONCE32, request=request, trust=trust_of(ca.root), now=FIXED_NOW)
    secret = prepared.kept["secret"]
    trust = trust_of(ca.root)
    # wrong secret
    e = replace(fake.quote(NONCE32), activated_secret=bytes(32))
    with pytest.raises(VerificationError) as info:
        ch.check(evidence=e, verified=verify(e), kept=prepared.kept)
    assert info.value.reason is Reason.AK_NOT_BOUND
    # the right secret, but the quote comes from another AK
    e = replace(fake_rsa.quote(NONCE32), activated_secret=secret)
    with pytest.raises(VerificationError) as info:
        ch.check(evidence=e, verified=verify(e), kept=prepared.kept)
    assert info.value.reason is Reason.AK_NOT_BOUND
    # the right AK and secret, but another (certified) EK in the evidence
    other_ek = ec.generate_private_key(ec.SECP384R1()).public_key()
    e = replace(
        fake.quote(NONCE32, ek_cert=ca.ek_cert(other_ek), ek_chain=ca.chain_pem()),
        activated_secret=secret,
    )
    with pytest.raises(VerificationError) as info:
        ch.check(evidence=e, verified=verify(e, trust), kept=prepared.kept)
    assert info.value.reason is Reason.AK_NOT_BOUND


def test_challenge_prepare_rejects_bad_requests(
    fake: FakeTpm, ca: FakeEkCa, ek_key: rsa.RSAPrivateKey
) -> None:
    ch = TpmChallenge()
    der = ca.ek_cert(ek_key.public_key()).public_bytes(serialization.Encoding.DER)
    trust = trust_of(ca.root)

    def prep(request: dict[str, bytes], t: TrustAnchors = trust) -> Reason:
        return reason_of(lambda: ch.prepare(nonce=NONCE32, request=request, trust=t, now=FIXED_NOW))

    weak = FakeTpm(ak_key=fake.ak_key, ak_attributes=AK_ATTRIBUTES & ~ev.ATTR_RESTRICTED)
    ek_tpmt = tpmt_public_rsa(ek_key.public_key())
    ek_tpm2b = len(ek_tpmt).to_bytes(2, "big") + ek_tpmt
    assert prep({"ek_cert": der, "ek_chain": ca.chain_pem()}) is Reason.EVIDENCE_FIELD_INVALID
    assert (
        prep({"ek_cert": der, "ek_chain": ca.chain_pem(), "ak_public": weak.ak_public()})
        is Reason.AK_ATTRIBUTES_INVALID
    )
    assert (
        prep({"ek_cert": der, "ek_chain": ca.chain_pem(), "ak_public": fake.ak_public()},
             trust_of(FakeEkCa.generate().root))
        is Reason.CHAIN_UNTRUSTED_ROOT
    )  # fmt: skip
    # An EK public key alone is not trusted unless the server allows it explicitly.
    assert prep({"ek_public": ek_tpm2b, "ak_public": fake.ak_public()}) is (
        Reason.CHAIN_UNTRUSTED_ROOT
    )


def test_uncertified_ek_allowed_explicitly_needs_an_ek_shaped_key(
    fake: FakeTpm, ek_key: rsa.RSAPrivateKey
) -> None:
    ch = TpmChallenge(allow_uncertified_ek=True)
    # A signing key offered as EK is refused: an EK is a restricted decryption key.
    as_ek = len(tpmt_public_rsa(ek_key.public_key())).to_bytes(2, "big") + tpmt_public_rsa(
        ek_key.public_key()
    )
    with pytest.raises(VerificationError) as info:
        ch.prepare(
            nonce=NONCE32,
            request={"ek_public": as_ek, "ak_public": fake.ak_public()},
            trust=TrustAnchors(),
            now=FIXED_NOW,
        )
    assert info.value.reason is Reason.AK_NOT_BOUND


# --- parsers never raise anything but EvidenceFormatError ----------------------------------

PARSERS = (ev.parse_quote, ev.parse_signature, ev.parse_public, ev.parse_tpmt_public)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_raise_only_format_errors_on_random_input(data: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(EvidenceFormatError):
            parse(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 200),
)
def test_mutated_quotes_raise_only_typed_errors(edits: list[tuple[int, int]], cut: int) -> None:
    base = azure()
    data = bytearray(base.data)
    for pos, value in edits:
        data[pos % len(data)] = value
    mutated = bytes(data[: len(data) - cut % 8])
    try:
        v = verify(replace(base, data=mutated))
    except AttestationError:
        return
    # Only an unchanged quote may verify.
    assert mutated == base.data and v.report_data == base.data[44:108]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_evidence_from_files_raises_only_format_errors(data: bytes) -> None:
    for blob in (data, b"{" + data):
        with contextlib.suppress(EvidenceFormatError):
            ev.evidence_from_files(blob, {})


def test_public_name_is_namealg_and_hash_of_tpmt_public(fake: FakeTpm) -> None:
    raw = fake.ak_public()
    pub = ev.parse_public(raw)
    assert pub.name == b"\x00\x0b" + hashlib.sha256(raw[2:]).digest()
    assert "restricted" in pub.attribute_names and "sign" in pub.attribute_names


_FAKE_FOR_MUTATION = FakeTpm.generate(ecc=True)
_FAKE_EVIDENCE = _FAKE_FOR_MUTATION.quote(NONCE32)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["signature", "ak_public", "pcrs"]),
    st.integers(0, 2000),
    st.integers(1, 255),
    st.integers(0, 3),
)
def test_mutated_aux_items_raise_only_typed_errors(item: str, pos: int, xor: int, cut: int) -> None:
    blob = bytearray(_FAKE_EVIDENCE.aux[item])
    blob[pos % len(blob)] ^= xor
    mutated = replace(_FAKE_EVIDENCE, **{item: bytes(blob[: len(blob) - cut])})
    try:
        v = verify(mutated)
    except AttestationError:
        return
    # Only optional AK attribute bits (userWithAuth, noDA, ...; bytes 6..9 of the TPM2B)
    # can change without changing the key or a required attribute.
    assert item == "ak_public" and 6 <= pos % len(blob) <= 9 and cut == 0
    assert ev.parse_public(mutated.aux["ak_public"]).has(AK_ATTRIBUTES & ~ev.ATTR_USER_WITH_AUTH)
    assert v.report_data == NONCE32
