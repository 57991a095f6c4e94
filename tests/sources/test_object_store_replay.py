"""The ``object_store`` source restores what the object-store sink archived, on real workers.

50,000 records are archived by a real worker, replayed by another into a fresh
topic, the replaying worker is killed -9 mid-replay and started again: the
restored topic holds every record once, with its key, value, timestamp and
partition, in order.
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


@pytest.mark.serial  # the kill must land mid-replay
def test_replay_restores_archive_byte_for_byte_after_kill(
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
    }
    replay_dir = tmp_path / "replayer"
    replay_dir.mkdir()
    config = write_config(replay_dir, kafka_bootstrap, sources=[source], **common)
    worker = WorkerProcess(config, name="replay1").start()
    try:
        worker.wait_for(
            lambda _w: end_total(kafka_bootstrap, restored) >= 5_000,
            120,
            "replay under way",
        )
        worker.kill()
    finally:
        worker.stop()
    killed_at = end_total(kafka_bootstrap, restored)
    assert killed_at < TOTAL, "the replay finished before it could be killed"

    started = time.monotonic()
    with WorkerProcess(config, name="replay2") as worker:
        worker.wait_for(
            lambda w: (w.pipeline("restore-orders") or {}).get("state") == "finished",
            120,
            "replay finished",
        )
        assert worker.pipeline("restore-orders")["dead_lettered"] == 0  # type: ignore[index]
    resumed_s = time.monotonic() - started

    original = by_partition(asyncio.run(read_all(kafka_bootstrap, topic, timeout=60)))
    copy = by_partition(asyncio.run(read_all(kafka_bootstrap, restored, timeout=60)))
    # Nothing lost, nothing doubled, every partition in its order.
    assert sum(map(len, copy.values())) == TOTAL, (killed_at, resumed_s)
    assert copy == original, (killed_at, resumed_s)
