"""Unit tests of the bulk writer against a scripted ``send`` (our own code only)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from etl.errors import BackpressureError, GaveUp, RetriableError
from sinks.opensearch.bulk import BulkWriter, RequestTooLarge, cut_requests, item_outcome
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.documents import BulkOp, DocumentBuilder
from tests.sinks_opensearch.test_documents import Record

Verdict = Callable[[str, str, int], int]  # (doc id, value, attempt of that op) -> status


def config(**options: Any) -> OpenSearchSinkConfig:
    values = {"name": "s", "type": "opensearch", "topics": ["t"], "retry_backoff_ms": 1}
    return OpenSearchSinkConfig.model_validate({**values, **options})


class FakeServer:
    """Applies bulk bodies to a dict, answering each item with ``verdict``'s status."""

    def __init__(self, verdict: Verdict | None = None, delay: float = 0.0) -> None:
        self.verdict = verdict or (lambda doc_id, value, attempt: 201)
        self.delay = delay
        self.docs: dict[str, Any] = {}
        self.applied: list[tuple[str, Any]] = []
        self.attempts: dict[tuple[str, Any], int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests = 0

    async def send(self, body: bytes) -> dict[str, Any]:
        self.requests += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self._apply(body)
        finally:
            self.in_flight -= 1

    def _apply(self, body: bytes) -> dict[str, Any]:
        rows = [json.loads(line) for line in body.decode().splitlines()]
        items, errors, position = [], False, 0
        while position < len(rows):
            verb, meta = next(iter(rows[position].items()))
            source = rows[position + 1] if verb != "delete" else None
            position += 1 if verb == "delete" else 2
            doc_id = meta["_id"]
            value = source.get("v") if isinstance(source, dict) else None
            attempt = self.attempts.get((doc_id, value), 0)
            self.attempts[(doc_id, value)] = attempt + 1
            status = self.verdict(doc_id, value, attempt)
            if 200 <= status < 300:
                self.docs[doc_id] = source
                self.applied.append((doc_id, value))
                items.append({verb: {"_id": doc_id, "status": status}})
            else:
                errors = True
                error = {"type": "mapper_parsing_exception", "reason": f"bad {value}"}
                items.append({verb: {"_id": doc_id, "status": status, "error": error}})
        return {"errors": errors, "items": items}


def ops_for(values: list[tuple[str, int]], options: dict[str, Any] | None = None) -> list[BulkOp]:
    builder = DocumentBuilder(config(document="value", id="key", **(options or {})))
    ops = []
    for offset, (key, value) in enumerate(values):
        op = builder.build(Record(key.encode(), json.dumps({"v": value}).encode(), offset=offset))
        assert op is not None
        ops.append(op)
    return ops


async def test_requests_are_cut_and_in_flight_is_bounded() -> None:
    server = FakeServer(delay=0.01)
    writer = BulkWriter(config(bulk_actions=10, max_in_flight=3), server.send, "s")
    failures = await writer.write(ops_for([(f"k{i}", i) for i in range(200)]))
    assert failures == [] and len(server.docs) == 200
    assert server.requests >= 20 and server.most_in_flight == 3
    sized = cut_requests(ops_for([(f"k{i}", i) for i in range(10)]), 100, 3 * 30)
    assert all(sum(op.size for op in request) <= 90 for request in sized)


async def test_only_refused_items_are_resent_and_the_last_write_per_id_wins() -> None:
    # k1's first operation is refused twice with 429; its later operations must land after it.
    def verdict(doc_id: str, value: Any, attempt: int) -> int:
        return 429 if (doc_id, value) == ("k1", 1) and attempt < 2 else 201

    server = FakeServer(verdict)
    values = [("k1", 1), ("k2", 2), ("k1", 3), ("k3", 4), ("k1", 5)]
    writer = BulkWriter(config(bulk_actions=2, max_in_flight=2), server.send, "s")
    assert await writer.write(ops_for(values)) == []
    assert server.docs == {"k1": {"v": 5}, "k2": {"v": 2}, "k3": {"v": 4}}
    # k2 and k3 were written once: the retry did not re-send the whole batch.
    assert server.attempts[("k2", 2)] == 1 and server.attempts[("k3", 4)] == 1
    k1_order = [value for doc_id, value in server.applied if doc_id == "k1"]
    assert k1_order[-1] == 5 and k1_order.index(1) < len(k1_order) - 1


async def test_rejected_items_come_back_with_the_reason_and_the_rest_lands() -> None:
    server = FakeServer(lambda doc_id, value, attempt: 400 if value == 3 else 201)
    writer = BulkWriter(config(), server.send, "s")
    failures = await writer.write(ops_for([(f"k{i}", i) for i in range(6)]))
    assert [f.record.offset for f in failures] == [3]
    text = str(failures[0].error)
    assert "status 400 mapper_parsing_exception: bad 3" in text and "id=k3" in text
    assert sorted(server.docs) == ["k0", "k1", "k2", "k4", "k5"]


async def test_items_still_refused_after_max_retries_stop_the_write() -> None:
    server = FakeServer(lambda doc_id, value, attempt: 503)
    writer = BulkWriter(config(max_retries=2), server.send, "s")
    with pytest.raises(GaveUp, match="after 3 attempts: bulk: 1 documents refused: status 503"):
        await writer.write(ops_for([("k", 1)]))


async def test_a_too_large_request_is_split_and_a_too_large_document_rejected() -> None:
    server = FakeServer()

    async def send(body: bytes) -> dict[str, Any]:
        if len(body) > 200:
            raise RequestTooLarge()
        return await server.send(body)

    ops = ops_for([(f"k{i}", i) for i in range(8)])
    big = ops_for([("big", "x" * 300)])  # type: ignore[list-item]
    failures = await BulkWriter(config(), send, "s").write(ops + big)
    assert len(server.docs) == 8
    assert [str(f.error) for f in failures] == [
        "OpenSearch rejected the document index=orders id=big: status 413 "
        "request_too_large: document"
    ]


def test_item_outcomes() -> None:
    (op,) = ops_for([("k", 1)])
    assert item_outcome(op, {"index": {"status": 201}})[0] == "ok"
    assert item_outcome(op, {"index": {"status": 429}})[0] == "retry"
    assert item_outcome(op, {"index": {"status": 502}})[0] == "retry"
    assert item_outcome(op, {"index": {"status": 409}})[0] == "reject"
    assert item_outcome(op, {"index": {"status": 400, "error": "x"}}) == (
        "reject",
        "status 400 x",
    )


async def test_operations_on_one_id_never_overtake_each_other_in_flight() -> None:
    delays = iter([0.02, 0.0, 0.01] * 200)

    class Jittery(FakeServer):
        async def send(self, body: bytes) -> dict[str, Any]:
            self.delay = next(delays)
            return await super().send(body)

    server = Jittery()
    values = [(f"k{i % 13}" if i % 3 else f"u{i}", i) for i in range(400)]
    writer = BulkWriter(config(bulk_actions=7, max_in_flight=4), server.send, "s")
    assert await writer.write(iter(ops_for(values))) == []
    last = {key: value for key, value in values}
    assert {key: doc["v"] for key, doc in server.docs.items()} == last
    for key in {key for key, _ in values}:
        applied = [value for doc_id, value in server.applied if doc_id == key]
        assert applied == sorted(applied), f"{key} applied out of order"
    assert server.most_in_flight > 1


async def test_a_request_that_fails_whole_is_left_to_the_pipelines_retry() -> None:
    server = FakeServer()
    calls: list[int] = []

    async def send(body: bytes) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 2:
            raise RetriableError("connection reset")
        return await server.send(body)

    writer = BulkWriter(config(bulk_actions=2, max_in_flight=1), send, "s")
    # Not retried here (the ops are a half-consumed generator): the pipeline retries
    # the write whole, from its first operation.
    with pytest.raises(RetriableError, match="connection reset"):
        await writer.write(iter(ops_for([(f"k{i}", i) for i in range(6)])))


async def test_items_refused_with_429_only_are_a_pause_not_a_counted_retry() -> None:
    # k1 and k3 are throttled three times each: with max_retries 0 any counted retry
    # would give up.
    def verdict(doc_id: str, value: Any, attempt: int) -> int:
        return 429 if doc_id in ("k1", "k3") and attempt < 3 else 201

    server = FakeServer(verdict)
    writer = BulkWriter(config(max_retries=0, bulk_actions=2), server.send, "s")
    assert await writer.write(ops_for([(f"k{i}", i) for i in range(5)])) == []
    assert sorted(server.docs) == ["k0", "k1", "k2", "k3", "k4"]
    assert server.attempts[("k0", 0)] == 1, "only the throttled items are sent again"
    assert writer.pause.attempts == 0, "the pause starts short again after a success"


async def test_a_5xx_among_throttled_items_makes_it_a_counted_retry() -> None:
    def verdict(doc_id: str, value: Any, attempt: int) -> int:
        return {"k1": 429, "k2": 503}.get(doc_id, 201)

    writer = BulkWriter(config(max_retries=0), FakeServer(verdict).send, "s")
    with pytest.raises(GaveUp, match=r"documents refused: status (429|503)"):
        await writer.write(ops_for([(f"k{i}", i) for i in range(4)]))


async def test_a_whole_request_answered_429_is_left_to_the_pipelines_pause() -> None:
    server = FakeServer()
    calls: list[int] = []

    async def send(body: bytes) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 2:
            raise BackpressureError(0.01)
        return await server.send(body)

    writer = BulkWriter(config(bulk_actions=2, max_in_flight=1), send, "s")
    # The ops are a half-consumed generator: the pipeline writes the batch again whole.
    with pytest.raises(BackpressureError):
        await writer.write(iter(ops_for([(f"k{i}", i) for i in range(6)])))
