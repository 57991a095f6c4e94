"""In-memory doubles: a sink that keeps what it is given, a source that publishes a list.

Both are real implementations of the contracts (:mod:`sinks.base`,
:mod:`etl.sources.base`), so a test of the runtime, of a transform's pipeline or
of the source runner drives the same code paths as production, without a
database. ``MemorySink.landed[name]`` holds the records written by the sink
named ``name`` (in this process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from etl.config import SinkConfigBase, SourceConfigBase
from etl.errors import RecordError
from etl.sources.base import DeadMessage, SourceBatch, SourceMessage, SourceRunner
from sinks.base import RecordFailure, Sink, SinkBatch, sink_pipeline_factory


class MemorySinkConfig(SinkConfigBase):
    """Keeps records in memory; a value in ``reject_values`` is a record error."""

    reject_values: list[str] = Field(default_factory=list)


class MemorySink(Sink[MemorySinkConfig]):
    """Appends every record it does not reject to ``MemorySink.landed[config.name]``."""

    config_model = MemorySinkConfig
    landed: ClassVar[dict[str, list[Any]]] = {}

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        kept = self.landed.setdefault(self.config.name, [])
        rejected = {v.encode() for v in self.config.reject_values}
        failures = []
        for record in batch.records:
            if record.value in rejected:
                error = RecordError(f"value {record.value!r} is rejected by this sink")
                failures.append(RecordFailure(record, error))
            else:
                kept.append(record)
        return failures


MemorySinkPipeline = sink_pipeline_factory(MemorySink)


class MemoryItem(BaseModel):
    """One record of a :class:`MemorySource`; ``bad`` makes it a record error."""

    key: str | None = None
    value: str | None = None
    bad: bool = False


class MemorySourceConfig(SourceConfigBase):
    """Publishes ``items`` to ``topic``, ``batch_size`` at a time, then finishes."""

    topic: str
    items: list[MemoryItem] = Field(default_factory=list)
    #: The partition of every record (-1: the producer's partitioner chooses).
    partition: int = Field(default=-1, ge=-1)
    batch_size: int = Field(default=10, ge=1)
    #: Pause between batches (so that a test can act mid-stream).
    batch_delay_ms: int = Field(default=0, ge=0)


class MemoryReader:
    """A :class:`~etl.sources.base.SourceReader` over a list; its state is the next index."""

    def __init__(self, config: MemorySourceConfig) -> None:
        self.config = config
        self.next = 0

    async def open(self, saved: dict[str, Any] | None) -> None:
        self.next = int(saved["next"]) if saved else 0

    async def next_batch(self) -> SourceBatch | None:
        items = self.config.items
        if self.next >= len(items):
            return None
        if self.config.batch_delay_ms:
            await asyncio.sleep(self.config.batch_delay_ms / 1000)
        batch = SourceBatch()
        while self.next < len(items) and len(batch.messages) < self.config.batch_size:
            item = items[self.next]
            self.next += 1
            batch.read += 1
            key = item.key.encode() if item.key is not None else None
            value = item.value.encode() if item.value is not None else None
            if item.bad:
                error = RecordError(f"item {self.next - 1} is bad", stage="source")
                batch.dead.append(DeadMessage(self.config.topic, key, value, error))
                break  # a batch ends at a bad record
            batch.messages.append(
                SourceMessage(self.config.topic, key, value, self.config.partition)
            )
        return batch

    def snapshot(self, failed: Sequence[SourceMessage]) -> dict[str, Any]:
        return {"next": self.next}

    async def close(self) -> None:
        pass


class MemorySource(SourceRunner[MemorySourceConfig]):
    """The source runner around a :class:`MemoryReader`."""

    def make_reader(self) -> MemoryReader:
        return MemoryReader(self.config)

    def describe_target(self) -> str:
        return self.config.topic
