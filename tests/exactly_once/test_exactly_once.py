"""Exactly-once transforms on a broker with transactions (noida-db), real workers, kill -9.

The config is a plain test config plus ``kafka.processing_guarantee: exactly_once``
and nothing else; a ``read_committed`` reader must see every source record's
output exactly once and in order per key, whatever the kills did.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from etl.testing.noida_kafka import OpenTransactions, produce_sequences, read_topic
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, post_json, suffix_transform, write_config

KEYS = 10
#: 100,000 records and 10 kills (``ETL_TEST_EO_RECORDS`` changes the count).
RECORDS = int(os.environ.get("ETL_TEST_EO_RECORDS", "100000"))
KILLS = 10


def eo_config(directory: Path, bootstrap: str) -> Path:
    return write_config(directory, bootstrap, kafka={"processing_guarantee": "exactly_once"})


def fresh(config: Path, name: str = "worker") -> WorkerProcess:
    """A worker of ``config`` not started yet, without the previous run's status file."""
    worker = WorkerProcess(config, name=name)
    worker.status_path.unlink(missing_ok=True)
    return worker


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


def suffix_pipeline(directory: Path, uid: str) -> tuple[str, str, str]:
    """A suffix transform file ``eo_<uid>``: (source topic, target topic, pipeline name)."""
    source, target, name = f"eo-src-{uid}", f"eo-dst-{uid}", f"eo_{uid}"
    (directory / "transforms").mkdir(parents=True, exist_ok=True)
    (directory / "transforms" / f"{name}.py").write_text(suffix_transform(source, target, "-eo"))
    return source, target, name


def kill_rounds(
    bootstrap: str, config: Path, name: str, source: str, kills: int, total: int, wait: Any
) -> None:
    """``kills`` times: start the worker, let records flow in, ``wait()``, kill -9.

    ``total`` records in all, the last share produced before the final start.
    """
    per_round = total // (kills + 1)
    produce_sequences(bootstrap, source, KEYS, 0, per_round)
    produced = per_round
    for _ in range(kills):
        worker = fresh(config).start()
        worker.wait_running(name)
        flow = threading.Thread(
            target=produce_sequences, args=(bootstrap, source, KEYS, produced, per_round)
        )
        flow.start()
        produced += per_round
        wait()
        worker.kill()
        flow.join()
    produce_sequences(bootstrap, source, KEYS, produced, total - produced)


@pytest.mark.serial  # most of ten kills must find a transaction open
def test_kill_9_mid_stream_repeats_and_loses_nothing(
    noida_kafka: str, tmp_path: Path, uid: str
) -> None:
    """Ten times: records flow in, the worker is killed with a transaction open."""
    source, target, name = suffix_pipeline(tmp_path, uid)
    config = eo_config(tmp_path, noida_kafka)
    open_transactions = OpenTransactions(noida_kafka, target)
    hits = []

    def until_open() -> None:
        deadline = time.monotonic() + 10
        while not open_transactions.seen() and time.monotonic() < deadline:
            time.sleep(0.01)
        hits.append(open_transactions.seen())

    kill_rounds(noida_kafka, config, name, source, KILLS, RECORDS, until_open)
    with fresh(config) as worker:
        values = wait_outputs(noida_kafka, target, RECORDS)
        assert worker.process is not None and worker.process.poll() is None
    check_exactly_once(values, RECORDS)
    # Most kills left a transaction open with outputs in the log: none of them shows.
    assert sum(hits) >= KILLS // 2, f"only {sum(hits)} kills hit an open transaction"
    assert len(read_topic(noida_kafka, target, committed=False)) > RECORDS


