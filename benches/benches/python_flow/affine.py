"""The Python side of the python_flow bench: the same trivial compute as the built-in
num.affine (scale · x + offset), one numpy expression per batch."""

import numpy as np

from fstore_flow import flow


@flow("py.affine", inputs={"x": "f64"}, output="f64", params={"scale": "1", "offset": "0"})
def affine(batch):
    x = np.array([item.values["x"] for item in batch])
    scale = np.array([float(item.params.get("scale", "1")) for item in batch])
    offset = np.array([float(item.params.get("offset", "0")) for item in batch])
    return (scale * x + offset).tolist()
