"""Rows per second from the binlog into Kafka, against a bare ``BinLogStreamReader`` loop.

Starts a throwaway MariaDB (binlog on) and an embedded broker, writes the same
rows once, then reads that stretch of binlog with

* ``bare``: ``for event in BinLogStreamReader(...): len(event.rows)``, decoding
  every row and doing nothing with it;
* ``ours``: the ``mysql_binlog`` source from the first to the last event, timed
  until the broker acknowledged the last transaction;
* ``ours-library-decoder``: the same with the source's row decoder switched off,
  so rows are decoded by ``pymysqlreplication`` itself, as in ``bare``;

alternately, ``--rounds`` times each, and prints the best rate of each and the ratios.

    python -m bench.binlog_source [--rows 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from etl.config import ETLSettings
from etl.embedded import EmbeddedBroker
from etl.sources.mysql_binlog import rowcodec
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.position import BinlogPosition
from etl.sources.mysql_binlog.source import MySQLBinlogSource
from etl.testing.servers import MariaDBServer

DATABASE = "bench"
ROWS_PER_TX = 500


def fill(server: MariaDBServer, rows: int) -> tuple[BinlogPosition, BinlogPosition]:
    """Create the table, insert ``rows`` rows; return the binlog stretch they occupy."""
    conn = pymysql.connect(host=server.host, port=server.port, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cur.execute(
            f"CREATE TABLE {DATABASE}.orders (id BIGINT PRIMARY KEY, customer VARCHAR(64), "
            "qty INT, price DECIMAL(10,2), status VARCHAR(16), created DATETIME)"
        )
        cur.execute("SHOW MASTER STATUS")
        first = cur.fetchone()
        for start in range(0, rows, ROWS_PER_TX):
            values = ",".join(
                f"({i}, 'customer-{i % 977}', {i % 50}, {i % 1000}.25, 'new', NOW())"
                for i in range(start, min(rows, start + ROWS_PER_TX))
            )
            cur.execute(f"INSERT INTO {DATABASE}.orders VALUES {values}")
        cur.execute("SHOW MASTER STATUS")
        last = cur.fetchone()
    conn.close()
    assert first is not None and last is not None
    return BinlogPosition(first[0], int(first[1])), BinlogPosition(last[0], int(last[1]))


def bare_loop(server: MariaDBServer, start: BinlogPosition) -> tuple[int, float]:
    """Decode every row of the stretch with the library alone; (rows, seconds)."""
    stream = BinLogStreamReader(
        {"host": server.host, "port": server.port, "user": "root", "passwd": ""},
        server_id=4242,
        blocking=False,
        resume_stream=True,
        log_file=start.file,
        log_pos=start.pos,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False,
    )
    rows = 0
    began = time.perf_counter()
    for event in stream:
        rows += len(event.rows)
    elapsed = time.perf_counter() - began
    stream.close()
    return rows, elapsed


async def our_source(
    server: MariaDBServer, bootstrap: str, start: BinlogPosition, end: BinlogPosition, run: int
) -> tuple[int, float]:
    """The source from ``start`` until the position ``end`` is acknowledged; (rows, seconds)."""
    settings = ETLSettings.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, "enable_idempotence": False}}
    )
    config = MySQLBinlogSourceConfig(
        name=f"bench-{run}",
        type="mysql_binlog",
        host=server.host,
        port=server.port,
        user="root",
        database=DATABASE,
        tables=["orders"],
        topic_prefix=f"bench{run}",
        start=f"{start.file}:{start.pos}",
        server_id=5000 + run,
        ssl=False,
    )
    source = MySQLBinlogSource(config, settings=settings)
    await source.start()
    began: float | None = None
    try:
        while True:
            if source.status.state == "running" and began is None:
                began = time.perf_counter()
            if source.status.state == "failed":
                raise RuntimeError(source.status.error)
            acked = source.acked
            if acked is not None and acked.order >= end.order:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - (began or time.perf_counter())
        return source.status.consumed, elapsed
    finally:
        await source.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    server = MariaDBServer().start()
    broker = EmbeddedBroker().start()
    try:
        start, end = fill(server, args.rows)
        rates: dict[str, list[float]] = {"bare": [], "ours": [], "ours-library-decoder": []}
        runs = 0
        for run in range(args.rounds):
            for variant in rates:
                runs += 1
                if variant == "bare":
                    rows, seconds = bare_loop(server, start)
                else:
                    rowcodec.ENABLED = variant == "ours"
                    result: Any = asyncio.run(
                        our_source(server, broker.bootstrap_servers, start, end, runs)
                    )
                    rows, seconds = result
                    rowcodec.ENABLED = True
                rates[variant].append(rows / seconds)
                print(
                    f"{variant:<21} round {run + 1}: {rows} rows in {seconds:.2f}s "
                    f"= {rows / seconds:,.0f}/s"
                )
        best = {variant: max(values) for variant, values in rates.items()}
        print(
            f"binlog->kafka rows/s: ours {best['ours']:,.0f}, with the library's row decoder "
            f"{best['ours-library-decoder']:,.0f}; bare BinLogStreamReader {best['bare']:,.0f}"
        )
        print(
            f"ratio ours/bare {best['ours'] / best['bare']:.2f} (target >= 0.8); "
            f"library-decoder/bare {best['ours-library-decoder'] / best['bare']:.2f}"
        )
    finally:
        broker.stop()
        server.stop()


if __name__ == "__main__":
    main()
