"""The flow SDK without a worker: declarations it refuses, and a sidecar process spoken
to over its pipes as the worker speaks to it (frames of the sidecar protocol)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fstore_flow import SpecError, flow
from fstore_flow._proto.fstore.sidecar.v1 import sidecar_pb2 as pb

FLOWS = Path(__file__).resolve().parents[2] / "tests" / "python" / "flows"


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"inputs": {"x": "f64"}, "output": "float"}, "output type 'float'"),
        ({"inputs": {}, "output": "f64"}, "at least one input"),
        ({"inputs": {"X": "f64"}, "output": "f64"}, "lowercase"),
        ({"inputs": {"x": "f64"}, "output": "f64", "version": 0}, "at least 1"),
        ({"inputs": {"x": "f64"}, "output": "f64", "optional": ["y"]}, "not an input"),
    ],
)
def test_a_declaration_the_worker_would_refuse_raises(kwargs: dict, says: str) -> None:
    with pytest.raises(SpecError, match=says):
        flow("py.x", **kwargs)(lambda batch: batch)


def test_a_name_is_dotted() -> None:
    with pytest.raises(SpecError, match="dotted"):
        flow("double", inputs={"x": "f64"}, output="f64")(lambda b: b)


def frame(message: object) -> bytes:
    body = message.SerializeToString()  # type: ignore[attr-defined]
    return struct.pack(">I", len(body)) + body


def read(out) -> pb.FromSidecar:  # type: ignore[no-untyped-def]
    (n,) = struct.unpack(">I", out.read(4))
    return pb.FromSidecar.FromString(out.read(n))


def test_a_sidecar_declares_its_flows_and_answers_batches() -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "fstore_flow", str(FLOWS / "good.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        hello = read(p.stdout).hello
        assert hello.protocol == 1
        specs = {f.name: f for f in hello.flows}
        assert set(specs) == {"py.double", "py.unit"}
        assert specs["py.double"].output == pb.VALUE_TYPE_F64
        assert [(q.name, q.default) for q in specs["py.double"].params] == [("offset", "0")]
        items = [
            pb.Item(entity_id="a", params={"offset": "1"}, values={"x": pb.Value(f64=2.0)}, attempt=1),
            pb.Item(entity_id="b", values={"x": pb.Value(f64=-1.0)}, attempt=1),
        ]
        p.stdin.write(frame(pb.ToSidecar(batch=pb.Batch(id=7, flow="py.double", version=1, items=items))))
        p.stdin.flush()
        results = read(p.stdout).results
        assert results.id == 7
        assert results.results[0].value.f64 == 5.0
        assert results.results[1].error.message == "x = -1.0 is negative"
        assert not results.results[1].error.transient
        tensor = pb.Value(tensor=pb.Tensor(shape=[2], data=[3.0, 4.0]))
        p.stdin.write(frame(pb.ToSidecar(batch=pb.Batch(id=8, flow="py.unit", version=1, items=[pb.Item(values={"v": tensor})]))))
        p.stdin.flush()
        got = read(p.stdout).results.results[0].value.tensor
        assert list(got.shape) == [2] and np.allclose(got.data, [0.6, 0.8])
    finally:
        p.stdin.close()
        assert p.wait(timeout=10) == 0, "the sidecar ends when its input closes"


def test_a_module_that_cannot_import_exits_with_why() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "fstore_flow", str(FLOWS / "import_error.py")],
        capture_output=True, timeout=30, text=True,
    )
    assert p.returncode == 3
    assert "fstore_no_such_module" in p.stderr and p.stdout == ""
