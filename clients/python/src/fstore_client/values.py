"""Feature values between Python and the wire.

Python to wire (request-time inputs): ``float`` → f64, ``bool`` → bool, ``int`` → i64,
``str`` → string, ``bytes`` → bytes, a list of numbers (nested for more dimensions) or a
numpy array → an f32 tensor, :class:`Relation` → relation.

Wire to Python (results): the same, with a tensor read as a list of floats (nested
lists for more than one dimension) and a relation as :class:`Relation`.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence

from ._proto.featurestore.v1 import featurestore_pb2 as pb


class Relation(NamedTuple):
    """Related entities: ids of entities of one type (what a relation feature holds)."""

    entity_type: str
    ids: List[str]


def to_wire(value: Any) -> pb.Value:
    """The wire form of a Python value; raises ``TypeError`` naming what is accepted."""
    if isinstance(value, pb.Value):
        return value
    if isinstance(value, bool):
        return pb.Value(bool=value)
    if isinstance(value, int):
        return pb.Value(i64=value)
    if isinstance(value, float):
        return pb.Value(f64=value)
    if isinstance(value, str):
        return pb.Value(string=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pb.Value(bytes=bytes(value))
    if isinstance(value, Relation):
        return pb.Value(relation=pb.Relation(entity_type=value.entity_type, ids=list(value.ids)))
    if hasattr(value, "shape") and hasattr(value, "ravel"):  # a numpy array
        shape = [int(d) for d in value.shape]
        data = [float(x) for x in value.ravel().tolist()]
        return pb.Value(tensor=pb.Tensor(shape=shape, data=data))
    if isinstance(value, (list, tuple)):
        shape, data = _flatten(value)
        return pb.Value(tensor=pb.Tensor(shape=shape, data=data))
    raise TypeError(
        f"cannot send a {type(value).__name__} as a feature value: use float, int, bool, "
        "str, bytes, a list of numbers (or a numpy array) or fstore_client.Relation"
    )


def _flatten(nested: Sequence[Any]) -> "tuple[List[int], List[float]]":
    shape = [len(nested)]
    if nested and isinstance(nested[0], (list, tuple)):
        inner: Optional[List[int]] = None
        data: List[float] = []
        for row in nested:
            if not isinstance(row, (list, tuple)):
                raise TypeError("a nested list must be rectangular (a tensor)")
            s, d = _flatten(row)
            if inner is not None and s != inner:
                raise TypeError("a nested list must be rectangular (a tensor)")
            inner = s
            data.extend(d)
        return shape + (inner or []), data
    try:
        return shape, [float(x) for x in nested]
    except (TypeError, ValueError) as e:
        raise TypeError(f"a list is sent as a tensor, and holds numbers only: {e}") from None


def from_wire(value: Optional[pb.Value]) -> Any:
    """The Python form of a wire value (``None`` when unset)."""
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "tensor":
        return _unflatten(list(value.tensor.shape), list(value.tensor.data))
    if kind == "relation":
        return Relation(value.relation.entity_type, list(value.relation.ids))
    return getattr(value, kind)


def _unflatten(shape: List[int], data: List[float]) -> Any:
    if len(shape) <= 1:
        return data
    step = len(data) // shape[0] if shape[0] else 0
    return [_unflatten(shape[1:], data[i * step : (i + 1) * step]) for i in range(shape[0])]
