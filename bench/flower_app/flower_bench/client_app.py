"""ClientApp: return the received parameters plus small deterministic noise.

The noise is the same every round, seeded by the node's ``partition-id`` (as in
bench/noise_trainer.py for fedtee), and every reply counts one example: equal weights.
"""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

NOISE = 1e-3
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    seed = int(context.node_config.get("partition-id", 0))
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    out = []
    for a in arrays:
        # One new buffer per tensor (the result), as in bench/noise_trainer.py for fedtee.
        new = np.random.default_rng(seed).random(a.shape, dtype=np.float32)
        new -= np.float32(0.5)
        new *= np.float32(NOISE)
        new += a
        out.append(new.astype(a.dtype, copy=False))
    reply = RecordDict(
        {"arrays": ArrayRecord(out), "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content=reply, reply_to=msg)
