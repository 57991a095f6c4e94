"""Sinks and the binlog source as a user runs them: the real ``etl worker``, timed from outside.

On the embedded broker and throwaway servers (PostgreSQL, MariaDB, the
OpenSearch-compatible noida-db, a local directory), one topic of ``--messages``
JSON records (~110 bytes, ``--partitions`` partitions) is written once (OpenSearch
gets ``--search-messages``: the test server takes a few thousand documents a
second, and a fresh server per run, as it slows down as it fills); then,
per sink, each of two contenders runs as its own process in its own consumer
group, into a fresh table / index / directory:

* ``etl worker`` with the sink in its ``etl.yaml`` (``postgres`` / ``mysql``:
  FLATTEN, insert mode, 5,000 rows per transaction; ``opensearch``: 1,000
  actions per bulk request, 2 in flight; ``object_store``: jsonl objects of
  ``--object-mb``, ``fsync: false`` like the bare loop);
* a bare loop on the fastest client of each side: a confluent-kafka (librdkafka)
  consumer, ``consume(5000)``, then psycopg ``COPY`` / a PyMySQL multi-row
  ``INSERT`` / opensearch-py ``bulk`` (one request at a time) / plain file writes
  of the same objects (closed at the same size or age), then a synchronous commit.

Each is timed from the first output seen in the destination to all outputs
there and the group's committed offsets at the message count (the destination
is counted every 20 ms, OpenSearch every 250 ms); the count is checked. The
binlog source: the same rows inserted into MariaDB once, read by the ``etl worker``
with a ``mysql_binlog`` source and by a bare loop (``BinLogStreamReader`` rows ->
``json.dumps`` -> confluent-kafka ``produce``), timed from the first message on the
table's topic to the last.

Printed: msg/s median (min-max over rounds), CPU seconds per 100k messages in
that window, peak RSS and each worker's ratio to its bare loop, with the load.

    python -m bench.sink_workers [--messages 200000] [--search-messages 50000] [--rounds 2]
                                 [--only postgres mysql opensearch object_store binlog]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.harness import Result, create_topic, fill, run_timed, span
from bench.object_store_sink import line_of
from bench.opensearch_sink import envelope_body
from bench.sql_sinks import COLUMNS, MYSQL_DB, MYSQL_TABLE, PG_TABLE, mysql_insert, sink_options
from bench.sql_sinks import value as sql_value
from etl.embedded import EmbeddedBroker, free_port
from etl.runtime.native import to_record
from etl.testing.worker import write_config

ROOT = Path(__file__).resolve().parent.parent
SINKS = ("postgres", "mysql", "opensearch", "object_store")
BATCH = 5000
BULK_ACTIONS = 1000
BINLOG_DB = "bench_binlog"


@dataclass
class Job:
    """One sink run: where it writes, how to count what is there, how each contender starts."""

    kind: str
    sink: dict[str, Any]
    count: Callable[[], int]
    bare: list[str]
    cleanup: Callable[[], None] = lambda: None
    #: Seconds between two counts (a refresh per count slows the search server down).
    poll_s: float = 0.02


@dataclass
class Pair:
    name: str
    worker: list[Result] = field(default_factory=list)
    bare: list[Result] = field(default_factory=list)


# ---- the bare loops (each its own process: python -m bench.sink_workers bare KIND ...) --------


def bare_consumer(bootstrap: str, topic: str, group: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    return consumer


def sql_rows(messages: list[Any], pt: str) -> list[tuple[Any, ...]]:
    rows = []
    for m in messages:
        d = json.loads(m.value())
        rows.append(
            (m.topic(), m.partition(), m.offset(), d["id"], d["user"], d["amount"], d["msg"], pt)
        )
    return rows


def bare_postgres(args: argparse.Namespace) -> Callable[[list[Any]], None]:
    conn = psycopg.connect(args.dsn, autocommit=True)
    copy_sql = psycopg.sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg.sql.Identifier(args.table),
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, COLUMNS)),
    )
    pt = time.strftime("%m-%d-%Y %H", time.gmtime())

    def write(messages: list[Any]) -> None:
        with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in sql_rows(messages, pt):
                copy.write_row(row)

    return write


def bare_mysql(args: argparse.Namespace) -> Callable[[list[Any]], None]:
    address = json.loads(args.address)
    insert = mysql_insert(pymysql.connect(**address, database=MYSQL_DB), args.table)
    pt = time.strftime("%m-%d-%Y %H", time.gmtime())
    return lambda messages: insert(sql_rows(messages, pt))


def bare_opensearch(args: argparse.Namespace) -> Callable[[list[Any]], None]:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[args.url], timeout=60)

    def write(messages: list[Any]) -> None:
        for start in range(0, len(messages), BULK_ACTIONS):
            chunk = messages[start : start + BULK_ACTIONS]
            body = b"".join(envelope_body(to_record(m), args.index) for m in chunk)
            assert not client.bulk(body=body)["errors"]

    return write


class BareObjects:
    """Per-partition lines in memory, written as whole objects like the sink writes them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.root = Path(args.directory)
        self.limit = args.object_mb * 1024 * 1024
        self.window = args.window_s
        #: partition -> [lines, bytes, first offset, next offset, opened at]
        self.open: dict[int, list[Any]] = {}
        self.done: dict[int, int] = {}

    def write(self, messages: list[Any]) -> None:
        now = time.monotonic()
        for m in messages:
            slot = self.open.get(m.partition())
            if slot is None:
                slot = self.open[m.partition()] = [[], 0, m.offset(), 0, now]
            line = line_of(to_record(m))
            slot[0].append(line)
            slot[1] += len(line)
            slot[3] = m.offset() + 1
            if slot[1] >= self.limit:
                self._close(m.partition())

    def tick(self) -> None:
        now = time.monotonic()
        for partition in [p for p, s in self.open.items() if now - s[4] >= self.window]:
            self._close(partition)

    def _close(self, partition: int) -> None:
        lines, _size, first, after, _at = self.open.pop(partition)
        # Written aside and renamed, as the sink does: a reader never sees half an object.
        name = f"partition_{partition}_offset_{first}.jsonl"
        (self.root / f".{name}.tmp").write_bytes(b"".join(lines))
        os.replace(self.root / f".{name}.tmp", self.root / name)
        self.done[partition] = after

    def offsets(self, topic: str) -> list[TopicPartition]:
        done, self.done = self.done, {}
        return [TopicPartition(topic, p, o) for p, o in done.items()]


