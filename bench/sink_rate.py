"""The ``ours`` side of the sink benchmarks: a sink pipeline's written records per second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from etl.config import ETLSettings
from etl.redact import Redactor


async def sink_rate(
    pipeline_class: Any, config: Any, settings: ETLSettings, messages: int, *, poll: float = 0.005
) -> float:
    """Records/s of ``pipeline_class`` from its partition assignment until ``messages`` are
    written (the topic is consumed from the start)."""
    pipeline = pipeline_class(config, settings=settings, redact=Redactor(settings.secret_values()))
    await pipeline.start()
    try:
        while not pipeline.status.partitions and not pipeline.written:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        while pipeline.written < messages:
            if pipeline.status.state.value in ("failed", "halted"):
                raise RuntimeError(f"sink failed: {pipeline.status.error}")
            await asyncio.sleep(poll)
        return messages / (time.perf_counter() - started)
    finally:
        await pipeline.stop()
