"""ClientApp: return the received parameters plus small deterministic noise.

The noise is the same every round, seeded by the node's ``partition-id`` (as in
bench/noise_trainer.py for fedtee), and every reply counts one example: equal weights.
As on fedtee, the noise is drawn BLOCK elements at a time into one scratch array and added
to the arrays Flower hands the app, in place (they are the app's own writable copies), so
neither side makes a model-sized temporary. (This package runs in Flower's virtual
environment, without fedtee, hence its own copy of those few lines.)
"""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

NOISE = 1e-3
BLOCK = 1 << 16
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    seed = int(context.node_config.get("partition-id", 0))
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    scratch = np.empty(BLOCK, dtype=np.float32)
    for a in arrays:
        rng = np.random.default_rng(seed)
        flat = a.reshape(-1)  # a view: np.load gives C-contiguous arrays
        for start in range(0, flat.size, BLOCK):
            part = flat[start : start + BLOCK]
            noise = scratch[: part.size]
            rng.random(dtype=np.float32, out=noise)
            noise -= np.float32(0.5)
            noise *= np.float32(NOISE)
            np.add(part, noise, out=part, casting="unsafe")
    reply = RecordDict(
        {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content=reply, reply_to=msg)