def run_bare(args: argparse.Namespace) -> None:
    consumer = bare_consumer(args.bootstrap, args.topic, args.group)
    objects = BareObjects(args) if args.kind == "object_store" else None
    write = objects.write if objects else globals()[f"bare_{args.kind}"](args)
    while True:
        messages = [m for m in consumer.consume(BATCH, 0.2) if m.error() is None]
        if messages:
            write(messages)
        if objects is not None:
            objects.tick()
            offsets = objects.offsets(args.topic)
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
        elif messages:
            consumer.commit(asynchronous=False)


def run_bare_binlog(args: argparse.Namespace) -> None:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import WriteRowsEvent

    address = json.loads(args.address)
    file, pos = args.start.rsplit(":", 1)
    stream = BinLogStreamReader(
        {"host": address["host"], "port": address["port"], "user": "root", "passwd": ""},
        server_id=4343,
        blocking=False,
        resume_stream=True,
        log_file=file,
        log_pos=int(pos),
        only_events=[WriteRowsEvent],
        only_schemas=[BINLOG_DB],
        only_tables=["orders"],
        enable_logging=False,
    )
    producer = Producer(
        {"bootstrap.servers": args.bootstrap, "linger.ms": 5, "enable.idempotence": False}
    )
    dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode
    for event in stream:
        for row in event.rows:
            values = row["values"]
            while True:
                try:
                    producer.produce(args.topic, dumps(values).encode(), str(values["id"]).encode())
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)
    stream.close()
    while True:
        time.sleep(1)


# ---- watching the destination -------------------------------------------------------------


class SinkWatch(threading.Thread):
    """Polls the destination's count and the group's committed offsets."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        group: str | None,
        count: Callable[[], int],
        total: int,
        poll_s: float = 0.02,
    ) -> None:
        super().__init__(daemon=True)
        self.total = total
        self.poll_s = poll_s
        self.counter = count
        self.first: float | None = None
        self.all_out: float | None = None
        self.committed_at: float | None = None
        self.seen = 0
        self.stop = threading.Event()
        self.parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.offsets = (
            Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
            if group
            else None
        )

    def run(self) -> None:
        while not self.stop.is_set() and not self.done():
            try:
                self.seen = self.counter()
            except Exception:
                self.seen = 0
            now = time.perf_counter()
            if self.seen and self.first is None:
                self.first = now
            if self.all_out is None and self.seen >= self.total:
                self.all_out = now
            if self.all_out is not None and self.offsets is not None and self.committed_at is None:
                got = self.offsets.committed(self.parts, timeout=5)
                if sum(max(0, p.offset) for p in got) >= self.total:
                    self.committed_at = time.perf_counter()
            time.sleep(self.poll_s)

    def done(self) -> bool:
        return self.all_out is not None and (self.offsets is None or self.committed_at is not None)


def topic_count(bootstrap: str, topic: str, partitions: int) -> Callable[[], int]:
    """Messages on ``topic`` so far (a reader from the start, counting)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex}", "log_level": 3}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = [0]

    def count() -> int:
        seen[0] += sum(1 for m in consumer.consume(10000, 0.01) if m.error() is None)
        return seen[0]

    return count


