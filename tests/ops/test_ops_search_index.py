"""`etl search --index SINK`: the index an OpenSearch sink writes, end to end.

Needs an Elasticsearch-compatible server: ``ETL_TEST_OPENSEARCH`` or the
noida-db launcher; skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from etl.cli import main
from etl.ops.messages import MessageLookupError
from etl.ops.search import SearchQuery
from etl.ops.search_index import search_index
from etl.testing.kafka import create_topic
from etl.testing.search_server import SearchServer, SearchServerUnavailable
from etl.testing.worker import WorkerProcess, write_config

BASE_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def ops_search_url() -> Iterator[str]:
    external = os.environ.get("ETL_TEST_OPENSEARCH")
    if external:
        yield external.rstrip("/")
        return
    try:
        server = SearchServer().start()
    except SearchServerUnavailable as exc:
        pytest.skip(f"no Elasticsearch-compatible server: {exc}")
    try:
        yield server.url
    finally:
        server.remove()


def test_index_search_needs_the_envelope_document() -> None:
    sink = SimpleNamespace(name="flat", document="flatten", index="{topic}", hosts=["http://x"])
    with pytest.raises(MessageLookupError, match="needs document: envelope"):
        search_index(sink, "t", SearchQuery())


async def fill(bootstrap: str, topic: str) -> None:
    await create_topic(bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(12):
            status = "ERROR disk full" if i % 3 == 0 else "ok"
            await producer.send_and_wait(
                topic,
                f"order {i} {status}".encode(),
                key=f"k{i}".encode(),
                timestamp_ms=BASE_MS + i * 1000,
            )
    finally:
        await producer.stop()


def count(url: str, index: str) -> int:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    try:
        client.indices.refresh(index=index)
        return int(client.count(index=index)["count"])
    except Exception:
        return -1
    finally:
        client.close()


@pytest.mark.kafka
@pytest.mark.opensearch
def test_search_by_index_of_an_opensearch_sink(
    ops_search_url: str, kafka_bootstrap: str, tmp_path: Path, uid: str
) -> None:
    topic = f"ops-idx-{uid}"
    asyncio.run(fill(kafka_bootstrap, topic))
    sink = {
        "name": f"idx{uid}",
        "type": "opensearch",
        "hosts": [ops_search_url],
        "topics": [topic],
        "index": "ops-{topic}",
        "start_offset": "earliest",
        "linger_ms": 100,
    }
    config = write_config(
        tmp_path, kafka_bootstrap, kafka={"group_prefix": f"ops{uid}"}, sinks=[sink]
    )
    with WorkerProcess(config) as worker:
        deadline = time.monotonic() + 60
        while count(ops_search_url, f"ops-{topic}") < 12:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.5)

    def run(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(
            main, ["search", topic, "--index", sink["name"], "--json", "-c", str(config), *args]
        )
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    errors = run("--value", "disk full", "--limit", "50")
    assert [m["key"] for m in errors["messages"]] == ["k0", "k3", "k6", "k9"]
    assert errors["source"] == f"index ops-{topic}"
    assert errors["messages"][0]["value"] == "order 0 ERROR disk full"
    assert errors["messages"][1]["timestamp"] == BASE_MS + 3000

    ranged = run("--offsets", "2-7", "--value", "ok")
    assert [m["offset"] for m in ranged["messages"]] == [2, 4, 5, 7]

    timed = run("--since", str(BASE_MS + 5000), "--until", str(BASE_MS + 8000))
    assert [m["key"] for m in timed["messages"]] == ["k5", "k6", "k7", "k8"]

    wild = run("--key", "K1*", "--limit", "50")
    assert [m["key"] for m in wild["messages"]] == ["k1", "k10", "k11"]

    limited = run("--limit", "3")
    assert len(limited["messages"]) == 3 and limited["limit_reached"] is True
