"""The attack suite: every scenario against a real server, and the same against it with
attestation and receipts off.

Each :class:`Scenario` runs in its own :class:`Arena`: a real
:class:`~fedtee.server.app.FederationServer` (SQLite store, artifact store and ledger in a
temporary directory) on loopback TLS gRPC, the simulated TEE with a local sim root (a
software TPM for the downgrade scenario), two honest clients and one attacker ("mallory").
The honest clients enrol, train and submit over the same gRPC as the attacker; the attack
runs in a thread alongside them. A scenario passes when

- the attack is refused with exactly its expected :class:`~fedtee.errors.Reason`;
- every honest update is accepted and the round closes with an aggregation whose inputs
  include each honest receipt (read back from the ledger);
- the ledger verifies offline (server key pinned) and records the refusal with that reason.

The contrast (:func:`run_scenario` with ``insecure=True``) repeats the attack against the
same server built with ``ServerConfig.insecure_no_attestation``: the gate admits any evidence
and the round manager checks no receipt. What is still refused there is refused by checks
that do not need a TEE (credentials, sizes, shapes, NaN, norm bound, deadlines).

Nothing here unpickles anything (nor imports pickle): the pickle scenario sends a pickle,
then checks that the file its unpickling would have created does not exist.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
from cryptography.hazmat.primitives import serialization

from fedtee import codec, identity, tensors
from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.binding import report_data
from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.client.cheats import flip_last_bit
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.transport import Challenge, Enrolment, Session, SubmitOutcome, Task, TaskKind
from fedtee.errors import FedteeError, LedgerError, Reason
from fedtee.ledger.log import verify_ledger
from fedtee.ledger.receipts import Receipt, SignedReceipt, receipt_hash, sign_receipt
from fedtee.server.app import FederationServer, ServerConfig
from fedtee.server.gate import GateSettings
from fedtee.server.rounds import RoundSettings
from fedtee.server.store import RoundStatus
from fedtee.wire import auth, tls
from fedtee.wire.limits import WireLimits

log = logging.getLogger(__name__)

FEDERATION = "fed-attacks"
GOOD_CODE = bytes.fromhex("a1" * 48)
MODIFIED_CODE = bytes.fromhex("b2" * 48)
HONEST_SVN = 2
MIN_SVN = 2
MAX_UPDATE_NORM = 50.0
MAX_MODEL_BYTES = 1 << 20
HONEST_DELTA = 0.1
SERVICE = "/fedtee.v1.Federation/"
ATTACKER = "mallory"
WAIT_S = 30.0
REPLAY_NONCE_TTL_MS = 3_000
CONTRAST_ROUND_MS = 5_000


class AttackError(Exception):
    """A scenario could not be set up (not a verdict on the server)."""


# --- the result --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the attacker got: admitted (``accepted``) or refused with a reason."""

    accepted: bool
    reason: str = ""

    def label(self) -> str:
        return "accepted" if self.accepted else f"rejected:{self.reason or 'unknown'}"


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    id: str
    description: str
    expected_reason: str
    observed_reason: str
    rejected: bool  # refused with exactly the expected reason
    honest_completed: bool
    ledger_recorded: bool
    without_attestation: str  # "accepted" | "rejected:<reason>" | "not run"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.rejected and self.honest_completed and self.ledger_recorded

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- clients -----------------------------------------------------------------------------


class EvidenceSource(Protocol):
    tee: TeeType

    def challenge_aux(self) -> Mapping[str, bytes]: ...

    def evidence(self, challenge: Challenge, *, nonce: bytes, public_key: bytes) -> Evidence: ...


class SimSource:
    """The simulated TEE on one sim platform."""

    tee = TeeType.SIM

    def __init__(
        self,
        root: SimRoot,
        *,
        platform: SimPlatform | None = None,
        measurement: bytes = GOOD_CODE,
        debug: bool = False,
        svn: int = HONEST_SVN,
    ) -> None:
        self.platform = platform or SimPlatform.generate(root)
        self._attester = SimAttester(
            platform=self.platform, measurement=measurement, debug=debug, svn=svn
        )

    def challenge_aux(self) -> Mapping[str, bytes]:
        return {}

    def evidence(self, challenge: Challenge, *, nonce: bytes, public_key: bytes) -> Evidence:
        del challenge
        return self._attester.attest(report_data(nonce=nonce, public_key=public_key, size=64))


class TpmSource:
    """A software TPM (swtpm) with its code PCR extended by the approved code."""

    tee = TeeType.TPM

    def __init__(self, attester: Any, *, code: bytes) -> None:
        self._attester = attester
        self._code = code
        self._extended = False

    def challenge_aux(self) -> Mapping[str, bytes]:
        aux: Mapping[str, bytes] = self._attester.challenge_request()
        return aux

    def evidence(self, challenge: Challenge, *, nonce: bytes, public_key: bytes) -> Evidence:
        self._attester.activate(challenge.aux)
        if not self._extended:
            self._attester.extend_code_pcr(self._code)
            self._extended = True
        evidence: Evidence = self._attester.attest(
            report_data(nonce=nonce, public_key=public_key, size=32)
        )
        return evidence


