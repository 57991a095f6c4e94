"""``etl search``: scan a topic within bounds for messages whose key/value match keywords.

Conditions combine with AND: partition, offset range, time range, and any
number of key and value keywords. A keyword matches when it occurs anywhere in
the key or value (a phrase match, case-insensitive); ``*`` stands for any run of
characters and ``?`` for exactly one. The scan stops at the result limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from etl.config import KafkaSettings
from etl.ops.messages import FoundMessage, TopicReader

DEFAULT_LIMIT = 10


Matcher = Callable[[str], bool]


def keyword_matcher(keyword: str) -> Matcher:
    """A case-insensitive test for a keyword: phrase, with ``*``/``?`` wildcards."""
    if not keyword:
        raise ValueError("a keyword must not be empty")
    if "*" not in keyword and "?" not in keyword:
        # A plain phrase: a substring test is several times faster than a regex.
        needle = keyword.casefold()
        return lambda text: needle in text.casefold()
    # The pieces between ``*`` must occur in order; each is found at its leftmost
    # place after the previous one (right, as ``*`` takes any run). One regex of
    # ``.*`` runs would backtrack exponentially on a keyword like ``*a*a*a*a*b``:
    # this stays linear in the text per piece, so no keyword can stall a scan
    # (searches run inside the worker too, see etl.web.console_search).
    pieces = [
        re.compile(
            "".join("." if char == "?" else re.escape(char) for char in piece),
            re.IGNORECASE | re.DOTALL,
        )
        for piece in keyword.split("*")
        if piece
    ]

    def match(text: str) -> bool:
        position = 0
        for piece in pieces:
            found = piece.search(text, position)
            if found is None:
                return False
            position = found.end()
        return True

    return match


def parse_offset_range(text: str) -> tuple[int | None, int | None]:
    """``A-B`` (inclusive), ``A-`` or ``-B`` -> (A, B)."""
    match = re.fullmatch(r"\s*(\d*)\s*-\s*(\d*)\s*", text)
    if not match or not (match.group(1) or match.group(2)):
        raise ValueError(f"{text!r} is not an offset range: use A-B, A- or -B")
    low = int(match.group(1)) if match.group(1) else None
    high = int(match.group(2)) if match.group(2) else None
    if low is not None and high is not None and low > high:
        raise ValueError(f"offset range {text!r}: {low} is after {high}")
    return low, high


@dataclass
class SearchQuery:
    """Every condition of a search (all must hold)."""

    partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    keys: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since > until:
            raise ValueError("--since is after --until")
        if self.limit < 1:
            raise ValueError("the result limit must be at least 1")
        self.matches = self._predicate()

    def _predicate(self) -> Callable[[Any], bool]:
        """Whether a record meets the time and keyword conditions (built once: it runs
        for every scanned record)."""
        since, until = self.since_ms, self.until_ms
        keys = [keyword_matcher(k) for k in self.keys]
        values = [keyword_matcher(v) for v in self.values]

        def matches(record: Any) -> bool:
            if since is not None and record.timestamp < since:
                return False
            if until is not None and record.timestamp > until:
                return False
            for matchers, data in ((keys, record.key), (values, record.value)):
                if matchers:
                    if data is None:
                        return False
                    text = data.decode("utf-8", "backslashreplace")
                    for match in matchers:
                        if not match(text):
                            return False
            return True

        return matches


@dataclass
class SearchResult:
    """Matches in (partition, offset) order, how much was scanned, whether the limit cut it."""

    messages: list[FoundMessage] = field(default_factory=list)
    scanned: int = 0
    to_scan: int = 0
    limit_reached: bool = False
    source: str = "kafka"

    def to_dict(self, limit: int | None) -> dict[str, Any]:
        return {
            "messages": [m.to_dict(limit) for m in self.messages],
            "scanned": self.scanned,
            "to_scan": self.to_scan,
            "limit_reached": self.limit_reached,
            "source": self.source,
        }


async def search_topic(
    settings: KafkaSettings,
    topic: str,
    query: SearchQuery,
    *,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SearchResult:
    """Scan ``topic`` within the query's bounds; stop at ``query.limit`` matches."""
    result = SearchResult()
    async with TopicReader(settings, topic) as reader:
        await reader.open(query.partition)
        starts = dict(reader.begin)
        stops = dict(reader.end)
        if query.since_ms is not None:
            starts = await reader.offsets_for_time(query.since_ms)
        if query.until_ms is not None:
            after = await reader.offsets_for_time(query.until_ms + 1)
            # A trusted time-index answer bounds the scan; an untrusted one falls
            # back to the first offset, which must not end the scan early.
            stops = {tp: after[tp] if after[tp] > reader.begin[tp] else stops[tp] for tp in stops}
        for tp in reader.partitions:
            if query.first_offset is not None:
                starts[tp] = max(starts[tp], query.first_offset)
            if query.last_offset is not None:
                stops[tp] = min(stops[tp], query.last_offset + 1)
        result.to_scan = sum(max(0, stops[tp] - starts[tp]) for tp in reader.partitions)
        if on_total is not None:
            on_total(result.to_scan)
        found: list[FoundMessage] = []
        matches, limit = query.matches, query.limit

        def consider(record: Any) -> bool:
            if matches(record):
                found.append(FoundMessage.from_record(record))
            # Another partition may have reached the limit: stop this one too.
            return len(found) >= limit

        def passed(count: int) -> None:
            result.scanned += count
            if on_progress is not None:
                on_progress(count)

        await reader.read(starts, stops, consider, passed)
    # Partitions are read side by side, so more than ``limit`` may have matched.
    found.sort(key=lambda m: (m.partition, m.offset))
    result.limit_reached = len(found) >= query.limit
    result.messages = found[: query.limit]
    return result
