"""Bulk requests: cutting, bounded concurrency, per-item outcomes and item retries.

The operations of one write are cut, in offset order, into requests that go out
as soon as they are cut, at most ``max_in_flight`` at a time (the next ones are
built meanwhile). A request that holds an operation on an id an earlier request
also holds waits for that one, so operations on one id keep their offset order.

Each item of a bulk response is one of:

* written (2xx; a delete of a missing document counts as written);
* retried (429, 409 on an update, 5xx): the item, and every later operation on
  the same id in this write, is sent again after a backoff, so the last
  operation per id still wins; the other items of the request are not re-sent;
* rejected (any other 4xx, e.g. a mapping conflict): returned as a
  :class:`~sinks.base.RecordFailure` with the server's reason, for the error rules.

When every item to retry was refused with 429 (the server is overloaded) the
retry is a pause, not an attempt: :class:`~etl.errors.BackpressureError`, which
never runs out of retries, waiting longer while the server stays busy
(:attr:`BulkWriter.pause`). Sending those items again is harmless: every
operation carries an id fixed for the run (``key``, ``coordinates`` and ``auto``
alike), so a document written twice is overwritten. A 5xx or a 409 among them
makes it a counted retry (``max_retries``). A whole request answered 429 is a
BackpressureError of the write, left to the pipeline, which writes the batch
again after the pause (the other requests of the write may have landed; they
are overwritten).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from etl.errors import BackpressureError, FatalError, RecordError, RetriableError
from etl.runtime.policy import Backoff, retry
from sinks.base import RecordFailure
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.documents import BulkOp

log = logging.getLogger("etl.sink.opensearch")

#: Sends one NDJSON body to ``_bulk``; returns the parsed response.
#: Raises :class:`RequestTooLarge` for HTTP 413 and the etl error types otherwise.
SendBulk = Callable[[bytes], Awaitable[dict[str, Any]]]

OK, RETRY, REJECT = "ok", "retry", "reject"
_WRITTEN: dict[str, Any] = {"written": {"status": 200}}


class _ItemsRefused(RetriableError):
    """Items the server asked to retry (409 on an update, 5xx; some may be 429)."""


class _ItemsThrottled(BackpressureError):
    """Items the server refused with 429 only: it is overloaded; pause, then send them."""

    def __init__(self, retry_after: float, documents: int) -> None:
        super().__init__(retry_after)
        self.documents = documents


class RequestTooLarge(Exception):
    """The server refused the request body as too large (HTTP 413)."""


def item_outcome(op: BulkOp, item: dict[str, Any]) -> tuple[str, str]:
    """(ok | retry | reject, reason) of one bulk response item."""
    info: dict[str, Any] = next(iter(item.values()), {}) if item else {}
    status = int(info.get("status", 500))
    if 200 <= status < 300 or (op.action == "delete" and status == 404):
        return OK, ""
    reason = describe_item_error(status, info.get("error"))
    if status == 429 or status >= 500 or (status == 409 and op.action == "update"):
        return RETRY, reason
    return REJECT, reason


def _status(item: dict[str, Any]) -> int:
    info: dict[str, Any] = next(iter(item.values()), {}) if item else {}
    return int(info.get("status", 500))


def describe_item_error(status: int, error: Any) -> str:
    """``status 400 mapper_parsing_exception: failed to parse ... (caused by ...)``."""
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type', 'error')}: {cause['reason']})"
    else:
        text = str(error) if error else "no reason given"
    return f"status {status} {text}"


def cut_requests(ops: Iterable[BulkOp], max_actions: int, max_bytes: int) -> Iterator[list[BulkOp]]:
    """Consecutive slices of at most ``max_actions`` operations and ``max_bytes`` bytes."""
    current: list[BulkOp] = []
    size = 0
    for op in ops:
        if current and (len(current) >= max_actions or size + op.size > max_bytes):
            yield current
            current, size = [], 0
        current.append(op)
        size += op.size
    if current:
        yield current


class _Round:
    """One pass over the operations: requests in flight side by side, ids kept in order.

    A request waits for every earlier request that holds an operation on one of its
    ids, so operations on one id are applied in offset order; the others run
    ``max_in_flight`` at a time.
    """

    def __init__(self, writer: BulkWriter, max_in_flight: int) -> None:
        self.writer = writer
        self.gate = asyncio.Semaphore(max_in_flight)
        self.retry: list[tuple[int, BulkOp]] = []
        self.rejected: list[RecordFailure] = []
        self.blocked: set[str] = set()
        self.reason = ""
        #: Every item to retry was refused with 429 (the server is overloaded).
        self.throttled_only = True

    async def run(self, ops: Iterable[BulkOp]) -> None:
        config = self.writer.config
        last_for_id: dict[str, asyncio.Task[None]] = {}
        tasks: list[asyncio.Task[None]] = []
        position = 0
        try:
            for request in cut_requests(ops, config.bulk_actions, config.bulk_bytes):
                entries = list(enumerate(request, start=position))
                position += len(request)
                after = {last_for_id[op.doc_id] for op in request if op.doc_id in last_for_id}
                task = asyncio.ensure_future(self._request(entries, after))
                for op in request:
                    last_for_id[op.doc_id] = task
                tasks.append(task)
                # Let the request start before the next one is built.
                await asyncio.sleep(0)
            await asyncio.gather(*tasks)
        except BaseException:
            # A request failed as a whole: stop the others, the pipeline retries the write.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _request(
        self, entries: list[tuple[int, BulkOp]], after: set[asyncio.Task[None]]
    ) -> None:
        for earlier in after:
            await asyncio.shield(earlier)
        async with self.gate:
            sendable = []
            for entry in entries:
                if entry[1].doc_id in self.blocked:
                    self.retry.append(entry)
                else:
                    sendable.append(entry)
            answered = await self.writer.send_request([op for _, op in sendable])
        if answered is None:
            return  # the server reported no item errors: all written
        for entry, (op, item) in zip(sendable, answered, strict=True):
            if op.doc_id in self.blocked:
                # An earlier operation on this id is being retried: send this one
                # again after it, so the last operation still wins.
                self.retry.append(entry)
                continue
            outcome, why = item_outcome(op, item)
            if outcome == RETRY:
                self.blocked.add(op.doc_id)
                self.retry.append(entry)
                self.reason = self.reason or why
                self.throttled_only = self.throttled_only and _status(item) == 429
            elif outcome == REJECT:
                error = RecordError(
                    f"OpenSearch rejected the document index={op.index} id={op.doc_id}: {why}"
                )
                self.rejected.append(RecordFailure(op.record, error))


class BulkWriter:
    """Writes operations with bounded concurrency; retries items the server asks to retry."""

    def __init__(
        self,
        config: OpenSearchSinkConfig,
        send: SendBulk,
        sink_name: str,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.send = send
        self.sink_name = sink_name
        #: True when the pipeline stops: the item retries give up (PipelineStopping).
        self.stopping = stopping
        self.requests = 0
        #: How long to pause while the server answers 429: growing from retry_backoff_ms
        #: to retry_backoff_max_ms, never giving up, back to the start after a success.
        self.pause = Backoff(
            first=config.retry_backoff_ms / 1000,
            ceiling=max(config.retry_backoff_max_ms, config.retry_backoff_ms) / 1000,
        )

    async def write(self, ops: Iterable[BulkOp]) -> list[RecordFailure]:
        """Write every operation; return the rejected ones with the server's reason.

        ``ops`` may be a generator: requests are sent as soon as they are cut, so the
        next ones are built while the first are in flight.
        """
        failures: list[RecordFailure] = []
        pending: Iterable[BulkOp] = ops

        async def send_round() -> list[RecordFailure]:
            # Only the items the server asked to retry go again: never a written one.
            nonlocal pending
            round_ = _Round(self, self.config.max_in_flight)
            await round_.run(pending)
            failures.extend(round_.rejected)
            if round_.retry:
                pending = [op for _, op in sorted(round_.retry, key=lambda entry: entry[0])]
                if round_.throttled_only:
                    raise _ItemsThrottled(self.pause.next_delay(), len(pending))
                raise _ItemsRefused(f"{len(pending)} documents refused: {round_.reason}")
            return failures

        def note(attempt: int, exc: BaseException, delay: float) -> None:
            if isinstance(exc, _ItemsThrottled):
                log.info(
                    "bulk items throttled (429), pausing sink=%s documents=%d retry_in=%.2fs",
                    self.sink_name,
                    exc.documents,
                    delay,
                )
                return
            log.warning(
                "bulk items refused, retrying sink=%s attempt=%d reason=%r retry_in=%.1fs",
                self.sink_name,
                attempt,
                str(exc),
                delay,
            )

        written = await retry(
            send_round,
            what="bulk",
            backoff=Backoff.for_sink(self.config),
            stopping=self.stopping,
            on_retry=note,
            # A whole request that fails (server away, or busy: 429) is the pipeline's
            # retry or pause of the write; only the refused items are retried here.
            only=_ItemsRefused,
            pauses=_ItemsThrottled,
        )
        self.pause.reset()
        return written

    async def send_request(self, ops: list[BulkOp]) -> list[tuple[BulkOp, dict[str, Any]]] | None:
        """Send one request; None when every item was written, else (op, item) pairs."""
        if not ops:
            return None
        try:
            self.requests += 1
            response = await self.send(b"".join(op.body for op in ops))
        except RequestTooLarge:
            if len(ops) == 1:
                too_large = {"error": {"type": "request_too_large", "reason": "document"}}
                return [(ops[0], {ops[0].action: {"status": 413, **too_large}})]
            half = len(ops) // 2
            pairs = []
            for part in (ops[:half], ops[half:]):
                answered = await self.send_request(part)
                pairs += answered if answered is not None else [(op, _WRITTEN) for op in part]
            return pairs
        items = response.get("items") or []
        if len(items) != len(ops):
            raise FatalError(
                f"bulk response has {len(items)} items for {len(ops)} operations; "
                "is this an OpenSearch or Elasticsearch server?"
            )
        if response.get("errors") is False:
            return None
        return list(zip(ops, items, strict=True))