def files_count(root: Path) -> Callable[[], int]:
    """Lines in the finished data objects under ``root`` (each object read once)."""
    counted: dict[Path, int] = {}

    def count() -> int:
        for path in root.rglob("*"):
            name = path.name
            if path in counted or name.startswith((".", "oss_meta")) or not path.is_file():
                continue
            counted[path] = path.read_bytes().count(b"\n")
        return sum(counted.values())

    return count


# ---- one run of one contender -------------------------------------------------------------


def worker_argv(project: Path, bootstrap: str, **config: Any) -> list[str]:
    path = write_config(
        project,
        bootstrap,
        kafka={"group_prefix": project.name, "session_timeout_ms": 10000},
        web={"enabled": True, "port": free_port()},
        **config,
    )
    return [sys.executable, "-m", "etl.cli", "worker", "--config", str(path)]


def timed(name: str, argv: list[str], project: Path, watch: SinkWatch, total: int) -> Result:
    watch.start()
    try:
        cpu, rss = run_timed(name, argv, ROOT, project / "contender.log", watch)
    finally:
        watch.stop.set()
    watch.join(5)
    if watch.seen != total:
        raise RuntimeError(f"{name}: {watch.seen} outputs, expected {total}")
    assert watch.first is not None and watch.all_out is not None
    seconds = max(watch.all_out, watch.committed_at or 0.0) - watch.first
    return Result(total / seconds, cpu * 100_000 / total, rss)


# ---- servers and jobs -----------------------------------------------------------------------


@dataclass
class Servers:
    bootstrap: str
    dsn: str = ""
    mysql: dict[str, Any] = field(default_factory=dict)
    search: Any = None


def make_job(kind: str, servers: Servers, topic: str, base: Path, args: argparse.Namespace) -> Job:
    tag = uuid.uuid4().hex[:8]
    name = f"bench-{kind.replace('_', '-')}-{tag}"
    common = ["--bootstrap", servers.bootstrap, "--topic", topic]
    if kind == "postgres":
        table = f"t_{tag}"
        conn = psycopg.connect(servers.dsn, autocommit=True)
        conn.execute(PG_TABLE.format(table))  # type: ignore[arg-type]

        def pg_count() -> int:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
            return int(row[0]) if row else 0

        sink = {"type": "postgres", "dsn": servers.dsn, "sslmode": "disable"}
        sink.update({**sink_options(table, BATCH), "name": name, "topics": [topic]})
        argv = [*common, "--dsn", servers.dsn, "--table", table]
        return Job(kind, sink, pg_count, argv, conn.close)
    if kind == "mysql":
        table = f"t_{tag}"
        address = servers.mysql
        admin = pymysql.connect(**address, database=MYSQL_DB, autocommit=True)
        with admin.cursor() as cur:
            cur.execute(MYSQL_TABLE.format(table))

        def mysql_count() -> int:
            with admin.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM `{table}`")  # noqa: S608
                return int(cur.fetchone()[0])

        auth = address["user"] + (f":{address['password']}" if address["password"] else "")
        dsn = f"mysql://{auth}@{address['host']}:{address['port']}/{MYSQL_DB}"
        sink = {"type": "mysql", "dsn": dsn, "ssl_mode": "disabled"}
        sink.update({**sink_options(table, BATCH), "name": name, "topics": [topic]})
        argv = [*common, "--address", json.dumps(address), "--table", table]
        return Job(kind, sink, mysql_count, argv, admin.close)
    if kind == "opensearch":
        from opensearchpy import OpenSearch

        from etl.testing.search_server import SearchServer

        # A fresh server per run: the test server slows down as it holds more documents.
        server = SearchServer().start()
        client = OpenSearch(hosts=[server.url], timeout=30)
        index = f"i-{tag}"

        def search_count() -> int:
            client.indices.refresh(index=index)
            return int(client.count(index=index)["count"])

        sink = {
            "name": name,
            "type": "opensearch",
            "topics": [topic],
            "hosts": [server.url],
            "index": index,
            "start_offset": "earliest",
            "bulk_actions": BULK_ACTIONS,
            "max_in_flight": 2,
            "batch_size": BULK_ACTIONS * 4,
            "linger_ms": 200,
        }
        argv = [*common, "--url", server.url, "--index", index]
        return Job(kind, sink, search_count, argv, server.remove, poll_s=0.25)
    directory = base / f"store-{tag}"
    directory.mkdir()
    window = 0.6
    sink = {
        "name": name,
        "type": "object_store",
        "topics": [topic],
        "start_offset": "earliest",
        "url": str(directory),
        "batch_size_mb": args.object_mb,
        "batch_window_minutes": window / 60,
        "fsync": False,
    }
    argv = [*common, "--directory", str(directory), "--object-mb", str(args.object_mb)]
    return Job(kind, sink, files_count(directory), [*argv, "--window-s", str(window)])


