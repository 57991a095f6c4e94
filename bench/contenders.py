"""The bare loops the worker benchmark races against, each run as its own process.

    python -m bench.contenders confluent|aiokafka|confluent-message-code \\
        --bootstrap HOST:PORT --source T --target T --group G

Every loop reads the source from the start in its own consumer group, appends
the suffix to each value, produces to the target, waits for the broker's
acknowledgements and commits, batch after batch, until it is terminated. The
benchmark times them from outside (bench/worker_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

SUFFIX = b"ValueSuffix"
BATCH = 10_000


def confluent_loop(args: argparse.Namespace, *, message_code: bool = False) -> None:
    """consume 10k / produce each / flush / commit, on librdkafka."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "enable.idempotence": False,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    consumer.subscribe([args.source])
    if message_code:
        from etl.message import native_to_message, normalize_result

        def deal_message(message: dict[str, Any]) -> dict[str, Any]:
            message["value"] = message["value"] + "ValueSuffix"
            return message

    running = True

    def stop(*_: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    produce = producer.produce
    target = args.target
    while running:
        messages = consumer.consume(BATCH, 0.2)
        if not messages:
            continue
        for message in messages:
            if message.error() is not None:
                continue
            if message_code:
                for out in normalize_result(deal_message(native_to_message(message))):
                    produce(target, out.value, out.key, headers=out.headers or None)
            else:
                produce(target, message.value() + SUFFIX, message.key())
        producer.flush()
        consumer.commit(asynchronous=False)
    consumer.close()


async def aiokafka_loop(args: argparse.Namespace) -> None:
    """getmany 10k / send each without awaiting / flush / commit, on aiokafka."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        args.source,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=BATCH,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    await consumer.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if not batch:
                continue
            for records in batch.values():
                for record in records:
                    await producer.send(args.target, record.value + SUFFIX, record.key)
            await producer.flush()
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=["confluent", "confluent-message-code", "aiokafka"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    if args.contender == "aiokafka":
        asyncio.run(aiokafka_loop(args))
    else:
        confluent_loop(args, message_code=args.contender == "confluent-message-code")
    sys.exit(0)


if __name__ == "__main__":
    main()