class Peer:
    """One client over real gRPC: the honest path, plus the raw steps attacks reuse."""

    def __init__(
        self,
        arena: Arena,
        client_id: str,
        source: EvidenceSource,
        *,
        key: identity.PrivateKey | None = None,
    ) -> None:
        self.arena = arena
        self.client_id = client_id
        self.source = source
        self.key = key or identity.generate()
        self.public_key = identity.public_key_der(self.key)
        self.transport = arena.connect()
        self.session: Session | None = None
        self.measurement = b""
        self.submitted: list[SignedReceipt] = []
        self.outcomes: list[SubmitOutcome] = []
        self.kept_update = b""  # the last honest update it sent (for replays)
        self.prepared: tuple[Challenge, Evidence] | None = None  # evidence made in advance

    def close(self) -> None:
        self.transport.close()

    def challenge(self) -> Challenge:
        return self.transport.get_challenge(
            client_id=self.client_id, tee=self.source.tee, aux=self.source.challenge_aux()
        )

    def send_enrolment(
        self, *, nonce: bytes, evidence: Evidence, public_key: bytes | None = None
    ) -> Enrolment:
        out = self.transport.enroll(
            client_id=self.client_id,
            nonce=nonce,
            public_key=public_key or self.public_key,
            evidence=evidence,
        )
        if out.accepted:
            self.session = Session(
                client_id=self.client_id,
                credential=out.credential,
                private_key=self.key,
                expires_unix_ms=out.credential_expires_unix_ms,
            )
            code = json.loads(out.attestation_result_json).get("code_identity") or ""
            self.measurement = bytes.fromhex(code) if code else b"\x00"
        return out

    def enroll(self) -> Enrolment:
        ch = self.challenge()
        evidence = self.source.evidence(ch, nonce=ch.nonce, public_key=self.public_key)
        return self.send_enrolment(nonce=ch.nonce, evidence=evidence)

    def task(self) -> Task:
        if self.session is None:
            raise AttackError(f"{self.client_id} is not enrolled")
        return self.transport.get_task(session=self.session)

    def wait_task(self, *, round: int, timeout_s: float = WAIT_S) -> Task:
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.task()
            if task.kind is TaskKind.TRAIN and task.round == round:
                return task
            if task.kind is TaskKind.FINISHED or time.monotonic() > deadline:
                raise AttackError(f"{self.client_id}: no task for round {round} (got {task.kind})")
            time.sleep(0.05)

    def download(self, task: Task) -> bytes:
        if self.session is None:
            raise AttackError(f"{self.client_id} is not enrolled")
        data = b"".join(
            c.data
            for c in self.transport.download_model(
                session=self.session, round=task.round, digest=task.global_model_digest, offset=0
            )
        )
        if tensors.digest(data) != task.global_model_digest:
            raise AttackError("the downloaded model does not match its digest")
        return data

    def receipt(self, task: Task, update: bytes, **changes: Any) -> SignedReceipt:
        fields: dict[str, Any] = {
            "federation_id": task.federation_id,
            "round": task.round,
            "client_id": self.client_id,
            "global_model_digest": task.global_model_digest,
            "update_digest": tensors.digest(update),
            "num_examples": 10,
            "measurement": self.measurement,
        }
        fields.update(changes)
        return sign_receipt(Receipt(**fields), self.key)

    def honest_update(self, task: Task, *, delta: float = HONEST_DELTA) -> bytes:
        arrays = tensors.decode(self.download(task))
        return tensors.encode({k: v + np.float32(delta) for k, v in arrays.items()})

    def submit(
        self,
        signed: SignedReceipt,
        data: bytes,
        *,
        size: int | None = None,
        chunks: Iterable[bytes | memoryview] | None = None,
        session: Session | None = None,
        encoding: str = "safetensors",
    ) -> SubmitOutcome:
        session = session or self.session
        if session is None:
            raise AttackError(f"{self.client_id} is not enrolled")
        out = self.transport.submit_update(
            session=session,
            receipt=signed,
            size=len(data) if size is None else size,
            chunks=chunks if chunks is not None else _chunks(data),
            encoding=encoding,
        )
        self.submitted.append(signed)
        self.outcomes.append(out)
        return out

    def train(self, round: int) -> SubmitOutcome:
        task = self.wait_task(round=round)
        update = self.honest_update(task)
        return self.submit(self.receipt(task, update), update)


def _chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _outcome(out: SubmitOutcome | Enrolment) -> Observed:
    return Observed(accepted=out.accepted, reason=out.reason)


def _refusal(exc: FedteeError) -> Observed:
    return Observed(accepted=False, reason=exc.reason.value)


# --- the arena ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ArenaSettings:
    rounds: int = 1
    round_timeout_ms: int = 20_000
    upload_grace_ms: int = 5_000
    participates: bool = False  # the attacker enrols honestly first and is selected
    honest: int = 2
    honest_tee: TeeType = TeeType.SIM
    nonce_ttl_ms: int = GateSettings().nonce_ttl_ms