def run_sink(
    pair: Pair,
    worker: bool,
    servers: Servers,
    topic: str,
    total: int,
    base: Path,
    args: argparse.Namespace,
) -> Result:
    job = make_job(pair.name, servers, topic, base, args)
    project = base / f"p{uuid.uuid4().hex[:8]}"
    project.mkdir()
    try:
        if worker:
            argv = worker_argv(project, servers.bootstrap, sinks=[job.sink])
            group = f"{project.name}-sink-{job.sink['name']}"
        else:
            group = f"bare-{uuid.uuid4().hex[:8]}"
            argv = [sys.executable, "-m", "bench.sink_workers", "bare", job.kind, *job.bare]
            argv += ["--group", group]
        watch = SinkWatch(
            servers.bootstrap, topic, args.partitions, group, job.count, total, job.poll_s
        )
        name = f"{'etl worker' if worker else 'bare'} {job.kind}"
        return timed(name, argv, project, watch, total)
    finally:
        job.cleanup()


def binlog_fill(address: dict[str, Any], rows: int) -> str:
    """Insert ``rows`` rows in transactions of 500; the binlog position before them."""
    conn = pymysql.connect(**address, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {BINLOG_DB}")
        cur.execute(
            f"CREATE TABLE {BINLOG_DB}.orders (id BIGINT PRIMARY KEY, customer VARCHAR(64), "
            "qty INT, price DECIMAL(10,2), status VARCHAR(16), created DATETIME)"
        )
        cur.execute("SHOW MASTER STATUS")
        first = cur.fetchone()
        for start in range(0, rows, 500):
            values = ",".join(
                f"({i}, 'customer-{i % 977}', {i % 50}, {i % 1000}.25, 'new', NOW())"
                for i in range(start, min(rows, start + 500))
            )
            cur.execute(f"INSERT INTO {BINLOG_DB}.orders VALUES {values}")  # noqa: S608
    conn.close()
    return f"{first[0]}:{first[1]}"


def run_binlog(
    pair: Pair, worker: bool, servers: Servers, start: str, base: Path, args: argparse.Namespace
) -> Result:
    tag = uuid.uuid4().hex[:8]
    prefix = f"bl{tag}"
    topic = f"{prefix}_orders"
    create_topic(servers.bootstrap, topic, args.partitions)
    project = base / f"p{tag}"
    project.mkdir()
    if worker:
        source = {
            "name": f"bench-{tag}",
            "type": "mysql_binlog",
            "host": servers.mysql["host"],
            "port": servers.mysql["port"],
            "user": "root",
            "database": BINLOG_DB,
            "tables": ["orders"],
            "topic_prefix": prefix,
            "start": start,
            "server_id": 5000 + len(pair.worker) + 1,
            "ssl": False,
        }
        argv = worker_argv(project, servers.bootstrap, sources=[source])
    else:
        argv = [sys.executable, "-m", "bench.sink_workers", "bare", "binlog"]
        argv += ["--bootstrap", servers.bootstrap, "--topic", topic, "--start", start]
        argv += ["--address", json.dumps(servers.mysql)]
    count = topic_count(servers.bootstrap, topic, args.partitions)
    watch = SinkWatch(servers.bootstrap, topic, args.partitions, None, count, args.messages)
    return timed(
        f"{'etl worker' if worker else 'bare'} binlog", argv, project, watch, args.messages
    )


@contextlib.contextmanager
def servers_for(kinds: list[str]) -> Iterator[Servers]:
    from etl.testing.servers import MariaDBServer, PostgresServer

    with contextlib.ExitStack() as stack:
        broker = EmbeddedBroker().start()
        stack.callback(broker.stop)
        servers = Servers(broker.bootstrap_servers)
        if "postgres" in kinds:
            pg = PostgresServer().start()
            stack.callback(pg.stop)
            servers.dsn = pg.dsn
        if "mysql" in kinds or "binlog" in kinds:
            maria = MariaDBServer().start()
            stack.callback(maria.stop)
            servers.mysql = {
                "host": maria.host,
                "port": maria.port,
                "user": maria.user,
                "password": maria.password,
            }
            conn = pymysql.connect(**servers.mysql)
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DB}")
            conn.close()
        yield servers


