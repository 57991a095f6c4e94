"""Reading messages back for an operator: shared by ``etl query`` and ``etl search``.

Both read with a consumer that joins no group (nothing is committed, no
pipeline is disturbed) and assign the partitions they need explicitly.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from etl.config import KafkaSettings
from etl.kafka import make_consumer, topic_partitions

log = logging.getLogger("etl.ops")

#: Bytes of a key or value shown on screen (the rest is cut; ``--out`` writes all).
DISPLAY_LIMIT = 1024
#: Stop reading a partition that yields nothing for this long although it is not at its end.
IDLE_GIVE_UP_S = 15.0


class MessageLookupError(Exception):
    """A query or search that cannot run (unknown topic or partition, bad bounds)."""


@dataclass
class FoundMessage:
    """One message as read back, with its coordinates."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: Any) -> FoundMessage:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=list(record.headers or []),
        )

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value or b"")

    def to_dict(self, limit: int | None = DISPLAY_LIMIT) -> dict[str, Any]:
        """JSON-ready form; key and value as text, cut at ``limit`` bytes (None: whole)."""
        key, key_cut = display_text(self.key, limit)
        value, value_cut = display_text(self.value, limit)
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "time": format_time(self.timestamp),
            "key": key,
            "value": value,
            "key_size": None if self.key is None else len(self.key),
            "value_size": None if self.value is None else len(self.value),
            "truncated": key_cut or value_cut,
            "headers": self.header_texts(),
        }

    def header_texts(self) -> dict[str, str | None]:
        """Headers as name -> UTF-8 text (other bytes escaped); a repeated name keeps the last."""
        return {
            name: None if data is None else data.decode("utf-8", "backslashreplace")
            for name, data in self.headers
        }


def display_text(data: bytes | None, limit: int | None = DISPLAY_LIMIT) -> tuple[str | None, bool]:
    """UTF-8 text of ``data`` cut at ``limit`` bytes (never mid-character); (text, was_cut)."""
    if data is None:
        return None, False
    if limit is None or len(data) <= limit:
        return data.decode("utf-8", "backslashreplace"), False
    # An incremental decoder holds back a character split by the cut instead of mangling it.
    decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
    return decoder.decode(data[:limit], final=False), True


_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_time(text: str) -> int:
    """``YYYY-MM-DD HH:MM:SS`` (local time), ISO 8601 with an offset, or epoch ms -> epoch ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    for pattern in _TIME_FORMATS:
        try:
            return int(datetime.strptime(text, pattern).timestamp() * 1000)
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 'YYYY-MM-DD HH:MM:SS' (local time), "
            "ISO 8601 with an offset, or epoch milliseconds"
        ) from None
    return int(moment.timestamp() * 1000)


def format_time(ms: int | None) -> str:
    """Epoch milliseconds as local ``YYYY-MM-DD HH:MM:SS.mmm``."""
    if ms is None or ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def write_whole(messages: Iterable[FoundMessage], directory: Path) -> list[Path]:
    """Write each key and value whole to ``DIR/TOPIC-PARTITION-OFFSET.key|.value``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for msg in messages:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", msg.topic) + f"-{msg.partition}-{msg.offset}"
        for suffix, data in ((".key", msg.key), (".value", msg.value)):
            if data is not None:
                path = directory / (stem + suffix)
                path.write_bytes(data)
                written.append(path)
    return written


