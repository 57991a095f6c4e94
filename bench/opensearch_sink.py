"""Documents per second from Kafka into OpenSearch, against a bare opensearch-py bulk loop.

Starts an embedded broker and the Elasticsearch-compatible test server (or uses
``ETL_TEST_KAFKA`` / ``ETL_TEST_OPENSEARCH``), produces the messages once, then
alternately, ``--rounds`` times each, into a fresh index every time:

* ``bare``: the same ``msg_body`` documents with the same ids, built from the
  records in memory and sent with ``AsyncOpenSearch.bulk`` in requests of
  ``--bulk-actions`` documents, ``--in-flight`` requests at a time;
* ``ours``: the ``opensearch`` sink pipeline consuming the topic from the start,
  timed from its partition assignment until every document is written;

and prints the best rate of each and the ratio.

    python -m bench.opensearch_sink [--messages 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opensearchpy import AsyncOpenSearch

from bench.sink_rate import sink_rate
from etl.embedded import EmbeddedBroker
from etl.testing.kafka import create_topic
from etl.testing.search_server import SearchServer
from etl.testing.settings import pipeline_settings
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.sink import OpenSearchSinkPipeline

TOPIC = "bench-search"
PARTITIONS = 4


async def fill(bootstrap: str, messages: int) -> list[Any]:
    """Produce the messages; return them as consumed records (for the bare loop)."""
    await create_topic(bootstrap, TOPIC, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = []
        for i in range(messages):
            value = json.dumps({"id": i, "user": f"user-{i % 977}", "msg": "x" * 80}).encode()
            futures.append(await producer.send(TOPIC, value, f"k{i}".encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(records) < messages:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def envelope_body(record: Any, index: str) -> bytes:
    """The action and ``msg_body`` document of one record, as a plain client would write it."""
    action = {
        "index": {"_index": index, "_id": f"{record.topic}+{record.partition}+{record.offset}"}
    }
    value = record.value.decode()
    document = {
        "msg_body": {
            "key": record.key.decode() if record.key is not None else None,
            "offset": record.offset,
            "overflowFlag": False,
            "partition": record.partition,
            "timestamp": record.timestamp,
            "topic": record.topic,
            "value": value,
            "valueSize": len(record.value),
        }
    }
    return (json.dumps(action) + "\n" + json.dumps(document) + "\n").encode()


async def bare(url: str, records: list[Any], index: str, actions: int, in_flight: int) -> float:
    client = AsyncOpenSearch(hosts=[url], timeout=60, maxsize=in_flight + 1)
    gate = asyncio.Semaphore(in_flight)

    async def send(chunk: list[Any]) -> None:
        async with gate:
            body = b"".join(envelope_body(record, index) for record in chunk)
            response = await client.bulk(body=body)
            assert not response["errors"]

    try:
        await client.info()
        started = time.perf_counter()
        chunks = [records[i : i + actions] for i in range(0, len(records), actions)]
        await asyncio.gather(*(send(chunk) for chunk in chunks))
        return len(records) / (time.perf_counter() - started)
    finally:
        await client.close()


async def ours(
    bootstrap: str, url: str, messages: int, index: str, actions: int, in_flight: int
) -> float:
    settings = pipeline_settings(bootstrap, index, prefix="bench")
    config = OpenSearchSinkConfig(
        name=f"bench-{index}",
        topics=[TOPIC],
        hosts=[url],
        index=index,
        start_offset="earliest",
        bulk_actions=actions,
        max_in_flight=in_flight,
        batch_size=actions * in_flight * 2,
        linger_ms=200,
    )
    return await sink_rate(OpenSearchSinkPipeline, config, settings, messages)


async def main(args: argparse.Namespace) -> None:
    broker = None
    bootstrap = os.environ.get("ETL_TEST_KAFKA")
    external = os.environ.get("ETL_TEST_OPENSEARCH")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap_servers
    try:
        records = await fill(bootstrap, args.messages)
        rates: dict[str, list[float]] = {"bare": [], "ours": []}
        for round_no in range(args.rounds):
            # Alternate the order, and give every run a fresh server when we start it
            # ourselves: the test server slows down as it holds more documents.
            order = ["bare", "ours"] if round_no % 2 == 0 else ["ours", "bare"]
            for which in order:
                server = None if external else SearchServer().start()
                url = external or server.url  # type: ignore[union-attr]
                index = f"{which}-{round_no}"
                try:
                    if which == "bare":
                        rate = await bare(url, records, index, args.bulk_actions, args.in_flight)
                    else:
                        rate = await ours(
                            bootstrap, url, args.messages, index, args.bulk_actions, args.in_flight
                        )
                finally:
                    if server is not None:
                        server.remove()
                rates[which].append(rate)
                print(f"round {round_no + 1}: {which} {rate:,.0f} docs/s", flush=True)
        best_bare, best_ours = max(rates["bare"]), max(rates["ours"])
        print(
            f"messages={args.messages} bulk_actions={args.bulk_actions} in_flight={args.in_flight}"
        )
        print(f"bare opensearch-py bulk: {best_bare:,.0f} docs/s")
        print(f"ours (Kafka -> sink):    {best_ours:,.0f} docs/s")
        print(f"ratio: {best_ours / best_bare:.2f}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bulk-actions", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
