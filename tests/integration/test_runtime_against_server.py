"""The real client runtime (fedtee.client) against the real server, over loopback TLS gRPC."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.runtime import ClientRuntime, RunSummary, RuntimeOptions
from fedtee.client.trainer import EvalResult, FitResult
from fedtee.ledger.log import verify_ledger
from fedtee.server.store import RoundStatus

from .conftest import FED, GOOD, Harness


class AddTrainer:
    """Adds a client-specific constant: the FedAvg result is checkable by hand."""

    def __init__(self, delta: float, n: int) -> None:
        self.delta, self.n = delta, n

    def fit(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        return FitResult(
            arrays={k: v + np.float32(self.delta) for k, v in arrays.items()}, num_examples=self.n
        )

    def evaluate(self, arrays: dict[str, Any], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=self.n)


def test_two_runtimes_train_three_rounds_to_the_weighted_average(harness: Harness) -> None:
    server = harness.start(rounds=3, clients_per_round=2, min_clients=2)
    assert harness.ca is not None
    summaries: dict[str, RunSummary] = {}
    errors: list[BaseException] = []

    def run(client_id: str, delta: float, n: int) -> None:
        transport = GrpcTransport.connect(
            address=f"127.0.0.1:{server.port}",
            ca_pem=harness.ca.cert_pem,
            server_name="localhost",  # type: ignore[union-attr]
        )
        try:
            runtime = ClientRuntime(
                client_id=client_id,
                transport=transport,
                attester=harness.att.attester(measurement=GOOD, platform=b""),
                trainer=AddTrainer(delta, n),
                measurement=GOOD,
                options=RuntimeOptions(max_wait_s=0.1),
            )
            summaries[client_id] = runtime.run()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            transport.close()

    threads = [
        threading.Thread(target=run, args=("r1", 1.0, 10)),
        threading.Thread(target=run, args=("r2", 4.0, 30)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(s.finished and s.accepted == 3 for s in summaries.values()), summaries
    store = server.store
    assert store is not None
    assert [r.status for r in store.rounds(FED)] == [RoundStatus.COMPLETED] * 3
    final = store.get_round(FED, 3)
    assert final is not None and final.output_model_digest is not None
    from fedtee import tensors

    path = server.paths.artifacts / f"{final.output_model_digest.hex()}.safetensors"
    arrays = tensors.decode(path.read_bytes())
    # Each round adds (10 * 1 + 30 * 4) / 40 = 3.25.
    assert np.allclose(arrays["w"], 3 * 3.25)
    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert len(report.lineage) == 3
    assert {c.client_id for r in report.lineage for c in r.contributions} == {"r1", "r2"}
