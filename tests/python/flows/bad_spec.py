"""A declaration the worker refuses: an output type that does not exist."""

from fstore_flow import flow


@flow("py.bad", inputs={"x": "f64"}, output="float")
def bad(batch):
    return [0.0 for _ in batch]
