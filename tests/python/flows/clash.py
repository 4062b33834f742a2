"""One flow whose name and version a built-in flow has, and one that is fine."""

from fstore_flow import flow


@flow("text.minilm", version=1, inputs={"text": "string"}, output="tensor")
def clash(batch):
    return [[0.0] for _ in batch]


@flow("py.length", inputs={"text": "string"}, output="i64")
def length(batch):
    return [len(item.values["text"]) for item in batch]
