"""``etl query``: a few messages from a given offset or point in time.

By offset: the messages of one partition from that offset on. By time: the
first messages at or after that time in one partition or all of them, merged by
time. Neither: the newest messages (as a console opens a topic), merged by time.
At most ``limit`` messages (10 by default) and 10 MB in all, as a console would
show them; the caller cuts values at 1 KB for display.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from etl.config import KafkaSettings
from etl.ops.messages import FoundMessage, MessageLookupError, TopicReader

DEFAULT_LIMIT = 10
#: Most bytes of keys and values one query returns (at least one message is always shown).
MAX_TOTAL_BYTES = 10 * 1024 * 1024


@dataclass
class QueryResult:
    """What a query found, plus notes for the user (offset out of range, ...)."""

    messages: list[FoundMessage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self, limit: int | None) -> dict[str, Any]:
        return {
            "messages": [m.to_dict(limit) for m in self.messages],
            "notes": self.notes,
            "partitions": {str(p): {"begin": b, "end": e} for p, (b, e) in self.partitions.items()},
        }


def _cap(messages: list[FoundMessage], limit: int) -> list[FoundMessage]:
    out: list[FoundMessage] = []
    total = 0
    for msg in messages[:limit]:
        total += msg.size
        if out and total > MAX_TOTAL_BYTES:
            break
        out.append(msg)
    return out


async def query_by_offset(
    settings: KafkaSettings, topic: str, partition: int, offset: int, limit: int = DEFAULT_LIMIT
) -> QueryResult:
    """Up to ``limit`` messages of ``topic``/``partition`` from ``offset`` on."""
    if offset < 0:
        raise MessageLookupError(f"offset must be 0 or more, not {offset}")
    result = QueryResult()
    async with TopicReader(settings, topic) as reader:
        await reader.open(partition)
        tp = TopicPartition(topic, partition)
        begin, end = reader.begin[tp], reader.end[tp]
        result.partitions[partition] = (begin, end)
        start = offset
        if offset < begin:
            result.notes.append(
                f"offset {offset} is no longer in partition {partition} "
                f"(it starts at {begin}); showing from {begin}"
            )
            start = begin
        if start >= end:
            if begin >= end:
                result.notes.append(f"partition {partition} is empty (next offset {end})")
            else:
                result.notes.append(
                    f"partition {partition} has offsets {begin}-{end - 1}; none at {start}"
                )
            return result
        found: list[FoundMessage] = []

        def take(record: Any) -> bool:
            found.append(FoundMessage.from_record(record))
            return len(found) >= limit

        await reader.read({tp: start}, {tp: end}, take)
    result.messages = _cap(found, limit)
    return result


async def query_by_time(
    settings: KafkaSettings,
    topic: str,
    at_ms: int,
    partition: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> QueryResult:
    """The first ``limit`` messages created at or after ``at_ms`` (one partition or all)."""
    result = QueryResult()
    async with TopicReader(settings, topic) as reader:
        await reader.open(partition)
        for tp in reader.partitions:
            result.partitions[tp.partition] = (reader.begin[tp], reader.end[tp])
        starts = await reader.offsets_for_time(at_ms)
        per_partition: dict[TopicPartition, list[FoundMessage]] = {tp: [] for tp in starts}

        def take(record: Any) -> bool:
            found = per_partition[TopicPartition(record.topic, record.partition)]
            # Before the first match, skip older messages (a broker without a time
            # index makes us start at the first offset); after it, take in order.
            if not found and record.timestamp < at_ms:
                return False
            found.append(FoundMessage.from_record(record))
            return len(found) >= limit

        await reader.read(starts, dict(reader.end), take)
    merged = sorted(
        (m for found in per_partition.values() for m in found),
        key=lambda m: (m.timestamp, m.partition, m.offset),
    )
    result.messages = _cap(merged, limit)
    if not result.messages:
        result.notes.append("no message at or after that time")
    return result


async def query_newest(
    settings: KafkaSettings, topic: str, partition: int | None = None, limit: int = DEFAULT_LIMIT
) -> QueryResult:
    """The newest ``limit`` messages of one partition or all, oldest first."""
    result = QueryResult()
    async with TopicReader(settings, topic) as reader:
        await reader.open(partition)
        starts = {}
        for tp in reader.partitions:
            begin, end = reader.begin[tp], reader.end[tp]
            result.partitions[tp.partition] = (begin, end)
            starts[tp] = max(begin, end - limit)
        found: list[FoundMessage] = []

        def take(record: Any) -> bool:
            found.append(FoundMessage.from_record(record))
            return False

        await reader.read(starts, dict(reader.end), take)
    newest = sorted(found, key=lambda m: (m.timestamp, m.partition, m.offset))[-limit:]
    result.messages = _cap(newest, limit)
    if not result.messages:
        result.notes.append(f"topic {topic!r} has no messages")
    return result
