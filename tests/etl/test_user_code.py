"""User code can never freeze a worker: real `etl worker` processes on the real broker.

The test broker does not enforce session time-outs, so deadlines are tested
directly: the web API's answer time while a slow transform runs, a second
pipeline's progress meanwhile, and librdkafka's own poll deadline (it leaves the
group by itself when ``max.poll.interval.ms`` passes without a poll).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from etl.testing.kafka import create_topic, produce, read_all, wait_count
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, suffix_transform, write_config


def project(tmp_path: Path, bootstrap: str, uid: str, **overrides: Any) -> Path:
    return write_config(
        tmp_path,
        bootstrap,
        kafka={"group_prefix": f"u{uid}", **overrides.pop("kafka", {})},
        errors={"dead_letter_topic": f"dlq-{uid}"},
        **overrides,
    )


def add(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "transforms").mkdir(parents=True, exist_ok=True)
    (tmp_path / "transforms" / f"{name}.py").write_text(text)


def values(records: list[Any]) -> list[str]:
    return [r.value.decode() for r in records]


@pytest.mark.serial  # answers within 1 s, fast done while slow runs
def test_a_slow_transform_leaves_the_web_api_and_other_pipelines_alone(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    slow_in, slow_out = f"slow-{uid}", f"slow-out-{uid}"
    fast_in, fast_out = f"fast-{uid}", f"fast-out-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, slow_in, 4))
    add(tmp_path, "slow", suffix_transform(slow_in, slow_out, "+s", delay_s=0.002))
    add(tmp_path, "fast", suffix_transform(fast_in, fast_out, "+f"))
    port = reserve_port()
    path = project(tmp_path, kafka_bootstrap, uid, web={"enabled": True, "port": port})
    with WorkerProcess(path) as worker:
        worker.wait_running("slow", "fast")
        count = 2500  # 2 ms each: 5 s of user code on the slow pipeline
        items = [(f"k{i % 40}".encode(), f"{i}".encode()) for i in range(count)]
        asyncio.run(produce(kafka_bootstrap, slow_in, items))
        time.sleep(1.0)  # the slow pipeline's batch is under way
        latencies: list[float] = []
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/etl/status/", timeout=10):
                    pass
                latencies.append(time.perf_counter() - started)
                time.sleep(0.1)

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        asyncio.run(produce(kafka_bootstrap, fast_in, [(b"k", b"%d" % i) for i in range(200)]))
        fast = asyncio.run(wait_count(kafka_bootstrap, fast_out, 200, timeout=30))
        slow_done_when_fast_done = len(asyncio.run(read_all(kafka_bootstrap, slow_out, 2.0)))
        slow = asyncio.run(wait_count(kafka_bootstrap, slow_out, count, timeout=90))
        stop.set()
        asker.join(15)
        worker.wait_for(
            lambda w: (w.pipeline("slow") or {}).get("consumed") == count, 30, "all consumed"
        )
        status = worker.pipeline("slow") or {}
    print(
        f"status API: {len(latencies)} requests, max {max(latencies or [0]) * 1000:.0f} ms; "
        f"slow outputs when the fast pipeline was done: {slow_done_when_fast_done}/{count}; "
        f"p99 call {status.get('call_p99_ms')} ms"
    )
    assert len(fast) == 200
    assert slow_done_when_fast_done < count, "the fast pipeline finished while the slow one ran"
    assert Counter(values(slow)) == Counter(f"{i}+s" for i in range(count)), "each exactly once"
    assert latencies and max(latencies) < 1.0, f"status answered in up to {max(latencies):.2f}s"
    assert (status.get("call_p99_ms") or 0) >= 2.0, json.dumps(status)


@pytest.mark.serial  # a poll deadline of 6 s
def test_a_batch_longer_than_the_poll_deadline_keeps_its_group(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"long-{uid}", f"long-out-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 1))
    add(tmp_path, "long", suffix_transform(source, target, "+l", delay_s=0.4))
    path = project(
        tmp_path,
        kafka_bootstrap,
        uid,
        kafka={"session_timeout_ms": 6000, "max_poll_interval_ms": 6000},
    )
    with WorkerProcess(path) as worker:
        worker.wait_running("long")
        # 25 records of 0.4 s: a 10 s batch against a 6 s poll deadline.
        asyncio.run(produce(kafka_bootstrap, source, [(b"k", b"%d" % i) for i in range(25)]))
        records = asyncio.run(wait_count(kafka_bootstrap, target, 25, timeout=60))
        time.sleep(1)
        log = worker.log()
    assert values(records) == [f"{i}+l" for i in range(25)], "in order, each once"
    assert log.count("partitions assigned") == 1, "the group never moved the partition"
    assert "partitions revoked" not in log
    assert "poll" not in log.lower().replace("poll_", ""), "no poll deadline was missed"


TIMED = """
import time

SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
TIMEOUT = 1


def deal_message(message):
    if message["value"] == "spin":
        while True:
            pass
    if message["value"] == "stuck":
        time.sleep(600)
    message["value"] += "+t"
    return message
