"""Downloads of the open round's model: hashed once, when the round opened, and again only
when the model's file changed since (a write through the file system). Real server over TLS
gRPC; the file is replaced by a corrupted copy as an operator's mistake or an attacker with
write access to state/ would."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fedtee import tensors
from fedtee.client.transport import ServerUnavailable
from fedtee.server.artifacts import ArtifactStore

from .conftest import Harness


def test_the_open_rounds_model_is_served_unhashed_until_its_file_changes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[tuple[bytes, bool]] = []
    real = ArtifactStore.iter_chunks

    def recorded(self: ArtifactStore, digest: bytes, *, verify: bool = True, **kw: Any) -> Any:
        served.append((digest, verify))
        return real(self, digest, verify=verify, **kw)

    monkeypatch.setattr(ArtifactStore, "iter_chunks", recorded)
    server = harness.start(rounds=1, clients_per_round=2, min_clients=2)
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    task = a.wait_task()
    model = a.download(task)
    assert tensors.digest(model) == task.global_model_digest
    assert b.download(b.wait_task()) == model
    assert served == [(task.global_model_digest, False)] * 2  # hashed when the round opened

    path = ArtifactStore(server.paths.artifacts).path_for(task.global_model_digest)
    bad = bytearray(model)
    bad[len(bad) // 2] ^= 1
    spare = path.with_name("replacement")
    spare.write_bytes(bytes(bad))
    os.replace(spare, path)  # a new file under the model's name
    with pytest.raises(ServerUnavailable) as err:  # a storage failure: asked again later
        a.download(task)
    assert served[-1] == (task.global_model_digest, True)  # hashed, and refused
    assert "[storage_corrupt]" in str(err.value)  # the status, not a generic UNKNOWN
