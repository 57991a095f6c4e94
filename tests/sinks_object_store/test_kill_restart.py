"""kill -9 of a real ``etl worker`` while it writes objects, then restart: no gaps, no doubles."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from etl.testing.kafka import create_topic
from etl.testing.worker import WorkerProcess
from tests.sinks_object_store.conftest import data_objects, lines_of, local_objects
from tests.sinks_object_store.harness import produce_records, worker_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
PER_ROUND = 15_000
# About 14 MB of lines a round: 1 MiB objects keep the worker writing when it is killed.
VALUE = b"v" * 700


def produce_round(bootstrap: str, topic: str, start: int) -> None:
    items = (
        (b"k%d" % i, b"%d:" % i + VALUE, i % PARTITIONS, None)
        for i in range(start, start + PER_ROUND)
    )
    asyncio.run(produce_records(bootstrap, topic, items))


def written_lines(root: Path) -> int:
    return sum(data.count(b"\n") for data in data_objects(local_objects(root)).values())


def object_count(root: Path) -> int:
    return sum(1 for path in root.rglob("partition_*") if not path.name.startswith("."))


def test_kill_during_writes_then_restart_loses_and_doubles_nothing(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"crash-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
    root = tmp_path / "store"
    name = f"crash-{uid}"
    sink = {
        "name": name,
        "type": "object_store",
        "topics": [topic],
        "url": str(root),
        "batch_size_mb": 1,
        "batch_window_minutes": 0.005,
        "path_layout": "YYYY/MM/dd/HH",
    }
    config = worker_config(tmp_path, kafka_bootstrap, uid, [sink])
    total = 0
    for round_number in range(3):
        produce_round(kafka_bootstrap, topic, total)
        total += PER_ROUND
        worker = WorkerProcess(config, name=f"worker{round_number}").start()
        try:
            if round_number < 2:
                # Kill as soon as this round's records are being written, mid-stream.
                already = object_count(root)
                worker.wait_for(
                    lambda _w, floor=already: object_count(root) > floor, 90, "objects written"
                )
                worker.kill()
            else:
                worker.wait_for(
                    lambda _w, want=total: written_lines(root) >= want, 120, "everything written"
                )
        finally:
            worker.stop()

    lines = lines_of(local_objects(root))
    seen = Counter((line["partition"], line["offset"]) for line in lines)
    doubled = [key for key, count in seen.items() if count > 1]
    assert not doubled, f"written twice: {doubled[:10]}"
    per_partition = total // PARTITIONS
    for partition in range(PARTITIONS):
        offsets = sorted(o for p, o in seen if p == partition)
        assert offsets == list(range(per_partition)), f"gap in partition {partition}"
    values = sorted(int(line["value"].split(":")[0]) for line in lines)
    assert values == list(range(total))
