"""The torch side of the batching bench (`BATCHING_TORCH`): sentence-transformers on the
CPU, driven by the bench over stdin/stdout, one JSON object per line each way.

The bench sends first `{"model": DIR, "threads": N, "sentences": [...]}`; this loads
the model folder with sentence-transformers (offline) on N torch threads and answers
`{"torch": VERSION, "sentence_transformers": VERSION}`. Then each request is either
`{"measure": BATCH, "secs": S}`, answered with embeddings per second and the p50 and
p99 of one `encode` call in microseconds, measured as the bench measures candle (the
sentences cycled, a batch after another, one unmeasured call first), or `{"embed":
true}`, answered with the embedding of every sentence. EOF ends it.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def quantile(sorted_us, q):
    return sorted_us[min(len(sorted_us) - 1, int(q * len(sorted_us)))]


def main():
    hello = json.loads(sys.stdin.readline())
    import sentence_transformers
    import torch

    torch.set_num_threads(int(hello["threads"]))
    model = sentence_transformers.SentenceTransformer(hello["model"], device="cpu")
    sentences = hello["sentences"]
    n = len(sentences)
    reply({"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__})

    def encode(batch):
        with torch.inference_mode():
            return model.encode(batch, batch_size=len(batch), convert_to_numpy=True)

    for line in sys.stdin:
        req = json.loads(line)
        if "embed" in req:
            reply({"embeddings": encode(sentences).tolist()})
            continue
        size = int(req["measure"])
        ring = sentences * (size // n + 2)
        start_at = 0

        def call():
            nonlocal start_at
            batch = ring[start_at : start_at + size]
            start_at = (start_at + size) % n
            t = time.perf_counter()
            out = encode(batch)
            us = max(1, int((time.perf_counter() - t) * 1e6))
            assert out.shape[0] == size
            return us

        call()  # unmeasured, as the bench does for candle
        took = []
        window = float(req["secs"])
        begin = time.perf_counter()
        while time.perf_counter() - begin < window or len(took) < 3:
            took.append(call())
        elapsed = time.perf_counter() - begin
        took.sort()
        reply(
            {
                "per_sec": len(took) * size / elapsed,
                "p50_us": quantile(took, 0.50),
                "p99_us": quantile(took, 0.99),
            }
        )


if __name__ == "__main__":
    main()
