"""Bulk requests: cutting, lanes, per-item outcomes and item retries.

The operations of one write are spread over at most ``max_in_flight`` lanes by
document id; each lane sends its requests one after another, so operations on
one id keep their offset order while the lanes run side by side.

Each item of a bulk response is one of:

* written (2xx; a delete of a missing document counts as written);
* retried (429, 409 on an update, 5xx): the item, and every later operation on
  the same id in this write, is sent again after a backoff, so the last
  operation per id still wins; the other items of the request are not re-sent;
* rejected (any other 4xx, e.g. a mapping conflict): returned as a
  :class:`~sinks.base.RecordFailure` with the server's reason, for the error rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from etl.errors import FatalError, RecordError
from sinks.base import RecordFailure
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.documents import BulkOp

log = logging.getLogger("etl.sink.opensearch")

#: Sends one NDJSON body to ``_bulk``; returns the parsed response.
#: Raises :class:`RequestTooLarge` for HTTP 413 and the etl error types otherwise.
SendBulk = Callable[[bytes], Awaitable[dict[str, Any]]]

OK, RETRY, REJECT = "ok", "retry", "reject"
_WRITTEN: dict[str, Any] = {"written": {"status": 200}}


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


def cut_requests(ops: Sequence[BulkOp], max_actions: int, max_bytes: int) -> list[list[BulkOp]]:
    """Consecutive slices of at most ``max_actions`` operations and ``max_bytes`` bytes."""
    requests: list[list[BulkOp]] = []
    current: list[BulkOp] = []
    size = 0
    for op in ops:
        if current and (len(current) >= max_actions or size + op.size > max_bytes):
            requests.append(current)
            current, size = [], 0
        current.append(op)
        size += op.size
    if current:
        requests.append(current)
    return requests


class BulkWriter:
    """Writes operations with bounded concurrency; retries items the server asks to retry."""

    def __init__(self, config: OpenSearchSinkConfig, send: SendBulk, sink_name: str) -> None:
        self.config = config
        self.send = send
        self.sink_name = sink_name
        self.requests = 0

    async def write(self, ops: Sequence[BulkOp]) -> list[RecordFailure]:
        """Write every operation; return the rejected ones with the server's reason."""
        config = self.config
        failures: list[RecordFailure] = []
        pending = list(ops)
        delay = config.retry_backoff_ms / 1000
        attempt = 0
        while pending:
            lanes = self._lanes(pending)
            results: list[tuple[list[BulkOp], list[RecordFailure], str]] = []
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._run_lane(lane)) for lane in lanes]
            results = [task.result() for task in tasks]
            pending = [op for retry, _, _ in results for op in retry]
            failures.extend(f for _, rejected, _ in results for f in rejected)
            if not pending:
                break
            attempt += 1
            reason = next(reason for _, _, reason in results if reason)
            if config.max_retries is not None and attempt > config.max_retries:
                raise FatalError(
                    f"{len(pending)} documents still refused after {attempt} attempts: {reason}"
                )
            log.warning(
                "bulk items refused, retrying sink=%s documents=%d attempt=%d reason=%r "
                "retry_in=%.1fs",
                self.sink_name,
                len(pending),
                attempt,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, config.retry_backoff_max_ms / 1000)
        return failures

    def _lanes(self, ops: list[BulkOp]) -> list[list[BulkOp]]:
        wanted = -(-len(ops) // self.config.bulk_actions)
        count = max(1, min(self.config.max_in_flight, wanted))
        if count == 1:
            return [ops]
        lanes: list[list[BulkOp]] = [[] for _ in range(count)]
        for op in ops:
            lanes[hash(op.doc_id) % count].append(op)
        return [lane for lane in lanes if lane]

    async def _run_lane(self, ops: list[BulkOp]) -> tuple[list[BulkOp], list[RecordFailure], str]:
        """Send one lane's requests in order; return (to retry, rejected, a retry reason)."""
        retry: list[BulkOp] = []
        rejected: list[RecordFailure] = []
        blocked: set[str] = set()
        reason = ""
        for request in cut_requests(ops, self.config.bulk_actions, self.config.bulk_bytes):
            sendable = []
            for op in request:
                if op.doc_id in blocked:
                    retry.append(op)
                else:
                    sendable.append(op)
            answered = await self._send(sendable)
            if answered is None:
                continue  # the server reported no item errors: all written
            for op, item in answered:
                if op.doc_id in blocked:
                    # An earlier operation on this id is being retried: send this one
                    # again after it, so the last operation still wins.
                    retry.append(op)
                    continue
                outcome, why = item_outcome(op, item)
                if outcome == RETRY:
                    blocked.add(op.doc_id)
                    retry.append(op)
                    reason = reason or why
                elif outcome == REJECT:
                    error = RecordError(
                        f"OpenSearch rejected the document index={op.index} id={op.doc_id}: {why}"
                    )
                    rejected.append(RecordFailure(op.record, error))
        return retry, rejected, reason

    async def _send(self, ops: list[BulkOp]) -> list[tuple[BulkOp, dict[str, Any]]] | None:
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
                answered = await self._send(part)
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