class _Clock:
    """Real time plus an offset (setup steps move it to issue already-stale credentials)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def initial_model() -> bytes:
    return tensors.encode(
        {"w": np.zeros((4, 3), dtype=np.float32), "b": np.zeros((3,), dtype=np.float32)}
    )


def sim_policy_toml(*, min_svn: int = MIN_SVN) -> str:
    return (
        'version = 1\n[tee.sim]\nallow_simulated = true\ndebug = "forbid"\n'
        f'[tee.sim.reference]\nmeasurement = ["{GOOD_CODE.hex()}"]\n'
        f"[tee.sim.min_svn]\nsvn = {min_svn}\n"
    )


class Arena:
    """One real server in a temporary state directory, and the clients around it."""

    def __init__(self, workdir: Path, *, settings: ArenaSettings, insecure: bool) -> None:
        self.workdir = workdir
        self.settings = settings
        self.insecure = insecure
        self.clock = _Clock()
        self.sim_root = SimRoot.generate()
        self.peers: list[Peer] = []
        self._swtpms: list[Any] = []
        self._tpm_attesters: list[Any] = []
        self._ca: tls.CertAndKey | None = None
        self.server: FederationServer | None = None
        self.limits = WireLimits(max_model_bytes=MAX_MODEL_BYTES)
        self.release = threading.Event()  # set when the run ends: frees stalled attackers
        self.attacked_round: tuple[int, bytes] | None = None

    # --- server ---------------------------------------------------------------------

    def start(self) -> FederationServer:
        s = self.settings
        now = datetime.now(UTC)
        self._ca = tls.make_ca(name="fedtee attacks CA", now=now)
        cert = tls.make_server_cert(self._ca, now=now)
        roots: dict[TeeType, tuple[Any, ...]] = {TeeType.SIM: (self.sim_root.certificate,)}
        if s.honest_tee is TeeType.TPM:
            policy, tpm_roots = self._tpm_policy()
            roots[TeeType.TPM] = tpm_roots
        else:
            policy = Policy.from_toml(sim_policy_toml())
        config = ServerConfig(
            federation_id=FEDERATION,
            address="127.0.0.1:0",
            tls_cert_pem=cert.cert_pem,
            tls_key_pem=cert.key_pem,
            state_dir=self.workdir / "state",
            policy=policy,
            trust=TrustAnchors(roots=roots),
            initial_model=initial_model(),
            rounds=RoundSettings(
                rounds=s.rounds,
                clients_per_round=s.honest + (1 if s.participates else 0),
                min_clients=1,
                round_timeout_ms=s.round_timeout_ms,
                start_wait_ms=10_000,
                retry_after_ms=50,
                max_update_norm=MAX_UPDATE_NORM,
            ),
            gate=GateSettings(nonce_ttl_ms=s.nonce_ttl_ms),
            limits=self.limits,
            upload_grace_ms=s.upload_grace_ms,
            max_workers=8,
            insecure_no_attestation=self.insecure,
        )
        self.server = FederationServer(config, clock=self.clock)
        self.server.start()
        return self.server

    def _tpm_policy(self) -> tuple[Policy, tuple[Any, ...]]:
        from fedtee.attest.attesters.tpm import TpmAttester
        from fedtee.attest.swtpm import Swtpm
        from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value

        roots = []
        for i in range(self.settings.honest):
            tpm = Swtpm.provision(self.workdir / f"tpm-{i}", ca_dir=self.workdir / f"ekca-{i}")
            self._swtpms.append(tpm)
            tpm.start()
            roots.append(tpm.ca_root())
            attester = TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem())
            self._tpm_attesters.append(attester)
        # Hardware only: the policy names the TPM and not the simulated TEE.
        policy = Policy.from_toml(
            'version = 1\n[tee.tpm]\naccepted_tcb = ["UpToDate", "NotApplicable"]\n'
            f'[tee.tpm.reference]\npcr{CODE_PCR} = ["{code_pcr_value(GOOD_CODE).hex()}"]\n'
        )
        return policy, tuple(roots)

    def connect(self) -> GrpcTransport:
        if self.server is None or self._ca is None:
            raise AttackError("the arena's server is not running")
        return GrpcTransport.connect(
            address=f"127.0.0.1:{self.server.port}",
            ca_pem=self._ca.cert_pem,
            server_name="localhost",
            limits=self.limits,
        )

    def channel(self) -> grpc.Channel:
        """A raw channel, for attacks below the client library (malformed protobuf)."""
        if self.server is None or self._ca is None:
            raise AttackError("the arena's server is not running")
        return grpc.secure_channel(
            f"127.0.0.1:{self.server.port}",
            grpc.ssl_channel_credentials(root_certificates=self._ca.cert_pem),
            options=[*self.limits.grpc_options(), ("grpc.ssl_target_name_override", "localhost")],
        )

    def close(self) -> None:
        for p in self.peers:
            p.close()
        self.peers.clear()
        if self.server is not None:
            self.server.stop(grace_s=0.2)
        for attester in self._tpm_attesters:
            attester.close()
        for tpm in self._swtpms:
            tpm.close()

    # --- clients --------------------------------------------------------------------

    def peer(self, client_id: str, source: EvidenceSource | None = None, **kw: Any) -> Peer:
        p = Peer(self, client_id, source or self.sim(), **kw)
        self.peers.append(p)
        return p

    def sim(self, **kw: Any) -> SimSource:
        return SimSource(self.sim_root, **kw)

    def honest_peers(self) -> list[Peer]:
        if self.settings.honest_tee is TeeType.TPM:
            return [
                self.peer(f"honest-{i}", TpmSource(a, code=GOOD_CODE))
                for i, a in enumerate(self._tpm_attesters)
            ]
        return [self.peer(f"honest-{i}") for i in range(self.settings.honest)]

    # --- state ----------------------------------------------------------------------

    def open_round(self) -> tuple[int, bytes]:
        """Number and global model digest of the round under attack (what any client saw in
        its task; the round may close before a non-participating attacker acts)."""
        if self.attacked_round is None:
            raise AttackError("no round is under attack yet")
        return self.attacked_round

    def rejections_of(self, client_id: str) -> list[Reason]:
        store = self.server.store if self.server is not None else None
        if store is None:
            return []
        return [r.reason for r in store.rejections(FEDERATION) if r.client_id == client_id]

    def wait_round_closed(self, number: int, timeout_s: float = WAIT_S) -> RoundStatus | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            store = self.server.store if self.server is not None else None
            rnd = store.get_round(FEDERATION, number) if store is not None else None
            if rnd is not None and rnd.status is not RoundStatus.OPEN:
                return rnd.status
            time.sleep(0.05)
        return None

    def ledger_entries(self) -> list[dict[str, Any]]:
        if self.server is None:
            return []
        data = self.server.paths.ledger.read_bytes()
        # The server may be appending: a last line without its newline is not written yet.
        whole = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in whole.splitlines()]


# --- scenarios ---------------------------------------------------------------------------

Setup = Callable[[Arena], Peer | None]
Attack = Callable[[Arena, Peer | None], Observed]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    id: str
    description: str
    expected: Reason
    attack: Attack
    setup: Setup | None = None
    settings: ArenaSettings = field(default_factory=ArenaSettings)


def _enrolled_attacker(arena: Arena) -> Peer:
    """The attacker on a genuine platform with approved code, honestly enrolled."""
    peer = arena.peer(ATTACKER)
    out = peer.enroll()
    if not out.accepted:
        raise AttackError(f"the attacker could not enrol honestly: {out.reason} {out.message}")
    return peer


def _need(peer: Peer | None) -> Peer:
    if peer is None:
        raise AttackError("this attack needs the attacker set up first")
    return peer


def _enrol_with(source: SimSource, *, client_id: str = ATTACKER) -> Attack:
    def attack(arena: Arena, _: Peer | None) -> Observed:
        return _outcome(arena.peer(client_id, source).enroll())

    return attack


# Enrolment ---------------------------------------------------------------------------


def _no_evidence(arena: Arena, _: Peer | None) -> Observed:
    peer = arena.peer(ATTACKER)
    ch = peer.challenge()
    return _outcome(
        peer.send_enrolment(nonce=ch.nonce, evidence=Evidence(tee=TeeType.SIM, data=b""))
    )


def _forged_signature(arena: Arena, _: Peer | None) -> Observed:
    peer = arena.peer(ATTACKER)
    ch = peer.challenge()
    ev = peer.source.evidence(ch, nonce=ch.nonce, public_key=peer.public_key)
    forged = Evidence(tee=ev.tee, data=ev.data[:-1] + bytes([ev.data[-1] ^ 0x01]), aux=ev.aux)
    return _outcome(peer.send_enrolment(nonce=ch.nonce, evidence=forged))


def _impersonate_enrolled(arena: Arena, _: Peer | None) -> Observed:
    # Enrolment is unauthenticated: anyone can ask for a nonce under an enrolled client's id.
    peer = arena.peer("honest-0")
    ch = peer.challenge()
    ev = peer.source.evidence(ch, nonce=ch.nonce, public_key=peer.public_key)
    forged = Evidence(tee=ev.tee, data=ev.data[:-1] + bytes([ev.data[-1] ^ 0x01]), aux=ev.aux)
    return _outcome(peer.send_enrolment(nonce=ch.nonce, evidence=forged))


def _untrusted_root(arena: Arena, _: Peer | None) -> Observed:
    own_root = SimRoot.generate()  # looks the same, chains to a root the server never trusted
    return _outcome(arena.peer(ATTACKER, SimSource(own_root)).enroll())


def _replayed_old_nonce_setup(arena: Arena) -> Peer:
    # The attacker obtained its nonce (and evidence for it) longer ago than the nonce lives
    # (this arena's nonces live REPLAY_NONCE_TTL_MS; the server purges them only each minute).
    peer = arena.peer(ATTACKER)
    ch = peer.challenge()
    peer.prepared = (ch, peer.source.evidence(ch, nonce=ch.nonce, public_key=peer.public_key))
    time.sleep(arena.settings.nonce_ttl_ms / 1000 + 0.3)
    return peer


def _replayed_old_nonce(arena: Arena, attacker: Peer | None) -> Observed:
    peer = _need(attacker)
    if peer.prepared is None:
        raise AttackError("the old evidence was not prepared")
    ch, ev = peer.prepared
    return _outcome(peer.send_enrolment(nonce=ch.nonce, evidence=ev))


def _relayed(arena: Arena, _: Peer | None) -> Observed:
    # A genuine TEE running approved code answers the attacker's nonce, binding ITS key; the
    # attacker presents that evidence with its own key.
    peer = arena.peer(ATTACKER)
    ch = peer.challenge()
    genuine_key = identity.public_key_der(identity.generate())
    ev = arena.sim().evidence(ch, nonce=ch.nonce, public_key=genuine_key)
    return _outcome(peer.send_enrolment(nonce=ch.nonce, evidence=ev))


def _nonce_reuse(arena: Arena, _: Peer | None) -> Observed:
    peer = arena.peer(ATTACKER)
    ch = peer.challenge()
    ev = peer.source.evidence(ch, nonce=ch.nonce, public_key=peer.public_key)
    first = peer.send_enrolment(nonce=ch.nonce, evidence=ev)
    if not first.accepted:
        raise AttackError(f"first use of the nonce was refused: {first.reason}")
    # The same nonce again, for a second identity key (a clone of the enrolment).
    clone_key = identity.generate()
    clone_public = identity.public_key_der(clone_key)
    ev2 = peer.source.evidence(ch, nonce=ch.nonce, public_key=clone_public)
    return _outcome(peer.send_enrolment(nonce=ch.nonce, evidence=ev2, public_key=clone_public))


def _sybil(arena: Arena, _: Peer | None) -> Observed:
    first = arena.peer(ATTACKER)
    out = first.enroll()
    if not out.accepted:
        raise AttackError(f"the first sybil identity was refused: {out.reason}")
    assert isinstance(first.source, SimSource)
    twin = arena.peer(ATTACKER + "-2", arena.sim(platform=first.source.platform))
    return _outcome(twin.enroll())


# Credentials -------------------------------------------------------------------------


def _expired_setup(arena: Arena) -> Peer:
    # The credential was issued one TTL (and a second) ago: the server's clock is moved back
    # while it is issued, before any honest client does anything time-sensitive.
    arena.clock.offset = -timedelta(milliseconds=GateSettings().credential_ttl_ms + 1_000)
    try:
        return _enrolled_attacker(arena)
    finally:
        arena.clock.offset = timedelta()


def _forged_update_for(arena: Arena, peer: Peer) -> tuple[SignedReceipt, bytes]:
    number, digest = arena.open_round()
    update = tensors.encode(
        {"w": np.ones((4, 3), dtype=np.float32), "b": np.ones((3,), dtype=np.float32)}
    )
    task = Task(
        kind=TaskKind.TRAIN, round=number, global_model_digest=digest, federation_id=FEDERATION
    )
    if not peer.measurement:
        peer.measurement = GOOD_CODE
    return peer.receipt(task, update), update


def _expired_credential(arena: Arena, attacker: Peer | None) -> Observed:
    peer = _need(attacker)
    signed, update = _forged_update_for(arena, peer)
    try:
        return _outcome(peer.submit(signed, update))
    except FedteeError as exc:
        return _refusal(exc)


def _stolen_credential(arena: Arena, _: Peer | None) -> Observed:
    victim = next(p for p in arena.peers if p.client_id == "honest-0")
    if victim.session is None:
        raise AttackError("the victim is not enrolled")
    thief = arena.peer(ATTACKER)
    # The victim's credential, presented with a proof of possession by the thief's key.
    stolen = replace(victim.session, private_key=thief.key)
    thief.measurement = victim.measurement
    signed, update = _forged_update_for(arena, thief)
    try:
        return _outcome(thief.submit(signed, update, session=stolen))
    except FedteeError as exc:
        return _refusal(exc)


# Updates and receipts ----------------------------------------------------------------


def _own_task(arena: Arena, attacker: Peer | None) -> tuple[Peer, Task]:
    peer = _need(attacker)
    number, _ = arena.open_round()
    return peer, peer.wait_task(round=number)


def _tampered(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    update = peer.honest_update(task)
    signed = peer.receipt(task, update)
    return _outcome(peer.submit(signed, update, chunks=flip_last_bit(_chunks(update))))


def _earlier_round_receipt(arena: Arena, attacker: Peer | None) -> Observed:
    peer, _task = _own_task(arena, attacker)
    # Its receipt and update from round 1, sent again in round 2.
    old = peer.submitted[0]
    return _outcome(peer.submit(old, peer.kept_update))


def _wrong_model(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    update = peer.honest_update(task)
    signed = peer.receipt(task, update, global_model_digest=tensors.digest(b"another model"))
    return _outcome(peer.submit(signed, update))


def _bad_arrays(make: Callable[[Mapping[str, np.ndarray[Any, Any]]], bytes]) -> Attack:
    def attack(arena: Arena, attacker: Peer | None) -> Observed:
        peer, task = _own_task(arena, attacker)
        update = make(tensors.decode(peer.download(task)))
        # The receipt is honest about these bytes: only the content is hostile.
        return _outcome(peer.submit(peer.receipt(task, update), update))

    return attack


def _with_value(value: float) -> Callable[[Mapping[str, np.ndarray[Any, Any]]], bytes]:
    def make(arrays: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
        out = {k: v.copy() for k, v in arrays.items()}
        out["w"][0, 0] = np.float32(value)
        return tensors.encode(out)

    return make


def _wrong_shape(arrays: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    return tensors.encode({"w": np.zeros((3, 4), dtype=np.float32), "b": arrays["b"]})


def _scaled(arrays: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    # A boosted update: an honest delta times 10^4 (model replacement / scaling attack).
    return tensors.encode({k: v + np.float32(HONEST_DELTA * 10_000) for k, v in arrays.items()})


def _oversized_chunk(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    update = peer.honest_update(task)
    # An honest header, then one message one byte over the chunk limit (it still fits in
    # gRPC's message limit, so the server's own bound is what refuses it).
    big = b"\x00" * (arena.limits.chunk_bytes + 1)
    try:
        return _outcome(peer.submit(peer.receipt(task, update), update, chunks=[big]))
    except FedteeError as exc:
        return _refusal(exc)


def _declared_bomb(arena: Arena, _: Peer | None) -> Observed:
    peer = _enrolled_attacker(arena)
    signed, update = _forged_update_for(arena, peer)
    # A few hundred bytes on the wire that claim to be a terabyte.
    try:
        return _outcome(peer.submit(signed, update, size=1 << 40))
    except FedteeError as exc:
        return _refusal(exc)


def _header_bomb(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}}
    ).encode()
    update = len(header).to_bytes(8, "little") + header + b"\x00" * 64
    return _outcome(peer.submit(peer.receipt(task, update), update))


def _topk_bomb(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    # A top-k update (fedtee.codec) listing far more entries than its tensors have elements:
    # decoded naively it would scatter a thousand values into a 12-element tensor.
    k = 1000
    update = tensors.encode_pure(
        {
            "w#idx": np.arange(k, dtype=np.int32),
            "w#val": np.ones(k, dtype=np.float32),
            "b#idx": np.arange(3, dtype=np.int32),
            "b#val": np.ones(3, dtype=np.float32),
        },
        metadata={codec.ENCODING_KEY: codec.Encoding.TOPK.value},
    )
    signed = peer.receipt(task, update)
    return _outcome(peer.submit(signed, update, encoding=codec.Encoding.TOPK.value))


def _raw_bytes(data: bytes) -> bytes:
    return data


def _raw_enroll(arena: Arena, payload: bytes) -> Observed:
    """Send ``payload`` as the request bytes of Enroll; the reason is read from the trailer
    (the server sets it on every refusal), so no protobuf class is needed on this side."""
    channel = arena.channel()
    try:
        call = channel.unary_unary(
            SERVICE + "Enroll", request_serializer=_raw_bytes, response_deserializer=_raw_bytes
        )
        try:
            _reply, done = call.with_call(payload, timeout=WAIT_S)
        except grpc.RpcError as exc:
            return Observed(accepted=False, reason=_trailer_reason(exc))
        reason = _trailer_reason(done)
        return Observed(accepted=not reason, reason=reason)
    finally:
        channel.close()


def _trailer_reason(call: Any) -> str:
    trailing = getattr(call, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == auth.REASON_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    if isinstance(call, grpc.RpcError):
        code = getattr(call, "code", None)
        return f"grpc:{code().name}" if callable(code) else "grpc:unknown"
    return ""


def _malformed_protobuf(arena: Arena, _: Peer | None) -> Observed:
    # Field 1 (client_id, length-delimited) whose length varint never ends.
    return _raw_enroll(arena, b"\x0a" + b"\xff" * 11)


def pickle_creating(path: Path) -> bytes:
    """A protocol-0 pickle whose unpickling calls ``open(path, "w")``, creating ``path``.

    Written out opcode by opcode (GLOBAL builtins.open, MARK, two UNICODE strings, TUPLE,
    REDUCE, STOP), so that fedtee never imports the pickle module."""
    text = str(path)
    if any(c in text for c in "\n\\"):
        raise ValueError("the marker path must not contain newlines or backslashes")
    return b"cbuiltins\nopen\n(V" + text.encode() + b"\nVw\ntR."


def _pickle_payload(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    marker = arena.workdir / "UNPICKLED"
    payload = pickle_creating(marker)
    out = _outcome(peer.submit(peer.receipt(task, payload), payload))
    time.sleep(0.2)
    if marker.exists():
        return Observed(accepted=True, reason="payload_unpickled")
    return out


def _stalled_stream(arena: Arena, attacker: Peer | None) -> Observed:
    peer, task = _own_task(arena, attacker)
    update = peer.honest_update(task)
    signed = peer.receipt(task, update)
    release = arena.release

    def half_then_hang() -> Iterator[bytes]:
        yield update[: len(update) // 2]
        release.wait(WAIT_S)  # neither sends nor closes

    try:
        out = peer.submit(signed, update, chunks=half_then_hang())
        if out.accepted:
            return _outcome(out)
    except FedteeError:
        pass  # the client only sees its stream cut; the server says why
    deadline = time.monotonic() + 10
    while not (reasons := arena.rejections_of(ATTACKER)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server records the cut just after the client sees it
    return Observed(accepted=False, reason=reasons[-1].value if reasons else "")


def _stalled_before_header(arena: Arena, attacker: Peer | None) -> Observed:
    peer, _task = _own_task(arena, attacker)
    if peer.session is None:
        raise AttackError("the attacker is not enrolled")
    release = arena.release
    channel = arena.channel()
    method = SERVICE + "SubmitUpdate"

    def nothing() -> Iterator[bytes]:
        release.wait(WAIT_S)  # opens the stream, then never sends its header
        return
        yield b""

    try:
        call = channel.stream_unary(
            method, request_serializer=_raw_bytes, response_deserializer=_raw_bytes
        )
        metadata = auth.client_metadata(
            method=method,
            credential=peer.session.credential,
            private_key=peer.key,
            now_ms=int(time.time() * 1000),
        )
        try:
            _reply, done = call.with_call(nothing(), metadata=list(metadata), timeout=WAIT_S)
            if not _trailer_reason(done):
                return Observed(accepted=True)
        except grpc.RpcError:
            pass  # cut off; the server's record says why
    finally:
        channel.close()
    deadline = time.monotonic() + 10
    while not (reasons := arena.rejections_of(ATTACKER)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return Observed(accepted=False, reason=reasons[-1].value if reasons else "")


_PARTICIPATES = ArenaSettings(participates=True)
# Rounds an attacker holds open until their deadline: short, but long enough for the honest
# clients to deliver on a loaded machine.
_STALLS = ArenaSettings(participates=True, round_timeout_ms=6_000, upload_grace_ms=300)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        id="impersonation-no-evidence",
        description="a client without any TEE enrols with empty evidence",
        expected=Reason.EVIDENCE_TRUNCATED,
        attack=_no_evidence,
    ),
    Scenario(
        id="forged-evidence-signature",
        description="genuine-looking evidence with one bit of its signature changed",
        expected=Reason.SIGNATURE_INVALID,
        attack=_forged_signature,
    ),
    Scenario(
        id="impersonation-enrolled-id",
        description="forged evidence under an enrolled honest client's id (to take it over "
        "or get it quarantined)",
        expected=Reason.SIGNATURE_INVALID,
        attack=_impersonate_enrolled,
    ),
    Scenario(
        id="untrusted-root",
        description="evidence from a platform certified by the attacker's own root",
        expected=Reason.CHAIN_UNTRUSTED_ROOT,
        attack=_untrusted_root,
    ),
    Scenario(
        id="modified-code",
        description="a genuine TEE running modified training code (measurement not in policy)",
        expected=Reason.MEASUREMENT_NOT_ALLOWED,
        attack=lambda arena, _: _enrol_with(arena.sim(measurement=MODIFIED_CODE))(arena, None),
    ),
    Scenario(
        id="debug-enclave",
        description="approved code in a debug-mode TEE (memory readable by the host)",
        expected=Reason.DEBUG_ENABLED,
        attack=lambda arena, _: _enrol_with(arena.sim(debug=True))(arena, None),
    ),
    Scenario(
        id="tcb-below-minimum",
        description=f"security version 1 where the policy requires svn >= {MIN_SVN}",
        expected=Reason.SVN_BELOW_MINIMUM,
        attack=lambda arena, _: _enrol_with(arena.sim(svn=MIN_SVN - 1))(arena, None),
    ),
    Scenario(
        id="replayed-evidence",
        description="evidence for a nonce obtained longer ago than the nonce lives",
        expected=Reason.NONCE_EXPIRED,
        attack=_replayed_old_nonce,
        setup=_replayed_old_nonce_setup,
        settings=ArenaSettings(nonce_ttl_ms=REPLAY_NONCE_TTL_MS),
    ),
    Scenario(
        id="relayed-evidence",
        description="a genuine TEE's evidence for the attacker's nonce, binding another key",
        expected=Reason.REPORT_DATA_MISMATCH,
        attack=_relayed,
    ),
    Scenario(
        id="nonce-reuse",
        description="one nonce used for a second enrolment with a cloned identity key",
        expected=Reason.NONCE_REUSED,
        attack=_nonce_reuse,
    ),
    Scenario(
        id="credential-expired",
        description="an update sent with a credential past its lifetime",
        expected=Reason.CREDENTIAL_EXPIRED,
        attack=_expired_credential,
        setup=_expired_setup,
    ),
    Scenario(
        id="credential-stolen",
        description="an honest client's credential presented by another key",
        expected=Reason.CREDENTIAL_INVALID,
        attack=_stolen_credential,
    ),
    Scenario(
        id="sybil",
        description="one platform enrolling as a second client",
        expected=Reason.PLATFORM_ALREADY_ENROLLED,
        attack=_sybil,
    ),
    Scenario(
        id="downgrade-to-sim",
        description="simulated evidence where the policy names only hardware (TPM) TEEs",
        expected=Reason.TEE_NOT_ALLOWED,
        attack=lambda arena, _: _outcome(arena.peer(ATTACKER).enroll()),
        settings=ArenaSettings(honest=1, honest_tee=TeeType.TPM),
    ),
    Scenario(
        id="tampered-update",
        description="an update changed after its receipt was signed",
        expected=Reason.UPDATE_DIGEST_MISMATCH,
        attack=_tampered,
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="receipt-earlier-round",
        description="round 1's signed receipt and update sent again in round 2",
        expected=Reason.RECEIPT_REPLAYED,
        attack=_earlier_round_receipt,
        setup=_enrolled_attacker,
        settings=ArenaSettings(participates=True, rounds=2, round_timeout_ms=6_000),
    ),
    Scenario(
        id="receipt-wrong-model",
        description="a receipt naming another global model than the round's",
        expected=Reason.RECEIPT_MODEL_MISMATCH,
        attack=_wrong_model,
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="update-nan",
        description="an update holding NaN",
        expected=Reason.UPDATE_NONFINITE,
        attack=_bad_arrays(_with_value(float("nan"))),
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="update-inf",
        description="an update holding +Inf",
        expected=Reason.UPDATE_NONFINITE,
        attack=_bad_arrays(_with_value(float("inf"))),
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="update-wrong-shape",
        description="an update whose tensor shapes differ from the model's",
        expected=Reason.UPDATE_SHAPE_MISMATCH,
        attack=_bad_arrays(_wrong_shape),
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="update-norm-exceeded",
        description=f"a scaled update (x10^4) whose norm exceeds the bound {MAX_UPDATE_NORM:g}",
        expected=Reason.UPDATE_NORM_EXCEEDED,
        attack=_bad_arrays(_scaled),
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="oversized-message",
        description="an upload message one byte over the server's chunk limit",
        expected=Reason.MESSAGE_TOO_LARGE,
        attack=_oversized_chunk,
        setup=_enrolled_attacker,
        # Refused by the wire layer mid-stream: the round waits for the attacker's deadline.
        settings=_STALLS,
    ),
    Scenario(
        id="bomb-declared-size",
        description="a tiny upload that declares itself 1 TiB",
        expected=Reason.MESSAGE_TOO_LARGE,
        attack=_declared_bomb,
    ),
    Scenario(
        id="bomb-safetensors-header",
        description="a safetensors header declaring a 2^40-element tensor in a tiny upload",
        expected=Reason.UPDATE_MALFORMED,
        attack=_header_bomb,
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="bomb-topk-encoding",
        description="a compressed (top-k) update listing 1000 entries for a 12-element tensor",
        expected=Reason.UPDATE_MALFORMED,
        attack=_topk_bomb,
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="malformed-protobuf",
        description="bytes that are not an EnrollRequest, sent raw on the Enroll method",
        expected=Reason.MESSAGE_MALFORMED,
        attack=_malformed_protobuf,
    ),
    Scenario(
        id="pickle-payload",
        description="a pickle (whose unpickling would create a file) in place of a model",
        expected=Reason.UPDATE_MALFORMED,
        attack=_pickle_payload,
        setup=_enrolled_attacker,
        settings=_PARTICIPATES,
    ),
    Scenario(
        id="stalled-stream",
        description="an upload that stops mid-stream and holds its connection open",
        expected=Reason.STREAM_STALLED,
        attack=_stalled_stream,
        setup=_enrolled_attacker,
        settings=_STALLS,
    ),
    Scenario(
        id="stalled-before-header",
        description="an upload stream opened with a valid credential that never sends a byte",
        expected=Reason.STREAM_STALLED,
        attack=_stalled_before_header,
        setup=_enrolled_attacker,
        settings=_STALLS,
    ),
)

SCENARIO_IDS: tuple[str, ...] = tuple(s.id for s in SCENARIOS)


def select(ids: Sequence[str] | None) -> list[Scenario]:
    """The scenarios named by ``ids`` (all when None), in suite order; KeyError if unknown."""
    if not ids:
        return list(SCENARIOS)
    unknown = sorted(set(ids) - set(SCENARIO_IDS))
    if unknown:
        raise KeyError(", ".join(unknown))
    return [s for s in SCENARIOS if s.id in set(ids)]


# --- running -----------------------------------------------------------------------------


@dataclass
class Run:
    """The raw outcome of one scenario against one server."""

    observed: Observed
    honest_ok: bool
    ledger_reasons: list[str]
    detail: str = ""


def run_scenario(scenario: Scenario, *, insecure: bool = False, workdir: Path | None = None) -> Run:
    """Run ``scenario`` against a fresh server (``insecure``: attestation and receipts off)."""
    base = Path(tempfile.mkdtemp(prefix=f"fedtee-attack-{scenario.id}-", dir=workdir))
    settings = scenario.settings
    if insecure:
        # An attack that succeeds there may leave an honest client unable to deliver (its id
        # taken over): do not wait long for it.
        settings = replace(
            settings, round_timeout_ms=min(settings.round_timeout_ms, CONTRAST_ROUND_MS)
        )
    arena = Arena(base, settings=settings, insecure=insecure)
    try:
        return _run(arena, scenario)
    finally:
        arena.release.set()
        arena.close()
        shutil.rmtree(base, ignore_errors=True)


def _run(arena: Arena, scenario: Scenario) -> Run:
    arena.start()
    s = scenario.settings
    honest = arena.honest_peers()
    problems: list[str] = []
    for peer in honest:
        out = peer.enroll()
        if not out.accepted:
            problems.append(f"{peer.client_id} refused at enrolment: {out.reason}")
    if problems:
        return Run(Observed(accepted=False), False, [], "; ".join(problems))
    if not s.participates:
        # Let the round open first: a setup that moves the server's clock (to issue stale
        # credentials or nonces) must not open the round at the moved time.
        for peer in honest:
            peer.wait_task(round=1)
    attacker = scenario.setup(arena) if scenario.setup is not None else None
    observed: list[Observed] = []
    errors: list[str] = []
    for number in range(1, s.rounds + 1):
        for peer in honest:
            try:
                task = peer.wait_task(round=number)
                arena.attacked_round = (number, task.global_model_digest)
            except (FedteeError, AttackError) as exc:
                problems.append(f"{peer.client_id}: {exc}")
        last = number == s.rounds
        thread: threading.Thread | None = None
        if last:

            def attack() -> None:
                try:
                    observed.append(scenario.attack(arena, attacker))
                except FedteeError as exc:
                    observed.append(_refusal(exc))
                except Exception as exc:  # a broken scenario, reported, never a pass
                    log.exception("scenario %s failed to run", scenario.id)
                    errors.append(f"attack failed to run: {type(exc).__name__}: {exc}")

            thread = threading.Thread(target=attack, name=f"attack-{scenario.id}", daemon=True)
            thread.start()
        elif attacker is not None and s.participates:
            attacker.kept_update = _train_and_keep(attacker, number)
        for peer in honest:
            try:
                sent = peer.train(number)
            except (FedteeError, AttackError) as exc:
                problems.append(f"{peer.client_id} failed in round {number}: {exc}")
                continue
            if not sent.accepted:
                problems.append(f"{peer.client_id} refused in round {number}: {sent.reason}")
        if thread is not None:
            thread.join(WAIT_S)
        status = arena.wait_round_closed(number)
        if status is not RoundStatus.COMPLETED:
            problems.append(f"round {number} ended {status}")
    honest_ok = not problems and _aggregated(arena, honest, s.rounds)
    if not honest_ok and not problems:
        problems.append("the last aggregation does not include every honest update")
    reasons = _ledger_refusals(arena)
    obs = observed[0] if observed else Observed(accepted=False, reason="")
    return Run(obs, honest_ok, reasons, "; ".join(errors + problems))


def _train_and_keep(peer: Peer, number: int) -> bytes:
    task = peer.wait_task(round=number)
    update = peer.honest_update(task)
    out = peer.submit(peer.receipt(task, update), update)
    if not out.accepted:
        raise AttackError(f"the attacker's honest round {number} was refused: {out.reason}")
    return update


def _aggregated(arena: Arena, honest: Sequence[Peer], last_round: int) -> bool:
    entries = arena.ledger_entries()
    inputs: set[str] = set()
    for e in entries:
        if e["kind"] == "aggregation" and e["body"]["round"] == last_round:
            inputs.update(e["body"]["inputs"])
    wanted = {receipt_hash(p.submitted[-1]).hex() for p in honest if p.submitted}
    return len(wanted) == len(honest) and wanted <= inputs


def _ledger_refusals(arena: Arena) -> list[str]:
    """Reasons of the refusals the ledger records; none unless it verifies offline (with the
    server's key pinned), as ``fedtee ledger verify`` would check it. The insecure server's
    ledger is read without verifying: its receipts are not bound to their rounds."""
    if arena.server is None:
        return []
    # The server stores a refusal, then appends it to the ledger: a scenario that saw the
    # stored refusal can get here between the two writes. Every stored refusal has its
    # ledger entry, so wait (bounded) until the ledger holds as many.
    store = arena.server.store
    stored = len(store.rejections(FEDERATION)) if store is not None else 0
    deadline = time.monotonic() + WAIT_S
    while len(_refusals_in(arena.ledger_entries())) < stored and time.monotonic() < deadline:
        time.sleep(0.05)
    if not arena.insecure:
        paths = arena.server.paths
        key = serialization.load_pem_public_key(paths.server_key.read_bytes()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            data = paths.ledger.read_bytes()
            verify_ledger(data[: data.rfind(b"\n") + 1], server_public_key=key)
        except LedgerError as exc:
            log.error("the ledger does not verify: %s", exc)
            return []
    return _refusals_in(arena.ledger_entries())


def _refusals_in(entries: Sequence[dict[str, Any]]) -> list[str]:
    found = []
    for e in entries:
        body = e["body"]
        if e["kind"] == "rejection" or (e["kind"] == "receipt" and not body["accepted"]):
            found.append(str(body["reason"]))
    return found


def evaluate(
    scenario: Scenario, *, contrast: bool = True, workdir: Path | None = None
) -> ScenarioResult:
    """Run ``scenario`` (and its contrast) and judge it."""
    secure = run_scenario(scenario, workdir=workdir)
    expected = scenario.expected.value
    rejected = not secure.observed.accepted and secure.observed.reason == expected
    without = "not run"
    if contrast:
        try:
            without = run_scenario(scenario, insecure=True, workdir=workdir).observed.label()
        except Exception as exc:
            log.exception("contrast run of %s failed", scenario.id)
            without = f"error:{type(exc).__name__}"
    return ScenarioResult(
        id=scenario.id,
        description=scenario.description,
        expected_reason=expected,
        observed_reason=secure.observed.label().removeprefix("rejected:"),
        rejected=rejected,
        honest_completed=secure.honest_ok,
        ledger_recorded=expected in secure.ledger_reasons,
        without_attestation=without,
        detail=secure.detail,
    )


def run_suite(
    ids: Sequence[str] | None = None,
    *,
    contrast: bool = True,
    workdir: Path | None = None,
    progress: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    results = []
    for scenario in select(ids):
        try:
            result = evaluate(scenario, contrast=contrast, workdir=workdir)
        except Exception as exc:  # setup failure: reported as a failed scenario
            log.exception("scenario %s could not run", scenario.id)
            result = ScenarioResult(
                id=scenario.id,
                description=scenario.description,
                expected_reason=scenario.expected.value,
                observed_reason=f"error:{type(exc).__name__}",
                rejected=False,
                honest_completed=False,
                ledger_recorded=False,
                without_attestation="not run",
                detail=str(exc)[:300],
            )
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def report_json(results: Sequence[ScenarioResult], *, now: datetime) -> dict[str, Any]:
    return {
        "date": now.isoformat(timespec="seconds"),
        "scenarios": [r.to_json() for r in results],
    }


def all_passed(results: Sequence[ScenarioResult]) -> bool:
    return bool(results) and all(r.passed for r in results)


__all__ = [
    "SCENARIOS",
    "SCENARIO_IDS",
    "Arena",
    "ArenaSettings",
    "Observed",
    "Scenario",
    "ScenarioResult",
    "all_passed",
    "evaluate",
    "report_json",
    "run_scenario",
    "run_suite",
    "select",
]
