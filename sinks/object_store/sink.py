"""The ``object_store`` sink: each partition's records into objects, exactly once.

One flush of a partition by the pipeline (size ``batch_size_mb`` reached or
``batch_window_minutes`` over) becomes one object, or a few when the records
fall into several time directories or exceed the size limit; each object holds
consecutive records of one partition, named after its smallest offset. See
:mod:`sinks.object_store.meta` for how a restart avoids duplicates and gaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from aiokafka import TopicPartition

from etl.errors import FatalError
from sinks.base import (
    RecordFailure,
    Sink,
    SinkBatch,
    record_failure,
    record_size,
    sink_pipeline_factory,
)
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.formats import ObjectFormat, ParquetFormat, make_format
from sinks.object_store.lake import LakeFormat, LakeLayout
from sinks.object_store.layout import PathLayout, data_object_name
from sinks.object_store.meta import PartitionMeta, PendingObject
from sinks.object_store.plan import plan_objects
from sinks.object_store.store import ObjectStore, make_store

log = logging.getLogger("etl.sink.object_store")


class ObjectStoreSink(Sink[ObjectStoreSinkConfig]):
    """Writes records as jsonl/raw/parquet objects with a meta object per partition."""

    config_model = ObjectStoreSinkConfig

    def __init__(self, config: ObjectStoreSinkConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.store: ObjectStore | None = None
        self.layout: PathLayout | None = None
        self.format: ObjectFormat = make_format(
            config.format, parquet_compression=config.parquet_compression
        )
        if config.lake is not None:
            self.format = LakeFormat(config.lake, config.parquet_compression, config.name)
        self._metas: dict[tuple[str, int], PartitionMeta] = {}
        #: Key+value bytes in and object bytes out of sampled records (the size trigger).
        self.sample_in = 0
        self.sample_out = 0
        #: Bytes of data objects written.
        self.bytes_written = 0

    @property
    def instance_id(self) -> str:
        """The first path level."""
        return self.config.instance_id or self.config.name

    async def open(self) -> None:
        settings = self.settings
        base = settings.config_path.parent if settings.config_path else Path.cwd()
        store = make_store(self.config, settings.data_dir / "object-store", base)
        try:
            await store.open()
        except BaseException:
            await store.close()
            raise
        self.store = store
        if self.config.lake is not None:
            self.layout = LakeLayout(
                store.root,
                self.config.lake,
                time_source=self.config.path_time,
                timezone=self.config.timezone,
            )
        else:
            self.layout = PathLayout(
                store.root,
                self.instance_id,
                self.config.path_layout,
                time_source=self.config.path_time,
                timezone=self.config.timezone,
            )
        self.log.info(
            "object store open sink=%s location=%s instance_id=%s format=%s layout=%s",
            self.config.name,
            self.redact(store.location),
            self.instance_id,
            self.config.format,
            "lake" if self.config.lake else self.config.path_layout,
        )

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            await store.close()

    def on_revoke(self, partitions: set[TopicPartition]) -> None:
        """Drop cached meta of partitions; it is read again (another worker may have written)."""
        for tp in partitions:
            self._metas.pop((tp.topic, tp.partition), None)

    @property
    def flush_bytes(self) -> int:
        """Flush when the *object* would be full, not the key+value bytes.

        The pipeline counts key+value bytes; an object holds more (the JSON envelope)
        or less (Parquet): follow the ratio observed so far.
        """
        limit = self.config.batch_bytes
        if self.sample_in and self.sample_out:
            return max(1024, int(limit / (self.sample_out / self.sample_in) * 0.98))
        return limit

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        failures: list[RecordFailure] = []
        halt = batch.halt_on_failure
        for tp, records in batch.by_partition.items():
            try:
                failures += await self._write_partition(tp.topic, tp.partition, records, halt)
            except BaseException:
                # Whatever was half done is recovered from the meta object on the retry.
                self._metas.pop((tp.topic, tp.partition), None)
                raise
        return failures

    # ---- one partition ----------------------------------------------------------------

    async def _write_partition(
        self, topic: str, partition: int, records: list[Any], halt: bool = False
    ) -> list[RecordFailure]:
        """Write one partition's records; under ``halt`` nothing after a rejected one."""
        assert self.store is not None and self.layout is not None
        meta = await self._meta(topic, partition)
        if records[0].offset <= meta.last_offset:
            # A redelivery after a restart: drop what the store already holds.
            kept = [r for r in records if not meta.is_written(r.offset)]
            self._log_skipped(meta, len(records) - len(kept))
            records = kept
        failures: list[RecordFailure] = []
        lake = self.format if isinstance(self.format, LakeFormat) else None
        if lake is not None and records:
            await lake.load(self.store, cast(LakeLayout, self.layout), topic)
        prepare = self.format.prepare
        layout = self.layout
        try:
            payloads = [prepare(record) for record in records]
            dirs = [layout.time_dir(r) for r in records] if layout.pattern else None
            good = records
        except Exception:  # whatever one record's data raises: find it, a record error
            good, payloads, dirs = self._prepare_one_by_one(records, failures, halt)
        if not good:
            return failures
        if lake is not None:
            # A new or changed table schema is saved before the files that use it.
            await lake.save(self.store, cast(LakeLayout, self.layout), topic)
        sizes = self.format.sizes(good, payloads)
        # A sample is enough for the pipeline's output/input ratio.
        self.sample_in += sum(record_size(r) for r in good[:256])
        self.sample_out += sum(sizes[:256])
        limit = self.config.batch_size_mb * 1024 * 1024
        ranges = plan_objects(sizes, dirs, limit=limit, most=self.config.batch_size)
        suffix = self.config.suffix
        pending = [
            PendingObject(
                path=layout.object_path(
                    topic,
                    dirs[start] if dirs else "",
                    data_object_name(partition, good[start].offset, suffix),
                ),
                first_offset=good[start].offset,
                last_offset=good[end - 1].offset,
                records=end - start,
            )
            for start, end in ranges
        ]
        meta_path = layout.meta_path(topic, partition)
        meta.pending = pending
        last = pending[-1].last_offset
        meta.add_rejected([f.record.offset for f in failures if f.record.offset < last])
        await self.store.put(meta_path, meta.to_bytes())
        for item, (start, end) in zip(pending, ranges, strict=True):
            data = await self._encode(payloads[start:end])
            await self.store.put(item.path, data)
            meta.mark_written(item)
            self.bytes_written += len(data)
            self.log.info(
                "object written sink=%s path=%s records=%d bytes=%d first_offset=%d last_offset=%d",
                self.config.name,
                item.path,
                item.records,
                len(data),
                item.first_offset,
                item.last_offset,
            )
        meta.pending = []
        await self.store.put(meta_path, meta.to_bytes())
        return failures

    def _prepare_one_by_one(
        self, records: list[Any], failures: list[RecordFailure], halt: bool
    ) -> tuple[list[Any], list[Any], list[str] | None]:
        """(good records, their payloads, their time directories); the rejected ones are
        added to ``failures``."""
        assert self.layout is not None
        layout = self.layout
        good: list[Any] = []
        payloads: list[Any] = []
        dirs: list[str] = []
        for record in records:
            try:
                payload = self.format.prepare(record)
                directory = layout.time_dir(record) if layout.pattern else ""
            except Exception as exc:  # e.g. a timestamp in the year 10000
                failures.append(record_failure(record, exc))
                if halt:
                    # The pipeline stops before this record; the rest is read again later.
                    break
                continue
            good.append(record)
            payloads.append(payload)
            dirs.append(directory)
        return good, payloads, dirs if layout.pattern else None

    def _log_skipped(self, meta: PartitionMeta, count: int) -> None:
        if count:
            self.log.info(
                "records already in the store skipped sink=%s topic=%s partition=%d count=%d "
                "last_offset=%d",
                self.config.name,
                meta.topic,
                meta.partition,
                count,
                meta.last_offset,
            )

    async def _encode(self, payloads: list[Any]) -> bytes:
        if isinstance(self.format, ParquetFormat | LakeFormat):
            # Parquet encoding and compression take a while and release the GIL.
            return await asyncio.to_thread(self.format.encode, payloads)
        return self.format.encode(payloads)

    async def _meta(self, topic: str, partition: int) -> PartitionMeta:
        """The partition's meta, read (and recovered) once per assignment."""
        found = self._metas.get((topic, partition))
        if found is not None:
            return found
        assert self.store is not None and self.layout is not None
        path = self.layout.meta_path(topic, partition)
        raw = await self.store.get(path)
        if raw is None:
            meta = PartitionMeta(sink=self.config.name, topic=topic, partition=partition)
        else:
            meta = PartitionMeta.from_bytes(raw, path)
            if meta.sink != self.config.name:
                raise FatalError(
                    f"meta object {path} belongs to sink {meta.sink!r}, not {self.config.name!r}: "
                    "two sinks must not share url, instance_id and topic"
                )
            if meta.pending:
                await self._recover(meta, path)
        self._metas[(topic, partition)] = meta
        return meta

    async def _recover(self, meta: PartitionMeta, path: str) -> None:
        """Settle the objects a stopped worker was writing (see the meta module)."""
        assert self.store is not None
        done: list[str] = []
        for item in meta.pending:
            if not await self.store.exists(item.path):
                break
            meta.mark_written(item)
            done.append(item.path)
        self.log.warning(
            "recovered interrupted write sink=%s topic=%s partition=%d written=%d "
            "not_written=%d last_offset=%d",
            self.config.name,
            meta.topic,
            meta.partition,
            len(done),
            len(meta.pending) - len(done),
            meta.last_offset,
        )
        meta.pending = []
        await self.store.put(path, meta.to_bytes())


#: The pipeline of an ``object_store`` sink (the plugin factory).
ObjectStoreSinkPipeline = sink_pipeline_factory(ObjectStoreSink)
