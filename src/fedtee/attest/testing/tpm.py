"""Test helpers for TPM 2.0: a provisioned swtpm on loopback, and fake AKs and quotes.

:class:`Swtpm` provisions a software TPM in its own directory with its own local CA (never the
system-wide ``/var/lib/swtpm-localca``): ``swtpm_setup --tpm2 --create-ek-cert
--create-platform-cert --lock-nvram`` writes an RSA-2048 EK (persistent 0x81010001, certificate
in NV 0x01C00002) and an ECC P-384 EK (0x81010016, NV 0x01C00016), certified by a fresh
``swtpm-localca`` issuer under a fresh root. It then serves the TPM on a free loopback port
(``swtpm socket --server type=tcp --ctrl type=tcp --flags startup-clear``).

:class:`FakeTpm` makes structurally perfect quotes with a software key, for negative tests of
the verifier (it is not a TPM: its AK attributes are claimed, not enforced).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from fedtee.attest.evidence import tpm as ev
from fedtee.attest.model import Evidence, TeeType
from fedtee.errors import DeviceError, Reason

SWTPM_TOOLS = ("swtpm", "swtpm_setup", "swtpm_localca")
_START_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3


def swtpm_missing() -> str | None:
    """Why a real swtpm cannot run here (None when it can)."""
    absent = [t for t in SWTPM_TOOLS if shutil.which(t) is None]
    if absent:
        return (
            f"{', '.join(absent)} not found: install the Debian packages swtpm and swtpm-tools "
            "(scripts/setup.sh does so when run as root)"
        )
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        return (
            f"tpm2-pytss is not importable ({exc}): install libtss2-dev and "
            "`pip install 'fedtee[tpm]'`"
        )
    return None


def _free_port_pair() -> int:
    """A port P such that P and P+1 were free on loopback a moment ago."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise DeviceError("no free loopback port pair for swtpm", reason=Reason.DEVICE_BUSY)


