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


def _uniform(seed: int, n: int) -> np.ndarray:
    """``n`` draws from (0, 1]: SplitMix64 (Steele, Lea and Flood, OOPSLA 2014) over a
    counter, keyed by ``seed`` as fedtee.client.examples.iot.Draws(seed) keys it, so both
    sides add the same values; not numpy.random, which costs a process about 7 MiB."""
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15
    m1, m2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
    z = (golden + (seed & mask)) & mask
    z = ((z ^ (z >> 30)) * m1) & mask
    z = ((z ^ (z >> 27)) * m2) & mask
    state = z ^ (z >> 31)
    w = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(golden) + np.uint64(state)
    w = (w ^ (w >> np.uint64(30))) * np.uint64(m1)
    w = (w ^ (w >> np.uint64(27))) * np.uint64(m2)
    w = w ^ (w >> np.uint64(31))
    return ((w >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53


def _pattern(seed: int) -> np.ndarray:
    """BLOCK values of (U(0, 1] - 0.5) * NOISE, drawn once per seed and process."""
    if seed not in _patterns:
        pattern = _uniform(seed, BLOCK).astype(np.float32)
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
