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
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from aiokafka import TopicPartition

from etl.errors import FatalError, RecordError
from sinks.base import RecordFailure, Sink, SinkBatch, SinkPipeline, record_size
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.formats import ObjectFormat, ParquetFormat, make_format
from sinks.object_store.layout import PathLayout, data_object_name
from sinks.object_store.meta import PartitionMeta, PendingObject
from sinks.object_store.store import ObjectStore, make_store

log = logging.getLogger("etl.sink.object_store")

#: (record, payload, size, time directory)
Prepared = tuple[Any, Any, int, str]


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
        self._metas: dict[tuple[str, int], PartitionMeta] = {}
        #: Key+value bytes in and object bytes out, for the pipeline's size trigger.
        self.bytes_in = 0
        self.bytes_out = 0

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
            self.config.path_layout,
        )

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            await store.close()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop cached meta of partitions; it is read again (another worker may have written)."""
        for tp in partitions:
            self._metas.pop((tp.topic, tp.partition), None)

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        by_partition: dict[tuple[str, int], list[Any]] = {}
        for record in batch.records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        failures: list[RecordFailure] = []
        halt = getattr(batch, "halt_on_failure", False)
        for (topic, partition), records in by_partition.items():
            try:
                failures += await self._write_partition(topic, partition, records, halt)
            except BaseException:
                # Whatever was half done is recovered from the meta object on the retry.
                self._metas.pop((topic, partition), None)
                raise
        return failures

    # ---- one partition ----------------------------------------------------------------

    async def _write_partition(
        self, topic: str, partition: int, records: list[Any], halt: bool = False
    ) -> list[RecordFailure]:
        """Write one partition's records; under ``halt`` nothing after a rejected one."""
        assert self.store is not None and self.layout is not None
        meta = await self._meta(topic, partition)
        failures: list[RecordFailure] = []
        prepared: list[Prepared] = []
        skipped = 0
        for record in records:
            if meta.is_written(record.offset):
                skipped += 1
                continue
            try:
                payload, size = self.format.prepare(record)
            except RecordError as exc:
                failures.append(RecordFailure(record, exc))
                if halt:
                    # The pipeline stops before this record; the rest is read again later.
                    break
                continue
            prepared.append((record, payload, size, self.layout.time_dir(record)))
            self.bytes_in += record_size(record)
            self.bytes_out += size
        if skipped:
            self.log.info(
                "records already in the store skipped sink=%s topic=%s partition=%d count=%d "
                "last_offset=%d",
                self.config.name,
                topic,
                partition,
                skipped,
                meta.last_offset,
            )
        pieces = self._plan(prepared)
        if not pieces:
            return failures
        suffix = self.config.suffix
        pending = [
            PendingObject(
                path=self.layout.object_path(
                    topic,
                    piece[0][3],
                    data_object_name(partition, piece[0][0].offset, suffix),
                ),
                first_offset=piece[0][0].offset,
                last_offset=piece[-1][0].offset,
                records=len(piece),
            )
            for piece in pieces
        ]
        meta_path = self.layout.meta_path(topic, partition)
        meta.pending = pending
        meta.add_rejected(
            [f.record.offset for f in failures if f.record.offset < pending[-1].last_offset]
        )
        await self.store.put(meta_path, meta.to_bytes())
        for item, piece in zip(pending, pieces, strict=True):
            data = await self._encode([p[1] for p in piece])
            await self.store.put(item.path, data)
            meta.mark_written(item)
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

    async def _encode(self, payloads: list[Any]) -> bytes:
        if isinstance(self.format, ParquetFormat):
            # Parquet encoding and compression take a while and release the GIL.
            return await asyncio.to_thread(self.format.encode, payloads)
        return self.format.encode(payloads)

    def _plan(self, prepared: list[Prepared]) -> list[list[Prepared]]:
        """Cut records into objects: runs of one time directory, each at most the size limit.

        Runs follow offset order, so the objects of a partition hold consecutive
        records and the meta object's ``last_offset`` only moves forward. A run
        over the limit is cut into pieces of about equal size rather than full
        pieces and a small rest.
        """
        runs: list[list[Prepared]] = []
        for item in prepared:
            if runs and runs[-1][-1][3] == item[3]:
                runs[-1].append(item)
            else:
                runs.append([item])
        limit = self.config.batch_size_mb * 1024 * 1024
        most = self.config.batch_size
        pieces: list[list[Prepared]] = []
        for run in runs:
            total = sum(item[2] for item in run)
            count = max(math.ceil(total / limit), math.ceil(len(run) / most), 1)
            target = total / count
            piece: list[Prepared] = []
            size = 0
            for item in run:
                if piece and (size + item[2] > limit or size >= target or len(piece) >= most):
                    pieces.append(piece)
                    piece, size = [], 0
                piece.append(item)
                size += item[2]
            if piece:
                pieces.append(piece)
        return pieces

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


class ObjectStoreSinkPipeline(SinkPipeline):
    """The pipeline of an ``object_store`` sink (the plugin factory)."""

    sink_class = ObjectStoreSink

    def __init__(self, config: ObjectStoreSinkConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        # A private copy: its batch_bytes follows the observed output/input ratio.
        self.config = config.model_copy()
        self.object_limit = config.batch_bytes

    @property
    def object_sink(self) -> ObjectStoreSink:
        """The sink this pipeline drives."""
        return cast(ObjectStoreSink, self.sink)

    async def process(self, batch: Any) -> dict[TopicPartition, int]:
        commit = await super().process(batch)
        self._follow_ratio()
        return commit

    async def flush_partitions(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            return await super().flush_partitions(partitions)
        finally:
            self.object_sink.forget(partitions)

    def drop_partitions(self, partitions: set[TopicPartition]) -> None:
        super().drop_partitions(partitions)
        self.object_sink.forget(partitions)

    def _follow_ratio(self) -> None:
        # The pipeline counts key+value bytes; an object holds more (the JSON
        # envelope) or less (Parquet). Flush when the *object* would be full.
        sink = self.object_sink
        if sink.bytes_in and sink.bytes_out:
            ratio = sink.bytes_out / sink.bytes_in
            self.config.batch_bytes = max(1024, int(self.object_limit / ratio * 0.98))