class TopicReader:
    """A group-less consumer over chosen partitions of one topic."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.consumer: Any = None
        self.partitions: list[TopicPartition] = []
        self.begin: dict[TopicPartition, int] = {}
        self.end: dict[TopicPartition, int] = {}

    async def open(self, partition: int | None = None) -> None:
        """Check the topic (and partition) exist, read their first and end offsets."""
        counts = await topic_partitions(self.settings, [self.topic])
        if self.topic not in counts:
            raise MessageLookupError(f"topic {self.topic!r} does not exist")
        count = counts[self.topic]
        if partition is not None and not 0 <= partition < count:
            raise MessageLookupError(
                f"topic {self.topic!r} has partitions 0-{count - 1}, not {partition}"
            )
        wanted = range(count) if partition is None else [partition]
        self.partitions = [TopicPartition(self.topic, p) for p in wanted]
        self.consumer = make_consumer(
            self.settings, group_id=None, start_offset="earliest", max_poll_records=2000
        )
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        self.begin = await self.consumer.beginning_offsets(self.partitions)
        self.end = await self.consumer.end_offsets(self.partitions)
        await self._confirm_ends()

    async def _confirm_ends(self) -> None:
        # Some brokers (tansu) answer an end-offset request with the start of the
        # last record batch + 1; a fetch of the last record reports the true end.
        probe = {tp: self.end[tp] - 1 for tp in self.partitions if self.end[tp] > self.begin[tp]}
        await self._first_records(probe)
        for tp in probe:
            stable = self.consumer.last_stable_offset(tp)
            if stable is None or stable < 0:
                stable = self.consumer.highwater(tp)
            self.end[tp] = max(self.end[tp], stable or 0)

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def __aenter__(self) -> TopicReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def offsets_for_time(self, ms: int) -> dict[TopicPartition, int]:
        """Per partition, where reading for messages at or after ``ms`` can start.

        The broker's time index answers directly. An answer is used only when the
        record at that offset carries the reported timestamp; otherwise (a broker
        without a time index) reading starts at the first offset and the caller
        skips older messages, which gives the same result, only slower.
        """
        answers = await self.consumer.offsets_for_times({tp: ms for tp in self.partitions})
        out = {tp: self.end[tp] for tp in self.partitions}
        claimed = {
            tp: answer
            for tp, answer in answers.items()
            if answer is not None and self.begin[tp] <= answer.offset < self.end[tp]
        }
        records = await self._first_records({tp: a.offset for tp, a in claimed.items()})
        for tp, answer in claimed.items():
            record = records.get(tp)
            if record is not None and (record.offset, record.timestamp) == answer:
                out[tp] = answer.offset
            else:
                log.debug("time index answer not trusted partition=%s", tp.partition)
                out[tp] = self.begin[tp]
        return out

    async def _first_records(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """The first record at or after each offset, fetched side by side (10 s at most)."""
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)
        found: dict[TopicPartition, Any] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(found) < len(offsets) and loop.time() < deadline:
            pending = [tp for tp in offsets if tp not in found]
            batch = await self.consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                if records and tp not in found:
                    found[tp] = records[0]
            if not batch and all(
                [await self.consumer.position(tp) > offsets[tp] for tp in pending]
            ):
                # Fetched past the offsets without a record: transaction markers only.
                break
        return found

    async def read(
        self,
        starts: dict[TopicPartition, int],
        stops: dict[TopicPartition, int],
        handle: Callable[[Any], bool],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Read ``[start, stop)`` of each partition in offset order.

        ``handle(record)`` returning True ends that partition early; ``progress(n)``
        is told how many more offsets were passed (for a progress bar).
        """
        consumer = self.consumer
        active: set[TopicPartition] = set()
        for tp in self.partitions:
            start, stop = starts.get(tp), stops.get(tp)
            if start is not None and stop is not None and start < stop:
                consumer.seek(tp, start)
                active.add(tp)
        passed = dict.fromkeys(active, 0)

        def advance(tp: TopicPartition, upto: int) -> None:
            upto = min(upto, stops[tp]) - starts[tp]
            if progress is not None and upto > passed[tp]:
                progress(upto - passed[tp])
            passed[tp] = max(passed[tp], upto)

        def finish(tp: TopicPartition) -> None:
            active.discard(tp)
            consumer.pause(tp)

        idle = [tp for tp in self.partitions if tp not in active]
        if idle:
            consumer.pause(*idle)
        if active:
            consumer.resume(*active)
        loop = asyncio.get_running_loop()
        last_data = loop.time()
        while active:
            batch = await consumer.getmany(*active, timeout_ms=500)
            if batch:
                last_data = loop.time()
            for tp, records in batch.items():
                if tp not in active:
                    continue
                stop, upto = stops[tp], None
                for record in records:
                    if record.offset >= stop:
                        break
                    upto = record.offset + 1
                    if handle(record):
                        finish(tp)
                        break
                if upto is not None:
                    advance(tp, upto)
            for tp in list(active):
                position = await consumer.position(tp)
                if position >= stops[tp]:
                    advance(tp, stops[tp])
                    finish(tp)
            if active and loop.time() - last_data > IDLE_GIVE_UP_S:
                log.warning(
                    "partitions gave no data, stopping topic=%s partitions=%s",
                    self.topic,
                    sorted(tp.partition for tp in active),
                )
                return
