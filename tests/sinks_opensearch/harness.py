"""Run an OpenSearch sink pipeline in the test's event loop and look at what landed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from opensearchpy import AsyncOpenSearch

from etl.config import ETLSettings
from etl.redact import Redactor
from etl.testing.settings import pipeline_settings
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.sink import OpenSearchSinkPipeline


def settings_for(bootstrap: str, uid: str) -> ETLSettings:
    """Settings for the test broker (no idempotence), with this test's group and DLQ names."""
    return pipeline_settings(bootstrap, uid)


def sink_config(name: str, topics: list[str], hosts: list[str], **options: Any) -> Any:
    """A validated sink config; tests start from the earliest offset with a short linger."""
    values: dict[str, Any] = {
        "name": name,
        "type": "opensearch",
        "topics": topics,
        "hosts": hosts,
        "start_offset": "earliest",
        "on_error": "continue",
        "linger_ms": 200,
        "retry_backoff_ms": 100,
        "retry_backoff_max_ms": 1000,
        "request_timeout_s": 5,
    }
    values.update(options)
    return OpenSearchSinkConfig.model_validate(values)


@asynccontextmanager
async def running_sink(config: Any, settings: ETLSettings) -> AsyncIterator[Any]:
    """A started OpenSearchSinkPipeline; stopped (flush + commit) on exit."""
    pipeline = OpenSearchSinkPipeline(
        config, settings=settings, redact=Redactor(settings.secret_values())
    )
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()


async def wait_until(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll an async ``check`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


async def count(client: AsyncOpenSearch, index: str) -> int:
    """Documents in ``index`` (refreshed first; 0 when it does not exist)."""
    if not await client.indices.exists(index=index):
        return 0
    await client.indices.refresh(index=index)
    result = await client.count(index=index)
    return int(result["count"])


async def wait_count(
    client: AsyncOpenSearch, index: str, expected: int, timeout: float = 60
) -> int:
    """Until ``index`` holds at least ``expected`` documents; returns the count."""

    async def enough() -> int | None:
        found = await count(client, index)
        return found if found >= expected else None

    result: int = await wait_until(enough, timeout, f"{expected} documents in {index}")
    return result


async def all_docs(client: AsyncOpenSearch, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` as ``{_id: _source}``."""
    await client.indices.refresh(index=index)
    result = await client.search(index=index, body={"query": {"match_all": {}}, "size": 10000})
    return {hit["_id"]: hit["_source"] for hit in result["hits"]["hits"]}
