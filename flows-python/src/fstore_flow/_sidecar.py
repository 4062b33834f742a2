"""The sidecar: serves a module's flows to an fstore worker over stdin and stdout.

Protocol version 1 (proto/proto/fstore/sidecar/v1/sidecar.proto): frames of a 4-byte
big-endian length and one protobuf message. The first frame out is a Hello with the
specs; then each Batch in is answered by its Results. stdout carries frames only: the
module's prints go to stderr, which the worker logs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct
import sys
import traceback
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple

from . import VALUE_TYPES, Flow, Item, Permanent, SpecError, Transient
from ._proto.fstore.sidecar.v1 import sidecar_pb2 as pb

PROTOCOL = 1
#: The stream frames go out on, once the sidecar runs (tests write garbage to it).
FRAMES: Optional[BinaryIO] = None
MAX_FRAME = 64 * 1024 * 1024
_TYPES = {name: i + 1 for i, name in enumerate(VALUE_TYPES)}

try:  # tensors are numpy arrays when numpy is there
    import numpy as np
except ImportError:  # pragma: no cover - exercised only without numpy
    np = None  # type: ignore[assignment]


def read_frame(stream: BinaryIO) -> Optional[bytes]:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise ValueError(f"a frame of {n} bytes is over the {MAX_FRAME} limit")
    body = stream.read(n)
    if len(body) < n:
        return None
    return body


def write_frame(stream: BinaryIO, message: Any) -> None:
    body = message.SerializeToString()
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def load(target: str) -> List[Flow]:
    """The flows of ``MODULE`` or ``MODULE:ATTR`` (a dotted module, or a .py file)."""
    module_name, _, attr = target.partition(":")
    if module_name.endswith(".py") or os.sep in module_name:
        spec = importlib.util.spec_from_file_location("fstore_flows_module", module_name)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {module_name}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    if attr:
        found = getattr(module, attr, None)
        if found is None:
            raise SpecError(f"{module_name} has no attribute {attr!r}")
        flows = list(found) if isinstance(found, (list, tuple)) else [found]
    else:
        flows = [v for v in vars(module).values() if isinstance(v, Flow)]
    bad = [repr(f) for f in flows if not isinstance(f, Flow)]
    if bad:
        raise SpecError(f"not flows (declare them with @fstore_flow.flow): {', '.join(bad)}")
    if not flows:
        raise SpecError(f"{target} declares no flow: decorate a function with @fstore_flow.flow")
    seen = set()
    for f in flows:
        if f.id in seen:
            raise SpecError(f"{f.id} is declared twice")
        seen.add(f.id)
    return flows


def spec(f: Flow) -> "pb.Spec":
    return pb.Spec(
        name=f.name,
        version=f.version,
        description=f.description,
        inputs=[pb.Input(name=n, value_type=_TYPES[t], optional=n in f.optional) for n, t in f.inputs.items()],
        output=_TYPES[f.output],
        params=[pb.Param(name=n, default=d) if d is not None else pb.Param(name=n) for n, d in f.params.items()],
        batchable=f.batchable,
        entity_types=list(f.entity_types),
    )


def from_value(v: "pb.Value") -> Any:
    kind = v.WhichOneof("kind")
    if kind == "tensor":
        if np is None:
            raise Permanent("a tensor input needs numpy in the sidecar's venv: pip install numpy")
        return np.asarray(v.tensor.data, dtype=np.float32).reshape(tuple(v.tensor.shape))
    if kind is None:
        raise Permanent("an input without a value")
    return getattr(v, kind)


def _shape(x: Any) -> Tuple[List[int], List[float]]:
    if isinstance(x, (list, tuple)):
        if not x:
            return [0], []
        parts = [_shape(e) for e in x]
        inner = parts[0][0]
        if any(p[0] != inner for p in parts):
            raise Permanent("a ragged nested list is not a tensor")
        return [len(x)] + inner, [d for p in parts for d in p[1]]
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise Permanent(f"{type(x).__name__} in a tensor")
    return [], [float(x)]


def to_value(x: Any, output: str) -> "pb.Value":
    def wrong() -> Permanent:
        return Permanent(f"the flow returned {type(x).__name__} for a {output} output")

    if output == "f64":
        if isinstance(x, bool) or not isinstance(x, (int, float)) and not (np is not None and isinstance(x, np.number)):
            raise wrong()
        return pb.Value(f64=float(x))
    if output == "i64":
        if isinstance(x, bool) or not isinstance(x, int) and not (np is not None and isinstance(x, np.integer)):
            raise wrong()
        return pb.Value(i64=int(x))
    if output == "bool":
        if not isinstance(x, bool) and not (np is not None and isinstance(x, np.bool_)):
            raise wrong()
        return pb.Value(bool=bool(x))
    if output == "string":
        if not isinstance(x, str):
            raise wrong()
        return pb.Value(string=x)
    if output == "bytes":
        if not isinstance(x, (bytes, bytearray)):
            raise wrong()
        return pb.Value(bytes=bytes(x))
    if np is not None and isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x, dtype=np.float32)
        return pb.Value(tensor=pb.Tensor(shape=list(a.shape), data=a.reshape(-1).tolist()))
    shape, data = _shape(x)
    return pb.Value(tensor=pb.Tensor(shape=shape, data=data))


def error(message: str, transient: bool) -> "pb.Result":
    return pb.Result(error=pb.Error(message=message, transient=transient))


def run(flows: Dict[Tuple[str, int], Flow], batch: "pb.Batch") -> List["pb.Result"]:
    f = flows.get((batch.flow, batch.version))
    n = len(batch.items)
    if f is None:
        return [error(f"this sidecar serves no flow {batch.flow}@{batch.version}", False)] * n
    items: List[Item] = []
    bad: Dict[int, pb.Result] = {}
    for i, it in enumerate(batch.items):
        try:
            values = {k: from_value(v) for k, v in it.values.items()}
        except Permanent as e:
            bad[i] = error(str(e), False)
            values = {}
        items.append(Item(entity_id=it.entity_id, params=dict(it.params), values=values, attempt=it.attempt))
    todo = [i for i in range(n) if i not in bad]
    try:
        out: Sequence[Any] = list(f([items[i] for i in todo])) if todo else []
    except (Permanent, Transient) as e:
        return [bad.get(i) or error(str(e), isinstance(e, Transient)) for i in range(n)]
    except Exception as e:  # a bug in the flow: worth retrying, then dead-lettered
        traceback.print_exc(file=sys.stderr)
        return [bad.get(i) or error(f"the flow raised {type(e).__name__}: {e}", True) for i in range(n)]
    if len(out) != len(todo):
        message = f"the flow returned {len(out)} values for {len(todo)} items"
        return [bad.get(i) or error(message, True) for i in range(n)]
    results: Dict[int, pb.Result] = dict(bad)
    for i, x in zip(todo, out):
        if isinstance(x, (Permanent, Transient)):
            results[i] = error(str(x), isinstance(x, Transient))
            continue
        try:
            results[i] = pb.Result(value=to_value(x, f.output))
        except Permanent as e:
            results[i] = error(str(e), False)
        except Exception as e:  # a value protobuf cannot hold (an int past 64 bits, …)
            results[i] = error(f"the flow returned a value that is not a {f.output}: {type(e).__name__}: {e}", False)
    return [results[i] for i in range(n)]


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m fstore_flow MODULE[:ATTR]  (a dotted module or a .py file)", file=sys.stderr)
        return 2
    # Frames own the real stdout; prints (the module's included) go to stderr.
    global FRAMES
    frames = FRAMES = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    incoming = sys.stdin.buffer
    try:
        flows = load(argv[1])
    except SpecError as e:
        print(f"fstore-flow: {e}", file=sys.stderr)
        return 3
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        print(f"fstore-flow: cannot import {argv[1]}: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    write_frame(frames, pb.FromSidecar(hello=pb.Hello(protocol=PROTOCOL, flows=[spec(f) for f in flows])))
    by_id = {(f.name, f.version): f for f in flows}
    while True:
        frame = read_frame(incoming)
        if frame is None:
            return 0
        message = pb.ToSidecar.FromString(frame)
        if message.WhichOneof("kind") != "batch":
            print("fstore-flow: a frame that is not a batch; ignored", file=sys.stderr)
            continue
        batch = message.batch
        try:
            results = run(by_id, batch)
        except Exception as e:  # a bug here must not end the process: retry the batch
            traceback.print_exc(file=sys.stderr)
            results = [error(f"the sidecar failed: {type(e).__name__}: {e}", True)] * len(batch.items)
        answer = pb.FromSidecar(results=pb.Results(id=batch.id, results=results))
        if answer.ByteSize() > MAX_FRAME:
            too_big = f"the results are {answer.ByteSize()} bytes, over the protocol's {MAX_FRAME >> 20} MiB frame"
            answer = pb.FromSidecar(
                results=pb.Results(id=batch.id, results=[error(too_big, False)] * len(batch.items))
            )
        write_frame(frames, answer)
