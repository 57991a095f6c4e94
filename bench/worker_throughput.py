"""Worker throughput as a user meets it: the real ``etl worker`` process, timed from outside.

On one broker (the embedded one, or ``--bootstrap``), in one run, every
contender moves the same source topic (``--messages`` records of ~100 bytes,
``--partitions`` partitions) through a suffix transform into a target topic of
its own, each as its own process in its own consumer group:

* ``etl worker`` with a ``transforms/suffix.py`` (at log level info and warning);
* a bare confluent-kafka (librdkafka) loop: consume 10k / produce / flush / commit;
* the same loop running this project's message code (dict, deal_message, normalize);
* a bare aiokafka loop: getmany / send each / flush / commit;
* Quix Streams and bytewax doing the same job, when a peers environment exists
  (``make bench-peers`` creates ``.venv-peers``; their pins clash with ours).

Each contender is timed from the first output record seen on its target topic to
the moment all outputs are there and (for those that commit to a group) its
group's committed offsets reach the message count. The output is read back:
every id exactly once, every value with the suffix. Printed per contender:
median msg/s (min-max over rounds), CPU seconds per 100k messages in that
window, peak RSS, and the ratio to the bare librdkafka loop; with the machine's
load average.

    python -m bench.worker_throughput [--messages 200000] [--rounds 3] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.harness import Result, create_topic, fill, run_timed, span
from etl.embedded import EmbeddedBroker, free_port
from etl.testing.worker import suffix_transform, write_config

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SUFFIX = b"ValueSuffix"


@dataclass
class Contender:
    name: str
    commits: bool = True
    results: list[Result] = field(default_factory=list)


class Watcher(threading.Thread):
    """Reads the target topic from the start and the group's commits, with timestamps."""

    def __init__(
        self,
        bootstrap: str,
        source: str,
        target: str,
        partitions: int,
        group: str | None,
        count: int,
    ) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.count = count
        self.first: float | None = None
        self.all_out: float | None = None
        self.committed_at: float | None = None
        self.seen = 0
        self.ids: set[int] = set()
        self.bad = 0
        self.stop = threading.Event()
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex}"}
        )
        self.consumer.assign([TopicPartition(target, p, 0) for p in range(partitions)])
        self.source_parts = partitions
        self.group = group
        self.offsets = (
            Consumer({"bootstrap.servers": bootstrap, "group.id": group}) if group else None
        )

    def run(self) -> None:
        last_check = 0.0
        while not self.stop.is_set():
            messages = self.consumer.consume(10000, 0.02)
            now = time.perf_counter()
            for message in messages:
                if message.error() is not None:
                    continue
                value = message.value() or b""
                if self.first is None:
                    self.first = now
                self.seen += 1
                if not value.endswith(SUFFIX):
                    self.bad += 1
                else:
                    self.ids.add(int(value[6:15]))
            if self.all_out is None and len(self.ids) >= self.count:
                self.all_out = now
            if self.offsets is not None and self.committed_at is None and now - last_check > 0.02:
                last_check = now
                if self._committed() >= self.count:
                    self.committed_at = time.perf_counter()
            if self.done():
                return

    def _committed(self) -> int:
        assert self.offsets is not None and self.group is not None
        parts = [TopicPartition(self.source, p) for p in range(self.source_parts)]
        try:
            got = self.offsets.committed(parts, timeout=5)
        except Exception:
            return 0
        return sum(max(0, p.offset) for p in got)

    def done(self) -> bool:
        return self.all_out is not None and (self.offsets is None or self.committed_at is not None)


def worker_command(
    project: Path, bootstrap: str, source: str, target: str, level: str
) -> list[str]:
    (project / "transforms").mkdir(parents=True, exist_ok=True)
    (project / "transforms" / "suffix.py").write_text(
        suffix_transform(source, target, SUFFIX.decode())
    )
    config = write_config(
        project,
        bootstrap,
        kafka={"group_prefix": project.name, "session_timeout_ms": 10000},
        log_level=level,
        web={"enabled": True, "port": free_port()},
    )
    etl = Path(sys.executable).with_name("etl")
    program = [str(etl)] if etl.exists() else [sys.executable, "-m", "etl.cli"]
    return [*program, "worker", "--config", str(config)]


