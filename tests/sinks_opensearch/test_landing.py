"""Documents land with the expected ids, index and content; redelivery leaves no duplicates.

Real broker, real Elasticsearch-compatible server, opensearch-py on both sides.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from opensearchpy import AsyncOpenSearch

from etl.testing.kafka import create_topic, produce
from tests.sinks_opensearch.harness import (
    all_docs,
    count,
    running_sink,
    settings_for,
    sink_config,
    wait_count,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch]


async def test_envelope_documents_land_with_coordinate_ids_and_a_search_finds_them(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic = f"logs-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, [(f"k{i}", f"line {i}") for i in range(40)], partition=0)
    await produce(kafka_bootstrap, topic, [(None, "other partition")], partition=1)
    config = sink_config(f"os-{uid}", [topic], [search_url], index="env-{topic}")
    async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
        await wait_count(search, f"env-{topic}", 41)
        await wait_until(lambda: _committed(pipeline, topic, 0, 40), what="commit")

    docs = await all_docs(search, f"env-{topic}")
    assert len(docs) == 41
    body = docs[f"{topic}+0+7"]["msg_body"]
    assert body == {
        "key": "k7",
        "offset": 7,
        "overflowFlag": False,
        "partition": 0,
        "timestamp": body["timestamp"],
        "topic": topic,
        "value": "line 7",
        "valueSize": 6,
    }
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 0
    assert "key" not in docs[f"{topic}+1+0"]["msg_body"]  # a null key is left out
    found = await search.search(
        index=f"env-{topic}", body={"query": {"match": {"msg_body.value": "partition"}}}
    )
    assert [hit["_id"] for hit in found["hits"]["hits"]] == [f"{topic}+1+0"]


async def _committed(pipeline: object, topic: str, partition: int, offset: int) -> bool:
    progress = pipeline.status.partitions.get(f"{topic}/{partition}")  # type: ignore[attr-defined]
    return bool(progress and progress.committed == offset)


@pytest.mark.parametrize("id_mode", ["key", "coordinates"])
async def test_redelivery_overwrites_and_leaves_no_duplicates(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str, id_mode: str
) -> None:
    topic = f"orders-{uid}"
    index = f"orders-{uid}"
    await create_topic(kafka_bootstrap, topic, 3)
    items = [(f"order-{i}", json.dumps({"order": i, "amount": i * 10})) for i in range(300)]
    await produce(kafka_bootstrap, topic, items)
    settings = settings_for(kafka_bootstrap, uid)
    options = {"index": index, "document": "value", "id": id_mode}
    async with running_sink(
        sink_config(f"first-{uid}", [topic], [search_url], **options), settings
    ):
        await wait_count(search, index, 300)
    # A second sink (its own consumer group) reads everything again: a full redelivery.
    second = sink_config(f"second-{uid}", [topic], [search_url], **options)
    async with running_sink(second, settings) as pipeline:
        await wait_until(lambda: _all_written(pipeline, 300), what="second delivery written")
    assert await count(search, index) == 300
    docs = await all_docs(search, index)
    assert sorted(doc["order"] for doc in docs.values()) == list(range(300))
    if id_mode == "key":
        assert docs["order-42"] == {"order": 42, "amount": 420}


async def _all_written(pipeline: object, expected: int) -> bool:
    return getattr(pipeline, "written", 0) >= expected


async def test_upsert_merges_and_null_value_deletes_by_key(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic = f"users-{uid}"
    index = f"users-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(
        kafka_bootstrap,
        topic,
        [
            ("u1", json.dumps({"name": "Ann"})),
            ("u2", json.dumps({"name": "Bob"})),
            ("u1", json.dumps({"city": "Oslo"})),
            ("u2", None),
            ("u3", json.dumps({"name": "Cy"})),
        ],
    )
    config = sink_config(
        f"os-{uid}",
        [topic],
        [search_url],
        index=index,
        document="value",
        id="key",
        write_method="upsert",
    )
    async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
        await wait_until(lambda: _committed(pipeline, topic, 0, 5), what="all committed")
    docs = await all_docs(search, index)
    assert docs == {"u1": {"name": "Ann", "city": "Oslo"}, "u3": {"name": "Cy"}}


async def test_index_template_uses_topic_and_record_date(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic = f"Web-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    stamp = int(datetime(2024, 3, 5, 23, 59, tzinfo=UTC).timestamp() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"path": "/"}', timestamp_ms=stamp)
        await producer.send_and_wait(topic, b'{"path": "/b"}', timestamp_ms=stamp + 60_000)
    finally:
        await producer.stop()
    config = sink_config(
        f"os-{uid}", [topic], [search_url], index="logs-{topic}-{yyyy.MM.dd}", document="flatten"
    )
    async with running_sink(config, settings_for(kafka_bootstrap, uid)):
        await wait_count(search, f"logs-web-{uid}-2024.03.06", 1)
        await wait_count(search, f"logs-web-{uid}-2024.03.05", 1)
    (doc,) = (await all_docs(search, f"logs-web-{uid}-2024.03.05")).values()
    assert doc == {
        "path": "/",
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "key": None,
        "timestamp": stamp,
    }