@dataclass
class Swtpm:
    """A provisioned swtpm serving on loopback; use as a context manager."""

    directory: Path
    ca_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_dir: bool = field(default=False, repr=False)

    @classmethod
    def provision(cls, directory: Path | None = None, *, ca_dir: Path | None = None) -> Swtpm:
        """Provision a fresh TPM state (and a fresh local CA unless ``ca_dir`` is shared).

        Pass the same ``ca_dir`` to several TPMs to have one EK CA certify them all."""
        why = swtpm_missing()
        if why is not None:
            raise DeviceError(why, reason=Reason.DEVICE_ABSENT)
        own = directory is None
        root = Path(tempfile.mkdtemp(prefix="fedtee-swtpm-")) if directory is None else directory
        state = root / "state"
        ca = ca_dir if ca_dir is not None else root / "ca"
        state.mkdir(parents=True, exist_ok=True)
        ca.mkdir(parents=True, exist_ok=True)
        (ca / "localca.conf").write_text(
            f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
            f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
        )
        (ca / "localca.options").write_text(
            "--platform-manufacturer fedtee\n--platform-version 2.1\n--platform-model swtpm\n"
        )
        (root / "swtpm_setup.conf").write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {ca}/localca.conf\n"
            f"create_certs_tool_options = {ca}/localca.options\n"
            "active_pcr_banks = sha256\n"
        )
        cmd = [
            "swtpm_setup", "--tpm2", "--tpmstate", str(state), "--create-ek-cert",
            "--create-platform-cert", "--lock-nvram", "--overwrite",
            "--config", str(root / "swtpm_setup.conf"), "--logfile", str(root / "setup.log"),
        ]  # fmt: skip
        env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg")}
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=60, check=False)
        if done.returncode != 0:
            log = (root / "setup.log").read_text(errors="replace")[-2000:]
            if own:
                shutil.rmtree(root, ignore_errors=True)
            raise DeviceError(
                f"swtpm_setup failed ({done.returncode}): {log}", reason=Reason.DEVICE_FAILED
            )
        return cls(directory=root, ca_dir=ca, _own_dir=own)

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> Swtpm:
        """Serve the TPM on a free loopback port pair; retried, since another process may
        take the port between the check and swtpm's bind."""
        for attempt in range(_START_ATTEMPTS):
            try:
                return self._start_once()
            except DeviceError:
                if attempt == _START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> Swtpm:
        self.port = _free_port_pair()
        cmd = [
            "swtpm", "socket", "--tpm2",
            "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
            "--tpmstate", f"dir={self.directory / 'state'}",
            "--flags", "not-need-init,startup-clear",
            "--log", f"file={self.directory / 'swtpm.log'}",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.process = proc
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.process = None
                raise DeviceError(
                    f"swtpm exited with {proc.returncode} on port {self.port}",
                    reason=Reason.DEVICE_FAILED,
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise DeviceError(f"swtpm did not listen on port {self.port}", reason=Reason.DEVICE_FAILED)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        """Stop and start the TPM (a power cycle: TPM2_Startup(CLEAR) bumps resetCount)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Swtpm:
        return self.start() if self.process is None else self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the local EK CA ---------------------------------------------------------

    def ca_root(self) -> x509.Certificate:
        """swtpm's local root CA: the anchor a server trusts for these TPMs' EKs."""
        return local_ca_root(self.ca_dir)

    def ca_issuer_pem(self) -> bytes:
        """The intermediate that signs EK certificates (aux ``ek_chain``)."""
        return (self.ca_dir / "issuercert.pem").read_bytes()


def local_ca_root(ca_dir: Path) -> x509.Certificate:
    """The root certificate of a swtpm local CA directory (the EK CA a server trusts)."""
    return x509.load_pem_x509_certificate((ca_dir / "swtpm-localca-rootca-cert.pem").read_bytes())


@contextlib.contextmanager
def running_swtpm(*, ca_dir: Path | None = None) -> Iterator[Swtpm]:
    tpm = Swtpm.provision(ca_dir=ca_dir)
    try:
        yield tpm.start()
    finally:
        tpm.close()


# --- fakes for negative tests ----------------------------------------------------------

AK_ATTRIBUTES = (
    ev.ATTR_FIXED_TPM
    | ev.ATTR_FIXED_PARENT
    | ev.ATTR_SENSITIVE_DATA_ORIGIN
    | ev.ATTR_USER_WITH_AUTH
    | ev.ATTR_RESTRICTED
    | ev.ATTR_SIGN
)


def _tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def tpmt_public_rsa(
    key: rsa.RSAPublicKey, *, attributes: int = AK_ATTRIBUTES, sign_scheme: int = ev.TPM_ALG_RSASSA
) -> bytes:
    n = key.public_numbers().n.to_bytes(key.key_size // 8, "big")
    scheme = sign_scheme.to_bytes(2, "big") + ev.TPM_ALG_SHA256.to_bytes(2, "big")
    return (
        ev.TPM_ALG_RSA.to_bytes(2, "big")
        + ev.TPM_ALG_SHA256.to_bytes(2, "big")
        + attributes.to_bytes(4, "big")
        + _tpm2b(b"")
        + ev.TPM_ALG_NULL.to_bytes(2, "big")
        + scheme
        + key.key_size.to_bytes(2, "big")
        + (0).to_bytes(4, "big")
        + _tpm2b(n)
    )


def tpmt_public_ecc(key: ec.EllipticCurvePublicKey, *, attributes: int = AK_ATTRIBUTES) -> bytes:
    curve, size = {
        "secp256r1": (ev.TPM_ECC_NIST_P256, 32),
        "secp384r1": (ev.TPM_ECC_NIST_P384, 48),
    }[key.curve.name]
    nums = key.public_numbers()
    hash_alg = ev.TPM_ALG_SHA256 if size == 32 else ev.TPM_ALG_SHA384
    return (
        ev.TPM_ALG_ECC.to_bytes(2, "big")
        + ev.TPM_ALG_SHA256.to_bytes(2, "big")
        + attributes.to_bytes(4, "big")
        + _tpm2b(b"")
        + ev.TPM_ALG_NULL.to_bytes(2, "big")
        + ev.TPM_ALG_ECDSA.to_bytes(2, "big")
        + hash_alg.to_bytes(2, "big")
        + curve.to_bytes(2, "big")
        + ev.TPM_ALG_NULL.to_bytes(2, "big")
        + _tpm2b(nums.x.to_bytes(size, "big"))
        + _tpm2b(nums.y.to_bytes(size, "big"))
    )


def quote_body(
    *,
    extra_data: bytes,
    pcr_values: Sequence[bytes],
    pcrs: Sequence[int],
    clock: int = 1000,
    reset_count: int = 1,
    restart_count: int = 0,
    qualified_signer: bytes = b"\x00\x0b" + bytes(32),
    magic: int = ev.TPM_GENERATED_VALUE,
    st: int = ev.TPM_ST_ATTEST_QUOTE,
) -> bytes:
    """A TPMS_ATTEST quote over one SHA-256 bank."""
    bitmap = bytearray(3)
    for p in pcrs:
        bitmap[p // 8] |= 1 << (p % 8)
    digest = hashlib.sha256(b"".join(pcr_values)).digest()
    return (
        magic.to_bytes(4, "big")
        + st.to_bytes(2, "big")
        + _tpm2b(qualified_signer)
        + _tpm2b(extra_data)
        + clock.to_bytes(8, "big")
        + reset_count.to_bytes(4, "big")
        + restart_count.to_bytes(4, "big")
        + b"\x01"
        + (0x2019102300163636).to_bytes(8, "big")
        + (1).to_bytes(4, "big")
        + ev.TPM_ALG_SHA256.to_bytes(2, "big")
        + b"\x03"
        + bytes(bitmap)
        + _tpm2b(digest)
    )


@dataclass
class FakeEkCa:
    """A vendor-style EK CA: root -> intermediate -> EK certificate, with fixed times."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuer_key: ec.EllipticCurvePrivateKey
    issuer: x509.Certificate

    NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
    NOT_AFTER = datetime(2034, 1, 1, tzinfo=UTC)

    @classmethod
    def generate(cls, name: str = "Fake TPM Manufacturer") -> FakeEkCa:
        root_key = ec.generate_private_key(ec.SECP384R1())
        issuer_key = ec.generate_private_key(ec.SECP384R1())
        root = _cert(
            subject=f"{name} Root", issuer=f"{name} Root", key=root_key.public_key(),
            signer=root_key, ca=True,
        )  # fmt: skip
        issuer = _cert(
            subject=f"{name} EK CA", issuer=f"{name} Root", key=issuer_key.public_key(),
            signer=root_key, ca=True,
        )  # fmt: skip
        return cls(root_key=root_key, root=root, issuer_key=issuer_key, issuer=issuer)

    def ek_cert(
        self,
        ek: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        serial: int = 0x1234,
    ) -> x509.Certificate:
        return _cert(
            subject="",
            issuer=self.issuer.subject.rfc4514_string().split("=", 1)[1],
            key=ek,
            signer=self.issuer_key,
            ca=False,
            not_before=not_before or self.NOT_BEFORE,
            not_after=not_after or self.NOT_AFTER,
            serial=serial,
        )

    def chain_pem(self) -> bytes:
        return self.issuer.public_bytes(serialization.Encoding.PEM)

    def crl(self, *, revoked: Sequence[int], next_update: datetime | None = None) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuer.subject)
            .last_update(self.NOT_BEFORE)
            .next_update(next_update or self.NOT_AFTER)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.NOT_BEFORE)
                .build()
            )
        crl = builder.sign(self.issuer_key, hashes.SHA384())
        return crl.public_bytes(serialization.Encoding.DER)