def command(
    name: str, bootstrap: str, source: str, target: str, group: str, project: Path
) -> list[str]:
    if name.startswith("etl worker"):
        level = "warning" if "warning" in name else "info"
        return worker_command(project, bootstrap, source, target, level)
    common = ["--bootstrap", bootstrap, "--source", source, "--target", target, "--group", group]
    if name in ("quix", "bytewax"):
        return [str(PEERS_PYTHON), str(ROOT / "bench" / "peers" / f"{name}_suffix.py"), *common]
    return [sys.executable, "-m", "bench.contenders", name, *common]


def group_of(name: str, project: Path, group: str) -> str | None:
    if name.startswith("etl worker"):
        return f"{project.name}-transform-suffix"
    if name == "bytewax":
        return None  # bytewax keeps its own recovery state, not group offsets
    return group


def run_one(
    contender: Contender, bootstrap: str, source: str, partitions: int, count: int, base: Path
) -> Result:
    tag = uuid.uuid4().hex[:8]
    target = f"out-{tag}"
    create_topic(bootstrap, target, partitions)
    project = base / f"b{tag}"
    project.mkdir()
    group = f"g{tag}"
    argv = command(contender.name, bootstrap, source, target, group, project)
    watcher = Watcher(
        bootstrap, source, target, partitions, group_of(contender.name, project, group), count
    )
    watcher.start()
    try:
        cpu, rss = run_timed(
            contender.name, argv, ROOT, project / "contender.log", watcher, timeout=300
        )
    finally:
        watcher.stop.set()
    watcher.join(5)
    if watcher.bad or len(watcher.ids) != count:
        raise RuntimeError(f"{contender.name}: {len(watcher.ids)} ids, {watcher.bad} bad values")
    assert watcher.first is not None and watcher.all_out is not None
    end = max(watcher.all_out, watcher.committed_at or 0.0)
    seconds = end - watcher.first
    return Result(count / seconds, cpu * 100_000 / count, rss)


def default_contenders() -> list[Contender]:
    names = [
        Contender("etl worker"),
        Contender("confluent"),
        Contender("etl worker (log_level warning)"),
        Contender("confluent-message-code"),
        Contender("aiokafka"),
    ]
    if PEERS_PYTHON.exists():
        names += [Contender("quix"), Contender("bytewax", commits=False)]
    return names


def report(contenders: list[Contender], load: tuple[float, float]) -> None:
    reference = next((c for c in contenders if c.name == "confluent" and c.results), None)
    base = statistics.median(r.rate for r in reference.results) if reference else None
    after = os.getloadavg()[0]
    print(f"\nload average before {load[0]:.2f}, after {after:.2f} ({os.cpu_count()} cores)")
    header = (
        f"{'contender':34} {'msg/s median (min-max)':>30} {'CPU s/100k':>11} "
        f"{'RSS MB':>7} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for contender in sorted(
        contenders, key=lambda c: -statistics.median(r.rate for r in c.results or [Result(0, 0, 0)])
    ):
        if not contender.results:
            continue
        median, text, cpu, rss = span(contender.results)
        ratio = f"{median / base:.2f}" if base else "-"
        print(f"{contender.name:34} {text:>30} {cpu:>11.2f} {rss:>7.0f} {ratio:>6}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", help="an existing broker (default: start the embedded one)")
    parser.add_argument("--only", nargs="*", help="contender names to run (default: all)")
    args = parser.parse_args(argv)

    contenders = default_contenders()
    if args.only:
        contenders = [c for c in contenders if c.name in args.only]
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap_servers
    base = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    load = os.getloadavg()
    try:
        source = f"bench-src-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, source, args.partitions)
        fill(bootstrap, source, args.messages)
        print(f"{args.messages:,} messages in {args.partitions} partitions on {bootstrap}")
        for round_no in range(args.rounds):
            order = contenders if round_no % 2 == 0 else list(reversed(contenders))
            for contender in order:
                result = run_one(contender, bootstrap, source, args.partitions, args.messages, base)
                contender.results.append(result)
                print(
                    f"round {round_no + 1} {contender.name:34} {result.rate:>9,.0f} msg/s "
                    f"cpu/100k {result.cpu_per_100k:.2f} s rss {result.rss_mb:.0f} MB",
                    flush=True,
                )
        report(contenders, load)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
