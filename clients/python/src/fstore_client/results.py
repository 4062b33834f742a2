"""What a read answers: one :class:`FeatureValue` per (entity, feature), in request order,
gathered in :class:`FeatureResults` with the ticket to follow what is still pending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, overload

from ._proto.featurestore.v1 import featurestore_pb2 as pb
from .values import from_wire

#: Statuses a result can have; READY, STALE, FAILED and CANCELED are final.
STATUSES = ("UNSPECIFIED", "READY", "STALE", "PENDING", "FAILED", "CANCELED")


@dataclass(frozen=True)
class FeatureValue:
    """One feature of one entity."""

    entity_id: str
    #: The feature as requested (``name`` or ``name@version``).
    feature: str
    #: The version that answered.
    version: int
    #: READY, STALE (an older value served while its recompute runs), PENDING, FAILED or
    #: CANCELED.
    status: str
    #: The value (see :mod:`fstore_client.values`); ``None`` unless READY or STALE.
    value: Any
    #: When the value was computed (Unix ms; 0 when there is none yet).
    computed_at_ms: int
    #: How old the value was when answered, in milliseconds.
    age_ms: int
    #: True when the value was stored before this call asked.
    from_cache: bool
    #: Why a FAILED result failed.
    error: str
    #: Deliveries its compute took.
    attempts: int
    #: The published generation that answered (snapshot serving), else 0.
    generation: int

    @property
    def ready(self) -> bool:
        """READY or STALE: a value to use."""
        return self.status in ("READY", "STALE")

    @property
    def final(self) -> bool:
        """Not PENDING: nothing more will change in this result."""
        return self.status != "PENDING"

    @classmethod
    def from_proto(cls, r: pb.FeatureResult) -> "FeatureValue":
        status = STATUSES[r.status] if 0 <= r.status < len(STATUSES) else str(r.status)
        return cls(
            entity_id=r.entity_id,
            feature=r.feature,
            version=r.version,
            status=status,
            value=from_wire(r.value) if r.HasField("value") else None,
            computed_at_ms=r.computed_at_ms,
            age_ms=r.age_ms,
            from_cache=r.from_cache,
            error=r.error,
            attempts=r.attempts,
            generation=r.generation,
        )


class FeatureResults(Sequence[FeatureValue]):
    """The answer to a read: a sequence of :class:`FeatureValue` in request order
    (entities outer, features inner), the ticket while anything is pending, and views
    as a dict, a pandas DataFrame or an Arrow table (one row per entity, one column per
    feature)."""

    def __init__(self, values: List[FeatureValue], ticket: Optional[str], canceled: bool = False) -> None:
        self._values = values
        #: Set while anything is pending: poll it with ``fetch``, ``wait`` or ``watch``.
        self.ticket = ticket or None
        #: The ticket was cancelled.
        self.canceled = canceled

    @classmethod
    def from_proto(cls, r: pb.GetFeaturesResponse) -> "FeatureResults":
        return cls([FeatureValue.from_proto(x) for x in r.results], r.ticket, r.canceled)

    @overload
    def __getitem__(self, i: int) -> FeatureValue: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[FeatureValue]: ...

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self._values[i]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[FeatureValue]:
        return iter(self._values)

    def __repr__(self) -> str:
        counts: Dict[str, int] = {}
        for v in self._values:
            counts[v.status] = counts.get(v.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        ticket = f", ticket={self.ticket!r}" if self.ticket else ""
        return f"FeatureResults({summary}{ticket})"

    @property
    def complete(self) -> bool:
        """Every result is final."""
        return all(v.final for v in self._values)

    @property
    def pending(self) -> List[Tuple[str, str]]:
        """(entity id, feature) of each result still PENDING."""
        return [(v.entity_id, v.feature) for v in self._values if not v.final]

    @property
    def failed(self) -> List[FeatureValue]:
        return [v for v in self._values if v.status == "FAILED"]

    def get(self, entity_id: str, feature: str) -> Optional[FeatureValue]:
        """The result of one entity and feature (as requested), if asked for."""
        for v in self._values:
            if v.entity_id == entity_id and v.feature == feature:
                return v
        return None

    def features(self) -> List[str]:
        """The features, as requested, in request order."""
        return list(dict.fromkeys(v.feature for v in self._values))

    def entities(self) -> List[str]:
        """The entities, in request order."""
        return list(dict.fromkeys(v.entity_id for v in self._values))

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """``{entity_id: {feature: value}}``; a result that is not READY or STALE is ``None``."""
        out: Dict[str, Dict[str, Any]] = {}
        for v in self._values:
            out.setdefault(v.entity_id, {})[v.feature] = v.value if v.ready else None
        return out

    def to_pandas(self, metadata: bool = False) -> Any:
        """A DataFrame indexed by ``entity_id`` with one column per feature (``None``
        where not READY or STALE). ``metadata=True`` instead gives one row per result
        with every field (status, age, version, error...). Needs pandas
        (``pip install 'fstore-client[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas needs pandas: pip install 'fstore-client[pandas]'") from e
        if metadata:
            return pd.DataFrame([v.__dict__ for v in self._values])
        table = self.to_dict()
        columns = self.features()
        frame = pd.DataFrame.from_dict(
            {e: [table[e].get(f) for f in columns] for e in self.entities()},
            orient="index",
            columns=columns,
        )
        frame.index.name = "entity_id"
        return frame

    def to_arrow(self) -> Any:
        """An Arrow table: ``entity_id`` and one column per feature (null where not READY
        or STALE); tensors become list columns. Needs pyarrow
        (``pip install 'fstore-client[arrow]'``)."""
        try:
            import pyarrow as pa
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_arrow needs pyarrow: pip install 'fstore-client[arrow]'") from e
        table = self.to_dict()
        entities = self.entities()
        columns: Dict[str, Any] = {"entity_id": pa.array(entities, pa.string())}
        for f in self.features():
            values = [table[e].get(f) for e in entities]
            values = [v._asdict() if hasattr(v, "_asdict") else v for v in values]
            columns[f] = pa.array(values)
        return pa.table(columns)
