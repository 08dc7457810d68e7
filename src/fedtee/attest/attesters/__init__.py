"""Client-side evidence collection: the only code in fedtee that touches a TEE device.

:func:`detect` says which TEE this machine offers; :func:`attester_for` builds the attester
for a TEE name (what ``fedtee client start --tee NAME`` does, ``--tee auto`` being
``attester_for("auto")``).

=========  ======================================  =========================================
``--tee``  attester                                device it needs
=========  ======================================  =========================================
tdx        ``configfs_tsm.ConfigfsTsmAttester``    /sys/kernel/config/tsm/report, tdx_guest
sev-snp    ``configfs_tsm.ConfigfsTsmAttester``    same, provider sev_guest
cca        ``configfs_tsm.ConfigfsTsmAttester``    same, provider arm_cca_guest
sgx        ``gramine.GramineAttester``             /dev/attestation (inside gramine-sgx)
tpm        ``tpm.TpmAttester``                     /dev/tpmrm0, or any TCTI (swtpm, tabrmd)
sim        ``sim.SimAttester``                     nothing: software keys, never trusted
=========  ======================================  =========================================

Everything is imported lazily: the IoT client must load no more than numpy, grpcio,
protobuf, cryptography and the device library of the one attester it uses.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtee.attest.attesters._devfs import DeviceFilesystem, OsFilesystem
from fedtee.attest.model import Attester, TeeType
from fedtee.errors import ConfigError, DeviceError, Reason

AUTO = "auto"
TPM_DEVICE = Path("dev/tpmrm0")

# What the PSA backend would need on the device; fedtee verifies PSA tokens but has no
# generic way to ask a TrustZone device for one.
_PSA_HINT = (
    "PSA tokens come from the device's TF-M / OP-TEE attestation service, which has no "
    "standard Linux interface; produce the token with the vendor's tool and use the verifier "
    "(fedtee attest verify), or run Linux guests under CCA (--tee cca) or a TPM (--tee tpm); "
    "see docs/deploy/arm-cca-trustzone.md"
)


@dataclass(frozen=True)
class Detection:
    """What :func:`detect_with_reasons` found: the TEE picked, and why each other was not."""

    tee: str
    skipped: tuple[str, ...]  # one line per TEE source not picked, with the reason


def detect_with_reasons(
    *, root: str | os.PathLike[str] = "/", filesystem: DeviceFilesystem | None = None
) -> Detection:
    """Probe every TEE source, in this order of preference:

    1. configfs-tsm (``sys/kernel/config/tsm/report`` under ``root``) with a provider fedtee
       knows -> ``"tdx"``, ``"sev-snp"`` or ``"cca"``;
    2. Gramine's ``dev/attestation/attestation_type`` saying ``dcap`` -> ``"sgx"``;
    3. a TPM resource-manager device ``dev/tpmrm0`` -> ``"tpm"``.

    The first one present is picked; the others are listed in ``skipped`` (absent, with what
    was looked for, or present but of lower preference). The simulated TEE is never picked.
    Raises :class:`DeviceError` (``DEVICE_ABSENT``) naming everything it looked for when no
    source is present. ``filesystem`` is the device filesystem seam used by tests (see
    :mod:`fedtee.attest.testing.configfs_tsm`).
    """
    from fedtee.attest.attesters import configfs_tsm, gramine

    fs: DeviceFilesystem = filesystem if filesystem is not None else OsFilesystem()
    found: list[tuple[str, str]] = []  # (tee, source) in order of preference
    absent: list[str] = []

    try:
        provider = configfs_tsm.probe_provider(root=root, filesystem=fs)
        found.append((configfs_tsm.tee_for_provider(provider).value, "configfs-tsm"))
    except DeviceError as exc:
        absent.append(f"configfs-tsm: {exc.message}")

    try:
        kind = gramine.attestation_type(root=root, filesystem=fs)
    except DeviceError as exc:
        absent.append(f"gramine: {exc.message}")
    else:
        if kind == "dcap":
            found.append((TeeType.SGX.value, "gramine"))
        else:
            absent.append(
                f"gramine: {Path(root) / gramine.ATTESTATION_DIR / 'attestation_type'} says "
                f'{kind!r}, not "dcap" (set sgx.remote_attestation = "dcap" in the manifest)'
            )

    tpm = Path(root) / TPM_DEVICE
    if fs.exists(tpm):
        found.append((TeeType.TPM.value, f"tpm ({tpm})"))
    else:
        absent.append(
            f"tpm: {tpm} not found (enable the TPM in firmware and load tpm_tis / tpm_crb, "
            'or use a software TPM: type = "tpm" with a tcti in client.toml\'s [tee] table)'
        )

    if not found:
        raise DeviceError(
            "no TEE found on this machine. Looked for: "
            + "; ".join(absent)
            + ". For development without hardware, use --tee sim.",
            reason=Reason.DEVICE_ABSENT,
        )
    (tee, source), *others = found
    skipped = [f"{src}: also present ({t}), but {source} is preferred" for t, src in others]
    skipped += absent
    skipped.append("sim: never picked automatically (development only: --tee sim)")
    return Detection(tee=tee, skipped=tuple(skipped))


def detect(
    *, root: str | os.PathLike[str] = "/", filesystem: DeviceFilesystem | None = None
) -> str:
    """The TEE name this machine offers (see :func:`detect_with_reasons` for the order).

    Raises :class:`DeviceError` (``DEVICE_ABSENT``) naming everything it looked for.
    """
    return detect_with_reasons(root=root, filesystem=filesystem).tee


def _configfs(tee: TeeType) -> Callable[..., Attester]:
    def build(**options: Any) -> Attester:
        from fedtee.attest.attesters.configfs_tsm import ConfigfsTsmAttester

        return ConfigfsTsmAttester(expect_tee=tee, **options)

    return build


def _gramine(**options: Any) -> Attester:
    from fedtee.attest.attesters.gramine import GramineAttester

    return GramineAttester(**options)


def _tpm(**options: Any) -> Attester:
    # The TPM attester reaches its device through a TCTI, not a filesystem root; ``root``
    # only decides the default device path so ``--tee auto`` uses what detect() found.
    root = options.pop("root", "/")
    options.pop("filesystem", None)
    options.setdefault("tcti", f"device:{Path(root) / TPM_DEVICE}")
    module = importlib.import_module("fedtee.attest.attesters.tpm")
    attester: Attester = module.TpmAttester(**options)
    return attester


def _sim(**options: Any) -> Attester:
    module = importlib.import_module("fedtee.attest.attesters.sim")
    attester: Attester = module.SimAttester(**options)
    return attester


def _psa(**options: Any) -> Attester:
    raise DeviceError(f"no PSA attester on this platform: {_PSA_HINT}", reason=Reason.DEVICE_ABSENT)


_BUILDERS: dict[TeeType, Callable[..., Attester]] = {
    TeeType.TDX: _configfs(TeeType.TDX),
    TeeType.SEV_SNP: _configfs(TeeType.SEV_SNP),
    TeeType.CCA: _configfs(TeeType.CCA),
    TeeType.SGX: _gramine,
    TeeType.TPM: _tpm,
    TeeType.SIM: _sim,
    TeeType.PSA: _psa,
}


def attester_for(tee: str, **options: Any) -> Attester:
    """Build the attester for ``tee`` (a :class:`TeeType` value, or ``"auto"``).

    ``options`` go to the attester's constructor: ``root`` and ``filesystem`` for the
    device attesters, ``privlevel`` for SEV-SNP, ``tcti`` / ``ek_chain`` for the TPM,
    ``platform`` / ``measurement`` for sim. With ``"auto"``, :func:`detect` picks the TEE
    (using ``root`` and ``filesystem`` when given). A device that is absent raises
    :class:`DeviceError` naming its path and what to install.
    """
    if tee == AUTO:
        tee = detect(root=options.get("root", "/"), filesystem=options.get("filesystem"))
    try:
        kind = TeeType(tee)
    except ValueError:
        known = ", ".join([AUTO, *(t.value for t in TeeType)])
        raise ConfigError(f"unknown TEE {tee!r}; choose one of: {known}") from None
    return _BUILDERS[kind](**options)


__all__ = ["AUTO", "TPM_DEVICE", "Detection", "attester_for", "detect", "detect_with_reasons"]
