"""What the worker-level benchmarks share: fill a topic, run a contender process, measure it.

A contender is its own process; a watcher (a thread reading the destination)
says when the first output appears and when everything is there. CPU seconds
are read from ``/proc`` over that window, peak RSS at its end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    rate: float
    cpu_per_100k: float
    rss_mb: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICKS


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def click_value(i: int) -> bytes:
    """~100 bytes; the id sits at bytes 6-15 (read back by the transform benchmark)."""
    user = f"user-{i % 1000:04d}"
    return f'{{"id":{i:09d},"user":"{user}","event":"click","pad":"xxxxxxxx"}}'.encode()


def fill(
    bootstrap: str, topic: str, count: int, value: Callable[[int], bytes] = click_value
) -> None:
    """Produce ``count`` records ``value(i)`` keyed ``k{i % 1000}``."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": False}
    )
    for i in range(count):
        data = value(i)
        while True:
            try:
                producer.produce(topic, data, f"k{i % 1000}".encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


class Watch(Protocol):
    """What :func:`run_timed` needs of a watcher thread."""

    first: float | None

    def done(self) -> bool: ...


def run_timed(
    name: str, argv: list[str], cwd: Path, log_path: Path, watch: Watch, timeout: float = 300
) -> tuple[float, float]:
    """Run ``argv`` until ``watch`` is done; (CPU seconds from the first output on, peak RSS MB).

    The process is terminated at the end; its log is shown if it exits early.
    """
    log = open(log_path, "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    cpu_start = None
    deadline = time.monotonic() + timeout
    try:
        while not watch.done():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited {process.returncode}:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name}: not done after {timeout:.0f} s:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            if cpu_start is None and watch.first is not None:
                cpu_start = cpu_seconds(process.pid)
            time.sleep(0.01)
        cpu_end = cpu_seconds(process.pid)
        rss = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    return cpu_end - (cpu_start if cpu_start is not None else cpu_end), rss


def span(results: list[Result]) -> tuple[float, str, float, float]:
    """(median rate, "median (min-max)", median CPU s/100k, max RSS MB) of some rounds."""
    rates = [r.rate for r in results]
    median = statistics.median(rates)
    text = f"{median:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
    cpu = statistics.median(r.cpu_per_100k for r in results)
    return median, text, cpu, max(r.rss_mb for r in results)
