"""The ``object_store`` source restores what the object-store sink archived, on real workers.

50,000 records are archived by a real worker; two more workers are given the
same replay source: one replays into a fresh topic (it holds the source's
lease), the other stands by. The replaying worker is killed -9 mid-replay; the
other takes over from the saved state and finishes: the restored topic holds
every record once, with its key, value, timestamp and partition, in order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as NativeTopicPartition

from etl.testing.kafka import create_topic, read_all
from etl.testing.worker import WorkerProcess, write_config
from tests.sinks_object_store.conftest import data_objects, local_objects
from tests.sinks_object_store.harness import produce_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
TOTAL = 50_000
#: The replay source's lease in this test (default 15 s): the takeover waits it out.
LEASE_SECONDS = 6
BASE_TIME = 1_700_000_000_000


def archived_lines(root: Path) -> int:
    return sum(data.count(b"\n") for data in data_objects(local_objects(root)).values())


def end_total(bootstrap: str, topic: str) -> int:
    """Records in the topic now (sum of its partitions' end offsets; 0 if it is missing)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-total"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        partitions = meta.partitions if meta is not None and meta.error is None else {}
        return sum(
            consumer.get_watermark_offsets(NativeTopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def by_partition(records: list[Any]) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out.setdefault(r.partition, []).append((r.key, r.value, r.timestamp))
    return out


def replay_state(worker: WorkerProcess) -> tuple[str, int]:
    item = worker.pipeline("restore-orders") or {}
    return str(item.get("state", "")), int(item.get("produced") or 0)


@pytest.mark.serial  # the kill must land mid-replay
def test_two_workers_one_replays_kill_9_of_it_and_the_other_finishes_byte_for_byte(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic, restored = f"orders-{uid}", f"orders-{uid}-restored"
    asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
    items = (
        (
            None if i % 97 == 0 else b"k%d" % i,
            b"" if i % 101 == 0 else f'{{"n":{i},"text":"\u00e9\u00e8 {i}"}}'.encode(),
            i % PARTITIONS,
            BASE_TIME + i * 7_000,  # spans several hour directories
        )
        for i in range(TOTAL)
    )
    asyncio.run(produce_records(kafka_bootstrap, topic, items))
    root = tmp_path / "archive"
    common: dict[str, Any] = {
        "kafka": {"group_prefix": f"t{uid}", "enable_idempotence": True},
        "errors": {"dead_letter_topic": f"dlq-{uid}"},
    }
    sink = {
        "name": "archive",
        "type": "object_store",
        "topics": [topic],
        "start_offset": "earliest",
        "url": root.as_uri(),
        "instance_id": "prod",
        "path_layout": "YYYY/MM/dd/HH",
        "batch_window_minutes": 0.005,
    }
    archive_dir = tmp_path / "archiver"
    archive_dir.mkdir()
    with WorkerProcess(write_config(archive_dir, kafka_bootstrap, sinks=[sink], **common)) as w:
        w.wait_for(lambda _w: archived_lines(root) >= TOTAL, 120, "everything archived")

    source = {
        "name": "restore-orders",
        "type": "object_store",
        "url": root.as_uri(),
        "instance_id": "prod",
        "path_layout": "YYYY/MM/dd/HH",
        "topics": [topic],
        "target_topic": "{topic}-restored",
        "batch_size": 500,
        "lease_seconds": LEASE_SECONDS,
    }
    workers = []
    for name in ("replay-a", "replay-b"):  # the same source, each its own data directory
        workdir = tmp_path / name
        workdir.mkdir()
        config = write_config(workdir, kafka_bootstrap, sources=[source], **common)
        workers.append(WorkerProcess(config, name=name))
    try:
        for worker in workers:
            worker.start()
        workers[0].wait_for(
            lambda _w: end_total(kafka_bootstrap, restored) >= 5_000, 120, "replay under way"
        )
        # The status files are written every second.
        workers[0].wait_for(
            lambda _w: any(replay_state(w)[0] == "running" for w in workers), 30, "the status"
        )
        states = [replay_state(w) for w in workers]
        # One worker replays, the other stands by (its source waits in "starting").
        assert sorted(state for state, _ in states) == ["running", "starting"], states
        holder, other = workers if states[0][0] == "running" else workers[::-1]
        assert replay_state(other)[1] == 0
        holder.kill()
        killed_at = end_total(kafka_bootstrap, restored)
        assert killed_at < TOTAL, "the replay finished before it could be killed"
        started = time.monotonic()
        other.wait_for(
            lambda w: replay_state(w)[0] == "finished", 120, "the other worker to finish it"
        )
        took_over_s = time.monotonic() - started
        assert other.pipeline("restore-orders")["dead_lettered"] == 0  # type: ignore[index]
    finally:
        for worker in workers:
            worker.stop()
    print(f"killed at {killed_at} records; the other worker finished {took_over_s:.1f}s later")

    original = by_partition(asyncio.run(read_all(kafka_bootstrap, topic, timeout=60)))
    copy = by_partition(asyncio.run(read_all(kafka_bootstrap, restored, timeout=60)))
    # Nothing lost, nothing doubled, every partition in its order.
    assert sum(map(len, copy.values())) == TOTAL, (killed_at, took_over_s)
    assert copy == original, (killed_at, took_over_s)
