"""Building requests: feature definitions, entities with their inputs, durations.

Shared by :class:`~fstore_client.Client` and :class:`~fstore_client.AsyncClient`, which
only do the calls.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from ._proto.featurestore.v1 import featurestore_pb2 as pb
from .values import to_wire

#: Seconds (int or float) or a timedelta.
Duration = Union[int, float, timedelta]
#: Entity ids, or entity id → its request-time inputs.
Entities = Union[Iterable[str], Mapping[str, Mapping[str, Any]]]
#: Where a flow input comes from: a feature's name, or :func:`request` / :func:`related`.
Binding = Union[str, pb.InputBinding]


def millis(d: Optional[Duration], what: str) -> Optional[int]:
    """``d`` in whole milliseconds (``None`` stays ``None``)."""
    if d is None:
        return None
    seconds = d.total_seconds() if isinstance(d, timedelta) else float(d)
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {seconds} s")
    return int(round(seconds * 1000))


def request(name: str) -> pb.InputBinding:
    """A flow input read from the request-time input ``name``."""
    return pb.InputBinding(request=name)


def related(via: Union[str, Sequence[str]], feature: str = "", aggregate: str = "mean", truncate: bool = False) -> pb.InputBinding:
    """A flow input read from related entities: through the relation feature(s) ``via``,
    the ``feature`` of each entity reached, aggregated (mean, sum, min, max, count, list,
    or ids for the entities themselves)."""
    hops = [via] if isinstance(via, str) else list(via)
    return pb.InputBinding(related=pb.Related(via=hops, feature=feature, aggregate=aggregate, truncate=truncate))


def feature(
    name: str,
    *,
    entity_type: str,
    flow: str,
    inputs: Optional[Mapping[str, Binding]] = None,
    params: Optional[Mapping[str, Any]] = None,
    ttl: Duration = 3600,
    description: str = "",
    owner: str = "",
    serving: str = "online",
    relates_to: str = "",
    shared_with: Sequence[str] = (),
) -> pb.FeatureDefinition:
    """A feature definition to register: ``flow`` (``name@version``) computes it from
    ``inputs`` (flow input → a feature's name, :func:`request` or :func:`related`) with
    ``params``; values stay fresh for ``ttl``."""
    servings = {"online": pb.SERVING_ONLINE, "snapshot": pb.SERVING_SNAPSHOT}
    if serving not in servings:
        raise ValueError(f"serving must be 'online' or 'snapshot', got {serving!r}")
    bindings = {}
    for k, v in (inputs or {}).items():
        bindings[k] = pb.InputBinding(feature=v) if isinstance(v, str) else v
    return pb.FeatureDefinition(
        name=name,
        entity_type=entity_type,
        flow=flow,
        params={k: str(v) for k, v in (params or {}).items()},
        inputs=bindings,
        ttl_ms=millis(ttl, "ttl") or 0,
        description=description,
        owner=owner,
        serving=servings[serving],
        relates_to=relates_to,
        shared_with=list(shared_with),
    )


def definition(d: Union[pb.FeatureDefinition, Mapping[str, Any]]) -> pb.FeatureDefinition:
    """A definition given as a message, or as keyword arguments of :func:`feature`."""
    if isinstance(d, pb.FeatureDefinition):
        return d
    return feature(**d)


def entities(ids: Entities, inputs: Optional[Mapping[str, Any]] = None) -> List[pb.EntityRequest]:
    """Entity requests: each entity's own inputs over ``inputs``, shared by all."""
    common = dict(inputs or {})
    if isinstance(ids, str):
        raise TypeError("entities is a list of ids (or a dict of id → inputs), not one string")
    if isinstance(ids, Mapping):
        pairs = [(e, {**common, **dict(own or {})}) for e, own in ids.items()]
    else:
        pairs = [(e, common) for e in ids]
    return [pb.EntityRequest(entity_id=e, inputs={k: to_wire(v) for k, v in i.items()}) for e, i in pairs]


def get_features(
    ids: Entities,
    features: Sequence[str],
    *,
    inputs: Optional[Mapping[str, Any]],
    mode: str,
    wait: Optional[Duration],
    max_staleness: Optional[Duration],
    max_staleness_by_feature: Optional[Mapping[str, Duration]],
    allow_stale: bool,
) -> pb.GetFeaturesRequest:
    if mode not in ("async", "sync"):
        raise ValueError(f"mode must be 'async' or 'sync', got {mode!r}")
    if isinstance(features, str):
        raise TypeError("features is a list of names, not one string")
    req = pb.GetFeaturesRequest(
        entities=entities(ids, inputs),
        features=list(features),
        mode=pb.MODE_SYNC if mode == "sync" else pb.MODE_ASYNC,
        allow_stale=allow_stale,
    )
    if mode == "sync":
        req.wait_ms = millis(wait, "wait") or 0
    staleness = millis(max_staleness, "max_staleness")
    if staleness is not None:
        req.max_staleness_ms = staleness
    for f, d in (max_staleness_by_feature or {}).items():
        req.max_staleness_ms_by_feature[f] = millis(d, f"max_staleness of {f}") or 0
    return req


def watch(
    target: Union[str, pb.GetFeaturesRequest],
    timeout: Optional[Duration],
) -> pb.WatchFeaturesRequest:
    req = pb.WatchFeaturesRequest(wait_ms=millis(timeout, "timeout") or 0)
    if isinstance(target, str):
        req.ticket = target
    else:
        req.request.CopyFrom(target)
    return req


def backfill(
    features: Sequence[str],
    ids: Entities,
    *,
    inputs: Optional[Mapping[str, Any]],
    max_staleness: Optional[Duration],
    stage: bool,
    every: Optional[Duration],
    schedule: str,
    chunk: int = 1000,
) -> List[pb.StartBackfillRequest]:
    """The messages of a backfill: the first names the features, every one carries up to
    ``chunk`` entities."""
    all_entities = entities(ids, inputs)
    first = pb.StartBackfillRequest(
        features=list(features),
        stage=stage,
        every_ms=millis(every, "every") or 0,
        schedule=schedule,
    )
    staleness = millis(max_staleness, "max_staleness")
    if staleness is not None:
        first.max_staleness_ms = staleness
    first.entities.extend(all_entities[:chunk])
    rest = [
        pb.StartBackfillRequest(entities=all_entities[i : i + chunk])
        for i in range(chunk, len(all_entities), chunk)
    ]
    return [first, *rest]


def subscribe_events(
    features: Sequence[str], entity_ids: Sequence[str], after: Optional[int], include_inputs: bool
) -> pb.SubscribeEventsRequest:
    req = pb.SubscribeEventsRequest(features=list(features), entity_ids=list(entity_ids), include_inputs=include_inputs)
    if after is not None:
        req.after_sequence = after
    return req


def read_log(
    features: Sequence[str], entity_ids: Sequence[str], from_ms: int, to_ms: int, include_inputs: bool
) -> pb.ReadLogRequest:
    return pb.ReadLogRequest(
        features=list(features), entity_ids=list(entity_ids), from_ms=from_ms, to_ms=to_ms, include_inputs=include_inputs
    )
