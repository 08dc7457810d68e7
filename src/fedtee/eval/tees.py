"""What each TEE type guarantees to a federation, as data the evaluation report renders.

Everything here is a documented property of the technology or a figure from the literature,
each with a citation key into :data:`CITATIONS`. Figures this project measures itself do not
live here: ``fedtee eval report`` takes them from the benchmark scripts and joins the two.

The fields that the report's recommendation uses (``device_classes``, ``runtime_isolation``,
``workload_memory_gib``, ``confidential_gpu``, ``unmodified_app``, ``maturity``) are kept
deliberately coarse, so that a reader can check each against its citation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True)
class Citation:
    key: str
    text: str
    url: str


@dataclass(frozen=True)
class LiteratureFigure:
    figure: str
    citation: str  # key into CITATIONS


@dataclass(frozen=True)
class TeeProfile:
    tee: str  # the TeeType value fedtee uses
    name: str
    isolation: str  # what is isolated from the host, if anything
    proves_code: str
    proves_platform: str
    proves_config: str
    identity: str  # what identity a client gets from it
    veracity: str  # what it says about an update
    memory_limits: str
    # Largest memory the protected workload can use, in GiB, on the largest current part;
    # None where the training process does not run inside the TEE at all.
    workload_memory_gib: float | None
    # Device classes where the technology ships: "mcu", "gateway", "server", "gpu-server".
    device_classes: frozenset[str]
    runtime_isolation: bool  # training code and data protected from the host OS at run time
    hardware_root: bool
    confidential_gpu: bool  # can extend its boundary to a GPU today
    unmodified_app: bool  # runs the fedtee client without porting (no manifest/SDK work)
    maturity: int  # 1 emerging, 2 deployed with caveats, 3 widely deployed
    maturity_text: str
    tooling: str
    fedtee_support: str  # what fedtee itself verifies and attests, and how that is tested
    risks: tuple[tuple[str, str], ...]  # (residual risk, citation key or "")
    literature: tuple[LiteratureFigure, ...] = field(default=())


CITATIONS: Final[dict[str, Citation]] = {
    c.key: c
    for c in (
        Citation(
            "intel-epc",
            "Intel, 'How Intel Xeon Processors Enable Up to 1 TB Enclave Page Cache (EPC)', "
            "support article 000059614, reviewed 2026-06-01",
            "https://www.intel.com/content/www/us/en/support/articles/000059614.html",
        ),
        Citation(
            "intel-sgx-forum-prm",
            "Intel SGX forum, 'Size limitation for EPC in SGX' (PRMRR at most 128 MB on "
            "client platforms; about 90 MB usable by enclaves)",
            "https://software.intel.com/en-us/forums/intel-software-guard-extensions-intel-sgx/topic/737218",
        ),
        Citation(
            "intel-sgx-epc-guide",
            "Intel SGX Developer Guide, 'EPC size' (EPC paging is supported but expensive)",
            "https://software.intel.com/content/www/us/en/develop/documentation/sgx-developer-guide/top/programming-for-performance/epc-size.html",
        ),
        Citation(
            "coppolino-2024",
            "L. Coppolino, S. D'Antonio, D. Iasio, G. Mazzeo, L. Romano, 'An Experimental "
            "Evaluation of TEE technology Evolution: Benchmarking Transparent Approaches based "
            "on SGX, SEV, and TDX', arXiv:2408.00443, 2024",
            "https://arxiv.org/abs/2408.00443",
        ),
        Citation(
            "zhu-2024-h100",
            "J. Zhu, H. Yin, P. Deng, A. Almeida, S. Zhou, 'Confidential Computing on NVIDIA "
            "Hopper GPUs: A Performance Benchmark Study', arXiv:2409.03992, 2024",
            "https://arxiv.org/abs/2409.03992",
        ),
        Citation(
            "ibarra-2025-ccgpu",
            "A. Martinez Ibarra, J. J. Stephen, A. Gonzalez Vidal, K. R. Jayaram, A. F. "
            "Skarmeta Gomez, 'Performance of Confidential Computing GPUs', arXiv:2505.16501, 2025",
            "https://arxiv.org/abs/2505.16501",
        ),
        Citation(
            "tinfoil-2026",
            "T. Verma, J. Drean, 'How does NVIDIA Confidential Computing impact inference and "
            "training performance?', Tinfoil blog, 2026-06-23",
            "https://tinfoil.sh/blog/2026-06-23-confidential-computing-overhead",
        ),
        Citation(
            "redhat-2025-cvm",
            "Red Hat Developer, 'Confidential virtual machines versus VMs: latency analysis', "
            "2025-07-28",
            "https://developers.redhat.com/articles/2025/07/28/confidential-virtual-machines-versus-vms-latency-analysis",
        ),
        Citation(
            "foreshadow",
            "J. Van Bulck et al., 'Foreshadow: Extracting the Keys to the Intel SGX Kingdom "
            "with Transient Out-of-Order Execution', USENIX Security 2018",
            "https://www.usenix.org/conference/usenixsecurity18/presentation/bulck",
        ),
        Citation(
            "aepic",
            "P. Borrello et al., 'AEPIC Leak: Architecturally Leaking Uninitialized Data from "
            "the Microarchitecture', USENIX Security 2022",
            "https://www.usenix.org/conference/usenixsecurity22/presentation/borrello",
        ),
        Citation(
            "plundervolt",
            "K. Murdock et al., 'Plundervolt: Software-based Fault Injection Attacks against "
            "Intel SGX', IEEE S&P 2020",
            "https://plundervolt.com/",
        ),
        Citation(
            "cachewarp",
            "R. Zhang et al., 'CacheWarp: Software-based Fault Injection using Selective State "
            "Reset', USENIX Security 2024 (AMD SEV-ES/SNP)",
            "https://cachewarpattack.com/",
        ),
        Citation(
            "heckler",
            "B. Schlueter et al., 'Heckler: Breaking Confidential VMs with Malicious "
            "Interrupts', USENIX Security 2024 (AMD SEV-SNP and Intel TDX)",
            "https://ahoi-attacks.github.io/heckler/",
        ),
        Citation(
            "tpm-fail",
            "D. Moghimi, B. Sunar, T. Eisenbarth, N. Heninger, 'TPM-FAIL: TPM meets Timing "
            "and Lattice Attacks', USENIX Security 2020",
            "https://tpm.fail/",
        ),
        Citation(
            "faultpm",
            "H. Jacob, C. Werling, R. Buhren, J.-P. Seifert, 'faulTPM: Exposing AMD fTPMs' "
            "Deepest Secrets', IEEE EuroS&P 2023",
            "https://arxiv.org/abs/2304.14717",
        ),
        Citation(
            "parno-cuckoo",
            "B. Parno, 'Bootstrapping Trust in a Trusted Platform', USENIX HotSec 2008 "
            "(the cuckoo / relay attack on attestation)",
            "https://www.usenix.org/legacy/event/hotsec08/tech/full_papers/parno/parno.pdf",
        ),
        Citation(
            "clkscrew",
            "A. Tang, S. Sethumadhavan, S. Stolfo, 'CLKSCREW: Exposing the Perils of "
            "Security-Oblivious Energy Management', USENIX Security 2017 (TrustZone)",
            "https://www.usenix.org/conference/usenixsecurity17/technical-sessions/presentation/tang",
        ),
        Citation(
            "psa-token",
            "H. Tschofenig et al., 'Arm's Platform Security Architecture (PSA) Attestation "
            "Token', RFC 9783, 2025",
            "https://www.rfc-editor.org/rfc/rfc9783",
        ),
        Citation(
            "arm-cca",
            "Arm, 'Realm Management Monitor specification' (DEN0137) and 'Arm CCA Security "
            "Model' (DEN0096)",
            "https://developer.arm.com/documentation/den0137/latest",
        ),
        Citation(
            "tcg-tpm2",
            "Trusted Computing Group, 'TPM 2.0 Library Specification', Part 1 Architecture "
            "(quotes, PCRs, clock and reset counters, credential activation)",
            "https://trustedcomputinggroup.org/resource/tpm-library-specification/",
        ),
        Citation(
            "amd-snp-abi",
            "AMD, 'SEV Secure Nested Paging Firmware ABI Specification' (56860) and 'AMD "
            "SEV-SNP: Strengthening VM Isolation with Integrity Protection and More' (2020)",
            "https://www.amd.com/en/developer/sev.html",
        ),
        Citation(
            "intel-tdx",
            "Intel, 'Intel Trust Domain Extensions (Intel TDX) Module Base Architecture "
            "Specification'",
            "https://www.intel.com/content/www/us/en/developer/tools/trust-domain-extensions/documentation.html",
        ),
    )
}


PROFILES: Final[tuple[TeeProfile, ...]] = (
    TeeProfile(
        tee="sgx",
        name="Intel SGX (process enclave, with Gramine)",
        isolation="one process's enclave memory, from the OS, hypervisor and other processes",
        proves_code="MRENCLAVE: every page loaded into the enclave (with Gramine: the runtime, "
        "Python, the fedtee client and every trusted file in the manifest)",
        proves_platform="a genuine SGX CPU (PCK certificate to the Intel SGX Root CA) and its "
        "TCB level (CPU SVNs, microcode, PCE) against Intel's TCB info",
        proves_config="enclave attributes (DEBUG, mode64), MRSIGNER, ISV product id and SVN",
        identity="the enclave-generated key bound in report_data, on a named platform "
        "(PCK certificate: FMSPC and platform instance)",
        veracity="the update was computed by exactly the measured enclave code, whose memory "
        "the host cannot read or change while it runs",
        memory_limits="EPC of 128 MB (about 90 MB usable) on client and pre-Ice Lake parts; "
        "up to 512 GB per socket on 3rd-generation Xeon Scalable, 128 or 512 GB by SKU on "
        "4th generation; EPC paging beyond it is expensive",
        workload_memory_gib=512.0,
        device_classes=frozenset({"server"}),
        runtime_isolation=True,
        hardware_root=True,
        confidential_gpu=False,
        unmodified_app=False,
        maturity=3,
        maturity_text="in production since 2015; removed from Intel client CPUs since the "
        "11th generation, so today a server technology",
        tooling="Gramine, Occlum, SCONE; Intel DCAP and PCCS for collateral",
        fedtee_support="verifier: DCAP quote v3 with PCK chain, CRLs, TCB info and QE identity "
        "(real Occlum sample verified offline); attester: Gramine /dev/attestation, tested "
        "against a fake device tree; manifest template in deploy/gramine",
        risks=(
            ("transient-execution and microarchitectural leaks of enclave secrets", "foreshadow"),
            ("architectural data leaks (AEPIC Leak) on 10th-12th gen cores", "aepic"),
            ("software-based fault injection through undervolting", "plundervolt"),
            (
                "TCB recovery depends on platforms applying microcode and Intel updating TCB "
                "info; until then a policy must accept OutOfDate or lose clients",
                "",
            ),
            ("a debug enclave is measurable but not protected: the policy must forbid DEBUG", ""),
            ("page-fault and controlled-channel side channels: the OS sees page accesses", ""),
        ),
        literature=(
            LiteratureFigure(
                "EPC: 128 MB (about 90 MB usable) on client parts; up to 512 GB per socket "
                "(1 TB per two-socket platform) on 3rd-generation Xeon Scalable",
                "intel-epc",
            ),
            LiteratureFigure(
                "process enclaves (Gramine-SGX, Occlum) generally slower than VM-based TEEs "
                "(SEV, TDX) for memory- and I/O-intensive legacy workloads; some CPU-bound "
                "workloads favour Gramine-SGX over TDX",
                "coppolino-2024",
            ),
        ),
    ),
    TeeProfile(
        tee="tdx",
        name="Intel TDX (confidential VM)",
        isolation="a whole virtual machine (trust domain), from the hypervisor and host",
        proves_code="MRTD (initial TD memory: the virtual firmware) and RTMR0-3 (boot chain, "
        "kernel, command line, and what the guest extends at run time)",
        proves_platform="a genuine TDX CPU and TDX module (MRSEAM, TEE TCB SVN) through the "
        "same DCAP chain as SGX",
        proves_config="TD attributes (DEBUG), XFAM, MRCONFIGID, MROWNER",
        identity="the key bound in report_data, inside a TD on a named platform",
        veracity="the update was computed in a VM that booted the measured stack; the host "
        "cannot read or change its memory; code loaded after boot is covered only if "
        "extended into an RTMR",
        memory_limits="no TEE-specific limit: the TD's memory is ordinary VM memory, encrypted",
        workload_memory_gib=4096.0,
        device_classes=frozenset({"server", "gpu-server"}),
        runtime_isolation=True,
        hardware_root=True,
        confidential_gpu=True,
        unmodified_app=True,
        maturity=2,
        maturity_text="on 4th-generation Xeon Scalable and later, in the major clouds; "
        "reference values for a given firmware and kernel are still hard to compute",
        tooling="Linux configfs-tsm (6.7+), Intel DCAP, cloud TD images",
        fedtee_support="verifier: DCAP quote v4/v5 (real samples: the v4 sample is rejected "
        "for having no matching TCB level, the v5 collateral for its expired signing "
        "certificate, as their READMEs state); attester: configfs-tsm, tested on a fake tree "
        "and decoded real outblobs",
        risks=(
            ("malicious interrupt injection by the hypervisor", "heckler"),
            (
                "the measured boot covers only what the guest extends: an unmeasured container "
                "or script in the TD is not in the evidence",
                "",
            ),
            ("a debug TD is not protected: the policy must forbid DEBUG", ""),
            ("TCB recovery as for SGX (same collateral)", ""),
        ),
        literature=(
            LiteratureFigure(
                "with Intel TDX and NVIDIA CC mode on Hopper, LLM inference overhead below 7% "
                "for most typical queries, nearly zero for larger models; the cost is in "
                "encrypted CPU-GPU transfers",
                "zhu-2024-h100",
            ),
            LiteratureFigure(
                "training throughput 18-32% lower in CC mode (Intel TDX with NVIDIA "
                "Blackwell, NeMo)",
                "tinfoil-2026",
            ),
            LiteratureFigure(
                "TDX often more efficient than SEV for memory and I/O workloads",
                "coppolino-2024",
            ),
        ),
    ),
    TeeProfile(
        tee="sev-snp",
        name="AMD SEV-SNP (confidential VM)",
        isolation="a whole virtual machine, with integrity protection through the RMP",
        proves_code="the launch measurement (initial guest memory: OVMF, and with measured "
        "direct boot the kernel, initrd and command line hashes)",
        proves_platform="a genuine AMD EPYC chip (VCEK or VLEK to ASK to ARK for Milan, "
        "Genoa, Turin) and its reported TCB (bootloader, TEE, SNP firmware, microcode)",
        proves_config="guest policy (debug, migration agent, SMT), VMPL, host_data, family "
        "and image ids",
        identity="the key bound in report_data, on a chip named by its chip id",
        veracity="the update was computed in a VM that launched the measured image; the host "
        "cannot read or remap its memory",
        memory_limits="no TEE-specific limit: guest memory is ordinary VM memory, encrypted",
        workload_memory_gib=4096.0,
        device_classes=frozenset({"server", "gpu-server"}),
        runtime_isolation=True,
        hardware_root=True,
        confidential_gpu=True,
        unmodified_app=True,
        maturity=2,
        maturity_text="on EPYC 7003 (Milan) and later, in the major clouds; tooling "
        "(sev-snp-measure) computes reference values offline",
        tooling="Linux configfs-tsm or /dev/sev-guest, sev-snp-measure, AMD KDS for VCEKs",
        fedtee_support="verifier: report v2+ with VCEK/ASK/ARK chain and the VCEK TCB "
        "extensions against the reported TCB (real Milan sample verified offline); "
        "attester: configfs-tsm, tested on a fake tree with real outblob and auxblob",
        risks=(
            ("software fault injection by selective cache-line state reset", "cachewarp"),
            ("malicious interrupt injection by the hypervisor", "heckler"),
            (
                "the launch measurement does not cover what the guest loads later (disk, "
                "containers) unless a measured boot chain extends it",
                "",
            ),
            (
                "a migration agent or debug policy weakens isolation: the policy must forbid them",
                "",
            ),
        ),
        literature=(
            LiteratureFigure(
                "VM-based TEEs (SEV, TDX) generally outperform process-based SGX for memory- "
                "and I/O-intensive workloads",
                "coppolino-2024",
            ),
            LiteratureFigure(
                "with model swapping on one confidential H100, throughput 45-70% lower and "
                "latency 20-30% higher than without CC, from encrypting model loads",
                "ibarra-2025-ccgpu",
            ),
        ),
    ),
    TeeProfile(
        tee="psa",
        name="Arm TrustZone with PSA attestation (Cortex-M / Cortex-A devices)",
        isolation="the secure processing environment (TF-M secure partitions) from the "
        "non-secure application; the application itself is not isolated",
        proves_code="measured boot: a measurement per software component (bootloader, "
        "secure firmware, and the application image where the boot chain measures it)",
        proves_platform="a device whose initial attestation key (IAK) the verifier trusts, "
        "with its implementation id and security lifecycle state",
        proves_config="security lifecycle (secured, debug, decommissioned), boot seed, "
        "hardware version",
        identity="the instance id (hash of the IAK public key) plus the key bound in the nonce "
        "claim",
        veracity="the device booted the measured firmware and image; training runs in the "
        "non-secure world, so run-time tampering by a compromised application is not excluded",
        memory_limits="microcontrollers with tens to hundreds of KB of secure SRAM; the FL "
        "client itself runs in the non-secure world (tens of MB on Cortex-A gateways)",
        workload_memory_gib=None,
        device_classes=frozenset({"mcu", "gateway"}),
        runtime_isolation=False,
        hardware_root=True,
        confidential_gpu=False,
        unmodified_app=True,
        maturity=2,
        maturity_text="PSA Certified devices ship from many silicon vendors; IAK "
        "distribution to verifiers is per deployment",
        tooling="Trusted Firmware-M, Veraison, the PSA token format (RFC 9783)",
        fedtee_support="verifier: COSE_Sign1 PSA tokens (real example tokens verified with "
        "their keys); attester: none on device yet (the token comes from TF-M)",
        risks=(
            ("fault injection through clock and voltage management", "clkscrew"),
            ("no run-time isolation of the training application", ""),
            ("IAK provisioning and revocation are the deployment's job", "psa-token"),
            ("a debug lifecycle state must be rejected by the policy", ""),
        ),
        literature=(),
    ),
    TeeProfile(
        tee="cca",
        name="Arm CCA (realm VM, Armv9-A RME)",
        isolation="a realm VM, from the hypervisor and the normal world",
        proves_code="realm initial measurement (RIM) and four extensible REMs",
        proves_config="realm personalization value, hash algorithm",
        proves_platform="a CCA platform token signed by the CCA platform attestation key "
        "(CPAK), with the platform software components",
        identity="the realm key bound through the platform token's challenge, and the key "
        "bound in the realm challenge",
        veracity="the update was computed in a realm that booted the measured image; the "
        "host cannot read its memory",
        memory_limits="no TEE-specific limit: realm memory is ordinary memory, isolated by "
        "granule protection checks",
        workload_memory_gib=1024.0,
        # Specified for Armv9-A application processors; no IoT-class part ships with it yet.
        device_classes=frozenset({"server"}),
        runtime_isolation=True,
        hardware_root=True,
        confidential_gpu=False,
        unmodified_app=True,
        maturity=1,
        maturity_text="specified and in Linux and KVM, with little production silicon; "
        "most development runs on Arm's FVP",
        tooling="TF-A with RMM, Linux configfs-tsm, Veraison",
        fedtee_support="verifier: CCA tokens (platform plus realm, real example token "
        "verified with its CPAK); attester: configfs-tsm, tested on a fake tree",
        risks=(
            ("young implementations: expect TCB recovery events", "arm-cca"),
            ("CPAK distribution and revocation are the deployment's job", ""),
        ),
        literature=(),
    ),
    TeeProfile(
        tee="tpm",
        name="TPM 2.0 (measured boot and quotes; discrete, firmware or virtual)",
        isolation="none for the workload: the TPM protects its own keys only",
        proves_code="PCR values: the measured boot chain, and PCR 23 extended with the "
        "fedtee client's code bundle at start",
        proves_platform="a TPM whose endorsement key certificate chains to a trusted EK CA "
        "(manufacturer or deployment CA); the AK is bound to it by credential activation",
        proves_config="any PCR the policy lists; clock, reset and restart counters for "
        "replay and reboot detection",
        identity="the EK (one per TPM) through the AK that signs quotes; the client key is "
        "bound in the quote's extraData",
        veracity="the platform booted the measured stack and started the measured client "
        "code; nothing stops a privileged local process from changing the running client "
        "afterwards",
        memory_limits="none for the workload (it runs outside the TPM); the TPM's own NV and "
        "RAM are a few KB",
        workload_memory_gib=None,
        device_classes=frozenset({"mcu", "gateway", "server", "gpu-server"}),
        runtime_isolation=False,
        hardware_root=True,
        confidential_gpu=False,
        unmodified_app=True,
        maturity=3,
        maturity_text="on almost every PC and server board and many gateways; tooling "
        "mature (tpm2-tss, tpm2-tools)",
        tooling="tpm2-tss and tpm2-pytss, tpm2-tools, swtpm for testing",
        fedtee_support="verifier and attester end to end: the TPM attester (tpm2-pytss) "
        "against a real swtpm with an EK certificate from swtpm's local CA, and a real "
        "Azure vTPM quote verified offline",
        risks=(
            ("timing side channels leaked ECDSA keys from some TPMs", "tpm-fail"),
            ("firmware TPMs inherit the host CPU's weaknesses", "faultpm"),
            (
                "relay (cuckoo) attacks: evidence from another machine's TPM, unless the quote "
                "binds the client's key",
                "parno-cuckoo",
            ),
            ("no run-time isolation; PCR 23 is resettable by the local OS", "tcg-tpm2"),
        ),
        literature=(),
    ),
    TeeProfile(
        tee="sim",
        name="sim (fedtee's simulated TEE; not hardware)",
        isolation="none",
        proves_code="SHA-384 of the trainer code, as the client reports it",
        proves_platform="nothing: a platform key certified by a local sim root",
        proves_config="a debug flag and security version, as the client reports them",
        identity="a software key: anyone with the sim root can mint identities",
        veracity="none beyond the receipt signature by a software key",
        memory_limits="none",
        workload_memory_gib=None,
        device_classes=frozenset({"mcu", "gateway", "server", "gpu-server"}),
        runtime_isolation=False,
        hardware_root=False,
        confidential_gpu=False,
        unmodified_app=True,
        maturity=3,
        maturity_text="for development and tests only; never trusted by default",
        tooling="fedtee init --with-sim",
        fedtee_support="attester and verifier, used by the demo and the tests; results are "
        "marked not hardware-backed everywhere",
        risks=(("everything: it is a simulation", ""),),
        literature=(),
    ),
)


def profile(tee: str) -> TeeProfile:
    for p in PROFILES:
        if p.tee == tee:
            return p
    raise KeyError(tee)
