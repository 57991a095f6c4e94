"""Exactly-once transforms on a broker with transactions (noida-db), real workers, kill -9.

The config is a plain test config plus ``kafka.processing_guarantee: exactly_once``
and nothing else; a ``read_committed`` reader must see every source record's
output exactly once and in order per key, whatever the kills did.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

from etl.testing.noida_kafka import produce_sequences, read_topic
from etl.testing.worker import WorkerProcess, suffix_transform, write_config

KEYS = 10
#: The issue's figure is 100,000 records and 10 kills; ETL_TEST_EO_RECORDS runs it.
RECORDS = int(os.environ.get("ETL_TEST_EO_RECORDS", "20000"))
KILLS = 10


def eo_config(directory: Path, bootstrap: str) -> Path:
    return write_config(directory, bootstrap, kafka={"processing_guarantee": "exactly_once"})


def start(config: Path, name: str = "worker") -> WorkerProcess:
    worker = WorkerProcess(config, name=name)
    worker.status_path.unlink(missing_ok=True)
    return worker.start()


def consumed(worker: WorkerProcess, pipeline: str) -> int:
    item = worker.pipeline(pipeline)
    return int(item["consumed"]) if item else 0


def check_exactly_once(values: list[tuple[int, int, bytes | None, bytes | None]], total: int):
    """Every ``k:n`` once, and per key in the order 0, 1, 2, ... (partition order)."""
    per_key: dict[str, list[int]] = defaultdict(list)
    for _partition, _offset, key, value in sorted(values, key=lambda r: (r[0], r[1])):
        assert value is not None and value.endswith(b"-eo"), value
        name, n = value[:-3].decode().split(":")
        assert key == name.encode()
        per_key[name].append(int(n))
    seen = sum(len(ns) for ns in per_key.values())
    for name, ns in per_key.items():
        assert ns == list(range(len(ns))), f"{name}: repeated, lost or reordered"
    assert seen == total, f"{seen} outputs for {total} records"


def wait_outputs(bootstrap: str, topic: str, total: int, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        values = read_topic(bootstrap, topic)
        if len(values) >= total or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def test_kill_9_mid_stream_repeats_and_loses_nothing(
    noida_kafka: str, tmp_path: Path, uid: str
) -> None:
    source, target = f"eo-src-{uid}", f"eo-dst-{uid}"
    config = eo_config(tmp_path, noida_kafka)
    (tmp_path / "transforms" / f"eo_{uid}.py").write_text(suffix_transform(source, target, "-eo"))
    per_round = RECORDS // (KILLS + 1)
    produced = 0
    rng = random.Random(uid)
    for _ in range(KILLS):
        produce_sequences(noida_kafka, source, KEYS, produced, per_round)
        produced += per_round
        worker = start(config)
        worker.wait_for(lambda w: consumed(w, f"eo_{uid}") > 0, 60, "a batch handled")
        time.sleep(rng.uniform(0.0, 0.3))
        worker.kill()
    produce_sequences(noida_kafka, source, KEYS, produced, RECORDS - produced)
    with start(config) as worker:
        values = wait_outputs(noida_kafka, target, RECORDS)
        assert worker.process is not None and worker.process.poll() is None
    check_exactly_once(values, RECORDS)
    # Kills left transactions open with outputs in the log; none of them is visible.
    written = read_topic(noida_kafka, target, committed=False)
    assert len(written) >= len(values)


def test_aborted_batch_outputs_are_invisible(noida_kafka: str, tmp_path: Path, uid: str) -> None:
    """A worker killed with a batch's outputs written but not committed: they never show."""
    source, target = f"eo-src-{uid}", f"eo-dst-{uid}"
    config = eo_config(tmp_path, noida_kafka)
    produce_sequences(noida_kafka, source, KEYS, 0, 400)
    slow = suffix_transform(source, target, "-eo", delay_s=0.01)
    (tmp_path / "transforms" / f"eo_{uid}.py").write_text(slow)
    worker = start(config)
    # Outputs reach the log as they are produced (linger 5 ms); the batch (400
    # records, 4 s) is far from its commit when the worker dies.
    deadline = time.monotonic() + 60
    while not read_topic(noida_kafka, target, committed=False):
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    worker.kill()
    assert read_topic(noida_kafka, target) == []
    (tmp_path / "transforms" / f"eo_{uid}.py").write_text(suffix_transform(source, target, "-eo"))
    with start(config):
        values = wait_outputs(noida_kafka, target, 400)
    check_exactly_once(values, 400)
    assert len(read_topic(noida_kafka, target, committed=False)) > 400


def test_zombie_is_fenced(noida_kafka: str, tmp_path: Path, uid: str) -> None:
    """Worker A freezes mid-batch, B starts with the same config: A writes nothing visible."""
    source, target = f"eo-src-{uid}", f"eo-dst-{uid}"
    config = eo_config(tmp_path, noida_kafka)
    total = 600
    produce_sequences(noida_kafka, source, KEYS, 0, total)
    slow = suffix_transform(source, target, "-eo", delay_s=0.005)
    (tmp_path / "transforms" / f"eo_{uid}.py").write_text(slow)
    zombie = WorkerProcess(config, name="a")
    zombie.status_path.unlink(missing_ok=True)
    zombie.start()
    deadline = time.monotonic() + 60
    while not read_topic(noida_kafka, target, committed=False):
        assert time.monotonic() < deadline, zombie.log()[-3000:]
        time.sleep(0.2)
    assert zombie.process is not None
    os.killpg(zombie.process.pid, signal.SIGSTOP)
    try:
        successor = WorkerProcess(config, name="b").start()
        try:
            values = wait_outputs(noida_kafka, target, total)
            check_exactly_once(values, total)
        finally:
            os.killpg(zombie.process.pid, signal.SIGCONT)
        # The zombie wakes up with its batch in hand: it is fenced and writes nothing.
        zombie.wait_for(lambda w: "newer worker took over" in w.log(), 30, "the zombie fenced")
        time.sleep(1.0)
        values = read_topic(noida_kafka, target)
        check_exactly_once(values, total)
        successor.stop()
    finally:
        zombie.kill()
