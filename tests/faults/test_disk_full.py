"""The disk filling while an update is written: the server's artifacts directory is a small
tmpfs (a real ENOSPC from the kernel, no fake), filled up while a round is open.

The upload fails with storage_failed, nothing partial is left, nothing is recorded, the
client is not penalised; once space returns the same receipt is accepted and the round
completes with a verifiable ledger.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from fedtee.errors import Reason

from .conftest import Clients, Federation


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_disk_full_during_an_upload_is_a_clear_error_and_recovers(
    federation: Federation, clients: Clients
) -> None:
    artifacts = federation.state_dir / "artifacts"
    if not _mount_tmpfs(artifacts, "2m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        federation.configure(rounds=1, clients_per_round=2, min_clients=2)
        federation.start()
        a, b = clients.new("a"), clients.new("b")
        for v in (a, b):
            clients.run(v.enroll())
        task = clients.wait_task(a)
        signed, update = a.train(task, clients.run(a.download(task)))
        filler = _fill(artifacts)

        out = clients.run(a.submit(signed, update))

        assert not out.accepted and out.reason == Reason.STORAGE_FAILED.value
        assert "no space left" in out.message
        assert federation.updates(1) == []
        assert list((artifacts / ".tmp").iterdir()) == []  # no partial file
        assert federation.ledger_entries("receipt") == []

        filler.unlink()  # space returns
        again = clients.run(a.submit(signed, update))
        assert again.accepted, again
        task_b = clients.wait_task(b)
        assert clients.run(b.submit(*b.train(task_b, clients.run(b.download(task_b))))).accepted
        federation.wait_finished()
        report = federation.ledger()
        assert [sorted(c.client_id for c in r.contributions) for r in report.lineage] == [
            ["a", "b"]
        ]
    finally:
        federation.stop()
        subprocess.run(["umount", str(artifacts)], check=False)


@pytest.mark.slow
def test_ledger_disk_full_keeps_accepted_updates_and_catches_up(
    federation: Federation, clients: Clients, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The ledger file lives on its own small tmpfs (state/ledger.jsonl is a link to it), so
    # appends to it fail with ENOSPC while the store and the artifacts have room.
    ledger_fs = tmp_path_factory.mktemp("ledger-fs")
    if not _mount_tmpfs(ledger_fs, "1m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        federation.state_dir.mkdir()
        (federation.state_dir / "ledger.jsonl").symlink_to(ledger_fs / "ledger.jsonl")
        federation.configure(rounds=1, clients_per_round=2, min_clients=2)
        federation.start()
        a, b = clients.new("a"), clients.new("b")
        for v in (a, b):
            clients.run(v.enroll())
        filler = _fill(ledger_fs)

        for v in (a, b):  # accepted: durable in the store, the ledger cannot grow
            task = clients.wait_task(v)
            assert clients.run(v.submit(*v.train(task, clients.run(v.download(task))))).accepted
        assert federation.updates(1) == ["a", "b"]
        assert federation.ledger_entries("receipt") == []
        assert [r.status.value for r in federation.rounds()] == ["open"]  # cannot aggregate yet
        federation.ledger()  # what is there still verifies: failed appends were cut back

        filler.unlink()  # space returns: the driver's retry logs both receipts, then aggregates
        federation.wait_finished()
        assert sorted(r["client_id"] for r in federation.ledger_entries("receipt")) == ["a", "b"]
        report = federation.ledger()
        assert [sorted(c.client_id for c in r.contributions) for r in report.lineage] == [
            ["a", "b"]
        ]
    finally:
        federation.stop()
        subprocess.run(["umount", str(ledger_fs)], check=False)
