"""TPM 2.0 attester over tpm2-pytss (ESAPI), for any TCTI: ``device:/dev/tpmrm0``, ``tabrmd``,
``swtpm:host=127.0.0.1,port=2321``, ``mssim:...``.

One ESAPI context per attester, so transient objects live in one place and are flushed on
:meth:`TpmAttester.close` (a TPM without a resource manager holds only a few).

Flow (server side: :class:`fedtee.attest.verify.tpm.TpmChallenge` and ``TpmVerifier``):

1. ``TpmAttester(tcti=...)`` finds the EK with a certificate (NV 0x01C00016 ECC P-384,
   0x01C0000A ECC P-256, 0x01C00002 RSA-2048, in that order of preference; the EK itself
   from its persistent handle, else recreated from the standard template) and creates a fresh
   AK: a restricted ECDSA P-256 signing primary key in the endorsement hierarchy. Keys in the
   endorsement hierarchy get un-obfuscated resetCount / restartCount in their quotes, which
   the server's replay check (``check_counters``) needs.
2. :meth:`challenge_request` -> ``{"ek_cert", "ek_public", "ak_public"}`` (+ ``"ek_chain"``).
3. :meth:`activate` runs TPM2_ActivateCredential on the server's ``credential_blob`` and
   ``encrypted_secret`` and keeps the secret for the evidence.
4. :meth:`extend_code_pcr` resets PCR 23 and extends it with SHA-256 of the code measurement.
5. :meth:`attest` quotes the SHA-256 PCRs 0..23 with ``extraData = report_data`` (32 bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from fedtee.attest.evidence import tpm as ev
from fedtee.attest.model import Evidence, TeeType
from fedtee.attest.verify.tpm import CODE_PCR, REPORT_DATA_SIZE, code_pcr_extend_digest
from fedtee.errors import DeviceError, Reason

INSTALL_HINT = (
    "install libtss2-dev and `pip install 'fedtee[tpm]'` (tpm2-pytss); for a software TPM "
    "install swtpm and swtpm-tools (scripts/setup.sh does both when run as root)"
)

# (certificate NV index, persistent EK handle, standard template) in order of preference.
_EK_SLOTS: tuple[tuple[int, int, str], ...] = (
    (0x01C00016, 0x81010016, "ecc384"),
    (0x01C0000A, 0x81010002, "ecc256"),
    (0x01C00002, 0x81010001, "rsa2048"),
)

# The standard EK templates' authPolicy: PolicySecret(TPM_RH_ENDORSEMENT)
# (TCG EK Credential Profile 2.3, B.3.3 / B.3.4).
_EK_POLICY_SHA256 = bytes.fromhex(
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
)
_EK_POLICY_SHA384 = bytes.fromhex(
    "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419ca"
    "cb47ba09699646150f9fc000f3f80e12"
)
_NV_CHUNK = 512
_MAX_EK_CERT = 4096
_QUOTED_PCRS = tuple(range(24))
_PCR_READ_ATTEMPTS = 3


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _tpm2b(b: bytes) -> bytes:
    return _u16(len(b)) + b


def _ek_template(kind: str) -> bytes:
    """TPMT_PUBLIC of the standard EK templates L-1 (rsa2048), L-2 (ecc256), H-2 (ecc384)."""
    if kind == "rsa2048":
        return (
            _u16(ev.TPM_ALG_RSA) + _u16(ev.TPM_ALG_SHA256) + (0x000300B2).to_bytes(4, "big")
            + _tpm2b(_EK_POLICY_SHA256) + _u16(ev.TPM_ALG_AES) + _u16(128) + _u16(ev.TPM_ALG_CFB)
            + _u16(ev.TPM_ALG_NULL) + _u16(2048) + (0).to_bytes(4, "big") + _tpm2b(bytes(256))
        )  # fmt: skip
    if kind == "ecc256":
        return (
            _u16(ev.TPM_ALG_ECC) + _u16(ev.TPM_ALG_SHA256) + (0x000300B2).to_bytes(4, "big")
            + _tpm2b(_EK_POLICY_SHA256) + _u16(ev.TPM_ALG_AES) + _u16(128) + _u16(ev.TPM_ALG_CFB)
            + _u16(ev.TPM_ALG_NULL) + _u16(ev.TPM_ECC_NIST_P256) + _u16(ev.TPM_ALG_NULL)
            + _tpm2b(bytes(32)) + _tpm2b(bytes(32))
        )  # fmt: skip
    return (
        _u16(ev.TPM_ALG_ECC) + _u16(ev.TPM_ALG_SHA384) + (0x000300F2).to_bytes(4, "big")
        + _tpm2b(_EK_POLICY_SHA384) + _u16(ev.TPM_ALG_AES) + _u16(256) + _u16(ev.TPM_ALG_CFB)
        + _u16(ev.TPM_ALG_NULL) + _u16(ev.TPM_ECC_NIST_P384) + _u16(ev.TPM_ALG_NULL)
        + _tpm2b(b"") + _tpm2b(b"")
    )  # fmt: skip


def _ak_template() -> bytes:
    """A restricted ECDSA-P256-SHA256 signing key; a random unique makes each AK fresh."""
    attrs = (
        ev.ATTR_FIXED_TPM | ev.ATTR_FIXED_PARENT | ev.ATTR_SENSITIVE_DATA_ORIGIN
        | ev.ATTR_USER_WITH_AUTH | ev.ATTR_RESTRICTED | ev.ATTR_SIGN
    )  # fmt: skip
    return (
        _u16(ev.TPM_ALG_ECC) + _u16(ev.TPM_ALG_SHA256) + attrs.to_bytes(4, "big") + _tpm2b(b"")
        + _u16(ev.TPM_ALG_NULL) + _u16(ev.TPM_ALG_ECDSA) + _u16(ev.TPM_ALG_SHA256)
        + _u16(ev.TPM_ECC_NIST_P256) + _u16(ev.TPM_ALG_NULL)
        + _tpm2b(os.urandom(32)) + _tpm2b(b"")
    )  # fmt: skip


def _import_tss() -> Any:
    try:
        import tpm2_pytss
    except ImportError as exc:
        raise DeviceError(
            f"tpm2-pytss is not importable ({exc}); {INSTALL_HINT}", reason=Reason.DEVICE_ABSENT
        ) from exc
    return tpm2_pytss


def _device_path(tcti: str) -> Path | None:
    name, _, conf = tcti.partition(":")
    if name == "device":
        return Path(conf or "/dev/tpm0")
    return None


class TpmAttester:
    """Evidence from a TPM 2.0 through tpm2-pytss; see the module docstring."""

    tee = TeeType.TPM
    report_data_size = REPORT_DATA_SIZE

    def __init__(
        self,
        *,
        tcti: str,
        ek_chain: bytes = b"",
        ek: str = "auto",
        pcrs: Sequence[int] = _QUOTED_PCRS,
    ) -> None:
        """``ek``: "auto" (first certified EK in preference order), or one of "ecc384",
        "ecc256", "rsa2048"; ``ek_chain``: PEM intermediates between the EK certificate and
        the EK CA the server trusts (sent along; the TPM does not store them)."""
        if ek != "auto" and ek not in {slot[2] for slot in _EK_SLOTS}:
            raise ValueError(f"unknown EK kind {ek!r}")
        self._ek_kind = ek
        if CODE_PCR not in pcrs:
            raise ValueError(f"the quoted PCRs must include the code PCR {CODE_PCR}")
        self.tcti = tcti
        self._ek_chain = ek_chain
        self._pcrs = tuple(sorted(set(pcrs)))
        self._activated: bytes | None = None
        self._tss = _import_tss()
        path = _device_path(tcti)
        if path is not None and not path.exists():
            raise DeviceError(
                f"TPM device {path} does not exist (TCTI {tcti!r}); enable the TPM in "
                f"firmware or use a software TPM; {INSTALL_HINT}",
                reason=Reason.DEVICE_ABSENT,
            )
        self._esapi: Any = None
        self._ek_transient: Any = None
        self._ak: Any = None
        self._ek: Any = None
        try:
            self._esapi = self._tss.ESAPI(tcti)
            self._ek_cert, self._ek, self._ek_public = self._load_ek()
            self._ak, self._ak_public = self._create_ak()
        except DeviceError:
            self.close()
            raise
        except Exception as exc:  # the TSS raises TSS2_Exception, RuntimeError, OSError...
            self.close()
            raise DeviceError(
                f"TPM at TCTI {tcti!r} failed: {exc}; {INSTALL_HINT}",
                reason=Reason.DEVICE_FAILED,
            ) from exc

    # --- set-up ---------------------------------------------------------------------

    def _types(self) -> Any:
        return self._tss.types

    def _read_nv(self, index: int) -> bytes | None:
        e = self._esapi
        try:
            handle = e.tr_from_tpmpublic(index)
        except self._tss.TSS2_Exception:
            return None
        nv_public, _ = e.nv_read_public(handle)
        size = int(nv_public.nvPublic.dataSize)
        if not 0 < size <= _MAX_EK_CERT:
            raise DeviceError(
                f"EK certificate NV index 0x{index:08x} holds {size} bytes",
                reason=Reason.DEVICE_FAILED,
            )
        out = b""
        while len(out) < size:
            n = min(_NV_CHUNK, size - len(out))
            out += bytes(e.nv_read(handle, n, len(out), auth_handle=handle))
        e.tr_close(handle)
        return out

    def _load_ek(self) -> tuple[bytes, Any, bytes]:
        from cryptography import x509

        from fedtee.attest.verify.tpm import public_key_of, spki_der

        e = self._esapi
        esys_tr = self._tss.constants.ESYS_TR
        for nv_index, persistent, template in _EK_SLOTS:
            if self._ek_kind not in ("auto", template):
                continue
            cert_der = self._read_nv(nv_index)
            if cert_der is None:
                continue
            # Some TPMs pad the NV area; keep exactly the DER certificate.
            try:
                cert = x509.load_der_x509_certificate(_der_prefix(cert_der))
            except (ValueError, x509.InvalidVersion) as exc:
                raise DeviceError(
                    f"the EK certificate at NV 0x{nv_index:08x} is not a DER certificate: {exc}",
                    reason=Reason.DEVICE_FAILED,
                ) from exc
            try:
                handle = e.tr_from_tpmpublic(persistent)
            except self._tss.TSS2_Exception:
                tmpl, _ = self._types().TPM2B_PUBLIC.unmarshal(_tpm2b(_ek_template(template)))
                handle = e.create_primary(None, tmpl, esys_tr.ENDORSEMENT)[0]
                self._ek_transient = handle
            public, _, _ = e.read_public(handle)
            public_bytes = bytes(public.marshal())
            ek_key = public_key_of(ev.parse_public(public_bytes))
            if spki_der(ek_key) != spki_der(cert.public_key()):  # type: ignore[arg-type]
                raise DeviceError(
                    f"the EK at 0x{persistent:08x} is not the key in the certificate at NV "
                    f"0x{nv_index:08x}",
                    reason=Reason.DEVICE_FAILED,
                )
            return cert.public_bytes(_der_encoding()), handle, public_bytes
        raise DeviceError(
            f"no EK certificate in NV 0x01C00016 / 0x01C0000A / 0x01C00002 on {self.tcti!r}; "
            "provision the TPM (swtpm_setup --create-ek-cert)",
            reason=Reason.DEVICE_FAILED,
        )

    def _create_ak(self) -> tuple[Any, bytes]:
        tmpl, _ = self._types().TPM2B_PUBLIC.unmarshal(_tpm2b(_ak_template()))
        handle, public, _, _, _ = self._esapi.create_primary(
            None, tmpl, self._tss.constants.ESYS_TR.ENDORSEMENT
        )
        return handle, bytes(public.marshal())

    # --- the protocol -------------------------------------------------------------------

    @property
    def ak_public(self) -> bytes:
        return self._ak_public

    @property
    def ak_name(self) -> bytes:
        return ev.parse_public(self._ak_public).name

    def challenge_request(self) -> dict[str, bytes]:
        """The request aux for :meth:`fedtee.attest.verify.tpm.TpmChallenge.prepare`."""
        out = {"ek_cert": self._ek_cert, "ek_public": self._ek_public, "ak_public": self._ak_public}
        if self._ek_chain:
            out["ek_chain"] = self._ek_chain
        return out

    def activate(self, to_client: Mapping[str, bytes]) -> bytes:
        """TPM2_ActivateCredential: recover the server's secret (only this TPM can)."""
        types, const = self._types(), self._tss.constants
        try:
            blob, _ = types.TPM2B_ID_OBJECT.unmarshal(to_client["credential_blob"])
            secret, _ = types.TPM2B_ENCRYPTED_SECRET.unmarshal(to_client["encrypted_secret"])
        except Exception as exc:  # KeyError, or the TSS rejecting the bytes
            raise DeviceError(f"malformed credential from the server: {exc}",
                              reason=Reason.DEVICE_FAILED) from exc  # fmt: skip
        e = self._esapi
        ek_attrs = ev.parse_public(self._ek_public)
        session = const.ESYS_TR.PASSWORD
        if not ek_attrs.has(ev.ATTR_USER_WITH_AUTH):
            # The standard EK's policy is PolicySecret(endorsement hierarchy).
            hash_alg = (
                const.TPM2_ALG.SHA384
                if ek_attrs.name_alg == ev.TPM_ALG_SHA384
                else (const.TPM2_ALG.SHA256)
            )
            session = e.start_auth_session(
                const.ESYS_TR.NONE, const.ESYS_TR.NONE, const.TPM2_SE.POLICY, None, hash_alg
            )
            e.policy_secret(const.ESYS_TR.ENDORSEMENT, session)
        try:
            recovered = bytes(
                e.activate_credential(self._ak, self._ek, blob, secret, session2=session)
            )
        except self._tss.TSS2_Exception as exc:
            raise DeviceError(
                f"TPM2_ActivateCredential failed: {exc}", reason=Reason.DEVICE_FAILED
            ) from exc
        finally:
            if session != const.ESYS_TR.PASSWORD:
                e.flush_context(session)
        self._activated = recovered
        return recovered

    def extend_code_pcr(self, measurement: bytes) -> None:
        """Reset the code PCR and extend it once, so its value depends only on ``measurement``."""
        types, const = self._types(), self._tss.constants
        pcr = getattr(const.ESYS_TR, f"PCR{CODE_PCR}")
        # TPML_DIGEST_VALUES with one SHA-256 TPMT_HA, marshalled by hand (count, alg, digest).
        wire = (1).to_bytes(4, "big") + _u16(ev.TPM_ALG_SHA256)
        digests, _ = types.TPML_DIGEST_VALUES.unmarshal(wire + code_pcr_extend_digest(measurement))
        try:
            self._esapi.pcr_reset(pcr)
            self._esapi.pcr_extend(pcr, digests)
        except self._tss.TSS2_Exception as exc:
            raise DeviceError(f"extending PCR {CODE_PCR} failed: {exc}",
                              reason=Reason.DEVICE_FAILED) from exc  # fmt: skip

    def _read_pcrs(self) -> bytes:
        types = self._types()
        values: dict[int, bytes] = {}
        pending = list(self._pcrs)
        while pending:
            sel = types.TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, pending)))
            _, got_sel, digests = self._esapi.pcr_read(sel)
            got = [
                k * 8 + j
                for s in got_sel
                for k, b in enumerate(bytes(s.pcrSelect)[: s.sizeofSelect])
                for j in range(8)
                if b >> j & 1
            ]
            if not got:
                raise DeviceError("TPM2_PCR_Read returned no PCRs", reason=Reason.DEVICE_FAILED)
            for index, digest in zip(got, digests, strict=True):
                values[index] = bytes(digest)
            pending = [p for p in pending if p not in values]
        return b"".join(values[p] for p in self._pcrs)

    def attest(self, report_data: bytes) -> Evidence:
        """Quote the SHA-256 PCRs with ``extraData = report_data``."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(f"report_data must be {REPORT_DATA_SIZE} bytes")
        types = self._types()
        sel = types.TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, self._pcrs)))
        try:
            for _ in range(_PCR_READ_ATTEMPTS):
                quoted, signature = self._esapi.quote(self._ak, sel, report_data)
                body = bytes(quoted)
                pcrs = self._read_pcrs()
                # A PCR extended between quote and read would fail verification: retry.
                if hashlib.sha256(pcrs).digest() == ev.parse_quote(body).pcr_digest:
                    break
            else:
                raise DeviceError("PCRs kept changing while quoting", reason=Reason.DEVICE_BUSY)
        except self._tss.TSS2_Exception as exc:
            raise DeviceError(f"TPM2_Quote failed: {exc}", reason=Reason.DEVICE_FAILED) from exc
        aux = {
            "signature": bytes(signature.marshal()),
            "pcrs": pcrs,
            "ak_public": self._ak_public,
            "ek_cert": self._ek_cert,
        }
        if self._ek_chain:
            aux["ek_chain"] = self._ek_chain
        if self._activated is not None:
            aux["activated_secret"] = self._activated
        return Evidence(tee=TeeType.TPM, data=body, aux=aux)

    def close(self) -> None:
        """Flush the AK (and a recreated EK) and finalise the ESAPI context."""
        e, self._esapi = self._esapi, None
        if e is None:
            return
        for handle in (self._ak, self._ek_transient):
            if handle is not None:
                with contextlib.suppress(Exception):  # best effort on the way out
                    e.flush_context(handle)
        self._ak = self._ek_transient = None
        e.close()

    def __enter__(self) -> TpmAttester:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ex: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _der_prefix(data: bytes) -> bytes:
    """The leading DER SEQUENCE of ``data`` (NV areas may be padded past the certificate)."""
    if len(data) < 4 or data[0] != 0x30:
        raise DeviceError("EK certificate NV area does not hold DER", reason=Reason.DEVICE_FAILED)
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    n = first & 0x7F
    if not 1 <= n <= 3 or len(data) < 2 + n:
        raise DeviceError("EK certificate length is malformed", reason=Reason.DEVICE_FAILED)
    length = int.from_bytes(data[2 : 2 + n], "big")
    end = 2 + n + length
    if end > len(data):
        raise DeviceError("EK certificate is truncated in NV", reason=Reason.DEVICE_FAILED)
    return data[:end]


def _der_encoding() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER


__all__ = ["INSTALL_HINT", "TpmAttester"]
