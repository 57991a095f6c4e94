"""Message searches as jobs: start one, poll its progress and matches, cancel it.

A search scans a topic (:func:`etl.ops.search.search_topic`, the scan ``etl
search`` runs) on a thread of its own with its own event loop, so a long scan
never holds up the worker's loop, its pipelines or its web server. A job keeps
what it has matched so far, so a poll shows results before the scan ends and a
cancelled search keeps them. Jobs live in this worker's memory only: a few run at
once, and finished ones are forgotten after :data:`KEEP_FINISHED_S`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.config import KafkaSettings
from etl.ops.messages import DISPLAY_LIMIT, FoundMessage, MessageLookupError, parse_time
from etl.ops.search import SearchQuery, parse_offset_range, search_topic

#: Searches running at once on one worker.
MAX_RUNNING = 3
#: Finished searches are kept this long for their results, and at most this many.
KEEP_FINISHED_S = 600.0
MAX_KEPT = 20
#: Most matches one search returns (the console shows 10 by default).
MAX_LIMIT = 100
#: A wildcard keyword may be at most this long (as the documents' console says).
MAX_KEYWORD = 100


class SearchRequestError(ValueError):
    """A search that cannot start: the message says what to change."""


def parse_search(body: Mapping[str, Any]) -> tuple[str, SearchQuery]:
    """The topic and :class:`SearchQuery` of a request body (the ``etl search`` options)."""
    topic = str(body.get("topic") or "").strip()
    if not topic:
        raise SearchRequestError("topic: say which topic to search")

    def words(name: str) -> list[str]:
        raw = body.get(name) or []
        items = [raw] if isinstance(raw, str) else list(raw)
        out = [str(item).strip() for item in items if str(item).strip()]
        for word in out:
            if len(word) > MAX_KEYWORD:
                raise SearchRequestError(f"{name}: a keyword may have {MAX_KEYWORD} characters")
        return out

    def number(name: str) -> int | None:
        raw = body.get(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise SearchRequestError(f"{name}: expected a number, not {raw!r}") from None

    def moment(name: str) -> int | None:
        raw = body.get(name)
        if raw is None or raw == "":
            return None
        try:
            return parse_time(str(raw))
        except ValueError as exc:
            raise SearchRequestError(f"{name}: {exc}") from None

    first, last = number("first_offset"), number("last_offset")
    if body.get("offsets"):
        try:
            first, last = parse_offset_range(str(body["offsets"]))
        except ValueError as exc:
            raise SearchRequestError(f"offsets: {exc}") from None
    limit = number("limit") or 10
    if not 1 <= limit <= MAX_LIMIT:
        raise SearchRequestError(f"limit: from 1 to {MAX_LIMIT}")
    try:
        query = SearchQuery(
            partition=number("partition"),
            first_offset=first,
            last_offset=last,
            keys=words("keys"),
            values=words("values"),
            since_ms=moment("since"),
            until_ms=moment("until"),
            limit=limit,
        )
    except ValueError as exc:
        text = str(exc).replace("--since", "since").replace("--until", "until")
        raise SearchRequestError(text) from None
    if first is not None and last is not None and first > last:
        raise SearchRequestError(f"offsets: {first} is after {last}")
    return topic, query


@dataclass
class SearchJob:
    """One search: its conditions, progress, matches and outcome."""

    id: str
    topic: str
    query: SearchQuery
    state: str = "running"  # running | done | cancelled | failed
    scanned: int = 0
    to_scan: int | None = None
    matches: list[FoundMessage] = field(default_factory=list)
    limit_reached: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[Any] | None = None
    _cancel: bool = False

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.matches, key=lambda m: (m.partition, m.offset))[: self.query.limit]
        q = self.query
        return {
            "id": self.id,
            "topic": self.topic,
            "state": self.state,
            "scanned": self.scanned,
            "to_scan": self.to_scan,
            "found": len(ordered),
            "messages": [m.to_dict(DISPLAY_LIMIT) for m in ordered],
            "limit": q.limit,
            "limit_reached": self.limit_reached,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": round((self.finished_at or time.time()) - self.started_at, 2),
            "conditions": {
                "partition": q.partition,
                "first_offset": q.first_offset,
                "last_offset": q.last_offset,
                "keys": q.keys,
                "values": q.values,
                "since_ms": q.since_ms,
                "until_ms": q.until_ms,
            },
        }

    # ---- on the job's own thread ----------------------------------------------------------

    def run(self, settings: KafkaSettings) -> None:
        try:
            asyncio.run(self._scan(settings))
        except BaseException as exc:  # the thread reports, never raises
            self._finish("failed", f"{type(exc).__name__}: {exc}")

    async def _scan(self, settings: KafkaSettings) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._cancel:
            self._finish("cancelled")
            return
        keep = self.query.matches

        def matches(record: Any) -> bool:
            # The scan's own predicate; a match is kept here too, for polls meanwhile.
            if keep(record):
                self.matches.append(FoundMessage.from_record(record))
                return True
            return False

        self.query.matches = matches

        def total(count: int) -> None:
            self.to_scan = count

        def passed(count: int) -> None:
            self.scanned += count

        try:
            result = await search_topic(
                settings, self.topic, self.query, on_total=total, on_progress=passed
            )
        except asyncio.CancelledError:
            self._finish("cancelled")
            return
        except MessageLookupError as exc:
            self._finish("failed", str(exc))
            return
        except Exception as exc:
            self._finish("failed", f"{type(exc).__name__}: {exc}")
            return
        self.matches = list(result.messages)
        self.limit_reached = result.limit_reached
        self._finish("done")

    def _finish(self, state: str, error: str | None = None) -> None:
        if self.finished_at is None:
            self.state, self.error, self.finished_at = state, error, time.time()

    def cancel(self) -> None:
        """Stop the scan (from any thread); what it matched so far stays."""
        self._cancel = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)


class SearchJobs:
    """This worker's search jobs, by id."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.jobs: dict[str, SearchJob] = {}
        self._lock = threading.Lock()

    def running(self) -> list[SearchJob]:
        return [job for job in self.jobs.values() if job.state == "running"]

    def start(self, topic: str, query: SearchQuery) -> SearchJob:
        """Start a search on its own thread; refused while :data:`MAX_RUNNING` run."""
        with self._lock:
            self._prune()
            if len(self.running()) >= MAX_RUNNING:
                raise SearchRequestError(
                    f"{MAX_RUNNING} searches are running on this worker: wait for one to "
                    "finish or cancel one"
                )
            job = SearchJob(uuid.uuid4().hex[:12], topic, query)
            self.jobs[job.id] = job
        threading.Thread(
            target=job.run, args=(self.settings,), name=f"etl-search-{job.id}", daemon=True
        ).start()
        return job

    def get(self, job_id: str) -> SearchJob | None:
        return self.jobs.get(job_id)

    def _prune(self) -> None:
        now = time.time()
        finished = sorted(
            (job for job in self.jobs.values() if job.finished_at is not None),
            key=lambda job: job.finished_at or 0,
        )
        for index, job in enumerate(finished):
            too_many = len(finished) - index > MAX_KEPT
            if too_many or now - (job.finished_at or now) > KEEP_FINISHED_S:
                self.jobs.pop(job.id, None)

    def cancel_all(self) -> None:
        for job in self.running():
            job.cancel()
