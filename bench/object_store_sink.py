"""Object-store sink throughput: Kafka -> local JSON-lines objects, MB/s of lines written.

All run in this process, on the same embedded broker, over the same source
topic, each in its own consumer group, and write the same lines (the exported
message JSON, one per line):

* ``bare``: an aiokafka ``getmany`` loop that encodes each record with the
  standard ``json`` encoder and appends the lines to one plain file per
  partition (``open(..., "ab").write``), starting a new file every
  ``--object-mb``, and commits after each poll's lines are written;
* ``bare-fast-json``: the same loop with our line formatter
  (``sinks.exported.export_json_line``), which isolates the framework's own cost;
* ``ours``: the ``object_store`` sink pipeline (jsonl, ``batch_size_mb`` =
  ``--object-mb``, with its meta objects, atomic renames and, unless
  ``--no-fsync``, fsync).

The timed window of each is from its first fetched record until everything is
written and committed (for ours: until the pipeline has stopped, which flushes
the last objects). Prints the rates in MB/s of lines and the ratios; the
variants take turns going first, ``--rounds`` times, and the best of each counts.

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
from collections.abc import Callable
from pathlib import Path
from typing import cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from etl.config import ETLSettings, KafkaSettings
from etl.embedded import EmbeddedBroker
from etl.redact import Redactor
from etl.testing.kafka import create_topic
from sinks.exported import export_json_line
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSink, ObjectStoreSinkPipeline


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
    bootstrap: str,
    topic: str,
    count: int,
    group: str,
    out: Path,
    object_mb: int,
    encode: Callable[[object], bytes] = line_of,
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
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the timed window
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
                data = b"".join(map(encode, records))
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
    return elapsed, cast(ObjectStoreSink, pipeline.sink).bytes_written


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
            kinds = ["bare", "bare-fast-json", "ours"]
            best = dict.fromkeys(kinds, 0.0)
            for round_ in range(rounds):
                rates = {}
                # Take turns going first, so no variant profits from a warmer broker.
                order = kinds[round_ % 3 :] + kinds[: round_ % 3]
                for kind in order:
                    group, out = f"bench-{kind}-{round_}", work / f"{kind}-{round_}"
                    if kind == "ours":
                        seconds, size = await our_pipeline(
                            bootstrap, topic, messages, group, out, object_mb, fsync
                        )
                    else:
                        encode = export_json_line if kind == "bare-fast-json" else line_of
                        seconds, size = await bare_loop(
                            bootstrap, topic, messages, group, out, object_mb, encode
                        )
                    rates[kind] = size / seconds / 1e6
                    best[kind] = max(best[kind], rates[kind])
                    shutil.rmtree(out, ignore_errors=True)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{kind} {rates[kind]:.1f} MB/s" for kind in kinds)
                )
            print(f"best of {rounds} rounds, MB/s of JSON lines written:")
            print(f"  bare aiokafka + json + plain file I/O: {best['bare']:.1f}")
            fast = best["bare-fast-json"]
            print(f"  bare aiokafka + our line formatter + plain file I/O: {fast:.1f}")
            print(
                f"  etl object_store sink (jsonl, fsync {'on' if fsync else 'off'}): "
                f"{best['ours']:.1f}"
            )
            print(f"ratio ours/bare: {best['ours'] / best['bare']:.2f}")
            print(f"ratio ours/bare-fast-json: {best['ours'] / best['bare-fast-json']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=400)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--object-mb", type=int, default=5)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
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
