"""The re-ranker's function alone, on batches it builds (no worker needed):
`python -m pytest examples/python-flow`."""

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from fstore_flow import Item, Permanent  # noqa: E402
from rerank import rerank  # noqa: E402


def item(q, d, temperature="0.1"):
    return Item(
        entity_id="e",
        params={"temperature": temperature},
        values={"query": np.asarray(q, dtype=np.float32), "doc": np.asarray(d, dtype=np.float32)},
    )


def test_scores_are_the_sigmoid_of_the_cosine_over_the_temperature():
    batch = [item([1, 0], [1, 0]), item([1, 0], [0, 1]), item([1, 1], [1, 0], "0.5"), item([0, 0], [1, 0])]
    got = rerank(batch)
    want = [1 / (1 + math.exp(-10)), 0.5, 1 / (1 + math.exp(-(1 / math.sqrt(2)) / 0.5)), 0.5]
    assert np.allclose(got, want)


def test_mismatched_vectors_and_bad_temperatures_fail_only_their_item():
    got = rerank([item([1, 0], [1, 0, 0]), item([1, 0], [1, 0], "0"), item([1, 0], [1, 0])])
    assert isinstance(got[0], Permanent) and "one length" in str(got[0])
    assert isinstance(got[1], Permanent) and "above 0" in str(got[1])
    assert got[2] > 0.99


def test_the_spec_is_what_features_bind():
    assert rerank.id == "py.rerank@1"
    assert rerank.inputs == {"query": "tensor", "doc": "tensor"} and rerank.output == "f64"