def _cert(
    *,
    subject: str,
    issuer: str,
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    not_before: datetime = FakeEkCa.NOT_BEFORE,
    not_after: datetime = FakeEkCa.NOT_AFTER,
    serial: int = 1,
) -> x509.Certificate:
    # EK certificates have an empty subject (TCG EK Credential Profile); CAs have a CN.
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)] if subject else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subj)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA384())


@dataclass
class FakeTpm:
    """Signs quotes with a software AK (RSA-2048 or ECC P-256); only for negative tests."""

    ak_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ak_attributes: int = AK_ATTRIBUTES
    pcr_values: list[bytes] = field(default_factory=lambda: [bytes(32)] * 24)
    ek_key: rsa.RSAPrivateKey | None = None

    @classmethod
    def generate(cls, *, ecc: bool = False) -> FakeTpm:
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if ecc
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        return cls(ak_key=key)

    def ak_public(self) -> bytes:
        pub = self.ak_key.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            return _tpm2b(tpmt_public_rsa(pub, attributes=self.ak_attributes))
        return _tpm2b(tpmt_public_ecc(pub, attributes=self.ak_attributes))

    def sign(self, body: bytes) -> bytes:
        key = self.ak_key
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
            return (
                ev.TPM_ALG_RSASSA.to_bytes(2, "big")
                + ev.TPM_ALG_SHA256.to_bytes(2, "big")
                + _tpm2b(sig)
            )
        r, s = utils.decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
        return (
            ev.TPM_ALG_ECDSA.to_bytes(2, "big")
            + ev.TPM_ALG_SHA256.to_bytes(2, "big")
            + _tpm2b(r.to_bytes(32, "big"))
            + _tpm2b(s.to_bytes(32, "big"))
        )

    def quote(
        self,
        extra_data: bytes,
        *,
        ek_cert: x509.Certificate | None = None,
        ek_chain: bytes | None = None,
        reset_count: int = 1,
        restart_count: int = 0,
        clock: int = 1000,
    ) -> Evidence:
        pcrs = list(range(24))
        body = quote_body(
            extra_data=extra_data,
            pcr_values=self.pcr_values,
            pcrs=pcrs,
            reset_count=reset_count,
            restart_count=restart_count,
            clock=clock,
        )
        aux = {
            "signature": self.sign(body),
            "pcrs": b"".join(self.pcr_values),
            "ak_public": self.ak_public(),
        }
        if ek_cert is not None:
            aux["ek_cert"] = ek_cert.public_bytes(serialization.Encoding.DER)
        if ek_chain is not None:
            aux["ek_chain"] = ek_chain
        return Evidence(tee=TeeType.TPM, data=body, aux=aux)


FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)
ONE_DAY = timedelta(days=1)

__all__ = [
    "AK_ATTRIBUTES",
    "FIXED_NOW",
    "FakeEkCa",
    "FakeTpm",
    "Swtpm",
    "quote_body",
    "local_ca_root",
    "running_swtpm",
    "swtpm_missing",
    "tpmt_public_ecc",
    "tpmt_public_rsa",
]
