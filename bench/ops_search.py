"""Message search scan rate: ``etl search``'s scan vs a bare aiokafka scan loop.

Both run in this process, on the same embedded broker, over the same topic
(``--messages`` records of about 100 bytes in ``--partitions`` partitions),
looking for a value keyword that matches about one record in a thousand, with
no result limit reached, so both read the whole topic. The bare loop assigns the
partitions, reads to the end offsets and does a case-insensitive substring test;
ours is :func:`etl.ops.search.search_topic` (keyword pattern, bounds, progress
callback). Prints both rates and the ratio (ours / bare).

    python -m bench.ops_search [--messages 200000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.transform_throughput import fill
from etl.config import KafkaSettings
from etl.embedded import EmbeddedBroker
from etl.ops.search import SearchQuery, search_topic
from etl.testing.kafka import create_topic

KEYWORD = "user-0042"


async def bare_scan(bootstrap: str, topic: str, partitions: int) -> tuple[float, int]:
    """The reference: assign, seek to the start, getmany until the end offsets, match."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=500,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        started = time.perf_counter()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        needle = KEYWORD.lower()
        found = 0
        active = {tp for tp in tps if ends[tp] > 0}
        while active:
            batch = await consumer.getmany(*active, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if needle in record.value.decode("utf-8", "backslashreplace").lower():
                        found += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    active.discard(tp)
        return time.perf_counter() - started, found
    finally:
        await consumer.stop()


async def our_scan(bootstrap: str, topic: str) -> tuple[float, int]:
    settings = KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)
    started = time.perf_counter()
    result = await search_topic(settings, topic, SearchQuery(values=[KEYWORD], limit=1_000_000))
    return time.perf_counter() - started, len(result.messages)


async def run(messages: int, partitions: int) -> None:
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = f"bench-search-{uuid.uuid4().hex[:6]}"
        await create_topic(bootstrap, topic, partitions)
        await fill(bootstrap, topic, messages)
        bare_s, bare_found = await bare_scan(bootstrap, topic, partitions)
        ours_s, ours_found = await our_scan(bootstrap, topic)
        if ours_found != bare_found:
            raise SystemExit(f"results differ: ours {ours_found}, bare {bare_found}")
        bare_rate, ours_rate = messages / bare_s, messages / ours_s
        print(f"messages={messages} partitions={partitions} matches={ours_found}")
        print(f"bare aiokafka scan: {bare_rate:,.0f} msg/s ({bare_s:.2f} s)")
        print(f"etl search scan:    {ours_rate:,.0f} msg/s ({ours_s:.2f} s)")
        print(f"ratio ours/bare:    {ours_rate / bare_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.partitions))


if __name__ == "__main__":
    main()
