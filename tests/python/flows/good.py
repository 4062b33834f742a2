"""Flows the Python-flow tests serve: a numeric one with a param and a per-item error,
and a numpy one over tensors."""

import numpy as np

from fstore_flow import Permanent, flow

LOADED = np.ones(3, dtype=np.float32)  # "a model", loaded once per sidecar process
print("good.py imported: prints go to the log, never between the frames")


@flow("py.double", version=1, inputs={"x": "f64"}, output="f64", params={"offset": "0"})
def double(batch):
    """2·x + offset; a negative x is refused."""
    print(f"a batch of {len(batch)}")
    out = []
    for item in batch:
        x = item.values["x"]
        if x < 0:
            out.append(Permanent(f"x = {x} is negative"))
        else:
            # The declared default arrives when a feature sets no offset.
            out.append(2 * x + float(item.params["offset"]))
    return out


@flow("py.unit", version=1, inputs={"v": "tensor"}, output="tensor")
def unit(batch):
    """v / |v|, the batch stacked into one numpy expression."""
    v = np.stack([item.values["v"] for item in batch]) * LOADED[: 1]
    return list(v / np.linalg.norm(v, axis=1, keepdims=True))
