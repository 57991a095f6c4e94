"""Replay of archived topics: objects of the object-store sink back into Kafka.

Objects are read per archived partition in offset order (``partition_{p}_offset_{o}``
names, in every path layout). Each record goes to ``target_topic`` with its key,
value and timestamp, into its own partition when the target has that many, else
into ``partition % partitions``.

Resuming after kill -9 without loss or doubles: the saved state holds, per
archived partition, the last offset replayed and, per target partition, its end
offset once those records were acknowledged (``ends``). At open, the records the
target holds past ``ends`` were published by the run that died after the broker
took them but before its position was saved; the idempotent producer keeps those
a gap-free prefix, so exactly that many records are skipped again. They are
counted by reading them, not from the partition's end offset (some brokers
report the start of the last record batch there). This needs the target written
by this replay only (a fresh or emptied topic). Under exactly-once the state is
committed with the records in one Kafka transaction, so nothing is skipped.

One worker replays: the one holding the source's lease (:mod:`etl.control.lease`);
another takes over from the saved state when it stops or dies.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from etl.control.lease import KafkaLease
from etl.errors import FatalError, RecordError, RetriableError
from etl.kafka import ensure_topics, make_consumer, topic_partitions
from etl.sources.base import DeadMessage, SourceBatch, SourceMessage, SourceRunner
from etl.sources.object_store.config import STORAGE_FIELDS, ObjectStoreSourceConfig
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.layout import PathLayout
from sinks.object_store.store import FsspecStore, LocalStore, ObjectStore, make_store

log = logging.getLogger("etl.source.object_store")

_OBJECT = re.compile(r"^partition_(\d+)_offset_(\d+)_")


@dataclass(frozen=True, slots=True)
class ArchivedObject:
    """One data object of an archived partition."""

    topic: str
    partition: int
    first_offset: int
    path: str


class ObjectStoreReader:
    """Reads the archive in order; the runner publishes and saves :meth:`snapshot`."""

    def __init__(self, config: ObjectStoreSourceConfig, runner: ObjectStoreSource) -> None:
        self.config = config
        self.runner = runner
        self.store: ObjectStore | None = None
        self.objects: list[ArchivedObject] = []
        self.targets: dict[str, int] = {}  # target topic -> partitions
        self.done: dict[str, dict[str, int]] = {}  # topic -> partition -> last offset
        self.ends: dict[str, int] = {}  # "target:partition" -> end offset after ours
        self.skip: Counter[str] = Counter()
        self._next = 0  # index into objects
        self._records: list[dict[str, Any]] = []
        self._line = 0
        self._current: ArchivedObject | None = None
        self._pending_done: dict[str, dict[str, int]] = {}
        self._pending_ends: Counter[str] = Counter()
        self._unsaved = True
        start, end = config.start_time, config.end_time
        self._start_ms = int(start.timestamp() * 1000) if start else None
        self._end_ms = int(end.timestamp() * 1000) if end else None

    async def open(self, saved: dict[str, Any] | None) -> None:
        settings = self.runner.settings
        base = settings.config_path.parent if settings.config_path else Path.cwd()
        self.store = make_store(self._sink_config(), settings.data_dir / "object-store", base)
        await self.store.open()
        layout = PathLayout(
            self.store.root, self.config.instance_id, "none", time_source="record", timezone="UTC"
        )
        self.objects = []
        for topic in self.config.topics:
            self.objects += await self._list(topic, layout.topic_dir(topic))
        self.objects.sort(key=lambda o: (o.topic, o.partition, o.first_offset, o.path))
        await self._prepare_targets()
        self._unsaved = saved is None
        saved = saved or {}
        self.done = {t: dict(p) for t, p in saved.get("done", {}).items()}
        self.skip = Counter()
        if self.runner.exactly_once:
            # Nothing is counted or skipped: what a dead run left open was aborted.
            landed = await self._landed(saved.get("ends", {}))
        else:
            landed = await self._settled_landed(saved.get("ends", {}))
            self.skip.update({tp: count for tp, (_start, count) in landed.items() if count})
        self.ends = {tp: start for tp, (start, _count) in landed.items()}
        if self.skip:
            log.info(
                "resuming: records already in the target are skipped source=%s skip=%s",
                self.config.name,
                dict(self.skip),
            )
        self._next, self._records, self._line, self._current = 0, [], 0, None

    def _sink_config(self) -> ObjectStoreSinkConfig:
        given = {name: getattr(self.config, name) for name in ("url", *STORAGE_FIELDS)}
        return ObjectStoreSinkConfig.model_validate(
            {"name": self.config.name, "type": "object_store", "topics": ["-"], **given}
        )

    async def _list(self, topic: str, directory: str) -> list[ArchivedObject]:
        store = self.store
        try:
            if isinstance(store, LocalStore):
                paths = await asyncio.to_thread(_walk, directory)
            elif isinstance(store, FsspecStore) and store.is_async:
                paths = await store.fs._find(directory)
            else:
                paths = await asyncio.to_thread(store.fs.find, directory)  # type: ignore[union-attr]
        except FileNotFoundError:
            paths = []
        except Exception as exc:
            raise RetriableError(f"cannot list {directory}: {type(exc).__name__}: {exc}") from exc
        found = []
        for path in paths:
            match = _OBJECT.match(posixpath.basename(path))
            if match:
                found.append(ArchivedObject(topic, int(match[1]), int(match[2]), path))
        return found

    async def _prepare_targets(self) -> None:
        kafka = self.runner.settings.kafka
        wanted: dict[str, int] = {}
        for topic in self.config.topics:
            partitions = [o.partition for o in self.objects if o.topic == topic]
            count = self.config.target_partitions or (max(partitions) + 1 if partitions else 1)
            target = self.config.target_for(topic)
            wanted[target] = max(wanted.get(target, 1), count)
        existing = await topic_partitions(kafka, wanted)
        missing = {t: n for t, n in wanted.items() if t not in existing}
        if missing and not kafka.auto_create_topics:
            raise FatalError(
                f"target topic {sorted(missing)[0]!r} does not exist and "
                "kafka.auto_create_topics is false"
            )
        if missing:
            await ensure_topics(kafka, missing)
        self.targets = {**missing, **existing}

    async def _settled_landed(self, saved: dict[str, int]) -> dict[str, tuple[int, int]]:
        """:meth:`_landed` once it stops changing: a produce request of a run that died
        can still be appended after the process is gone."""
        current = await self._landed(saved)
        settle = self.config.settle_seconds
        while settle > 0:
            await asyncio.sleep(settle)
            again = await self._landed(saved)
            if again == current:
                break
            current = again
        return current

    async def _landed(self, saved: dict[str, int]) -> dict[str, tuple[int, int]]:
        """Per target partition: where ours start (the saved end offset, else the
        partition's true end) and how many records it holds from there, read."""
        tps = [TopicPartition(t, p) for t, n in self.targets.items() for p in range(n)]
        consumer = make_consumer(self.runner.settings.kafka, group_id=None)
        await consumer.start()
        try:
            lows = await consumer.beginning_offsets(tps)
            highs = await consumer.end_offsets(tps)
            consumer.assign(tps)
            out = {}
            for tp in tps:
                name = f"{tp.topic}:{tp.partition}"
                low, high = lows[tp], highs[tp]
                if name in saved:
                    count, _end = await _read_from(consumer, tp, max(low, saved[name]), high)
                    out[name] = (saved[name], count)
                else:
                    # The reported end may be the start of the last record batch + 1:
                    # read that batch for the true end.
                    _count, end = await _read_from(consumer, tp, max(low, high - 1), high)
                    out[name] = (end, 0)
            return out
        finally:
            await consumer.stop()

    async def next_batch(self) -> SourceBatch | None:
        batch = SourceBatch()
        if self._unsaved:
            return batch  # saved by the runner before the first message is published
        # A batch ends at a bad record, so that the ``stop`` rule publishes what came before it.
        while len(batch.messages) < self.config.batch_size and not batch.dead:
            if self._line >= len(self._records):
                if not await self._load_next(batch):
                    break
                continue
            record = self._records[self._line]
            self._line += 1
            assert self._current is not None
            self._take(self._current, record, batch)
        if not batch.messages and not batch.dead and self._next >= len(self.objects):
            if self._line >= len(self._records) and not batch.read:
                return None
        return batch

    async def _load_next(self, batch: SourceBatch) -> bool:
        """Read the next object not replayed yet (False: none left)."""
        while self._next < len(self.objects):
            item = self.objects[self._next]
            self._next += 1
            after = self.objects[self._next] if self._next < len(self.objects) else None
            last = self._last_done(item.topic, item.partition)
            if (
                after is not None
                and (after.topic, after.partition) == (item.topic, item.partition)
                and after.first_offset <= last + 1
            ):
                continue  # everything in it is at or below the replayed offset
            if self.config.max_offset is not None and item.first_offset > self.config.max_offset:
                continue
            assert self.store is not None
            data = await self.store.get(item.path)
            if data is None:
                raise FatalError(f"archived object {item.path} disappeared while replaying")
            self._records = await asyncio.to_thread(_decode, data, self.config.format)
            self._line, self._current = 0, item
            return True
        return False

    def _last_done(self, topic: str, partition: int) -> int:
        key = str(partition)
        pending = self._pending_done.get(topic, {}).get(key)
        return pending if pending is not None else self.done.get(topic, {}).get(key, -1)

    def _take(self, item: ArchivedObject, record: dict[str, Any], batch: SourceBatch) -> None:
        if "error" in record:
            batch.dead.append(
                DeadMessage(
                    item.topic,
                    None,
                    record["line"],
                    RecordError(f"{item.path}: {record['error']}", stage="source"),
                    extra={"etl.source.object": item.path},
                )
            )
            return
        offset = record["offset"]
        if offset <= self._last_done(item.topic, item.partition):
            return  # replayed before (or written twice by the sink)
        self._pending_done.setdefault(item.topic, {})[str(item.partition)] = offset
        batch.read += 1
        if not self._wanted(offset, record["timestamp"]):
            return
        target = self.config.target_for(item.topic)
        partition = item.partition % self.targets[target]
        tp = f"{target}:{partition}"
        self._pending_ends[tp] += 1
        if self.skip[tp] > 0:
            self.skip[tp] -= 1  # already in the target: published before a crash
            return
        batch.messages.append(
            SourceMessage(target, record["key"], record["value"], partition, record["timestamp"])
        )

    def _wanted(self, offset: int, timestamp: int | None) -> bool:
        config = self.config
        if config.min_offset is not None and offset < config.min_offset:
            return False
        if config.max_offset is not None and offset > config.max_offset:
            return False
        if self._start_ms is not None and (timestamp is None or timestamp < self._start_ms):
            return False
        return self._end_ms is None or (timestamp is not None and timestamp < self._end_ms)

    def snapshot(self, failed: Sequence[SourceMessage]) -> dict[str, Any] | None:
        if not self._pending_done and not self._pending_ends and not self._unsaved:
            return None
        # The first state is saved before anything is published: a run that dies
        # before its first batch is saved must not leave its records uncounted.
        self._unsaved = False
        for message in failed:
            self._pending_ends[f"{message.topic}:{message.partition}"] -= 1
        for topic, partitions in self._pending_done.items():
            self.done.setdefault(topic, {}).update(partitions)
        for tp, count in self._pending_ends.items():
            self.ends[tp] = self.ends.get(tp, 0) + count
        self._pending_done, self._pending_ends = {}, Counter()
        return {"done": self.done, "ends": self.ends}

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            await store.close()


async def _read_from(consumer: Any, tp: TopicPartition, start: int, high: int) -> tuple[int, int]:
    """Read ``tp`` from ``start`` past the reported end ``high`` (whole record batches):
    (records read, the offset after the last one)."""
    count, end = 0, start
    if start >= high:
        return count, end
    consumer.seek(tp, start)
    deadline = asyncio.get_running_loop().time() + 60
    while end < high:
        if asyncio.get_running_loop().time() > deadline:
            raise RetriableError(f"cannot read {tp.topic!r} partition {tp.partition} to its end")
        count += len((await consumer.getmany(tp, timeout_ms=1000)).get(tp, []))
        end = await consumer.position(tp)
    return count, end


def _walk(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return [
        os.path.join(root, name)
        for root, _dirs, names in os.walk(directory)
        for name in names
        if not name.startswith(".")
    ]


def _decode(data: bytes, form: str) -> list[dict[str, Any]]:
    """An object's records as ``{key, value, offset, timestamp}`` (bytes), in order.

    A line or row that is not an archived message becomes ``{error, line}``.
    """
    if form == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(data)).to_pylist()
        return [_message(row, json.dumps(row, default=str).encode()) for row in rows]
    out = []
    for line in data.splitlines():
        try:
            row = json.loads(line)
        except ValueError as exc:
            out.append({"error": f"not a JSON line: {exc}", "line": line})
            continue
        out.append(_message(row, line))
    return out


def _message(row: Any, line: bytes) -> dict[str, Any]:
    if not isinstance(row, dict) or not isinstance(row.get("offset"), int):
        return {"error": "not an archived message (no offset)", "line": line}
    if row.get("overflowFlag"):
        return {"error": "the value was not archived (overflowFlag)", "line": line}
    key, value, stamp = row.get("key"), row.get("value"), row.get("timestamp")
    if not all(isinstance(v, str | None) for v in (key, value)) or not isinstance(
        stamp, int | None
    ):
        return {"error": "key, value or timestamp has the wrong type", "line": line}
    return {
        "key": key.encode() if key is not None else None,
        "value": value.encode() if value is not None else None,
        "offset": row["offset"],
        "timestamp": stamp,
    }


class ObjectStoreSource(SourceRunner[ObjectStoreSourceConfig]):
    """The ``object_store`` source: replays archived topics into ``target_topic``."""

    def make_reader(self) -> ObjectStoreReader:
        return ObjectStoreReader(self.config, self)

    def leadership(self) -> KafkaLease:
        # Two replays into one target would double it: one worker replays.
        return KafkaLease(self.settings, self.name, seconds=self.config.lease_seconds)

    def describe_source(self) -> str:
        return f"{self.config.url.split('?', 1)[0]}/{self.config.instance_id}"

    def describe_target(self) -> str:
        return ", ".join(self.config.target_for(t) for t in self.config.topics)
