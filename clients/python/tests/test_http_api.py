"""The HTTP/JSON API against its OpenAPI document, on the same real servers as the
client's tests: every documented operation is called with a valid request and must
answer what the document says (its 200 schema, or the Error schema with the status of
its gRPC code); the document must cover every RPC of the service. Schemas are checked
strictly (no property the document does not declare), so a field renamed on one side
fails here."""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

import fstore_client as fs

from conftest import Server

Json = Any


def call(
    server: Server,
    method: str,
    path: str,
    body: Optional[Json] = None,
    key: Optional[str] = "default",
    timeout: float = 30.0,
) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP call: status, headers, body (the key defaults to the server's)."""
    url = server.addr.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    api_key = server.api_key if key == "default" else key
    if api_key:
        req.add_header("authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def events(server: Server, method: str, path: str, body: Optional[Json] = None, first_only: bool = False) -> List[Json]:
    """The `data` of each server-sent event, until the stream ends (or the first one)."""
    url = server.addr.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if server.api_key:
        req.add_header("authorization", f"Bearer {server.api_key}")
    out: List[Json] = []
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = "message"
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                payload = json.loads(line.split(":", 1)[1])
                assert kind == "message", f"the stream sent an error: {payload}"
                out.append(payload)
                if first_only:
                    break
    return out


def strict(doc: Json) -> Json:
    """The document with every object schema closed to undeclared properties."""
    doc = copy.deepcopy(doc)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(doc)
    return doc


class Document:
    """The served document, and validation against its schemas."""

    def __init__(self, doc: Json) -> None:
        self.doc = doc
        resource = Resource.from_contents(strict(doc), default_specification=DRAFT7)
        self.registry = Registry().with_resource("urn:openapi", resource)

    def validate(self, schema_ref: str, value: Json) -> None:
        target = {"$ref": "urn:openapi" + schema_ref}
        jsonschema.Draft7Validator(target, registry=self.registry).validate(value)

    def operations(self) -> Iterator[Tuple[str, str, Json]]:
        for path, item in self.doc["paths"].items():
            for method, op in item.items():
                yield path, method.upper(), op


@pytest.fixture
def document(server: Server) -> Document:
    # The document is open: no key needed, also where every call needs one.
    status, headers, body = call(server, "GET", "/openapi.json", key=None)
    assert status == 200 and headers["content-type"] == "application/json"
    return Document(json.loads(body))


def test_the_document_covers_every_rpc(document: Document) -> None:
    assert document.doc["openapi"] == "3.0.3"
    ops = [op["operationId"] for _, _, op in document.operations()]
    rpcs = [m.name for m in fs.pb.DESCRIPTOR.services_by_name["FeatureStore"].methods]
    assert sorted(ops) == sorted(rpcs)
    for _, _, op in document.operations():
        assert op["description"], f"{op['operationId']} has no description"


def text(s: str) -> Json:
    return {"string": s}


def test_every_documented_operation_answers_as_documented(server: Server, document: Document, unique: str) -> None:
    length, slow, hopeless = f"{unique}.len", f"{unique}.slow", f"{unique}.hopeless"
    definition = {
        "name": length,
        "entityType": "doc",
        "flow": "text.stats@1",
        "params": {"stat": "chars"},
        "inputs": {"text": {"request": "text"}},
        "ttlMs": "600000",
    }
    probe = lambda name, params: {  # noqa: E731
        "name": name,
        "entityType": "doc",
        "flow": "test.probe@1",
        "params": params,
        "ttlMs": "600000",
    }
    entity = lambda e, t: {"entityId": e, "inputs": {"text": text(t)}}  # noqa: E731
    state: Dict[str, str] = {}

    def ticket(name: str) -> str:
        status, _, body = call(server, "POST", "/v1/features:get", {"entities": [{"entityId": name}], "features": [slow]})
        assert status == 200, body
        return json.loads(body)["ticket"]

    def dead_letter() -> str:
        status, _, body = call(server, "POST", "/v1/features:get", {"entities": [{"entityId": "h"}], "features": [hopeless], "mode": "MODE_SYNC", "waitMs": "10000"})
        assert status == 200 and json.loads(body)["results"][0]["status"] == "STATUS_FAILED", body
        _, _, listed = call(server, "GET", "/v1/deadLetters")
        ids = [d["id"] for d in json.loads(listed).get("deadLetters", []) if d["feature"] == f"{hopeless}@1"]
        assert ids, listed
        return ids[0]

    def backfill() -> str:
        if "backfill" not in state:
            status, _, body = call(server, "POST", "/v1/backfills", {"features": [length], "entities": [entity("b1", "abc"), entity("b2", "de")]})
            assert status == 200, body
            state["backfill"] = json.loads(body)["id"]
        return state["backfill"]

    def api_key() -> str:
        if "key" not in state:
            status, _, body = call(server, "POST", "/v1/apiKeys", {"roles": ["read"], "label": unique})
            state["key"] = json.loads(body)["key"]["id"] if status == 200 else "fsk_none"
        return state["key"]

    # operationId -> (path parameters, query string, body); each a valid request.
    requests: Dict[str, Any] = {
        "RegisterFeature": lambda: ({}, "", {"definition": definition}),
        "RegisterFeatures": lambda: ({}, "", {"definitions": [probe(slow, {"delay_ms": "2000", "value": "1"}), probe(hopeless, {"fail": "transient"})]}),
        "ListFeatures": lambda: ({}, f"?prefix={unique}", None),
        "DescribeFeature": lambda: ({"feature": length}, "", None),
        "ListFlows": lambda: ({}, "", None),
        "GetFeatures": lambda: ({}, "", {"entities": [entity("g1", "hello")], "features": [length], "mode": "MODE_SYNC", "waitMs": "10000"}),
        "GetTicket": lambda: ({"ticket": ticket("t1")}, "", None),
        "CancelTicket": lambda: ({"ticket": ticket("t2")}, "", None),
        "WatchFeatures": lambda: ({}, "", {"request": {"entities": [entity("w1", "watched")], "features": [length]}, "waitMs": "10000"}),
        "Invalidate": lambda: ({}, "", {"feature": length, "entityId": "g1"}),
        "PutInputs": lambda: ({}, "", {"entities": [entity("p1", "stored")]}),
        "SubscribeEvents": lambda: ({}, f"?features={length}&afterSequence=0", None),
        "ReadLog": lambda: ({}, f"?features={length}", None),
        "StartBackfill": lambda: ({}, "", {"features": [length], "entities": [entity("s1", "x")]}),
        "GetBackfill": lambda: ({"id": backfill()}, "", None),
        "ListBackfills": lambda: ({}, "", None),
        "CancelBackfill": lambda: ({"id": backfill()}, "", None),
        "ListSchedules": lambda: ({}, "", None),
        "DeleteSchedule": lambda: ({"name": f"{unique}-none"}, "", None),
        "GetPublishStatus": lambda: ({}, "", None),
        "Rollback": lambda: ({}, "", {"feature": length}),
        "ListDeadLetters": lambda: ({}, "?limit=10", None),
        "ReplayDeadLetter": lambda: ({}, "", {"id": dead_letter()}),
        "PurgeDeadLetters": lambda: ({}, f"?id={dead_letter()}", None),
        "CreateApiKey": lambda: ({}, "", {"roles": ["read"], "label": unique}),
        "ListApiKeys": lambda: ({}, "", None),
        "RevokeApiKey": lambda: ({"id": api_key()}, "", None),
    }
    # Refusals that are the right answer here, by operation: they must still be the
    # documented Error with the status of the code named.
    refusals = {
        "DeleteSchedule": {"NOT_FOUND"},
        "Rollback": {"FAILED_PRECONDITION", "NOT_FOUND", "INVALID_ARGUMENT"},
    }
    if server.api_key is None:  # `fstore dev`: no authentication, so no keys to manage
        for op in ("CreateApiKey", "ListApiKeys", "RevokeApiKey"):
            refusals[op] = {"FAILED_PRECONDITION", "UNIMPLEMENTED", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED"}
    statuses = {"NOT_FOUND": 404, "FAILED_PRECONDITION": 400, "INVALID_ARGUMENT": 400, "UNIMPLEMENTED": 501, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}

    # Definitions first: the rest reads them.
    order = ["RegisterFeature", "RegisterFeatures"]
    ops = {op["operationId"]: (path, method, op) for path, method, op in document.operations()}
    assert set(ops) == set(requests), "every documented operation has a request here"
    exercised = []
    for op_id in order + sorted(set(ops) - set(order)):
        path, method, op = ops[op_id]
        params, query, body = requests[op_id]()
        target = path
        for name, value in params.items():
            target = target.replace("{" + name + "}", urllib.request.quote(value, safe="@"))
        ok = op["responses"]["200"]["content"]
        if "text/event-stream" in ok:
            got = events(server, method, target + query, body, first_only=op_id == "SubscribeEvents")
            assert got, f"{op_id} streamed nothing"
            output = fs.pb.DESCRIPTOR.services_by_name["FeatureStore"].methods_by_name[op_id].output_type.name
            for event in got:
                document.validate(f"#/components/schemas/{output}", event)
        else:
            status, headers, raw = call(server, method, target + query, body)
            answer = json.loads(raw)
            if status == 200:
                assert op_id not in refusals or server.api_key is None, f"{op_id} was expected to be refused: {answer}"
                document.validate(ok["application/json"]["schema"]["$ref"], answer)
            else:
                document.validate("#/components/schemas/Error", answer)
                assert answer["code"] in refusals.get(op_id, set()), f"{op_id} {target}: {status} {answer}"
                assert status == statuses[answer["code"]], (op_id, status, answer)
        exercised.append(op_id)
    assert sorted(exercised) == sorted(ops)


def test_reads_carry_values_and_errors_carry_codes(server: Server, unique: str) -> None:
    with server.client() as c:
        c.register(fs.feature(f"{unique}.len", entity_type="doc", flow="text.stats@1", inputs={"text": fs.request("text")}))
    status, _, body = call(server, "POST", "/v1/features:get", {"entities": [{"entityId": "e", "inputs": {"text": text("four")}}], "features": [f"{unique}.len"], "mode": "MODE_SYNC", "waitMs": "5000"})
    assert status == 200, body
    result = json.loads(body)["results"][0]
    assert result["status"] == "STATUS_READY" and result["value"] == {"f64": 4.0}, result
    status, _, body = call(server, "GET", f"/v1/features/{unique}.nope")
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"
    assert f"{unique}.nope" in json.loads(body)["message"]
    status, _, body = call(server, "GET", "/v1/features?bogus=1")
    assert status == 400 and "bogus" in json.loads(body)["message"]
    status, _, body = call(server, "POST", "/v1/features:get", {"entities": "not a list"})
    assert status == 400 and json.loads(body)["code"] == "INVALID_ARGUMENT"


def test_calls_need_a_key_where_the_server_wants_one(on_nats: Server) -> None:
    status, headers, body = call(on_nats, "GET", "/v1/features", key=None)
    assert status == 401, body
    assert json.loads(body)["code"] == "UNAUTHENTICATED"
    status, _, body = call(on_nats, "GET", "/v1/features", key="fsk_not_a_key")
    assert status == 401, body
    with on_nats.client() as admin:
        reader = admin.create_api_key(["read"]).secret
    status, _, body = call(on_nats, "POST", "/v1/inputs", {"entities": [{"entityId": "x"}]}, key=reader)
    assert status == 403 and json.loads(body)["code"] == "PERMISSION_DENIED", body
    status, _, _ = call(on_nats, "GET", "/v1/flows", key=reader)
    assert status == 200


def test_the_event_stream_resumes_from_last_event_id(server: Server, unique: str) -> None:
    name = f"{unique}.len"
    with server.client() as c:
        c.register(fs.feature(name, entity_type="doc", flow="text.stats@1", inputs={"text": fs.request("text")}))
        c.get_features({"r1": {"text": "a"}, "r2": {"text": "bb"}}, [name], mode="sync", wait=10)
    first = events(server, "GET", f"/v1/events?features={name}&afterSequence=0", first_only=True)[0]
    url = server.addr.rstrip("/") + f"/v1/events?features={name}"
    req = urllib.request.Request(url, headers={"last-event-id": first["sequence"]})
    if server.api_key:
        req.add_header("authorization", f"Bearer {server.api_key}")
    deadline = time.monotonic() + 10
    with urllib.request.urlopen(req, timeout=10) as r:
        for raw in r:
            line = raw.decode()
            if line.startswith("data:"):
                after = json.loads(line.split(":", 1)[1])
                assert int(after["sequence"]) > int(first["sequence"])
                assert after["record"]["entityId"] != first["record"]["entityId"]
                break
            assert time.monotonic() < deadline
