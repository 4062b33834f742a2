"""The client against real servers: `fstore dev`, and `serve --nats` + a worker process."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pyarrow as pa
import pytest

import fstore_client as fs
from fstore_client import feature, request

from conftest import REPO, Server


def register_pair(c: fs.Client, prefix: str) -> tuple:
    """`<prefix>.len`: the characters of a request input; `<prefix>.double`: twice that."""
    length, double = f"{prefix}.len", f"{prefix}.double"
    c.register(
        [
            feature(length, entity_type="doc", flow="text.stats@1", inputs={"text": request("text")}, params={"stat": "chars"}),
            feature(double, entity_type="doc", flow="num.affine@1", inputs={"x": length}, params={"scale": 2}),
        ]
    )
    return length, double


def test_sync_reads_compute_through_the_graph(server: Server, unique: str) -> None:
    with server.client() as c:
        length, double = register_pair(c, unique)
        r = c.get_features({"d1": {"text": "hello"}, "d2": {"text": "hi"}}, [double, length], mode="sync", wait=10)
        assert r.complete and r.ticket is None, r
        assert r.to_dict() == {"d1": {double: 10.0, length: 5.0}, "d2": {double: 4.0, length: 2.0}}
        first = r.get("d1", double)
        assert first is not None and first.status == "READY" and first.version == 1
        assert not first.from_cache and first.computed_at_ms > 0
        again = c.get_features({"d1": {"text": "hello"}}, [double], mode="sync", wait=10)
        assert again[0].from_cache and again[0].value == 10.0


def test_async_answers_a_ticket_and_wait_follows_it(server: Server, unique: str) -> None:
    with server.client() as c:
        slow = f"{unique}.slow"
        c.register(feature(slow, entity_type="doc", flow="test.probe@1", params={"delay_ms": 300, "value": 7}))
        r = c.get_features(["a", "b"], [slow])
        assert r.ticket, "a compute was started: a ticket follows it"
        assert {v.status for v in r} == {"PENDING"}, r
        assert r.pending == [("a", slow), ("b", slow)]
        done = c.wait(r.ticket, timeout=20)
        assert [v.value for v in done] == [7.0, 7.0]
        assert c.fetch(r.ticket).complete


def test_async_with_wait_polls_until_final(server: Server, unique: str) -> None:
    with server.client() as c:
        slow = f"{unique}.slow"
        c.register(feature(slow, entity_type="doc", flow="test.probe@1", params={"delay_ms": 200, "value": 3}))
        r = c.get_features(["a"], [slow], wait=20)
        assert r.complete and r[0].value == 3.0, r


def test_wait_past_its_timeout_names_what_is_pending(server: Server, unique: str) -> None:
    with server.client() as c:
        slow = f"{unique}.slow"
        c.register(feature(slow, entity_type="doc", flow="test.probe@1", params={"delay_ms": 3000, "value": 1}))
        r = c.get_features(["late"], [slow])
        assert r.ticket
        started = time.monotonic()
        with pytest.raises(fs.StillPending) as e:
            c.wait(r.ticket, timeout=0.3)
        assert time.monotonic() - started < 2.0
        assert e.value.pending == [("late", slow)]
        assert e.value.ticket == r.ticket
        assert isinstance(e.value, fs.DeadlineExceeded)
        assert "still has 1 pending" in str(e.value)
        cancelled = c.cancel(r.ticket)
        assert cancelled.dropped + cancelled.kept + cancelled.finished >= 1


def test_watch_streams_each_result_once_as_it_becomes_final(server: Server, unique: str) -> None:
    with server.client() as c:
        slow = f"{unique}.slow"
        c.register(feature(slow, entity_type="doc", flow="test.probe@1", params={"delay_ms": 100, "value": 2}))
        seen = list(c.watch(["w1", "w2", "w3"], [slow], timeout=20))
        assert sorted(v.entity_id for v in seen) == ["w1", "w2", "w3"]
        assert all(v.status == "READY" and v.value == 2.0 for v in seen), seen
        # A ticket can be watched too.
        r = c.get_features(["w4"], [slow])
        assert r.ticket
        assert [v.entity_id for v in c.watch(ticket=r.ticket, timeout=20)] == ["w4"]


def test_results_as_pandas_and_arrow(server: Server, unique: str) -> None:
    with server.client() as c:
        length, double = register_pair(c, unique)
        r = c.get_features(["x", "y"], [length, double], inputs={"text": "abc"}, mode="sync", wait=10)
        df = r.to_pandas()
        assert list(df.index) == ["x", "y"] and df.index.name == "entity_id"
        assert list(df.columns) == [length, double]
        assert df.loc["y", double] == 6.0
        meta = r.to_pandas(metadata=True)
        assert set(meta["status"]) == {"READY"} and len(meta) == 4
        table = r.to_arrow()
        assert table.column_names == ["entity_id", length, double]
        assert table.column(double).type == pa.float64()
        assert table.column("entity_id").to_pylist() == ["x", "y"]


def test_tensors_and_request_inputs_round_trip(server: Server, unique: str) -> None:
    with server.client() as c:
        norm = f"{unique}.norm"
        c.register(feature(norm, entity_type="doc", flow="vec.normalize@1", inputs={"v": request("v")}))
        r = c.get_features({"t": {"v": [3.0, 4.0]}}, [norm], mode="sync", wait=10)
        assert r[0].status == "READY", r[0]
        assert r[0].value == pytest.approx([0.6, 0.8])
        table = r.to_arrow()
        assert table.column(norm).to_pylist()[0] == pytest.approx([0.6, 0.8])


def test_stored_inputs_serve_later_reads(server: Server, unique: str) -> None:
    with server.client() as c:
        length, _ = register_pair(c, unique)
        assert c.put_inputs({"stored": {"text": "four"}}) == 1
        r = c.get_features(["stored"], [length], mode="sync", wait=10)
        assert r[0].value == 4.0


def test_definitions_describe_and_list(server: Server, unique: str) -> None:
    with server.client() as c:
        length, double = register_pair(c, unique)
        d = c.describe(double)
        assert d.definition.name == double and d.definition.version == 1
        assert list(d.dependencies) == [f"{length}@1"]
        assert d.flow.name == "num.affine"
        assert double in [f.name for f in c.list_features(prefix=unique)]
        assert any(f.name == "text.stats" and f.live_workers >= 1 for f in c.list_flows())
        # A changed definition becomes version 2; an identical one changes nothing.
        changed = c.register(feature(double, entity_type="doc", flow="num.affine@1", inputs={"x": length}, params={"scale": 5}))
        assert changed.created and changed.feature.version == 2
        same = c.register(feature(double, entity_type="doc", flow="num.affine@1", inputs={"x": length}, params={"scale": 5}))
        assert not same.created
        dropped = c.invalidate(length)
        assert f"{length}@1" in dropped and f"{double}@2" in dropped, dropped


def test_errors_are_typed_and_carry_the_servers_message(server: Server, unique: str) -> None:
    with server.client() as c:
        with pytest.raises(fs.NotFound) as e:
            c.get_features(["e"], [f"{unique}.nope"])
        assert f"{unique}.nope" in e.value.message
        assert "NOT_FOUND" in str(e.value) and e.value.retry_after is None
        with pytest.raises(fs.InvalidArgument) as e:
            c.register(feature(f"{unique}.bad", entity_type="doc", flow="num.affine@1", inputs={"x": f"{unique}.missing"}))
        assert f"{unique}.missing" in e.value.message
        with pytest.raises(fs.NotFound):
            c.fetch("no-such-ticket")
    with pytest.raises(TypeError):
        fs.values.to_wire(object())
    with pytest.raises(ValueError):
        fs.Client("no-port")


def test_keys_and_roles_are_enforced(on_nats: Server, unique: str) -> None:
    with fs.Client(on_nats.addr) as anonymous:
        with pytest.raises(fs.Unauthenticated):
            anonymous.list_features()
    with fs.Client(on_nats.addr, api_key="fsk_wrong_key") as wrong:
        with pytest.raises(fs.Unauthenticated):
            wrong.list_features()
    with on_nats.client() as admin:
        made = admin.create_api_key(["read"], label=unique)
        assert made.secret and made.key.roles == ["read"]
        assert made.key.id in [k.id for k in admin.api_keys()]
        with fs.Client(on_nats.addr, api_key=made.secret) as reader:
            assert isinstance(reader.list_features(), list)
            with pytest.raises(fs.PermissionDenied) as e:
                reader.register(feature(f"{unique}.x", entity_type="doc", flow="test.probe@1"))
            assert "write" in e.value.message
        admin.revoke_api_key(made.key.id)


def test_from_env_reads_what_the_cli_reads(on_nats: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSTORE_ADDR", on_nats.addr)
    monkeypatch.setenv("FSTORE_API_KEY", on_nats.api_key or "")
    with fs.Client.from_env() as c:
        assert isinstance(c.list_flows(), list)
    monkeypatch.setenv("FSTORE_API_KEY", "fsk_not_a_key")
    with fs.Client.from_env() as c:
        with pytest.raises(fs.Unauthenticated):
            c.list_flows()


def test_events_stream_values_as_they_are_stored(server: Server, unique: str) -> None:
    with server.client() as c:
        length, _ = register_pair(c, unique)
        c.get_features({"ev": {"text": "abcdef"}}, [length], mode="sync", wait=10)
        for event in c.events(features=[length], after=0):
            assert event.record.entity_id == "ev" and event.record.feature == length
            assert fs.values.from_wire(event.record.value) == 6.0
            assert event.sequence > 0
            break
        logged = [e.record.entity_id for e in c.read_log(features=[length])]
        assert logged == ["ev"]


def test_backfill_fills_the_cache(server: Server, unique: str) -> None:
    with server.client() as c:
        length, double = register_pair(c, unique)
        entities = {f"b{i}": {"text": "x" * i} for i in range(1, 6)}
        started = c.backfill([double], entities)
        done = c.wait_backfill(started.id, timeout=60)
        assert done.state == fs.pb.BACKFILL_STATE_DONE, done
        assert done.done == done.total and done.failed == 0
        assert started.id in [b.id for b in c.list_backfills()]
        r = c.get_features(entities, [double])
        assert all(v.from_cache for v in r), r
        assert [v.value for v in r] == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_failures_read_failed_and_dead_letters_replay(server: Server, unique: str) -> None:
    with server.client() as c:
        poison = f"{unique}.poison"
        c.register(feature(poison, entity_type="doc", flow="test.probe@1", params={"fail": "permanent"}))
        r = c.get_features(["p"], [poison], mode="sync", wait=10)
        assert r[0].status == "FAILED" and "on purpose" in r[0].error, r[0]
        assert r.failed == [r[0]] and r[0].value is None
        assert r.to_dict() == {"p": {poison: None}}

        # Transient failures until `until`: the compute gives up, and is replayed after.
        fragile = f"{unique}.fragile"
        until = int(time.time() * 1000) + 1500
        c.register(feature(fragile, entity_type="doc", flow="test.probe@1", params={"fail": "transient", "fail_until_ms": until, "value": 4}))
        r = c.get_features(["d"], [fragile], mode="sync", wait=10)
        assert r[0].status == "FAILED" and "gave up" in r[0].error, r[0]
        mine = [d for d in c.dead_letters().dead_letters if d.feature == f"{fragile}@1"]
        assert len(mine) == 1, mine
        time.sleep(max(0.0, until / 1000 - time.time()) + 0.1)
        assert c.replay_dead_letter(mine[0].id)
        deadline = time.monotonic() + 20
        while c.get_features(["d"], [fragile])[0].status != "READY":
            assert time.monotonic() < deadline, "the replayed compute never ended READY"
            time.sleep(0.1)
        assert c.get_features(["d"], [fragile])[0].value == 4.0
        assert mine[0].id not in [d.id for d in c.dead_letters().dead_letters]

        # Failing every try: dead-lettered, then purged.
        hopeless = f"{unique}.hopeless"
        c.register(feature(hopeless, entity_type="doc", flow="test.probe@1", params={"fail": "transient"}))
        assert c.get_features(["h"], [hopeless], mode="sync", wait=10)[0].status == "FAILED"
        poisoned = [d for d in c.dead_letters().dead_letters if d.feature == f"{hopeless}@1"]
        assert len(poisoned) == 1 and poisoned[0].entity_id == "h", poisoned
        assert c.purge_dead_letters(poisoned[0].id) == 1
        assert poisoned[0].id not in [d.id for d in c.dead_letters().dead_letters]


def test_async_client_reads_watches_and_waits(server: Server, unique: str) -> None:
    async def run() -> None:
        async with server.async_client() as c:
            await c.register(
                [
                    feature(f"{unique}.len", entity_type="doc", flow="text.stats@1", inputs={"text": request("text")}),
                    feature(f"{unique}.slow", entity_type="doc", flow="test.probe@1", params={"delay_ms": 100, "value": 9}),
                ]
            )
            r = await c.get_features(["a"], [f"{unique}.len"], inputs={"text": "seven!!"}, mode="sync", wait=10)
            assert r.to_dict() == {"a": {f"{unique}.len": 7.0}}
            pending = await c.get_features(["s"], [f"{unique}.slow"])
            assert pending.ticket
            done = await c.wait(pending.ticket, timeout=20)
            assert done[0].value == 9.0
            seen = [v async for v in c.watch(["s2", "s3"], [f"{unique}.slow"], timeout=20)]
            assert sorted(v.entity_id for v in seen) == ["s2", "s3"]
            with pytest.raises(fs.NotFound):
                await c.get_features(["e"], [f"{unique}.nope"])

    asyncio.run(run())


def test_generated_modules_are_current() -> None:
    """The committed protobuf modules are what scripts/gen-python-client makes today."""
    done = subprocess.run([str(REPO / "scripts" / "gen-python-client"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
