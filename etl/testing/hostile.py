"""Hostile records: inputs a real topic eventually carries, for every sink and transform test.

:data:`HOSTILE` is the set: a 200 KB key, NUL bytes, non-UTF-8 key and value,
binary and repeated headers, an empty value, tombstones (with and without a key),
traversal-looking keys, far-future (year 10000) and negative timestamps, a 5 MiB
value, a value no destination column takes, and hostile field names. Record ``n``
(its ``id``) is the one at offset ``n - 1`` of an empty partition; each that can
carry it has a JSON value ``{"id": n, "name": ...}``, so a test can count where it
went: every record is either written once (found by its id, or by its offset where
a sink writes it without its value) or routed once by the error rules (found by
``etl.source.offset`` of its dead letter), never both, never neither.

:func:`produce_hostile` writes them as a real producer would: one producer with a
``max_request_size`` large enough for the 5 MiB value (the embedded broker has no
message size limit; a broker that has one must allow 6 MiB for these tests), each
record with its own headers and timestamp.

:data:`HOSTILE_TOPICS` are topic names that try to leave a directory or break a
statement (the embedded broker accepts ``/`` and ``..`` in names; Apache Kafka does not).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

#: 1 January 10000 UTC in epoch milliseconds: a valid Kafka timestamp Python's datetime refuses.
YEAR_10000_MS = 253_402_300_800_000
#: 1969-12-31: a negative timestamp (Kafka's -1 means "none"; others can be written).
NEGATIVE_MS = -86_400_000
FIVE_MIB = 5 * 1024 * 1024
#: The producer limit :func:`produce_hostile` uses: room for the 5 MiB value.
PRODUCE_MAX_REQUEST_SIZE = 8 * 1024 * 1024

#: Topic names that try to escape a directory, or quote, or format.
HOSTILE_TOPICS = ("../escape", "a/../../b", "..", "q'\"`;%s%%")


@dataclass(frozen=True)
class HostileRecord:
    """One hostile record; ``id`` is its offset + 1 (``carries_id``: its value says so too)."""

    name: str
    key: bytes | None
    value: bytes | None
    id: int
    carries_id: bool = True
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None
    #: True for a plain record every sink must write (the sentinels around the set).
    plain: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)


def _value(n: int, name: Any = "", extra: dict[str, Any] | None = None) -> bytes:
    fields: dict[str, Any] = {"id": n, "name": name or f"name-{n}", **(extra or {})}
    return json.dumps(fields, ensure_ascii=False).encode()


def hostile_records() -> list[HostileRecord]:
    """The hostile set, in the order it is produced (sentinels first and last)."""
    big = "x" * FIVE_MIB
    return [
        HostileRecord("plain-first", b"1", _value(1), 1, plain=True),
        HostileRecord("key-200kb", b"k" * 200_000, _value(2), 2),
        HostileRecord("nul-escaped", b"3", _value(3, "a\u0000b"), 3),
        HostileRecord("nul-raw-key", b"4\x00", _value(4), 4),
        HostileRecord("non-utf8-key", b"\xff\xfe5", _value(5), 5),
        HostileRecord("non-utf8-value", b"6", b'{"id": 6, "name": "\xff\xfe"}', 6),
        HostileRecord(
            "binary-repeated-headers",
            b"7",
            _value(7),
            7,
            headers=(("bin", b"\x00\xff\xfe"), ("dup", b"1"), ("dup", b"2"), ("", b"")),
        ),
        HostileRecord("empty-value", b"8", b"", 8, carries_id=False),
        HostileRecord("tombstone", b"9", None, 9, carries_id=False),
        HostileRecord("traversal-key", b"../../etc/passwd", _value(10), 10),
        HostileRecord("year-10000", b"11", _value(11), 11, timestamp=YEAR_10000_MS),
        HostileRecord("negative-timestamp", b"12", _value(12), 12, timestamp=NEGATIVE_MS),
        HostileRecord("value-5mib", b"13", _value(13, big), 13),
        HostileRecord(
            "hostile-field-names",
            b"14",
            _value(14, extra={'a"; DROP TABLE x; --': 1, "%s%%": 2, "`b`": 3, "..": 4}),
            14,
        ),
        HostileRecord("rejected-by-destination", b"15", _value(15, {"nested": ["x"] * 100}), 15),
        HostileRecord("lone-surrogate", b"16", b'{"id": 16, "name": "\\ud800"}', 16),
        HostileRecord("keyless-tombstone", None, None, 17, carries_id=False),
        HostileRecord("not-a-number", b"18", b'{"id": 18, "name": NaN}', 18),
        HostileRecord("plain-last", b"19", _value(19), 19, plain=True),
    ]


HOSTILE: Sequence[HostileRecord] = hostile_records()
assert [r.id for r in HOSTILE] == list(range(1, len(HOSTILE) + 1))


def hostile_id(value: bytes | str | None, offset: int | None = None) -> int | None:
    """The ``id`` of a written value; else ``offset + 1`` (a hostile record written
    without its value, or with one that is not JSON); else None."""
    found = _value_id(value)
    return found if found is not None or offset is None else offset + 1


def _value_id(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    found = parsed.get("id") if isinstance(parsed, dict) else None
    return found if isinstance(found, int) else None


async def produce_hostile(
    bootstrap: str,
    topic: str,
    records: Iterable[HostileRecord] = HOSTILE,
    *,
    partition: int = 0,
) -> list[HostileRecord]:
    """Produce ``records`` to one partition, in order; the list, in offset order."""
    produced = list(records)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=PRODUCE_MAX_REQUEST_SIZE,
    )
    await producer.start()
    try:
        for item in produced:
            # One at a time: the order is the offset order, whatever each record's size.
            if item.key is None and item.value is None:
                # producer.send refuses a record with neither; Kafka and other clients do not.
                batch = producer.create_batch()
                batch.append(key=None, value=None, timestamp=item.timestamp, headers=[])
                await (await producer.send_batch(batch, topic, partition=partition))
                continue
            await producer.send_and_wait(
                topic,
                item.value,
                item.key,
                partition=partition,
                timestamp_ms=item.timestamp,
                headers=list(item.headers),
            )
    finally:
        await producer.stop()
    return produced
