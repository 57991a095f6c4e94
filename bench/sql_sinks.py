"""Rows per second from Kafka into PostgreSQL and MySQL, against the bare driver loops.

Starts an embedded broker and throwaway PostgreSQL and MariaDB servers (or uses
``ETL_TEST_KAFKA`` / ``ETL_TEST_POSTGRES_DSN`` / ``ETL_TEST_MYSQL_DSN``), produces
the messages once (JSON objects of a few fields), then alternately, ``--rounds``
times each, into a fresh table every time:

* ``bare``: the same rows the sink writes (fixed columns plus the JSON fields,
  built in memory beforehand), written in batches of ``--batch`` rows, one
  transaction each: psycopg ``COPY ... FROM STDIN`` with ``write_row`` for
  PostgreSQL, PyMySQL ``executemany`` of a multi-row INSERT for MySQL;
* ``ours``: the ``postgres`` / ``mysql`` sink pipeline (FLATTEN format, insert
  mode) consuming the topic from the start, timed from its partition assignment
  until every row is written;
* ``loop``: for scale, a hand-written Kafka-to-database loop without the framework
  (aiokafka ``getmany``, ``json.loads``, the row tuple, the same bare write), which
  shows what reading Kafka in Python costs by itself;

and prints the best rate of each and the ratios.

    python -m bench.sql_sinks [--messages 200000] [--rounds 2] [--only postgres|mysql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pymysql
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.sink_rate import sink_rate
from etl.config import ETLSettings
from etl.embedded import EmbeddedBroker
from etl.testing.kafka import create_topic, read_all
from etl.testing.servers import MariaDBServer, PostgresServer
from etl.testing.settings import pipeline_settings
from sinks.mysql.config import MySQLSinkConfig
from sinks.mysql.sink import MySQLSinkPipeline
from sinks.postgres.config import PostgresSinkConfig
from sinks.postgres.sink import PostgresSinkPipeline
from sinks.sql.rows import RowBuilder
from sinks.sql.table import Column, TableInfo

TOPIC = "bench-sql"
PARTITIONS = 4
FIELDS = ("id", "user", "amount", "msg")
COLUMNS = ("topic", "partition", "offset", *FIELDS, "pt")
MYSQL_DB = "etl_bench"


def value(i: int) -> bytes:
    return json.dumps(
        {"id": i, "user": f"user-{i % 977}", "amount": i % 1000, "msg": "x" * 60}
    ).encode()


async def fill(bootstrap: str, messages: int) -> list[Any]:
    """Produce the messages; return them as consumed records (to build the bare rows)."""
    await create_topic(bootstrap, TOPIC, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(TOPIC, value(i), str(i).encode()) for i in range(messages)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return await read_all(bootstrap, TOPIC, timeout=120)


def bare_rows(records: list[Any], config: Any) -> list[tuple[Any, ...]]:
    """The rows the sink writes for these records, as a plain client would build them."""
    builder = RowBuilder(config, native_scalars=config.type == "mysql")
    table = TableInfo("t", [Column(c) for c in COLUMNS])
    return [tuple(builder.build(r, table).values[c] for c in COLUMNS) for r in records]


def settings_for(bootstrap: str) -> ETLSettings:
    return pipeline_settings(bootstrap, prefix="bench")


def sink_options(table: str, batch: int) -> dict[str, Any]:
    return {
        "name": f"bench-{table}".replace("_", "-"),
        "topics": [TOPIC],
        "table": table,
        "format": "FLATTEN",
        "mode": "VALUE",
        "start_offset": "earliest",
        "batch_size": batch,
        "linger_ms": 200,
    }


async def kafka_loop(bootstrap: str, messages: int, batch: int, write: Any) -> float:
    """Rows/s of a bare aiokafka loop that hands ``batch``-row lists to ``write``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pt = time.strftime("%m-%d-%Y %H", time.gmtime())
        rows: list[tuple[Any, ...]] = []
        seen = 0
        started = time.perf_counter()
        while seen < messages:
            polled = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in polled.values():
                for r in records:
                    d = json.loads(r.value)
                    rows.append(
                        (
                            r.topic,
                            r.partition,
                            r.offset,
                            d["id"],
                            d["user"],
                            d["amount"],
                            d["msg"],
                            pt,
                        )
                    )
                seen += len(records)
            while len(rows) >= batch or (rows and seen >= messages):
                await write(rows[:batch])
                del rows[:batch]
        return messages / (time.perf_counter() - started)
    finally:
        await consumer.stop()


