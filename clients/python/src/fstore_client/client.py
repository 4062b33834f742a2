"""The blocking client. :class:`~fstore_client.AsyncClient` has the same methods for asyncio."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

import grpc

from . import requests as rq
from ._proto.featurestore.v1 import featurestore_pb2 as pb
from ._proto.featurestore.v1 import featurestore_pb2_grpc as pb_grpc
from .connection import CHANNEL_OPTIONS, DEFAULT_ADDR, TlsSetting, from_env, resolve
from .errors import DeadlineExceeded, StillPending, from_rpc_error
from .results import FeatureResults, FeatureValue

T = TypeVar("T")

#: The first pause between two polls of a ticket, the growth per poll and the longest.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.02, 1.5, 0.5


def _poll_pauses() -> Iterator[float]:
    pause = POLL_FIRST
    while True:
        yield pause
        pause = min(pause * POLL_GROWTH, POLL_MAX)


class Client:
    """A connection to a feature store.

    >>> client = Client("127.0.0.1:50051", api_key="fsk_...")       # doctest: +SKIP
    >>> client.get_features(["u1"], ["user.score"], mode="sync", wait=2).to_dict()  # doctest: +SKIP
    {'u1': {'user.score': 0.82}}

    ``timeout`` bounds each call that has no bound of its own (seconds). The client is a
    context manager; :meth:`close` ends the connection.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        api_key: Optional[str] = None,
        tenant: Optional[str] = None,
        tls: TlsSetting = None,
        timeout: float = 30.0,
    ) -> None:
        target = resolve(addr, api_key, tenant, tls)
        if target.credentials is None:
            self._channel = grpc.insecure_channel(target.host, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(target.host, target.credentials, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.FeatureStoreStub(self._channel)
        self._metadata = target.metadata
        self.timeout = timeout

    @classmethod
    def from_env(cls, **overrides: Any) -> "Client":
        """A client configured as the ``fstore`` CLI is: ``FSTORE_ADDR``,
        ``FSTORE_API_KEY``, ``FSTORE_TENANT``, ``FSTORE_TLS_CA`` / ``_CERT`` / ``_KEY``;
        keyword arguments override them."""
        return cls(**{**from_env(), **overrides})

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------

    def _unary(self, method: Callable[..., T], request: Any, timeout: Optional[float] = None) -> T:
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def _stream(self, method: Callable[..., Any], request: Any, timeout: Optional[float]) -> Iterator[Any]:
        try:
            for item in method(request, metadata=self._metadata, timeout=timeout):
                yield item
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    # -- reading features ---------------------------------------------------------------

    def get_features(
        self,
        entities: rq.Entities,
        features: Sequence[str],
        *,
        inputs: Optional[Mapping[str, Any]] = None,
        mode: str = "async",
        wait: Optional[rq.Duration] = None,
        max_staleness: Optional[rq.Duration] = None,
        max_staleness_by_feature: Optional[Mapping[str, rq.Duration]] = None,
        allow_stale: bool = False,
    ) -> FeatureResults:
        """Features of entities: cached values at once, the missing ones computed.

        ``entities`` is a list of ids, or ``{id: {input: value}}`` with request-time
        inputs; ``inputs`` are shared by every entity. ``mode="sync"`` makes the server
        wait up to ``wait`` seconds for what is missing; ``mode="async"`` answers at once
        with a ticket for what is pending, and with ``wait`` polls it until everything
        is final or the time is up. Either way, what is still pending reads PENDING and
        ``.ticket`` follows it. ``max_staleness`` (seconds; 0 bypasses the cache) bounds
        the age of values served, per feature with ``max_staleness_by_feature``;
        ``allow_stale`` serves an older value as STALE while it is recomputed.
        """
        req = rq.get_features(
            entities,
            features,
            inputs=inputs,
            mode=mode,
            wait=wait,
            max_staleness=max_staleness,
            max_staleness_by_feature=max_staleness_by_feature,
            allow_stale=allow_stale,
        )
        bound = rq.millis(wait, "wait")
        call_timeout = self.timeout + (bound or 0) / 1000.0
        results = FeatureResults.from_proto(self._unary(self._stub.GetFeatures, req, call_timeout))
        if mode == "async" and bound and results.ticket:
            return self._poll(results.ticket, time.monotonic() + bound / 1000.0)
        return results

    def fetch(self, ticket: str) -> FeatureResults:
        """The current state of a ticket's results."""
        resp = self._unary(self._stub.GetTicket, pb.GetTicketRequest(ticket=ticket))
        return FeatureResults.from_proto(resp)

    def wait(self, ticket: str, timeout: rq.Duration = 30.0) -> FeatureResults:
        """A ticket's results once all are final, polling with backoff (20 ms up to
        0.5 s); raises :class:`~fstore_client.StillPending`, naming what is pending, when
        ``timeout`` passes first."""
        started = time.monotonic()
        results = self._poll(ticket, started + (rq.millis(timeout, "timeout") or 0) / 1000.0)
        if not results.complete:
            raise StillPending(ticket, results.pending, time.monotonic() - started)
        return results

    def _poll(self, ticket: str, deadline: float) -> FeatureResults:
        pauses = _poll_pauses()
        while True:
            results = self.fetch(ticket)
            left = deadline - time.monotonic()
            if results.complete or left <= 0:
                return results
            time.sleep(min(next(pauses), left))

    def watch(
        self,
        entities: Optional[rq.Entities] = None,
        features: Optional[Sequence[str]] = None,
        *,
        ticket: Optional[str] = None,
        inputs: Optional[Mapping[str, Any]] = None,
        timeout: rq.Duration = 60.0,
        max_staleness: Optional[rq.Duration] = None,
        allow_stale: bool = False,
    ) -> Iterator[FeatureValue]:
        """Each result once, as it becomes final (values already final first): of a new
        request (``entities`` and ``features``) or of an existing ``ticket``. The
        iterator ends when all are final or ``timeout`` passes."""
        target = self._watch_target(entities, features, ticket, inputs, max_staleness, allow_stale)
        req = rq.watch(target, timeout)
        deadline = self.timeout + (rq.millis(timeout, "timeout") or 0) / 1000.0
        for event in self._stream(self._stub.WatchFeatures, req, deadline):
            yield FeatureValue.from_proto(event.result)

    @staticmethod
    def _watch_target(
        entities: Optional[rq.Entities],
        features: Optional[Sequence[str]],
        ticket: Optional[str],
        inputs: Optional[Mapping[str, Any]],
        max_staleness: Optional[rq.Duration],
        allow_stale: bool,
    ) -> Union[str, pb.GetFeaturesRequest]:
        if ticket is not None:
            if entities is not None or features is not None:
                raise ValueError("watch either a ticket or entities and features, not both")
            return ticket
        if entities is None or features is None:
            raise ValueError("watch needs entities and features, or a ticket")
        return rq.get_features(
            entities,
            features,
            inputs=inputs,
            mode="async",
            wait=None,
            max_staleness=max_staleness,
            max_staleness_by_feature=None,
            allow_stale=allow_stale,
        )

    def cancel(self, ticket: str) -> pb.CancelTicketResponse:
        """Gives up a ticket: computes nobody else waits on are dropped."""
        return self._unary(self._stub.CancelTicket, pb.CancelTicketRequest(ticket=ticket))

    # -- definitions ----------------------------------------------------------------------

    def register(
        self,
        definitions: Union[pb.FeatureDefinition, Mapping[str, Any], Sequence[Union[pb.FeatureDefinition, Mapping[str, Any]]]],
        *,
        force: bool = False,
    ) -> Union[pb.RegisterFeatureResponse, List[pb.RegisterFeatureResponse]]:
        """Registers one definition (see :func:`fstore_client.feature`), or several all
        or nothing, in order; a changed definition becomes a new version. ``force``
        registers even when no worker serves the flow yet."""
        if isinstance(definitions, (pb.FeatureDefinition, Mapping)):
            req = pb.RegisterFeatureRequest(definition=rq.definition(definitions), force=force)
            return self._unary(self._stub.RegisterFeature, req)
        batch = pb.RegisterFeaturesRequest(definitions=[rq.definition(d) for d in definitions], force=force)
        return list(self._unary(self._stub.RegisterFeatures, batch).registered)

    def describe(self, feature: str) -> pb.DescribeFeatureResponse:
        """A feature's definition, dependencies both ways, flow, versions and serving
        statistics (added up over the replicas)."""
        return self._unary(self._stub.DescribeFeature, pb.DescribeFeatureRequest(feature=feature))

    def list_features(self, prefix: str = "") -> List[pb.FeatureSummary]:
        return list(self._unary(self._stub.ListFeatures, pb.ListFeaturesRequest(prefix=prefix)).features)

    def list_flows(self) -> List[pb.FlowInfo]:
        """The flows workers serve, with their live workers, slots and models, and
        their jobs queued or running: ``queued`` (all tenants) and ``tenant_queued``
        (this client's tenant)."""
        return list(self._unary(self._stub.ListFlows, pb.ListFlowsRequest()).flows)

    def invalidate(self, feature: str, entity_id: str = "") -> List[str]:
        """Drops a feature's values (one entity's, or all) and everything downstream;
        returns the features dropped, as ``name@version``."""
        req = pb.InvalidateRequest(feature=feature, entity_id=entity_id)
        return list(self._unary(self._stub.Invalidate, req).invalidated)

    def put_inputs(self, entities: Mapping[str, Mapping[str, Any]]) -> int:
        """Stores request-time inputs of entities (``{id: {input: value}}``) for later
        reads; returns how many inputs were stored."""
        req = pb.PutInputsRequest(entities=rq.entities(entities))
        return self._unary(self._stub.PutInputs, req).stored

    # -- the log and its events -----------------------------------------------------------

    def events(
        self,
        features: Sequence[str] = (),
        entity_ids: Sequence[str] = (),
        *,
        after: Optional[int] = None,
        include_inputs: bool = False,
    ) -> Iterator[pb.LogEvent]:
        """The result-ready stream, live and without end: every value that becomes READY
        or FAILED, in log order. Resume with ``after`` = the last ``sequence`` seen."""
        req = rq.subscribe_events(features, entity_ids, after, include_inputs)
        return self._stream(self._stub.SubscribeEvents, req, None)

    def read_log(
        self,
        features: Sequence[str] = (),
        entity_ids: Sequence[str] = (),
        *,
        from_ms: int = 0,
        to_ms: int = 0,
        include_inputs: bool = False,
    ) -> Iterator[pb.LogEvent]:
        """The feature log between two Unix-ms times (0: open), oldest first."""
        req = rq.read_log(features, entity_ids, from_ms, to_ms, include_inputs)
        return self._stream(self._stub.ReadLog, req, None)

    # -- backfills and publishing -----------------------------------------------------------

    def backfill(
        self,
        features: Sequence[str],
        entities: rq.Entities,
        *,
        inputs: Optional[Mapping[str, Any]] = None,
        max_staleness: Optional[rq.Duration] = None,
        stage: bool = False,
        every: Optional[rq.Duration] = None,
        schedule: str = "",
    ) -> pb.Backfill:
        """Computes features for many entities on the batch lane (sent in chunks);
        ``stage`` writes a generation the anomaly gate publishes, ``every`` repeats it
        as the schedule ``schedule``. Answers once the whole list is accepted."""
        messages = rq.backfill(
            features, entities, inputs=inputs, max_staleness=max_staleness, stage=stage, every=every, schedule=schedule
        )
        try:
            return self._stub.StartBackfill(iter(messages), metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def get_backfill(self, backfill_id: str) -> pb.Backfill:
        return self._unary(self._stub.GetBackfill, pb.GetBackfillRequest(id=backfill_id))

    def wait_backfill(self, backfill_id: str, timeout: rq.Duration = 600.0) -> pb.Backfill:
        """A backfill once it is no longer running; :class:`~fstore_client.DeadlineExceeded`
        when ``timeout`` passes first."""
        deadline = time.monotonic() + (rq.millis(timeout, "timeout") or 0) / 1000.0
        pauses = _poll_pauses()
        while True:
            b = self.get_backfill(backfill_id)
            if b.state != pb.BACKFILL_STATE_RUNNING:
                return b
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"backfill {backfill_id} is still running ({b.done} of {b.total} done)")
            time.sleep(min(next(pauses), left))

    def list_backfills(self) -> List[pb.Backfill]:
        return list(self._unary(self._stub.ListBackfills, pb.ListBackfillsRequest()).backfills)

    def cancel_backfill(self, backfill_id: str) -> pb.Backfill:
        return self._unary(self._stub.CancelBackfill, pb.CancelBackfillRequest(id=backfill_id))

    def publish_status(self, feature: str = "") -> List[pb.FeaturePublish]:
        """Snapshot-served features' generations: which is published, each with its gate report."""
        return list(self._unary(self._stub.GetPublishStatus, pb.GetPublishStatusRequest(feature=feature)).features)

    def rollback(self, feature: str, to: Optional[int] = None) -> pb.FeaturePublish:
        req = pb.RollbackRequest(feature=feature)
        if to is not None:
            req.to = to
        return self._unary(self._stub.Rollback, req)

    def schedules(self) -> List[pb.Schedule]:
        return list(self._unary(self._stub.ListSchedules, pb.ListSchedulesRequest()).schedules)

    def delete_schedule(self, name: str) -> pb.Schedule:
        return self._unary(self._stub.DeleteSchedule, pb.DeleteScheduleRequest(name=name))

    # -- operations (admin) ----------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> pb.ListDeadLettersResponse:
        return self._unary(self._stub.ListDeadLetters, pb.ListDeadLettersRequest(limit=limit))

    def replay_dead_letter(self, dead_letter_id: str) -> bool:
        """Computes a dead letter's value again; False when it is being computed already."""
        return self._unary(self._stub.ReplayDeadLetter, pb.ReplayDeadLetterRequest(id=dead_letter_id)).enqueued

    def purge_dead_letters(self, dead_letter_id: str = "") -> int:
        """Drops one dead letter, or every one of the tenant; returns how many."""
        return self._unary(self._stub.PurgeDeadLetters, pb.PurgeDeadLettersRequest(id=dead_letter_id)).purged

    def create_api_key(self, roles: Sequence[str], label: str = "", tenant: str = "") -> pb.CreatedApiKey:
        """A new key of the caller's tenant; its secret is in this answer only."""
        return self._unary(self._stub.CreateApiKey, pb.CreateApiKeyRequest(roles=list(roles), label=label, tenant=tenant))

    def api_keys(self) -> List[pb.ApiKey]:
        return list(self._unary(self._stub.ListApiKeys, pb.ListApiKeysRequest()).keys)

    def revoke_api_key(self, key_id: str) -> pb.ApiKey:
        return self._unary(self._stub.RevokeApiKey, pb.RevokeApiKeyRequest(id=key_id))