def test_the_same_kills_at_least_once_on_tansu(
    kafka_bootstrap: str, tmp_path: Path, uid: str
) -> None:
    """The default guarantee on a broker without transactions: repeats, never a loss."""
    source, target, name = suffix_pipeline(tmp_path, uid)
    config = write_config(tmp_path, kafka_bootstrap)
    total = 6_000
    # One kill: a dead member holds its partitions for the session time-out there.
    kill_rounds(kafka_bootstrap, config, name, source, 1, total, lambda: time.sleep(0.3))
    with fresh(config):
        deadline = time.monotonic() + 60
        while True:
            values = read_topic(kafka_bootstrap, target)
            if len({v[3] for v in values}) >= total or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    per_key: dict[str, list[int]] = defaultdict(list)
    for _partition, _offset, _key, value in sorted(values, key=lambda r: (r[0], r[1])):
        assert value is not None
        key, n = value[:-3].decode().split(":")
        per_key[key].append(int(n))
    for key, numbers in per_key.items():
        # A repeat replays a run already seen: the first sightings are 0, 1, 2, ... in order.
        first = list(dict.fromkeys(numbers))
        assert first == list(range(total // KEYS)), f"{key}: lost or reordered"


def test_aborted_batch_outputs_are_invisible(noida_kafka: str, tmp_path: Path, uid: str) -> None:
    """A worker killed with a batch's outputs written but not committed: they never show."""
    source, target = f"eo-src-{uid}", f"eo-dst-{uid}"
    config = eo_config(tmp_path, noida_kafka)
    produce_sequences(noida_kafka, source, KEYS, 0, 400)
    slow = suffix_transform(source, target, "-eo", delay_s=0.01)
    (tmp_path / "transforms" / f"eo_{uid}.py").write_text(slow)
    worker = fresh(config).start()
    # Outputs reach the log as they are produced (linger 5 ms); the batch (400
    # records, 4 s) is far from its commit when the worker dies.
    deadline = time.monotonic() + 60
    while not read_topic(noida_kafka, target, committed=False):
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    worker.kill()
    assert read_topic(noida_kafka, target) == []
    (tmp_path / "transforms" / f"eo_{uid}.py").write_text(suffix_transform(source, target, "-eo"))
    with fresh(config):
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


def failing_transform(uid: str, policy: str, bad: str) -> str:
    """Suffix ``-eo``; the records whose value matches ``bad`` (a regex) raise."""
    return (
        f"import re\n\nSOURCE_TOPIC = 'eo-src-{uid}'\nTARGET_TOPIC = 'eo-dst-{uid}'\n"
        f'START_OFFSET = "earliest"\nON_ERROR = {policy!r}\nDEAD_LETTER_TOPIC = "eo-dead-{uid}"\n'
        f"\n\ndef deal_message(message):\n    if re.fullmatch({bad!r}, message['value']):\n"
        f"        raise ValueError('bad record ' + message['value'])\n"
        f'    message["value"] = message["value"] + "-eo"\n    return message\n'
    )


def failing_setup(
    bootstrap: str, tmp_path: Path, uid: str, total: int, policy: str, bad: str
) -> tuple[Path, Path]:
    """``total`` records in ``eo-src-<uid>``, a failing transform file: (config, file)."""
    config = eo_config(tmp_path, bootstrap)
    produce_sequences(bootstrap, f"eo-src-{uid}", KEYS, 0, total)
    path = tmp_path / "transforms" / f"eo_{uid}.py"
    path.write_text(failing_transform(uid, policy, bad))
    return config, path


def test_dead_letters_are_part_of_the_transaction(
    noida_kafka: str, tmp_path: Path, uid: str
) -> None:
    target, dead, total = f"eo-dst-{uid}", f"eo-dead-{uid}", 3000
    # k3's numbers ending in 7 fail: 30 records.
    config, _ = failing_setup(noida_kafka, tmp_path, uid, total, "continue", r"k3:\d*7")
    worker = fresh(config).start()
    worker.wait_for(lambda w: consumed(w, f"eo_{uid}") > 0, 60, "a batch handled")
    worker.kill()
    with fresh(config):
        values = wait_outputs(noida_kafka, target, total - 30)
        letters = wait_outputs(noida_kafka, dead, 30)
    good = [r for r in values if not (r[2] == b"k3" and r[3] and r[3][:-3].endswith(b"7"))]
    assert len(good) == len(values)
    expected = {f"k3:{n}".encode() for n in range(total // KEYS) if n % 10 == 7}
    assert sorted(r[3] for r in letters) == sorted(expected)  # each exactly once
    per_key: dict[bytes | None, list[int]] = defaultdict(list)
    for _p, _o, key, value in sorted(values):
        assert value is not None
        per_key[key].append(int(value[:-3].split(b":")[1]))
    for key, numbers in per_key.items():
        wanted = [n for n in range(total // KEYS) if key != b"k3" or n % 10 != 7]
        assert numbers == wanted, key


def test_stop_policy_halts_at_the_bad_record_and_resumes_after_the_fix(
    noida_kafka: str, tmp_path: Path, uid: str
) -> None:
    target, dead, total = f"eo-dst-{uid}", f"eo-dead-{uid}", 2000
    config, path = failing_setup(noida_kafka, tmp_path, uid, total, "stop", "k3:50")
    with fresh(config) as worker:
        worker.wait_for(
            lambda w: (w.pipeline(f"eo_{uid}") or {}).get("state") == "halted", 60, "the halt"
        )
        (bad_partition,) = (worker.pipeline(f"eo_{uid}") or {})["halted"]

        def others_done(w: WorkerProcess) -> bool:
            parts = (w.pipeline(f"eo_{uid}") or {}).get("partitions", {})
            return all(p["lag"] == 0 for tp, p in parts.items() if tp != bad_partition)

        # Only the bad record's partition halts: the others are handled to their end.
        worker.wait_for(others_done, 60, "the other partitions done")
        halted = read_topic(noida_kafka, target)
        k3 = [r[3] for r in sorted(halted) if r[2] == b"k3"]
        # Nothing past the bad record; what came before it, exactly once.
        assert k3 == [f"k3:{n}-eo".encode() for n in range(len(k3))]
        assert len(k3) == 50
        assert len({r[3] for r in halted}) == len(halted)
        per_key = Counter(r[2] for r in halted)
        complete = [key for key, n in per_key.items() if n == total // KEYS]
        assert complete, f"keys of the other partitions flowed to their end: {per_key}"
        # The fix, saved: the pipeline resumes at the bad record.
        path.write_text(failing_transform(uid, "stop", "none"))
        values = wait_outputs(noida_kafka, target, total)
    check_exactly_once(values, total)
    assert read_topic(noida_kafka, dead) == []


def test_hot_reload_swaps_at_a_transaction_boundary(
    noida_kafka: str, tmp_path: Path, uid: str
) -> None:
    source, target, name = suffix_pipeline(tmp_path, uid)
    config = eo_config(tmp_path, noida_kafka)
    path = tmp_path / "transforms" / f"{name}.py"
    path.write_text(suffix_transform(source, target, "-v1", delay_s=0.002))
    total = 3000
    produce_sequences(noida_kafka, source, KEYS, 0, total // 2)
    with fresh(config) as worker:
        deadline = time.monotonic() + 60
        while len(read_topic(noida_kafka, target)) < 300:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.1)
        path.write_text(suffix_transform(source, target, "-v2", delay_s=0.002))
        worker.wait_for(lambda w: "reload scheduled" in w.log(), 30, "the reload")
        produce_sequences(noida_kafka, source, KEYS, total // 2, total - total // 2)
        values = wait_outputs(noida_kafka, target, total)
        assert "transform swapped" in worker.log()
    versions: dict[int, list[bytes]] = defaultdict(list)
    renamed = []
    for partition, offset, key, value in values:
        assert value is not None
        versions[partition].append(value[-3:])
        renamed.append((partition, offset, key, value[:-3] + b"-eo"))
    check_exactly_once(renamed, total)
    for partition, seen in versions.items():
        # Every output before the swap is v1's, every one after it v2's.
        assert seen == sorted(seen), f"partition {partition}: versions interleaved"
    assert {v for seen in versions.values() for v in seen} == {b"-v1", b"-v2"}


def test_pause_and_resume_between_transactions(noida_kafka: str, tmp_path: Path, uid: str) -> None:
    source, target, name = suffix_pipeline(tmp_path, uid)
    port = reserve_port()
    config = write_config(
        tmp_path,
        noida_kafka,
        kafka={"processing_guarantee": "exactly_once"},
        web={"enabled": True, "port": port},
    )
    produce_sequences(noida_kafka, source, KEYS, 0, 500)

    def post(action: str) -> None:
        url = f"http://127.0.0.1:{port}/etl/pipelines/{name}/{action}/"
        post_json(url)

    with fresh(config) as worker:
        wait_outputs(noida_kafka, target, 500)
        worker.wait_running(name)
        post("pause")
        worker.wait_for(lambda w: (w.pipeline(name) or {}).get("state") == "paused", 30, "pause")
        produce_sequences(noida_kafka, source, KEYS, 500, 500)
        time.sleep(1.5)
        assert len(read_topic(noida_kafka, target)) == 500
        post("resume")
        values = wait_outputs(noida_kafka, target, 1000)
    check_exactly_once(values, 1000)
