"""The silo profile over real gRPC: PyTorch clients train the CNN example federated."""

from __future__ import annotations

import threading

import pytest

from fedtee import tensors
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.runtime import ClientRuntime, RunSummary, RuntimeOptions
from fedtee.server.store import RoundStatus

from . import conftest
from .conftest import FED, GOOD, Harness

pytest.importorskip("torch")

from fedtee.client.examples import digits_cnn


def test_two_torch_clients_train_the_cnn_two_rounds_and_accuracy_improves(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    initial = digits_cnn.initial_arrays(0)
    monkeypatch.setattr(conftest, "initial_model", lambda: tensors.encode(initial))
    server = harness.start(rounds=2, clients_per_round=2, min_clients=2)
    assert harness.ca is not None
    ca_pem = harness.ca.cert_pem
    summaries: dict[str, RunSummary] = {}
    errors: list[BaseException] = []

    def run(partition: int) -> None:
        transport = GrpcTransport.connect(
            address=f"127.0.0.1:{server.port}", ca_pem=ca_pem, server_name="localhost"
        )
        try:
            runtime = ClientRuntime(
                client_id=f"silo-{partition}",
                transport=transport,
                attester=harness.att.attester(measurement=GOOD, platform=b""),
                trainer=digits_cnn.DigitsCnnTrainer(
                    partition=partition, num_partitions=2, seed=0, device="cpu"
                ),
                measurement=GOOD,
                options=RuntimeOptions(max_wait_s=0.1),
            )
            summaries[runtime.client_id] = runtime.run()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            transport.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert all(s.finished and s.accepted == 2 for s in summaries.values()), summaries
    store = server.store
    assert store is not None
    assert [r.status for r in store.rounds(FED)] == [RoundStatus.COMPLETED] * 2
    accuracies = [digits_cnn.global_accuracy(initial)]
    for number in (1, 2):
        rnd = store.get_round(FED, number)
        assert rnd is not None and rnd.output_model_digest is not None
        path = server.paths.artifacts / f"{rnd.output_model_digest.hex()}.safetensors"
        accuracies.append(digits_cnn.global_accuracy(tensors.decode(path.read_bytes())))
    # Chance is 0.1; two federated rounds of the CNN reach well past it, each round better.
    assert accuracies[0] < 0.3 and accuracies[1] > accuracies[0] and accuracies[2] > 0.6, accuracies
    assert accuracies[2] > accuracies[1], accuracies
