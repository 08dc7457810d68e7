"""ClientApp: return the received parameters plus small deterministic noise.

The noise is the same every round, seeded by the node's ``partition-id`` (as in
bench/noise_trainer.py for fedtee), and every reply counts one example: equal weights.
As on fedtee, the noise is one BLOCK-element pattern drawn once per node and added,
repeated, to the arrays Flower hands the app, in place (they are the app's own writable
copies), so neither side makes a model-sized temporary. (This package runs in Flower's virtual
environment, without fedtee, hence its own copy of those few lines.)
"""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

NOISE = 1e-3
BLOCK = 1 << 16
app = ClientApp()
_patterns: dict[int, np.ndarray] = {}


def _pattern(seed: int) -> np.ndarray:
    """BLOCK values of (U[0, 1) - 0.5) * NOISE, drawn once per seed and process."""
    if seed not in _patterns:
        pattern = np.random.default_rng(seed).random(BLOCK, dtype=np.float32)
        pattern -= np.float32(0.5)
        pattern *= np.float32(NOISE)
        _patterns[seed] = pattern
    return _patterns[seed]


@app.train()
def train(msg: Message, context: Context) -> Message:
    seed = int(context.node_config.get("partition-id", 0))
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    pattern = _pattern(seed)
    for a in arrays:
        flat = a.reshape(-1)  # a view: np.load gives C-contiguous arrays
        for start in range(0, flat.size, BLOCK):
            part = flat[start : start + BLOCK]
            np.add(part, pattern[: part.size], out=part, casting="unsafe")
    reply = RecordDict(
        {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content=reply, reply_to=msg)
