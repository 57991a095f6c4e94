"""The ``object_store`` replay under ``kafka.processing_guarantee: exactly_once``, kill -9.

On a broker with transactions (noida-db): an archive of 30,000 records over 3
partitions is replayed by a real worker that is killed -9 three times, each
time while a Kafka transaction of the replay is open; a last worker finishes.
A ``read_committed`` reader sees the archive's keys and values exactly,
partition by partition: the records of the killed transactions were aborted
and replayed once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from etl.testing.noida_kafka import OpenTransactions, read_topic
from etl.testing.worker import WorkerProcess, write_config
from sinks.exported import export_json_line

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
PER_PARTITION = 10_000
PER_OBJECT = 500
KILLS = 3
BASE_TIME = 1_700_000_000_000


class Archived:
    """One record as the object-store sink exports it."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key = None if offset % 97 == 0 else b"k%d-%d" % (partition, offset)
        self.value = b"" if offset % 101 == 0 else f'{{"p":{partition},"n":{offset}}}'.encode()
        self.timestamp = BASE_TIME + offset * 1000


def write_archive(root: Path, topic: str) -> dict[int, list[tuple[Any, ...]]]:
    """Objects as the sink names them; returns (key, value) per partition.

    (Timestamps take the same produce path as at-least-once, where the replay
    test compares them.)
    """
    folder = root / "prod" / topic
    folder.mkdir(parents=True)
    expected: dict[int, list[tuple[Any, ...]]] = {}
    for p in range(PARTITIONS):
        records = [Archived(topic, p, o) for o in range(PER_PARTITION)]
        expected[p] = [(r.key, r.value) for r in records]
        for start in range(0, PER_PARTITION, PER_OBJECT):
            lines = b"".join(export_json_line(r) for r in records[start : start + PER_OBJECT])
            (folder / f"partition_{p}_offset_{start}_abcd{p:04d}").write_bytes(lines)
    return expected


def create_target(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(timeout=30)


def restored(bootstrap: str, topic: str) -> dict[int, list[tuple[Any, ...]]]:
    """What a read_committed reader sees: (key, value) per partition in offset order."""
    out: dict[int, list[tuple[Any, ...]]] = {p: [] for p in range(PARTITIONS)}
    for partition, _offset, key, value in sorted(read_topic(bootstrap, topic, timeout=60)):
        out[partition].append((key, value))
    return out


def test_kill_9_with_a_transaction_open_replays_every_record_once(
    noida_kafka: str, uid: str, tmp_path: Path
) -> None:
    topic = f"orders-{uid}"
    target = f"{topic}-restored"
    root = tmp_path / "archive"
    expected = write_archive(root, topic)
    # Made before the worker's first look: this broker creates a topic a client only
    # asks about (with one partition).
    create_target(noida_kafka, target)
    source = {
        "name": "restore-orders",
        "type": "object_store",
        "url": root.as_uri(),
        "instance_id": "prod",
        "topics": [topic],
        "target_topic": "{topic}-restored",
        "batch_size": 50,  # one Kafka transaction per batch
    }
    config = write_config(
        tmp_path,
        noida_kafka,
        kafka={"processing_guarantee": "exactly_once", "group_prefix": f"t{uid}"},
        sources=[source],
    )
    open_transactions = OpenTransactions(noida_kafka, target)

    def wait_open(worker: WorkerProcess, want: bool) -> None:
        deadline = time.monotonic() + 90
        while open_transactions.seen() != want:
            assert worker.process is not None and worker.process.poll() is None, worker.log()
            assert time.monotonic() < deadline, f"no open transaction:\n{worker.log()}"

    for round_ in range(KILLS):
        worker = WorkerProcess(config, name=f"w{round_}")
        worker.start()
        try:
            if round_:
                # The new run fences the killed one: its open transaction is aborted.
                wait_open(worker, False)
            wait_open(worker, True)
            worker.kill()  # a transaction of this run is open
        finally:
            worker.stop()
    published = len(read_topic(noida_kafka, target))
    assert published < PARTITIONS * PER_PARTITION, "the replay finished before the last kill"
    with WorkerProcess(config, name="last") as worker:
        worker.wait_for(
            lambda w: (w.pipeline("restore-orders") or {}).get("state") == "finished",
            120,
            "the replay finished",
        )
    found = restored(noida_kafka, target)
    counts = {p: len(v) for p, v in found.items()}
    assert counts == {p: PER_PARTITION for p in range(PARTITIONS)}, counts
    assert found == expected