# ---- PostgreSQL ---------------------------------------------------------------------------

PG_TABLE = (
    'CREATE TABLE {} (topic TEXT, "partition" INTEGER, "offset" BIGINT, id BIGINT, '
    '"user" TEXT, amount BIGINT, msg TEXT, pt TEXT)'
)


def pg_copy(conn: Any, table: str) -> Any:
    """A bare psycopg COPY of a list of rows in one transaction."""
    copy_sql = psycopg.sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg.sql.Identifier(table),
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, COLUMNS)),
    )

    async def write(rows: list[tuple[Any, ...]]) -> None:
        async with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in rows:
                await copy.write_row(row)

    return write


async def pg_bare(dsn: str, table: str, rows: list[tuple[Any, ...]], batch: int) -> float:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    write = pg_copy(conn, table)
    try:
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            await write(rows[start : start + batch])
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def pg_loop(dsn: str, bootstrap: str, table: str, messages: int, batch: int) -> float:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        return await kafka_loop(bootstrap, messages, batch, pg_copy(conn, table))
    finally:
        await conn.close()


async def bench_postgres(
    dsn: str, bootstrap: str, records: list[Any], rounds: int, batch: int
) -> tuple[float, float, float]:
    base = {"type": "postgres", "dsn": dsn, "sslmode": "disable"}
    rows = bare_rows(
        records, PostgresSinkConfig.model_validate({**base, **sink_options("t", batch)})
    )
    best_bare = best_ours = best_loop = 0.0
    with psycopg.connect(dsn, autocommit=True) as admin:
        for _ in range(rounds):
            table = f"bare_{uuid.uuid4().hex[:8]}"
            admin.execute(PG_TABLE.format(table))  # type: ignore[arg-type]
            best_bare = max(best_bare, await pg_bare(dsn, table, rows, batch))
            table = f"loop_{uuid.uuid4().hex[:8]}"
            admin.execute(PG_TABLE.format(table))  # type: ignore[arg-type]
            rate = await pg_loop(dsn, bootstrap, table, len(records), batch)
            best_loop = max(best_loop, rate)
            table = f"ours_{uuid.uuid4().hex[:8]}"
            admin.execute(PG_TABLE.format(table))  # type: ignore[arg-type]
            config = PostgresSinkConfig.model_validate({**base, **sink_options(table, batch)})
            rate = await sink_rate(
                PostgresSinkPipeline, config, settings_for(bootstrap), len(records), poll=0.002
            )
            best_ours = max(best_ours, rate)
            count = admin.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
            assert count is not None and count[0] == len(records), count
    return best_bare, best_ours, best_loop


# ---- MySQL ----------------------------------------------------------------------------------

MYSQL_TABLE = (
    "CREATE TABLE {} (topic VARCHAR(255), `partition` INT, `offset` BIGINT, id BIGINT, "
    "`user` TEXT, amount BIGINT, msg TEXT, pt VARCHAR(32)) ENGINE=InnoDB"
)


def mysql_connect(address: dict[str, Any]) -> Any:
    return pymysql.connect(**address, database=MYSQL_DB, autocommit=True)


