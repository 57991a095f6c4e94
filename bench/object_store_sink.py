"""Object-store sink throughput: Kafka -> local JSON-lines objects, MB/s of lines written.

Both run in this process, on the same embedded broker, over the same source
topic, each in its own consumer group, and write the same lines (the exported
message JSON, one per line):

* ``bare``: an aiokafka ``getmany`` loop that encodes each record with
  ``json.dumps`` and appends the lines to one plain file per partition
  (``open(..., "ab").write``), starting a new file every ``--object-mb``, and
  commits after each poll's lines are written;
* ``ours``: the ``object_store`` sink pipeline (jsonl, ``batch_size_mb`` =
  ``--object-mb``, with its meta objects, atomic renames and, unless
  ``--no-fsync``, fsync).

The timed window of each is from its first fetched record until everything is
written and committed (for ours: until the pipeline has stopped, which flushes
the last objects). Prints both rates in MB/s of lines and the ratio ours/bare.

    python -m bench.object_store_sink [--messages 200000] [--value-bytes 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from etl.config import ETLSettings, KafkaSettings
from etl.embedded import EmbeddedBroker
from etl.redact import Redactor
from etl.testing.kafka import create_topic
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSinkPipeline


async def fill(bootstrap: str, topic: str, count: int, value_bytes: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        pending = []
        pad = "x" * max(0, value_bytes - 60)
        for i in range(count):
            value = f'{{"id":{i:09d},"user":"user-{i % 1000:04d}","pad":"{pad}"}}'
            pending.append(await producer.send(topic, value.encode(), f"k{i % 1000}".encode()))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def line_of(record: object) -> bytes:
    """The exported message as the bare loop writes it (its own code, same JSON)."""
    key, value = record.key, record.value  # type: ignore[attr-defined]
    message: dict[str, object] = {}
    if key is not None:
        message["key"] = key.decode("utf-8")
    message["offset"] = record.offset  # type: ignore[attr-defined]
    message["overflowFlag"] = False
    message["partition"] = record.partition  # type: ignore[attr-defined]
    message["timestamp"] = record.timestamp  # type: ignore[attr-defined]
    message["topic"] = record.topic  # type: ignore[attr-defined]
    if value is not None:
        message["value"] = value.decode("utf-8")
    message["valueSize"] = len(value) if value is not None else 0
    return _dumps(message).encode() + b"\n"


async def bare_loop(
    bootstrap: str, topic: str, count: int, group: str, out: Path, object_mb: int
) -> tuple[float, int]:
    """(seconds, bytes written) of the plain loop."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    out.mkdir(parents=True, exist_ok=True)
    files: dict[int, tuple[int, object]] = {}
    written = seen = 0
    started = None
    limit = object_mb * 1024 * 1024
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=10000)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            for tp, records in batch.items():
                data = b"".join(line_of(r) for r in records)
                size, handle = files.get(tp.partition, (0, None))
                if handle is None or size >= limit:
                    if handle is not None:
                        handle.close()  # type: ignore[attr-defined]
                    name = out / f"partition_{tp.partition}_offset_{records[0].offset}"
                    handle, size = open(name, "ab"), 0  # noqa: ASYNC230
                handle.write(data)  # type: ignore[attr-defined]
                handle.flush()  # type: ignore[attr-defined]
                files[tp.partition] = (size + len(data), handle)
                written += len(data)
                seen += len(records)
            await consumer.commit()
        for _size, handle in files.values():
            handle.close()  # type: ignore[attr-defined]
        assert started is not None
        return time.perf_counter() - started, written
    finally:
        await consumer.stop()


async def our_pipeline(
    bootstrap: str, topic: str, count: int, name: str, root: Path, object_mb: int, fsync: bool
) -> tuple[float, int]:
    """(seconds, bytes written) of the object_store sink pipeline."""
    settings = ETLSettings(
        data_dir=root / "data",
        kafka=KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False),
    )
    config = ObjectStoreSinkConfig(
        name=name,
        type="object_store",
        topics=[topic],
        start_offset="earliest",
        url=str(root / "store"),
        batch_size_mb=object_mb,
        batch_window_minutes=1,
        fsync=fsync,
    )
    pipeline = ObjectStoreSinkPipeline(config, settings=settings, redact=Redactor())
    await pipeline.start()
    started = None
    try:
        while pipeline.status.consumed < count:
            if started is None and pipeline.status.consumed > 0:
                started = time.perf_counter() - pipeline.status.last_batch_ms / 1000
            if pipeline.status.error and pipeline.status.state != "running":
                raise RuntimeError(pipeline.status.error)
            await asyncio.sleep(0.005)
    finally:
        await pipeline.stop()  # flushes the last objects and commits
    assert started is not None and pipeline.written == count, pipeline.written
    elapsed = time.perf_counter() - started
    return elapsed, pipeline.object_sink.bytes_out


async def main(
    messages: int, value_bytes: int, partitions: int, object_mb: int, fsync: bool, rounds: int
) -> None:
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="etl-bench-objects-"))
    try:
        with EmbeddedBroker() as broker:
            bootstrap = broker.bootstrap_servers
            topic = "bench-objects"
            await create_topic(bootstrap, topic, partitions)
            print(
                f"filling {messages} messages of ~{value_bytes} bytes into {partitions} partitions"
            )
            await fill(bootstrap, topic, messages, value_bytes)
            best_bare = best_ours = 0.0
            for round_ in range(rounds):
                # Alternate who goes first, so neither profits from a warmer broker.
                runs = [("bare", round_), ("ours", round_)]
                for kind, number in runs if round_ % 2 == 0 else runs[::-1]:
                    if kind == "bare":
                        seconds, size = await bare_loop(
                            bootstrap, topic, messages, f"bench-bare-{number}",
                            work / f"bare-{number}", object_mb,
                        )  # fmt: skip
                        bare_rate = size / seconds / 1e6
                        best_bare = max(best_bare, bare_rate)
                    else:
                        seconds, size = await our_pipeline(
                            bootstrap, topic, messages, f"bench-objects-{number}",
                            work / f"ours-{number}", object_mb, fsync,
                        )  # fmt: skip
                        ours_rate = size / seconds / 1e6
                        best_ours = max(best_ours, ours_rate)
                print(
                    f"round {round_ + 1}: bare {bare_rate:.1f} MB/s, "
                    f"etl {ours_rate:.1f} MB/s, ratio {ours_rate / bare_rate:.2f}"
                )
            print(f"bare aiokafka + plain file I/O: {best_bare:.1f} MB/s (best of {rounds})")
            print(
                f"etl object_store sink, jsonl, fsync {'on' if fsync else 'off'}: "
                f"{best_ours:.1f} MB/s (best of {rounds})"
            )
            print(f"ratio ours/bare: {best_ours / best_bare:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=400)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--object-mb", type=int, default=5)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(
        main(
            args.messages,
            args.value_bytes,
            args.partitions,
            args.object_mb,
            not args.no_fsync,
            args.rounds,
        )
    )
