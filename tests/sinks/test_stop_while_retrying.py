"""A sink whose destination stays down must not keep the worker from stopping."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from etl.config import ETLSettings, KafkaSettings, SinkConfigBase
from etl.errors import PipelineStopping, RetriableError
from etl.redact import Redactor
from etl.runtime.policy import Backoff, retry
from etl.testing.kafka import produce
from sinks.base import RecordFailure, Sink, SinkBatch, sink_pipeline_factory

pytestmark = pytest.mark.kafka


class DownSink(Sink[SinkConfigBase]):
    writes = 0

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        DownSink.writes += 1
        raise RetriableError("connection refused")


async def test_stop_during_endless_retries_returns_without_commit(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"down-{uid}"
    await produce(kafka_bootstrap, topic, [(b"k", b"v")])
    settings = ETLSettings(
        data_dir=tmp_path,
        kafka=KafkaSettings(
            bootstrap_servers=kafka_bootstrap, enable_idempotence=False, group_prefix=f"t{uid}"
        ),
    )
    config = SinkConfigBase(
        name="down", type="down", topics=[topic], start_offset="earliest", linger_ms=0
    )
    pipeline = sink_pipeline_factory(DownSink)(config, settings=settings, redact=Redactor())
    await pipeline.start()
    for _ in range(600):
        if DownSink.writes >= 2:
            break
        await asyncio.sleep(0.05)
    assert DownSink.writes >= 2, "the write is being retried"
    await asyncio.wait_for(pipeline.stop(), timeout=30)
    assert not any(p.committed for p in pipeline.status.partitions.values())


async def test_a_retry_inside_a_write_ends_when_the_pipeline_stops() -> None:
    config = SinkConfigBase(name="s", type="down", topics=["t"])
    sink = DownSink(config, settings=ETLSettings(), redact=Redactor())
    batch = SinkBatch([])
    waiting = asyncio.ensure_future(
        retry(
            lambda: sink.write(batch),
            what="write",
            backoff=Backoff(first=3600, ceiling=3600),
            stopping=sink.stopping.is_set,
        )
    )
    await asyncio.sleep(0.05)
    sink.stopping.set()
    with pytest.raises(PipelineStopping, match="write still failing at stop"):
        await asyncio.wait_for(waiting, timeout=5)
