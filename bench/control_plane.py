"""The control plane as an operator meets it: status latency with many pipelines, pause reach.

* ``status``: one real ``etl worker`` running N transforms (default 50, 2 partitions
  each, messages waiting): the latency of ``GET /etl/status/`` (the whole cluster)
  and of ``etl status --bootstrap`` (Kafka alone, a fresh process), and how long a
  refresh of every group's offsets takes inside the worker.
* ``pause``: W workers (default 3) sharing one transform: the time from
  ``POST .../pause/`` on one worker until every worker reports it paused (read
  from each worker's own ``?scope=local`` status), over several rounds.

    python -m bench.control_plane [--pipelines 50] [--workers 3] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import create_topic
from etl.embedded import EmbeddedBroker, free_port
from etl.testing.worker import WorkerProcess, post_json, suffix_transform, write_config


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, LookupError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def fill(bootstrap: str, topics: list[str], per_topic: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for topic in topics:
        for i in range(per_topic):
            producer.produce(topic, f"v{i}".encode(), f"k{i}".encode())
    producer.flush(60)


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def bench_status(bootstrap: str, base: Path, pipelines: int, rounds: int) -> None:
    prefix = "bs"
    directory = base / "status"
    sources = [f"bs-src-{i}" for i in range(pipelines)]
    for topic in sources:
        create_topic(bootstrap, topic, 2)
    port = free_port()
    config = write_config(
        directory, bootstrap, kafka={"group_prefix": prefix}, web={"enabled": True, "port": port}
    )
    for i, topic in enumerate(sources):
        text = suffix_transform(topic, f"bs-dst-{i}", "!")
        (directory / "transforms" / f"p{i:02d}.py").write_text(text)
    url = f"http://127.0.0.1:{port}"
    with WorkerProcess(config, name="status-worker") as worker:
        started = time.monotonic()

        def all_running() -> bool:
            items = get(url + "/etl/status/?scope=local")["pipelines"]
            return sum(1 for i in items if i["state"] == "running" and i["partitions"]) == pipelines

        wait(all_running, 600, f"{pipelines} pipelines running")
        print(f"{pipelines} pipelines running after {time.monotonic() - started:.1f}s")
        fill(bootstrap, sources, 20)
        wait(
            lambda: all(p["lag"] == 0 for p in get(url + "/etl/status/")["pipelines"]),
            120,
            "lag 0 everywhere",
        )
        times = []
        for _ in range(rounds * 5):
            begin = time.perf_counter()
            snapshot = get(url + "/etl/status/")
            times.append(time.perf_counter() - begin)
        assert len(snapshot["pipelines"]) == pipelines
        print(
            f"GET /etl/status/ ({pipelines} pipelines, {rounds * 5} requests): {quantiles(times)}"
        )
        cli = []
        for _ in range(max(3, rounds // 3)):
            begin = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "etl.cli",
                    "status",
                    "--bootstrap",
                    bootstrap,
                    "--json",
                    "-c",
                    str(config),
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "ETL_WORKER_URL": ""},
            )
            cli.append(time.perf_counter() - begin)
        print(f"etl status --bootstrap (a new process each): {quantiles(cli)}")
        refresh = _refresh_time(bootstrap, prefix, rounds)
        print(
            f"offsets of {pipelines} groups read afresh (as the worker does every 2 s): "
            f"{quantiles(refresh)}"
        )
        print(f"worker CPU {worker_cpu(worker):.1f} s over the run")


def _refresh_time(bootstrap: str, prefix: str, rounds: int) -> list[float]:
    import asyncio

    from etl.config import ETLSettings
    from etl.ops.cluster import ClusterView, read_control_table

    settings = ETLSettings.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, "group_prefix": prefix}}
    )

    async def go() -> list[float]:
        table = await read_control_table(settings)
        view = ClusterView(settings.kafka, lambda: table)
        out = []
        try:
            for _ in range(rounds):
                view._reader = None  # a fresh reader: no cached ends
                begin = time.perf_counter()
                await view.refresh()
                out.append(time.perf_counter() - begin)
        finally:
            view.close()
        return out

    return asyncio.run(go())


def worker_cpu(worker: WorkerProcess) -> float:
    from bench.harness import cpu_seconds

    return cpu_seconds(worker.process.pid) if worker.process else 0.0


def bench_pause(bootstrap: str, base: Path, workers: int, rounds: int) -> None:
    source = "bp-src"
    create_topic(bootstrap, source, workers * 2)
    members = []
    for n in range(workers):
        directory = base / f"pause-{n}"
        port = free_port()
        config = write_config(
            directory,
            bootstrap,
            kafka={"group_prefix": "bp"},
            web={"enabled": True, "port": port},
        )
        (directory / "transforms" / "t.py").write_text(suffix_transform(source, "bp-dst", "!"))
        members.append((f"http://127.0.0.1:{port}", WorkerProcess(config, name=f"w{n}").start()))
    try:

        def local_state(url: str) -> str:
            items = get(url + "/etl/status/?scope=local")["pipelines"]
            return str(items[0]["state"]) if items else ""

        def spread() -> bool:
            item = get(members[0][0] + "/etl/status/")["pipelines"][0]
            owners = {(p.get("owner") or {}).get("worker") for p in item["partitions"].values()}
            return len(owners - {None}) == workers

        wait(spread, 180, "every worker owning partitions")
        reach = []
        for r in range(rounds):
            asker = members[r % workers][0]
            begin = time.perf_counter()
            post_json(asker + "/etl/pipelines/t/pause/")
            answered = time.perf_counter() - begin
            pending = {url for url, _ in members}
            while pending:
                pending = {url for url in pending if local_state(url) != "paused"}
            reach.append(time.perf_counter() - begin)
            print(
                f"  round {r + 1}: answered {answered * 1000:.0f} ms, "
                f"every worker paused {reach[-1] * 1000:.0f} ms"
            )
            post_json(asker + "/etl/pipelines/t/resume/")
            wait(lambda: all(local_state(url) == "running" for url, _ in members), 30, "resumed")
        print(f"pause -> all {workers} workers paused ({rounds} rounds): {quantiles(reach)}")
    finally:
        for _url, worker in members:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", choices=["status", "pause"], default=None)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        base = Path(tmp)
        if args.only in (None, "pause"):
            bench_pause(broker.bootstrap_servers, base, args.workers, args.rounds)
        if args.only in (None, "status"):
            bench_status(broker.bootstrap_servers, base, args.pipelines, args.rounds)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