def report(pairs: list[Pair], load: tuple[float, float, float]) -> None:
    after = os.getloadavg()
    print(
        f"\nload average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} ({os.cpu_count()} cores)"
    )
    header = (
        f"{'contender':24} {'msg/s median (min-max)':>28} {'CPU s/100k':>11} "
        f"{'RSS MB':>7} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for pair in pairs:
        if not pair.worker or not pair.bare:
            continue
        worker = span(pair.worker)
        bare = span(pair.bare)
        for name, (rate, text, cpu, rss) in (("etl worker", worker), ("bare", bare)):
            ratio = rate / bare[0]
            print(f"{name + ' ' + pair.name:24} {text:>28} {cpu:>11.2f} {rss:>7.0f} {ratio:>6.2f}")


def run_pair(
    pair: Pair,
    servers: Servers,
    topics: dict[int, str],
    sizes: dict[str, int],
    start: str,
    base: Path,
    args: argparse.Namespace,
) -> None:
    """Both contenders of one sink, ``--rounds`` times, taking turns at going first."""
    for round_no in range(args.rounds):
        order = (True, False) if round_no % 2 == 0 else (False, True)
        for worker in order:
            if pair.name == "binlog":
                result = run_binlog(pair, worker, servers, start, base, args)
            else:
                topic, total = topics[sizes[pair.name]], sizes[pair.name]
                result = run_sink(pair, worker, servers, topic, total, base, args)
            (pair.worker if worker else pair.bare).append(result)
            print(
                f"round {round_no + 1} {'etl worker' if worker else 'bare':10} "
                f"{pair.name:12} {result.rate:>9,.0f} msg/s "
                f"cpu/100k {result.cpu_per_100k:.2f} s rss {result.rss_mb:.0f} MB",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bare"]:
        return bare_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--search-messages", type=int, default=50_000)
    parser.add_argument("--object-mb", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=(*SINKS, "binlog"), help="default: all")
    args = parser.parse_args(argv)
    kinds = list(args.only or (*SINKS, "binlog"))
    pairs = [Pair(kind) for kind in kinds]
    base = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    load = os.getloadavg()
    try:
        with servers_for(kinds) as servers:
            # The search test server takes a few thousand documents a second: fewer for it.
            sizes = {k: args.search_messages if k == "opensearch" else args.messages for k in kinds}
            topics: dict[int, str] = {}
            for kind in kinds:
                if kind != "binlog" and sizes[kind] not in topics:
                    topic = topics[sizes[kind]] = f"bench-sink-{uuid.uuid4().hex[:8]}"
                    create_topic(servers.bootstrap, topic, args.partitions)
                    fill(servers.bootstrap, topic, sizes[kind], sql_value)
            start = binlog_fill(servers.mysql, args.messages) if "binlog" in kinds else ""
            print(
                f"{args.messages:,} messages (opensearch {args.search_messages:,}) "
                f"in {args.partitions} partitions",
                flush=True,
            )
            for pair in pairs:
                try:
                    run_pair(pair, servers, topics, sizes, start, base, args)
                except RuntimeError as exc:
                    print(f"{pair.name} failed: {exc}", flush=True)
        report(pairs, load)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.sink_workers bare")
    parser.add_argument("kind", choices=(*SINKS, "binlog"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--address", default="{}")
    parser.add_argument("--table", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--index", default="")
    parser.add_argument("--directory", default="")
    parser.add_argument("--object-mb", type=int, default=1)
    parser.add_argument("--window-s", type=float, default=0.6)
    parser.add_argument("--start", default="")
    args = parser.parse_args(argv)
    if args.kind == "binlog":
        run_bare_binlog(args)
    else:
        run_bare(args)


if __name__ == "__main__":
    main()
