"""Run a sink pipeline in the test process against the real test broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from etl.config import ETLSettings
from etl.redact import Redactor
from etl.testing.settings import pipeline_settings
from etl.testing.worker import write_config


def sink_settings(tmp_path: Path, bootstrap: str, uid: str, **overrides: Any) -> ETLSettings:
    """Settings for an in-process sink: test broker, idempotence off, own dead-letter topic."""
    return pipeline_settings(bootstrap, uid, data_dir=tmp_path / "data", **overrides)


def sink_config(model: Any, type_name: str, name: str, topic: str, **options: Any) -> Any:
    """A validated sink config reading ``topic`` from the beginning."""
    return model.model_validate(
        {"name": name, "type": type_name, "topics": [topic], "start_offset": "earliest", **options}
    )


def worker_config(tmp_path: Path, bootstrap: str, uid: str, sinks: list[dict[str, Any]]) -> Path:
    """An ``etl.yaml`` for a real worker running ``sinks`` (from the beginning of their topics)."""
    return write_config(
        tmp_path,
        bootstrap,
        kafka={"group_prefix": f"t{uid}", "max_batch_records": 500},
        errors={"dead_letter_topic": f"dlq-{uid}"},
        sinks=[{"start_offset": "earliest", **sink} for sink in sinks],
    )


@asynccontextmanager
async def running(pipeline_class: Any, config: Any, settings: ETLSettings) -> AsyncIterator[Any]:
    """Start the pipeline; stop it (flush + commit) on the way out."""
    redact = Redactor(settings.secret_values())
    pipeline = pipeline_class(config, settings=settings, redact=redact)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()


async def wait_until(
    predicate: Callable[[], Any], *, pipeline: Any = None, timeout: float = 60, what: str = ""
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail with the pipeline's status."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        status = pipeline.status.to_dict() if pipeline is not None else {}
        if status.get("state") in ("failed",):
            raise AssertionError(f"pipeline failed while waiting for {what}: {status}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; status={status}")
        await asyncio.sleep(0.1)


async def produce_records(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None, int | None, int | None]],
) -> None:
    """Produce (key, value, partition, timestamp_ms) tuples, in order, and wait for acks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key, partition=partition, timestamp_ms=stamp)
            for key, value, partition, stamp in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
