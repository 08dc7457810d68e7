"""ServerApp: equal-weight FedAvg over every node for ``rounds`` rounds, no evaluation.

Round times: ``evaluate_fn`` is called by the strategy before round 1 and after each round's
aggregation, so the gaps between its calls are the rounds, end to end. They are written as
JSON to the run config's ``out-file`` for bench/bench_flower.py.
"""

import json
import time

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    params, clients, rounds = int(cfg["params"]), int(cfg["clients"]), int(cfg["rounds"])
    out_file = str(cfg["out-file"])
    stamps: list[float] = []

    def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        stamps.append(time.time())
        with open(out_file, "w") as handle:
            json.dump({"stamps": stamps}, handle)
        return None

    initial = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=clients,
        min_evaluate_nodes=0,
        min_available_nodes=clients,
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([initial]),
        num_rounds=rounds,
        evaluate_fn=stamp,
    )
