"""Write fstore compute flows in Python.

A flow is a function from a batch of :class:`Item` to a list of values (one per item, in
order); :func:`flow` declares its spec. ``python -m fstore_flow MODULE[:ATTR]`` serves the
flows of MODULE (or only ATTR) to an fstore worker over stdin/stdout: ``fstore worker
--python MODULE --venv DIR`` starts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["Flow", "Item", "Permanent", "SpecError", "Transient", "VALUE_TYPES", "flow"]

#: The value types a flow's inputs and output may have.
VALUE_TYPES = ("f64", "i64", "bool", "string", "bytes", "tensor")

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_INPUT = re.compile(r"^[a-z][a-z0-9_]*$")


class SpecError(ValueError):
    """A flow declaration the worker would refuse; the message says what to fix."""


class Permanent(Exception):
    """Return (or raise) for an item that can never succeed: its job ends FAILED."""


class Transient(Exception):
    """Return (or raise) for an item worth retrying: its job is tried again later."""


@dataclass(frozen=True)
class Item:
    """One item of a batch."""

    entity_id: str
    #: The feature's params, as strings.
    params: Mapping[str, str]
    #: The named inputs: float, int, bool, str, bytes, or a float32 numpy array (a list
    #: without numpy) for tensors.
    values: Mapping[str, Any]
    #: 1 on the first try, counting up on each retry.
    attempt: int = 1


@dataclass(frozen=True)
class Flow:
    """A declared flow: its spec and its function."""

    name: str
    version: int
    inputs: Mapping[str, str]
    output: str
    fn: Callable[[List[Item]], Sequence[Any]]
    params: Mapping[str, Optional[str]] = field(default_factory=dict)
    description: str = ""
    batchable: bool = True
    optional: Sequence[str] = ()
    entity_types: Sequence[str] = ()

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def __call__(self, batch: List[Item]) -> Sequence[Any]:
        return self.fn(batch)


def _check(f: Flow) -> None:
    def refuse(what: str) -> SpecError:
        return SpecError(f"flow {f.name!r}: {what}")

    if not _NAME.match(f.name):
        raise refuse("a name is dotted lowercase words, like 'text.rerank'")
    if not isinstance(f.version, int) or isinstance(f.version, bool) or f.version < 1:
        raise refuse(f"version must be an integer of at least 1, not {f.version!r}")
    if not f.inputs:
        raise refuse("declare at least one input")
    for name, kind in f.inputs.items():
        if not _INPUT.match(name):
            raise refuse(f"input {name!r}: names are lowercase words")
        if kind not in VALUE_TYPES:
            raise refuse(f"input {name!r} has type {kind!r}; types are {', '.join(VALUE_TYPES)}")
    if f.output not in VALUE_TYPES:
        raise refuse(f"output type {f.output!r}; types are {', '.join(VALUE_TYPES)}")
    for name in f.optional:
        if name not in f.inputs:
            raise refuse(f"optional input {name!r} is not an input")
    for name, default in f.params.items():
        if not _INPUT.match(name):
            raise refuse(f"param {name!r}: names are lowercase words")
        if default is not None and not isinstance(default, str):
            raise refuse(f"param {name!r}: a default is a string (or None: required)")


def flow(
    name: str,
    *,
    version: int = 1,
    inputs: Mapping[str, str],
    output: str,
    params: Optional[Mapping[str, Optional[str]]] = None,
    description: str = "",
    batchable: bool = True,
    optional: Sequence[str] = (),
    entity_types: Sequence[str] = (),
) -> Callable[[Callable[[List[Item]], Sequence[Any]]], Flow]:
    """Declares a flow over a function from a batch of items to a list of values.

    ``inputs`` maps each input's name to its type (one of :data:`VALUE_TYPES`), ``output``
    is the value type returned, ``params`` maps each param to its default (None: a
    feature must set it). A declaration the worker would refuse raises
    :class:`SpecError` at import.
    """

    def wrap(fn: Callable[[List[Item]], Sequence[Any]]) -> Flow:
        f = Flow(
            name=name,
            version=version,
            inputs=dict(inputs),
            output=output,
            fn=fn,
            params=dict(params or {}),
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            batchable=batchable,
            optional=tuple(optional),
            entity_types=tuple(entity_types),
        )
        _check(f)
        return f

    return wrap
