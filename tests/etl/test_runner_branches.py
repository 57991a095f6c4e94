"""The runner handles each branch of the error hierarchy in one place (stand-in Kafka client)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import TopicPartition

from etl.config import ETLSettings
from etl.errors import BackpressureError, FatalError, GaveUp, RetriableError
from etl.runtime.consumer import Batch, Commit, ConsumerPipeline
from etl.runtime.status import State

TP = TopicPartition("src", 0)


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class ScriptedConsumer:
    """Serves offset 0.. from its committed offset; records seeks, commits and pauses."""

    def __init__(self) -> None:
        self.position = 0
        self.committed_offset = 0
        self.seeks: list[int] = []
        self.commits: list[int] = []
        self.paused: list[bool] = []

    async def getmany(self, **_: Any) -> Batch:
        await asyncio.sleep(0)
        if self.paused and self.paused[-1]:
            return {}
        batch = {TP: [Record(self.position)]}
        self.position += 1
        return batch

    async def committed(self, tp: TopicPartition) -> int:
        return self.committed_offset

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset

    async def commit(self, offsets: Commit) -> None:
        self.committed_offset = offsets[TP]
        self.commits.append(offsets[TP])

    def pause_all(self, paused: bool) -> None:
        self.paused.append(paused)

    async def stop(self) -> None:
        pass


class ScriptedPipeline(ConsumerPipeline):
    """Raises the scripted error for each batch (None: the batch is done)."""

    def __init__(self, script: list[BaseException | None], **kwargs: Any) -> None:
        super().__init__(name="p", topics=["src"], settings=ETLSettings(), **kwargs)
        self.script = script
        self.seen: list[int] = []

    async def _open(self) -> None:
        self.consumer = ScriptedConsumer()
        self._assigned = {TP}
        self.status.state = State.RUNNING

    async def process(self, batch: Batch) -> Commit:
        offset = batch[TP][0].offset
        self.seen.append(offset)
        error = self.script.pop(0) if self.script else None
        if error is not None:
            raise error
        if not self.script:
            self._ended = True  # end of the script: leave the loop
        return {TP: offset + 1}


async def run(pipeline: ScriptedPipeline) -> ScriptedConsumer:
    await pipeline._open()
    consumer = pipeline.consumer
    await asyncio.wait_for(pipeline._run(), 5)
    return consumer  # type: ignore[no-any-return]


async def test_backpressure_pauses_then_reads_the_batch_again_without_a_failure() -> None:
    pipeline = ScriptedPipeline([BackpressureError(0.05), None])
    consumer = await run(pipeline)
    assert pipeline.seen == [0, 0], "the batch is read again after the pause"
    assert consumer.paused == [True, False]
    assert consumer.commits == [1]
    assert pipeline.status.state == State.RUNNING and pipeline.status.error is None


async def test_a_retriable_error_is_retried_with_backoff() -> None:
    pipeline = ScriptedPipeline([RetriableError("database down"), None])
    consumer = await run(pipeline)
    assert pipeline.seen == [0, 0] and consumer.commits == [1]
    assert pipeline.status.state == State.RUNNING


@pytest.mark.parametrize(
    "error", [FatalError("table t has no column c"), GaveUp(3, "sink write: timed out")]
)
async def test_fatal_and_gave_up_stop_the_pipeline_as_failed_without_a_traceback(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = ScriptedPipeline([None, error])
    pipeline.script.append(None)  # never reached
    with caplog.at_level(logging.ERROR, logger="etl.runtime"):
        consumer = await run(pipeline)
    assert pipeline.seen == [0, 1]
    assert consumer.commits == [1], "nothing past the last good batch is committed"
    assert pipeline.status.state == State.FAILED
    assert str(error) in (pipeline.status.error or "")
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


async def test_retries_past_max_retries_fail_the_pipeline() -> None:
    pipeline = ScriptedPipeline([RetriableError("down"), RetriableError("down"), None])
    pipeline.max_retries = 1
    consumer = await run(pipeline)
    assert consumer.commits == []
    assert pipeline.status.state == State.FAILED
    assert "gave up after 2 attempts" in (pipeline.status.error or "")
