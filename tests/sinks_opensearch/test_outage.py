"""The server goes away mid-stream, the worker is killed: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from opensearchpy import AsyncOpenSearch

from etl.testing.kafka import create_topic, produce
from etl.testing.kcat import kcat_produce
from etl.testing.search_server import SearchServer
from etl.testing.worker import WorkerProcess, write_config
from tests.sinks_opensearch.harness import (
    all_docs,
    count,
    running_sink,
    settings_for,
    sink_config,
    wait_count,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch, pytest.mark.slow]

OUTAGE_SECONDS = 20


async def test_server_stopped_for_20s_mid_stream_loses_nothing(
    kafka_bootstrap: str, own_search_server: SearchServer, uid: str
) -> None:
    server = own_search_server
    topic, index = f"outage-{uid}", f"outage-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    client = AsyncOpenSearch(hosts=[server.url], timeout=30)
    config = sink_config(f"os-{uid}", [topic], [server.url], index=index, batch_size=100)
    try:
        async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
            await produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(300)])
            await wait_count(client, index, 300)
            await asyncio.to_thread(server.stop)
            await produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(300, 600)])
            await asyncio.sleep(OUTAGE_SECONDS)
            assert "cannot reach OpenSearch" in (pipeline.status.error or "")
            await asyncio.to_thread(server.start)
            await produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(600, 900)])
            await wait_count(client, index, 900, timeout=120)
            await wait_until(lambda: _all_committed(pipeline, topic, 900), what="commit")
        assert await count(client, index) == 900
        docs = await all_docs(client, index)
        values = sorted(int(doc["msg_body"]["value"][1:]) for doc in docs.values())
        assert values == list(range(900))
    finally:
        await client.close()


async def _all_committed(pipeline: object, topic: str, total: int) -> bool:
    partitions = pipeline.status.partitions  # type: ignore[attr-defined]
    done = sum(p.committed or 0 for key, p in partitions.items() if key.startswith(topic))
    return bool(done == total)


def test_worker_killed_mid_stream_then_restarted_leaves_no_duplicates(
    tmp_path: Path, kafka_bootstrap: str, search_url: str, uid: str
) -> None:
    """kcat -> a real ``etl worker`` (kill -9 mid-stream, restart) -> OpenSearch."""
    topic, index = f"kill-{uid}", f"kill-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 3))
    sink = {
        "name": f"os-{uid}",
        "type": "opensearch",
        "topics": [topic],
        "hosts": [search_url],
        "index": index,
        "id": "coordinates",
        "start_offset": "earliest",
        "batch_size": 50,
        "linger_ms": 100,
    }
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"t{uid}"},
        errors={"dead_letter_topic": f"dlq-{uid}"},
        sinks=[sink],
    )
    kcat_produce(kafka_bootstrap, topic, [f"k{i % 11}\t{i}" for i in range(2000)])
    worker = WorkerProcess(config).start()
    try:
        worker.wait_for(
            lambda w: ((w.pipeline(f"os-{uid}") or {}).get("produced") or 0) >= 200,
            90,
            "some documents written",
        )
        worker.kill()
    finally:
        worker.stop()
    landed_at_kill = asyncio.run(_count(search_url, index))
    assert landed_at_kill >= 200
    with WorkerProcess(config, name="worker2") as again:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and asyncio.run(_count(search_url, index)) < 2000:
            time.sleep(0.5)
        again.wait_for(
            lambda w: ((w.pipeline(f"os-{uid}") or {}).get("state")) == "running", 30, "running"
        )
    assert asyncio.run(_count(search_url, index)) == 2000
    values = asyncio.run(_values(search_url, index))
    assert values == list(range(2000))


async def _count(url: str, index: str) -> int:
    client = AsyncOpenSearch(hosts=[url], timeout=30)
    try:
        return await count(client, index)
    finally:
        await client.close()


async def _values(url: str, index: str) -> list[int]:
    client = AsyncOpenSearch(hosts=[url], timeout=30)
    try:
        docs = await all_docs(client, index)
        return sorted(int(doc["msg_body"]["value"]) for doc in docs.values())
    finally:
        await client.close()