"""


@pytest.mark.serial  # stops within 10 s
def test_a_call_past_its_time_limit_is_dead_lettered_and_cannot_hang_the_worker(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target, dlq = f"timed-{uid}", f"timed-out-{uid}", f"dlq-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 1))
    add(tmp_path, "timed", TIMED.format(source=source, target=target))
    with WorkerProcess(project(tmp_path, kafka_bootstrap, uid)) as worker:
        worker.wait_running("timed")
        items = [(b"k", v) for v in (b"a", b"spin", b"b", b"stuck", b"c")]
        asyncio.run(produce(kafka_bootstrap, source, items))
        out = asyncio.run(wait_count(kafka_bootstrap, target, 3, timeout=60))
        dead = asyncio.run(wait_count(kafka_bootstrap, dlq, 2, timeout=60))
        worker.wait_for(
            lambda w: (w.pipeline("timed") or {}).get("dead_lettered") == 2, 30, "2 dead letters"
        )
        state = (worker.pipeline("timed") or {}).get("state")
        # A call stuck in C is still sleeping in its abandoned thread: SIGTERM still ends
        # the worker promptly.
        started = time.monotonic()
        code = worker.stop(timeout=20)
        stopped_in = time.monotonic() - started
    assert values(out) == ["a+t", "b+t", "c+t"]
    assert sorted(r.value for r in dead) == [b"spin", b"stuck"]
    assert {dict(r.headers)["etl.stage"] for r in dead} == {b"timeout"}
    assert state == "running"
    assert code is not None and stopped_in < 10, f"stopped in {stopped_in:.1f}s"


ASYNC = """
import asyncio

SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
CONCURRENCY = 50
TIMEOUT = 2


async def deal_message(message):
    if message["value"] == "slow":
        await asyncio.sleep(30)
    await asyncio.sleep(0.1)  # an enrichment call
    message["value"] += "+a"
    return message
"""


def test_async_transforms_run_concurrently_in_order_per_key(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target, dlq = f"async-{uid}", f"async-out-{uid}", f"dlq-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 2))
    add(tmp_path, "enrich", ASYNC.format(source=source, target=target))
    with WorkerProcess(project(tmp_path, kafka_bootstrap, uid)) as worker:
        worker.wait_running("enrich")
        items = [(f"k{i % 10}".encode(), b"%d" % i) for i in range(400)] + [(b"k0", b"slow")]
        started = time.monotonic()
        asyncio.run(produce(kafka_bootstrap, source, items))
        # One after the other this is 40 s; 50 at a time, about a second.
        out = asyncio.run(wait_count(kafka_bootstrap, target, 400, timeout=20))
        took = time.monotonic() - started
        dead = asyncio.run(wait_count(kafka_bootstrap, dlq, 1, timeout=30))
    assert Counter(values(out)) == Counter(f"{i}+a" for i in range(400))
    by_key: dict[bytes, list[int]] = {}
    for record in out:
        by_key.setdefault(record.key, []).append(int(record.value.decode()[:-2]))
    assert all(seq == sorted(seq) for seq in by_key.values()), "per-key order kept"
    assert [r.value for r in dead] == [b"slow"]
    assert dict(dead[0].headers)["etl.stage"] == b"timeout"
    assert took < 20


def test_test_transform_runs_the_function_as_the_worker_does(tmp_path: Path) -> None:
    files = {
        "async_ok.py": ASYNC.format(source="a", target="b"),
        "timed.py": TIMED.format(source="a", target="b"),
        "exits.py": (
            "import sys\nSOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\n\n"
            "def deal_message(message):\n    sys.exit(3)\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    def run(name: str, value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "etl.cli",
                "test-transform",
                str(tmp_path / name),
                "--value",
                value,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run("async_ok.py", "x")
    assert ok.returncode == 0 and '"x+a"' in ok.stdout
    slow = run("async_ok.py", "slow")
    assert slow.returncode != 0 and "did not return within 2s" in slow.stderr
    started = time.monotonic()
    stuck = run("timed.py", "stuck")
    assert stuck.returncode != 0 and "did not return within 1s" in stuck.stderr
    assert time.monotonic() - started < 30
    exits = run("exits.py", "x")
    assert exits.returncode != 0 and "SystemExit" in exits.stderr
    assert "exits.py:6" in exits.stderr


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_processes_share_the_partitions_and_are_restarted(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"procs-{uid}", f"procs-out-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 4))
    add(tmp_path, "suffix", suffix_transform(source, target, "+p"))
    path = project(tmp_path, kafka_bootstrap, uid, processes=2)
    data = tmp_path / "data"

    def owned() -> list[int]:
        counts = []
        for index in (0, 1):
            try:
                status = json.loads((data / f"process-{index}" / "status.json").read_text())
            except (OSError, ValueError):
                return []
            pipeline = next((p for p in status["pipelines"] if p["name"] == "suffix"), None)
            if not pipeline or pipeline["state"] != "running":
                return []
            counts.append(len(pipeline["partitions"]))
        return counts

    worker = WorkerProcess(path).start()
    try:
        worker.wait_for(lambda w: owned() == [2, 2], 60, "2 + 2 partitions")
        items = [(f"k{i % 50}".encode(), b"%d" % i) for i in range(2000)]
        asyncio.run(produce(kafka_bootstrap, source, items))
        out = asyncio.run(wait_count(kafka_bootstrap, target, 2000, timeout=60))
        assert Counter(values(out)) == Counter(f"{i}+p" for i in range(2000))
        assert worker.process is not None
        children = _children(worker.process.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)
        worker.wait_for(lambda w: "worker process exited, restarting" in w.log(), 30, "restart")
        worker.wait_for(lambda w: len(_children(worker.process.pid)) == 2, 30, "2 children")
        started = time.monotonic()
        code = worker.stop(timeout=30)
        assert code is not None and time.monotonic() - started < 20
        assert all(not Path(f"/proc/{pid}").exists() for pid in children[1:])
    finally:
        worker.stop()
