"""The asyncio client: the methods of :class:`~fstore_client.Client`, awaited (streams are
async iterators). Requests and results are built by the same code as the blocking
client's; see its methods for what each does."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, List, Mapping, Optional, Sequence, Union

import grpc
import grpc.aio

from . import requests as rq
from ._proto.featurestore.v1 import featurestore_pb2 as pb
from ._proto.featurestore.v1 import featurestore_pb2_grpc as pb_grpc
from .client import Client, _poll_pauses
from .connection import CHANNEL_OPTIONS, DEFAULT_ADDR, TlsSetting, from_env, resolve
from .errors import DeadlineExceeded, StillPending, from_rpc_error
from .results import FeatureResults, FeatureValue


class AsyncClient:
    """A connection to a feature store for asyncio code::

        async with AsyncClient.from_env() as client:
            results = await client.get_features(["u1"], ["user.score"], mode="sync", wait=2)
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
            self._channel = grpc.aio.insecure_channel(target.host, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(target.host, target.credentials, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.FeatureStoreStub(self._channel)
        self._metadata = target.metadata
        self.timeout = timeout

    @classmethod
    def from_env(cls, **overrides: Any) -> "AsyncClient":
        """Configured from the environment as :meth:`Client.from_env` is."""
        return cls(**{**from_env(), **overrides})

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def _stream(self, method: Any, request: Any, timeout: Optional[float]) -> AsyncIterator[Any]:
        try:
            async for item in method(request, metadata=self._metadata, timeout=timeout):
                yield item
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def get_features(
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
        """See :meth:`Client.get_features`."""
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
        resp = await self._unary(self._stub.GetFeatures, req, self.timeout + (bound or 0) / 1000.0)
        results = FeatureResults.from_proto(resp)
        if mode == "async" and bound and results.ticket:
            return await self._poll(results.ticket, time.monotonic() + bound / 1000.0)
        return results

    async def fetch(self, ticket: str) -> FeatureResults:
        resp = await self._unary(self._stub.GetTicket, pb.GetTicketRequest(ticket=ticket))
        return FeatureResults.from_proto(resp)

    async def wait(self, ticket: str, timeout: rq.Duration = 30.0) -> FeatureResults:
        """See :meth:`Client.wait`."""
        started = time.monotonic()
        results = await self._poll(ticket, started + (rq.millis(timeout, "timeout") or 0) / 1000.0)
        if not results.complete:
            raise StillPending(ticket, results.pending, time.monotonic() - started)
        return results

    async def _poll(self, ticket: str, deadline: float) -> FeatureResults:
        pauses = _poll_pauses()
        while True:
            results = await self.fetch(ticket)
            left = deadline - time.monotonic()
            if results.complete or left <= 0:
                return results
            await asyncio.sleep(min(next(pauses), left))

    async def watch(
        self,
        entities: Optional[rq.Entities] = None,
        features: Optional[Sequence[str]] = None,
        *,
        ticket: Optional[str] = None,
        inputs: Optional[Mapping[str, Any]] = None,
        timeout: rq.Duration = 60.0,
        max_staleness: Optional[rq.Duration] = None,
        allow_stale: bool = False,
    ) -> AsyncIterator[FeatureValue]:
        """See :meth:`Client.watch`."""
        target = Client._watch_target(entities, features, ticket, inputs, max_staleness, allow_stale)
        req = rq.watch(target, timeout)
        deadline = self.timeout + (rq.millis(timeout, "timeout") or 0) / 1000.0
        async for event in self._stream(self._stub.WatchFeatures, req, deadline):
            yield FeatureValue.from_proto(event.result)

    async def cancel(self, ticket: str) -> pb.CancelTicketResponse:
        return await self._unary(self._stub.CancelTicket, pb.CancelTicketRequest(ticket=ticket))

    async def register(
        self,
        definitions: Union[pb.FeatureDefinition, Mapping[str, Any], Sequence[Union[pb.FeatureDefinition, Mapping[str, Any]]]],
        *,
        force: bool = False,
    ) -> Union[pb.RegisterFeatureResponse, List[pb.RegisterFeatureResponse]]:
        """See :meth:`Client.register`."""
        if isinstance(definitions, (pb.FeatureDefinition, Mapping)):
            req = pb.RegisterFeatureRequest(definition=rq.definition(definitions), force=force)
            return await self._unary(self._stub.RegisterFeature, req)
        batch = pb.RegisterFeaturesRequest(definitions=[rq.definition(d) for d in definitions], force=force)
        return list((await self._unary(self._stub.RegisterFeatures, batch)).registered)

    async def describe(self, feature: str) -> pb.DescribeFeatureResponse:
        return await self._unary(self._stub.DescribeFeature, pb.DescribeFeatureRequest(feature=feature))

    async def list_features(self, prefix: str = "") -> List[pb.FeatureSummary]:
        return list((await self._unary(self._stub.ListFeatures, pb.ListFeaturesRequest(prefix=prefix))).features)

    async def list_flows(self) -> List[pb.FlowInfo]:
        return list((await self._unary(self._stub.ListFlows, pb.ListFlowsRequest())).flows)

    async def invalidate(self, feature: str, entity_id: str = "") -> List[str]:
        req = pb.InvalidateRequest(feature=feature, entity_id=entity_id)
        return list((await self._unary(self._stub.Invalidate, req)).invalidated)

    async def put_inputs(self, entities: Mapping[str, Mapping[str, Any]]) -> int:
        req = pb.PutInputsRequest(entities=rq.entities(entities))
        return (await self._unary(self._stub.PutInputs, req)).stored

    def events(
        self,
        features: Sequence[str] = (),
        entity_ids: Sequence[str] = (),
        *,
        after: Optional[int] = None,
        include_inputs: bool = False,
    ) -> AsyncIterator[pb.LogEvent]:
        """See :meth:`Client.events`."""
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
    ) -> AsyncIterator[pb.LogEvent]:
        req = rq.read_log(features, entity_ids, from_ms, to_ms, include_inputs)
        return self._stream(self._stub.ReadLog, req, None)

    async def backfill(
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
        """See :meth:`Client.backfill`."""
        messages = rq.backfill(
            features, entities, inputs=inputs, max_staleness=max_staleness, stage=stage, every=every, schedule=schedule
        )
        try:
            return await self._stub.StartBackfill(iter(messages), metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def get_backfill(self, backfill_id: str) -> pb.Backfill:
        return await self._unary(self._stub.GetBackfill, pb.GetBackfillRequest(id=backfill_id))

    async def wait_backfill(self, backfill_id: str, timeout: rq.Duration = 600.0) -> pb.Backfill:
        """See :meth:`Client.wait_backfill`."""
        deadline = time.monotonic() + (rq.millis(timeout, "timeout") or 0) / 1000.0
        pauses = _poll_pauses()
        while True:
            b = await self.get_backfill(backfill_id)
            if b.state != pb.BACKFILL_STATE_RUNNING:
                return b
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"backfill {backfill_id} is still running ({b.done} of {b.total} done)")
            await asyncio.sleep(min(next(pauses), left))

    async def list_backfills(self) -> List[pb.Backfill]:
        return list((await self._unary(self._stub.ListBackfills, pb.ListBackfillsRequest())).backfills)

    async def cancel_backfill(self, backfill_id: str) -> pb.Backfill:
        return await self._unary(self._stub.CancelBackfill, pb.CancelBackfillRequest(id=backfill_id))

    async def publish_status(self, feature: str = "") -> List[pb.FeaturePublish]:
        return list((await self._unary(self._stub.GetPublishStatus, pb.GetPublishStatusRequest(feature=feature))).features)

    async def rollback(self, feature: str, to: Optional[int] = None) -> pb.FeaturePublish:
        req = pb.RollbackRequest(feature=feature)
        if to is not None:
            req.to = to
        return await self._unary(self._stub.Rollback, req)

    async def schedules(self) -> List[pb.Schedule]:
        return list((await self._unary(self._stub.ListSchedules, pb.ListSchedulesRequest())).schedules)

    async def delete_schedule(self, name: str) -> pb.Schedule:
        return await self._unary(self._stub.DeleteSchedule, pb.DeleteScheduleRequest(name=name))

    async def dead_letters(self, limit: int = 100) -> pb.ListDeadLettersResponse:
        return await self._unary(self._stub.ListDeadLetters, pb.ListDeadLettersRequest(limit=limit))

    async def replay_dead_letter(self, dead_letter_id: str) -> bool:
        return (await self._unary(self._stub.ReplayDeadLetter, pb.ReplayDeadLetterRequest(id=dead_letter_id))).enqueued

    async def purge_dead_letters(self, dead_letter_id: str = "") -> int:
        return (await self._unary(self._stub.PurgeDeadLetters, pb.PurgeDeadLettersRequest(id=dead_letter_id))).purged

    async def create_api_key(self, roles: Sequence[str], label: str = "", tenant: str = "") -> pb.CreatedApiKey:
        return await self._unary(self._stub.CreateApiKey, pb.CreateApiKeyRequest(roles=list(roles), label=label, tenant=tenant))

    async def api_keys(self) -> List[pb.ApiKey]:
        return list((await self._unary(self._stub.ListApiKeys, pb.ListApiKeysRequest())).keys)

    async def revoke_api_key(self, key_id: str) -> pb.ApiKey:
        return await self._unary(self._stub.RevokeApiKey, pb.RevokeApiKeyRequest(id=key_id))
