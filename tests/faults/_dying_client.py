"""A client process that enrols, trains, starts its upload and SIGKILLs itself mid-stream.

python tests/faults/_dying_client.py FEDERATION_DIR PORT CLIENT_ID
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from fedtee.attest.attesters.sim import SimRoot
from fedtee.cli.init import DEFAULT_TRAINER, trainer_measurement
from fedtee.eval.loadgen import LoadOptions, LoadTarget, VirtualClient, channel, stub
from fedtee.wire.messages import TaskKind


async def main(directory: Path, port: int, client_id: str) -> None:
    target = LoadTarget(
        address=f"127.0.0.1:{port}",
        ca_pem=(directory / "ca.pem").read_bytes(),
        sim_root=SimRoot.from_pem(
            (directory / "sim-root.pem").read_bytes(), (directory / "sim-root.key").read_bytes()
        ),
        measurement=trainer_measurement(DEFAULT_TRAINER),
    )
    client = VirtualClient(
        client_id=client_id,
        stub=stub(channel(target)),
        target=target,
        options=LoadOptions(clients=1),
    )
    await client.enroll()
    while (task := await client.task()).kind is not TaskKind.TRAIN:
        await asyncio.sleep(0.05)
    signed, update = client.train(task, await client.download(task))

    async def half_then_die() -> AsyncIterator[bytes]:
        yield update[: len(update) // 2]
        print("uploading: half sent", flush=True)
        await asyncio.sleep(1.0)  # let the bytes reach the server
        os.kill(os.getpid(), signal.SIGKILL)
        yield b""  # never reached

    await client.submit(signed, update, chunks=half_then_die())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
