"""StateStore.count_clients counts exactly the clients list_clients(usable_at_ms=...) lists."""

from __future__ import annotations

from fedtee.errors import Reason
from fedtee.server.store import StateStore

FED = "fed-count"


def test_count_matches_the_usable_list() -> None:
    store = StateStore.in_memory()
    store.create_federation(federation_id=FED, config={}, now_ms=0)
    for i, expires in enumerate((100, 200, 300, 400)):
        store.enroll_client(
            federation_id=FED,
            client_id=f"c{i}",
            public_key=bytes([i]) * 65,
            tee="sim",
            platform_id=bytes([i]) * 32,
            measurement=b"\x01" * 48,
            hardware_backed=False,
            credential_expires_ms=expires,
            now_ms=0,
        )
    store.quarantine("c3", reason=Reason.UPDATE_DIGEST_MISMATCH, message="tampered")

    for now in (0, 150, 250, 500):
        usable = store.list_clients(FED, usable_at_ms=now)
        assert store.count_clients(FED, usable_at_ms=now) == len(usable)
    assert store.count_clients(FED, usable_at_ms=150) == 2  # c1, c2 (c0 expired, c3 quarantined)
    assert store.count_clients("another", usable_at_ms=0) == 0
