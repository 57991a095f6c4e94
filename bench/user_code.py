"""User code that waits or computes: async enrichment and worker processes, as real workers.

Two cases, each a real ``etl worker`` process (or processes) on the embedded
broker, timed from outside like bench/worker_throughput.py (first output seen to
every output there and committed):

* ``async``: ``async def deal_message`` awaits a call (aiohttp) to a local HTTP
  server that answers after 5 ms; with ``CONCURRENCY = 1`` (one call at a time)
  and with ``CONCURRENCY = 64``. The ceiling is CONCURRENCY / 5 ms, or the CPU
  the HTTP client itself needs per call, whichever is lower.
* ``processes``: a CPU-bound ``deal_message`` (about 0.3 ms of pure Python per
  record) with ``--processes 1`` and ``--processes 2``.

    python -m bench.user_code [--case async|processes|all]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.harness import cpu_seconds, create_topic, fill
from bench.worker_throughput import ROOT, Watcher
from etl.embedded import EmbeddedBroker, free_port
from etl.testing.worker import write_config

ASYNC_TRANSFORM = """
import aiohttp

SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
CONCURRENCY = {concurrency}
_session = None


async def deal_message(message):
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
    async with _session.get({url!r}) as answer:
        message["value"] = message["value"] + await answer.text()
    return message
"""

SLEEP_TRANSFORM = """
import asyncio

SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
CONCURRENCY = 64


async def deal_message(message):
    await asyncio.sleep(0.005)  # the call without a client's own CPU cost
    message["value"] = message["value"] + "ValueSuffix"
    return message
"""

CPU_TRANSFORM = """
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"


def deal_message(message):
    total = 0
    for i in range(6000):
        total += i * i % 7
    message["value"] = message["value"] + "ValueSuffix"
    return message
"""


class SlowServer(threading.Thread):
    """HTTP/1.1 keep-alive server on loopback that answers every request after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        super().__init__(daemon=True)
        self.delay = delay
        self.port = free_port()
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not head:
                        return
                    await asyncio.sleep(self.delay)
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"
                        b"Content-Type: text/plain\r\n\r\nValueSuffix"
                    )
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                return

        server = await asyncio.start_server(handle, "127.0.0.1", self.port)
        self.ready.set()
        async with server:
            await server.serve_forever()


def timed_worker(
    bootstrap: str, text: str, count: int, partitions: int, processes: int, base: Path
) -> tuple[float, float]:
    """msg/s and CPU s per 100k of a worker (all its processes) running ``text``."""
    tag = uuid.uuid4().hex[:8]
    source, target = f"uc-src-{tag}", f"uc-out-{tag}"
    create_topic(bootstrap, source, partitions)
    create_topic(bootstrap, target, partitions)
    fill(bootstrap, source, count)
    project = base / f"p{tag}"
    (project / "transforms").mkdir(parents=True)
    (project / "transforms" / "job.py").write_text(text.format(source=source, target=target))
    config = write_config(
        project,
        bootstrap,
        kafka={"group_prefix": project.name},
        processes=processes,
        log_level="warning",
    )
    watcher = Watcher(bootstrap, source, target, partitions, f"{project.name}-transform-job", count)
    watcher.start()
    etl = Path(sys.executable).with_name("etl")
    program = [str(etl)] if etl.exists() else [sys.executable, "-m", "etl.cli"]
    log = open(project / "worker.log", "wb")
    process = subprocess.Popen(
        [*program, "worker", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )

    def cpu() -> float:
        pids = [process.pid, *_children(process.pid)]
        return sum(cpu_seconds(pid) for pid in pids)

    cpu_start = None
    try:
        deadline = time.monotonic() + 600
        while not watcher.done():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((project / "worker.log").read_text(errors="replace")[-3000:])
            if cpu_start is None and watcher.first is not None:
                cpu_start = cpu()
            time.sleep(0.01)
        cpu_end = cpu()
    finally:
        watcher.stop.set()
        os.killpg(process.pid, 15)
        process.wait(30)
        log.close()
    assert watcher.first is not None and watcher.all_out is not None
    seconds = max(watcher.all_out, watcher.committed_at or 0.0) - watcher.first
    return count / seconds, (cpu_end - (cpu_start or cpu_end)) * 100_000 / count


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["async", "processes", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    broker = EmbeddedBroker().start()
    base = Path(tempfile.mkdtemp(prefix="etl-bench-uc-"))
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    try:
        bootstrap = broker.bootstrap_servers
        if args.case in ("async", "all"):
            server = SlowServer(0.005)
            server.start()
            server.ready.wait(10)
            url = f"http://127.0.0.1:{server.port}/enrich"
            for concurrency, count in ((1, 500), (64, 20_000)):
                text = ASYNC_TRANSFORM.replace("{concurrency}", str(concurrency)).replace(
                    "{url!r}", repr(url)
                )
                for _ in range(args.rounds):
                    rate, cpu = timed_worker(bootstrap, text, count, 4, 1, base)
                    print(
                        f"async, 5 ms call, CONCURRENCY={concurrency:<3} {rate:>9,.0f} msg/s "
                        f"(ceiling {concurrency / 0.005:,.0f}) cpu/100k {cpu:.2f} s",
                        flush=True,
                    )
            for _ in range(args.rounds):
                rate, cpu = timed_worker(bootstrap, SLEEP_TRANSFORM, 20_000, 4, 1, base)
                print(
                    f"async, asyncio.sleep(0.005), CONCURRENCY=64 {rate:>9,.0f} msg/s "
                    f"(ceiling 12,800) cpu/100k {cpu:.2f} s",
                    flush=True,
                )
        if args.case in ("processes", "all"):
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.rounds):
                for processes in (1, 2):
                    rate, cpu = timed_worker(bootstrap, CPU_TRANSFORM, 30_000, 4, processes, base)
                    rates[processes].append(rate)
                    print(
                        f"cpu-bound transform, --processes {processes}: {rate:>9,.0f} msg/s "
                        f"cpu/100k {cpu:.2f} s",
                        flush=True,
                    )
            print(f"2 processes / 1 process: {max(rates[2]) / max(rates[1]):.2f}x (best of each)")
        print(f"load average after {os.getloadavg()[0]:.2f}")
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
