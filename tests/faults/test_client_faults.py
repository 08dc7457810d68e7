"""Client-side faults against a real server process: a client process killed with SIGKILL in
the middle of its upload, and clients whose clocks are wrong.

Clock skew, as decided (docs/operations.md): nonce and credential lifetimes run on the
server's clock only, so a client's clock matters in two places. Its proof of possession on
every call carries its time and must be within 120 s of the server's (otherwise
credential_invalid, "check the client's clock"); and evidence that carries its own time is
held to the policy's max_evidence_age_s (evidence_too_old). Within two minutes either way a
client works normally.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedtee.client.runtime import EnrolmentRejected
from fedtee.errors import CredentialError, Reason
from fedtee.server.store import RoundStatus, StateStore

from .conftest import FED, Clients, Federation

DYING_CLIENT = Path(__file__).with_name("_dying_client.py")


@pytest.mark.slow
def test_client_killed_mid_upload_is_discarded_and_the_round_completes(
    federation: Federation, clients: Clients
) -> None:
    federation.configure(rounds=1, clients_per_round=3, min_clients=2, round_timeout_s=8.0)
    federation.start()
    a, b = clients.new("a"), clients.new("b")
    for v in (a, b):
        clients.run(v.enroll())
    dying = subprocess.run(
        [
            sys.executable,
            str(DYING_CLIENT),
            str(federation.directory),
            str(federation.port),
            "dies",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dying.returncode == -9 and "half sent" in dying.stdout, dying.stdout + dying.stderr

    for v in (a, b):
        task = clients.wait_task(v)
        assert clients.run(v.submit(*v.train(task, clients.run(v.download(task))))).accepted
    # What arrived of the dead client's update is parked for a resume (server/uploads.py)
    # while its round is open, never counted...
    tmp = federation.state_dir / "artifacts" / ".tmp"
    assert len(list(tmp.iterdir())) == 1

    # ... and the round closes at its deadline with the two that delivered; the partial
    # upload is discarded with it.
    federation.wait_finished()
    assert [r.status for r in federation.rounds()] == [RoundStatus.COMPLETED]
    assert federation.updates(1) == ["a", "b"]
    store = StateStore.open(str(federation.state_dir / "state.db"))
    try:
        assert [(r.client_id, r.reason) for r in store.rejections(FED)] == [
            ("dies", Reason.STREAM_STALLED)
        ]
    finally:
        store.close()
    assert list(tmp.iterdir()) == []
    done = federation.ledger_cli()
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_clock_skew_within_two_minutes_works_beyond_fails_with_a_clear_reason(
    federation: Federation, clients: Clients
) -> None:
    federation.configure(rounds=1, clients_per_round=1, min_clients=1)
    federation.start()
    slightly = clients.new("slightly", clock_offset_ms=90_000)
    clients.run(slightly.enroll())
    task = clients.wait_task(slightly)  # round 1 is open, with this client selected

    behind = clients.new("behind", clock_offset_ms=-10 * 60_000)
    with pytest.raises(EnrolmentRejected) as old:
        clients.run(behind.enroll())
    assert old.value.reason is Reason.EVIDENCE_TOO_OLD

    ahead = clients.new("ahead", clock_offset_ms=10 * 60_000)
    clients.run(ahead.enroll())  # the nonce, not the client's clock, makes evidence fresh
    with pytest.raises(CredentialError) as skewed:
        clients.run(ahead.task())
    assert skewed.value.reason is Reason.CREDENTIAL_INVALID
    assert "check the client's clock" in skewed.value.message

    update = slightly.train(task, clients.run(slightly.download(task)))
    assert clients.run(slightly.submit(*update)).accepted
    federation.wait_finished()
    assert [r.status for r in federation.rounds()] == [RoundStatus.COMPLETED]
