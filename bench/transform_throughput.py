"""Transform throughput: our pipeline vs a bare aiokafka consume-transform-produce loop.

Both run in this process, on the same embedded broker, over the same source
topic (``--messages`` records of about 100 bytes), each in its own consumer
group, appending the same suffix to every value. The timed window of each is
from its first fetched record to its last commit after the broker acknowledged
the output. Prints both rates and the ratio (ours / bare).

    python -m bench.transform_throughput [--messages 200000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from etl.config import ETLSettings, KafkaSettings
from etl.embedded import EmbeddedBroker
from etl.runtime.transform import TransformPipeline
from etl.testing.kafka import create_topic
from etl.transforms.loader import TransformSpec

SUFFIX = "ValueSuffix"


def deal_message(message: dict[str, Any]) -> dict[str, Any]:
    message["value"] = message["value"] + SUFFIX
    return message


async def fill(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        pending = []
        for i in range(count):
            user = f"user-{i % 1000:04d}"
            value = f'{{"id":{i:09d},"user":"{user}","event":"click","pad":"xxxxxxxx"}}'
            pending.append(await producer.send(topic, value.encode(), f"k{i % 1000}".encode()))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def bare_loop(bootstrap: str, source: str, target: str, count: int, group: str) -> float:
    """The reference: getmany, transform, send without awaiting each, flush, commit."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=10000)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    value = record.value.decode("utf-8") + SUFFIX
                    await producer.send(target, value.encode("utf-8"), record.key)
                seen += len(records)
            # Everything sent is acknowledged before the offsets are committed.
            await producer.flush()
            await consumer.commit()
        assert started is not None
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()


async def our_pipeline(
    bootstrap: str, source: str, target: str, count: int, data_dir: Path, name: str
) -> float:
    settings = ETLSettings(
        data_dir=data_dir,
        kafka=KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False),
    )
    spec = TransformSpec(
        name=name,
        path=Path("bench.py"),
        source_topic=source,
        target_topic=target,
        deal_message=deal_message,
        start_offset="earliest",
    )
    pipeline = TransformPipeline(spec, settings=settings)
    await pipeline.start()
    started = None
    try:
        while pipeline.status.produced < count:
            if started is None and pipeline.status.consumed > 0:
                # First batch landed: back-date to the start of that batch.
                started = time.perf_counter() - pipeline.status.last_batch_ms / 1000
            if pipeline.status.error and pipeline.status.state != "running":
                raise RuntimeError(pipeline.status.error)
            await asyncio.sleep(0.005)
        assert started is not None
        return time.perf_counter() - started
    finally:
        await pipeline.stop()


async def main(messages: int, partitions: int, rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        source = "bench-source"
        await create_topic(bootstrap, source, partitions)
        await create_topic(bootstrap, "bench-bare-out", partitions)
        await create_topic(bootstrap, "bench-etl-out", partitions)
        print(f"filling {messages} messages of ~100 bytes into {partitions} partitions ...")
        await fill(bootstrap, source, messages)
        data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"etl-bench-{os.getpid()}"
        best_bare = best_ours = float("inf")
        for round_ in range(rounds):
            bare = await bare_loop(
                bootstrap, source, "bench-bare-out", messages, f"bench-bare-{round_}"
            )
            ours = await our_pipeline(
                bootstrap, source, "bench-etl-out", messages, data_dir, f"bench-{round_}"
            )
            best_bare, best_ours = min(best_bare, bare), min(best_ours, ours)
            print(
                f"round {round_ + 1}: bare {messages / bare:,.0f} msg/s, "
                f"etl {messages / ours:,.0f} msg/s, ratio {bare / ours:.2f}"
            )
        print(
            f"best: bare aiokafka loop {messages / best_bare:,.0f} msg/s, "
            f"etl pipeline {messages / best_ours:,.0f} msg/s, ratio {best_bare / best_ours:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.partitions, args.rounds))
