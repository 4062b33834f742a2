"""A re-ranker written in Python with numpy, served by an fstore worker's sidecar:
`py.rerank@1` scores a document against a query from their two embedding features —
the cosine of the embeddings, sharpened by a temperature and squashed to 0..1 — one
numpy expression per batch.

    fstore dev --venv .venv --python examples/python-flow/rerank.py \
        --features examples/python-flow/features.toml
"""

import numpy as np

from fstore_flow import Permanent, flow


@flow(
    "py.rerank",
    version=1,
    inputs={"query": "tensor", "doc": "tensor"},
    output="f64",
    params={"temperature": "0.1"},
)
def rerank(batch):
    """sigmoid(cos(query, doc) / temperature): a 0..1 relevance score."""
    out = [None] * len(batch)
    rows = []
    for i, item in enumerate(batch):
        q, d = item.values["query"], item.values["doc"]
        t = float(item.params["temperature"])
        if q.shape != d.shape or q.ndim != 1:
            out[i] = Permanent(f"query {q.shape} and doc {d.shape} must be vectors of one length")
        elif t <= 0:
            out[i] = Permanent(f"temperature {t} must be above 0")
        else:
            rows.append((i, q, d, t))
    if rows:
        # One expression for the batch: rows of equal length stack; others go one by one.
        by_len = {}
        for row in rows:
            by_len.setdefault(row[1].shape[0], []).append(row)
        for group in by_len.values():
            q = np.stack([r[1] for r in group]).astype(np.float64)
            d = np.stack([r[2] for r in group]).astype(np.float64)
            t = np.array([r[3] for r in group])
            norms = np.linalg.norm(q, axis=1) * np.linalg.norm(d, axis=1)
            cos = np.where(norms > 0, (q * d).sum(axis=1) / np.maximum(norms, 1e-12), 0.0)
            score = 1.0 / (1.0 + np.exp(-cos / t))
            for r, s in zip(group, score):
                out[r[0]] = float(s)
    return out