def mysql_insert(conn: Any, table: str) -> Any:
    """A bare PyMySQL multi-row executemany of a list of rows in one transaction."""
    names = ", ".join(f"`{c}`" for c in COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    query = f"INSERT INTO `{table}` ({names}) VALUES ({marks})"  # noqa: S608

    def write(rows: list[tuple[Any, ...]]) -> None:
        conn.begin()
        with conn.cursor() as cur:
            cur.executemany(query, rows)
        conn.commit()

    return write


def mysql_bare(
    address: dict[str, Any], table: str, rows: list[tuple[Any, ...]], batch: int
) -> float:
    conn = mysql_connect(address)
    write = mysql_insert(conn, table)
    try:
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            write(rows[start : start + batch])
        return len(rows) / (time.perf_counter() - started)
    finally:
        conn.close()


async def mysql_loop(
    address: dict[str, Any], bootstrap: str, table: str, messages: int, batch: int
) -> float:
    conn = mysql_connect(address)
    insert = mysql_insert(conn, table)

    async def write(rows: list[tuple[Any, ...]]) -> None:
        insert(rows)  # a plain loop blocks on the driver

    try:
        return await kafka_loop(bootstrap, messages, batch, write)
    finally:
        conn.close()


async def bench_mysql(
    address: dict[str, Any], bootstrap: str, records: list[Any], rounds: int, batch: int
) -> tuple[float, float, float]:
    auth = address["user"] + (f":{address['password']}" if address["password"] else "")
    dsn = f"mysql://{auth}@{address['host']}:{address['port']}/{MYSQL_DB}"
    base = {"type": "mysql", "dsn": dsn, "ssl_mode": "disabled"}
    rows = bare_rows(records, MySQLSinkConfig.model_validate({**base, **sink_options("t", batch)}))
    best_bare = best_ours = best_loop = 0.0
    admin = mysql_connect(address)
    try:
        for _ in range(rounds):
            table = f"bare_{uuid.uuid4().hex[:8]}"
            with admin.cursor() as cur:
                cur.execute(MYSQL_TABLE.format(table))
            best_bare = max(best_bare, mysql_bare(address, table, rows, batch))
            table = f"loop_{uuid.uuid4().hex[:8]}"
            with admin.cursor() as cur:
                cur.execute(MYSQL_TABLE.format(table))
            rate = await mysql_loop(address, bootstrap, table, len(records), batch)
            best_loop = max(best_loop, rate)
            table = f"ours_{uuid.uuid4().hex[:8]}"
            with admin.cursor() as cur:
                cur.execute(MYSQL_TABLE.format(table))
            config = MySQLSinkConfig.model_validate({**base, **sink_options(table, batch)})
            rate = await sink_rate(
                MySQLSinkPipeline, config, settings_for(bootstrap), len(records), poll=0.002
            )
            best_ours = max(best_ours, rate)
            with admin.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM `{table}`")  # noqa: S608
                assert cur.fetchone()[0] == len(records)
    finally:
        admin.close()
    return best_bare, best_ours, best_loop


# ---- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(only: str | None) -> Iterator[tuple[str, str | None, dict[str, Any] | None]]:
    """(kafka bootstrap, postgres dsn, mysql address), started here unless given."""
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("ETL_TEST_KAFKA")
        if not bootstrap:
            broker = EmbeddedBroker().start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap_servers
        dsn = None
        if only in (None, "postgres"):
            dsn = os.environ.get("ETL_TEST_POSTGRES_DSN")
            if not dsn:
                pg = PostgresServer().start()
                stack.callback(pg.stop)
                dsn = pg.dsn
        address: dict[str, Any] | None = None
        if only in (None, "mysql"):
            external = os.environ.get("ETL_TEST_MYSQL_DSN")
            if external:
                parts = urlsplit(external)
                address = {
                    "host": parts.hostname,
                    "port": parts.port or 3306,
                    "user": parts.username or "root",
                    "password": parts.password or "",
                }
            else:
                maria = MariaDBServer().start()
                stack.callback(maria.stop)
                address = {
                    "host": maria.host,
                    "port": maria.port,
                    "user": maria.user,
                    "password": maria.password,
                }
            conn = pymysql.connect(**address)
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DB}")
            conn.close()
        yield bootstrap, dsn, address


def report(name: str, rates: tuple[float, float, float], target: float, baseline: str) -> None:
    bare, ours_rate, loop = rates
    # The target is against the bare-library loop (aiokafka + the bare driver write,
    # same process, same data), as every benchmark here; the in-memory write of
    # pre-built rows is printed too, to show what reading Kafka in Python costs.
    print(
        f"{name}: ours {ours_rate:,.0f} rows/s | bare aiokafka + {baseline} loop"
        f" {loop:,.0f} rows/s -> ratio {ours_rate / loop:.2f} (target >= {target})"
        f" | {baseline} of pre-built rows from memory {bare:,.0f} rows/s"
        f" -> ratio {ours_rate / bare:.2f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    parser.add_argument("--only", choices=("postgres", "mysql"))
    args = parser.parse_args()
    with servers(args.only) as (bootstrap, dsn, address):
        records = await fill(bootstrap, args.messages)
        print(f"messages: {len(records):,} in {PARTITIONS} partitions; batch {args.batch} rows")
        if dsn:
            rates = await bench_postgres(dsn, bootstrap, records, args.rounds, args.batch)
            report("postgres", rates, 0.7, "psycopg COPY")
        if address:
            rates = await bench_mysql(address, bootstrap, records, args.rounds, args.batch)
            report("mysql", rates, 0.8, "PyMySQL executemany")


if __name__ == "__main__":
    asyncio.run(main())
