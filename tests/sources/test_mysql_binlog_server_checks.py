"""Preflight against servers that are not set up for the source, and the row decoder.

A second MariaDB runs without the binlog and with STATEMENT format, MINIMAL row
image and MINIMAL row metadata: the source must name each problem and its fix,
fail, and leave the event loop (the worker) running.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from etl.sources.mysql_binlog.rowcodec import RowDecoder
from etl.testing.ports import reserve_port
from etl.testing.servers import MariaDBServer
from tests.sources.helpers import BinlogServer, running_source, source_options

pytestmark = [pytest.mark.kafka, pytest.mark.mysql]


class MisconfiguredServer(MariaDBServer):
    """MariaDB with every binlog setting the source needs turned the wrong way."""

    def _argv(self) -> list[str]:
        argv = [
            arg
            for arg in super()._argv()
            if not arg.startswith(("--log-bin", "--binlog-format", "--binlog-row"))
        ]
        return [
            *argv,
            "--skip-log-bin",
            "--binlog-format=STATEMENT",
            "--binlog-row-image=MINIMAL",
            "--binlog-row-metadata=MINIMAL",
            "--log-bin-compress=ON",
        ]


@pytest.fixture(scope="module")
def misconfigured() -> Iterator[BinlogServer]:
    server = MisconfiguredServer().start()
    try:
        wrapper = BinlogServer(server, server.host, server.port)
        wrapper.execute("CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY)")
        yield wrapper
    finally:
        server.stop()


async def test_wrong_binlog_settings_are_each_reported(
    kafka_bootstrap: str, misconfigured: BinlogServer, uid: str
) -> None:
    options = source_options(misconfigured, "shop", uid, tables="t,missing", user="root")
    options.pop("password")
    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "failed"
        error = source.status.error or ""
    assert "the binlog is off (log_bin=OFF)" in error
    assert "binlog_format is STATEMENT, must be ROW" in error
    assert "binlog_row_image is MINIMAL, must be FULL" in error
    assert "binlog_row_metadata is MINIMAL, must be FULL" in error
    assert "log_bin_compress is ON" in error
    assert "tables not found in database 'shop': missing (existing tables: t)" in error


async def test_unreachable_server_is_retried_not_failed_for_good(
    kafka_bootstrap: str, uid: str
) -> None:
    closed = BinlogServer(None, "127.0.0.1", reserve_port())
    options = source_options(closed, "shop", uid, tables="t", connect_timeout_s=1)
    async with running_source(kafka_bootstrap, options, wait="failed") as source:
        error = source.status.error or ""
        assert error.startswith("retrying:") and "Can't connect" in error
        assert not source._finished.is_set()  # still trying


def _decode_all(server: BinlogServer, start: str, fast: bool) -> list[Any]:
    file, pos = start.rsplit(":", 1)
    stream = BinLogStreamReader(
        {"host": server.host, "port": server.port, "user": "root", "passwd": ""},
        server_id=777,
        blocking=False,
        resume_stream=True,
        log_file=file,
        log_pos=int(pos),
        only_events=[TableMapEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False,
    )
    out: list[Any] = []
    decoder: RowDecoder | None = None
    try:
        for event in stream:
            if isinstance(event, TableMapEvent):
                decoder = RowDecoder.for_columns(event.columns)
                assert decoder is not None or not fast
                continue
            rows = decoder.rows(event) if fast and decoder else event.rows
            assert decoder is None or decoder.fallbacks == 0
            out.append([{k: v for k, v in r.items() if "none_sources" not in k} for r in rows])
    finally:
        stream.close()
    return out


def test_row_decoder_gives_the_librarys_values(binlog_server: BinlogServer, database: str) -> None:
    server = binlog_server
    table = f"`{database}`.fast"
    server.execute(
        f"CREATE TABLE {table} (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, "
        "si SMALLINT, mi MEDIUMINT, miu MEDIUMINT UNSIGNED, bu BIGINT UNSIGNED, bs BIGINT, "
        "f FLOAT, d DOUBLE, d1 DECIMAL(12,4), d2 DECIMAL(30,10), d3 DECIMAL(5,0), "
        "d4 DECIMAL(4,4), dt DATETIME(3), dt0 DATETIME, dt6 DATETIME(6), ts TIMESTAMP(6) NULL, "
        "ts0 TIMESTAMP NULL, da DATE, y YEAR, ch CHAR(3), vc VARCHAR(10), vl VARCHAR(300), "
        "vb VARBINARY(10), bi BINARY(4), tx TEXT, bl BLOB, lt LONGTEXT, "
        "u VARCHAR(5) CHARACTER SET utf8mb4, e ENUM('a','b'), s SET('x','y','z'), "
        "b1 BIT(1), b9 BIT(9), b64 BIT(64), t0 TIME, t2 TIME(2), t6 TIME(6), g GEOMETRY)"
    )
    start = server.position()
    server.execute(
        f"INSERT INTO {table} VALUES (1, -5, 250, -300, -8000000, 16000000, "
        "18446744073709551615, -9223372036854775808, 1.1, 2.2, -12.5, "
        "12345678901234567890.0123456789, 99999, -0.1234, '2024-01-02 03:04:05.123', "
        "'1999-12-31 23:59:59', '2024-01-02 03:04:05.000001', '2024-01-02 03:04:05.123456', "
        "'2038-01-19 03:14:07', '2024-02-29', 2024, 'ab', 'héllo', REPEAT('x', 300), 0x00ff, "
        "0x01020304, 'text', 0xdeadbeef, 'long', '😀', 'b', 'z,x', b'1', b'100000001', "
        "b'1111111111111111111111111111111111111111111111111111111111111111', '-838:59:58', "
        "'-01:02:03.25', '12:34:56.000001', ST_GeomFromText('POINT(1 2)')), "
        "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL, NULL, NULL, NULL, '0000-00-00', NULL, '', '', '', '', NULL, '', '', "
        "NULL, NULL, NULL, '', b'0', NULL, b'0', '00:00:00', '-00:00:00.01', NULL, NULL), "
        "(3, 1, 2, 3, 4, 5, 6, 7, -0.5, -1e300, 0.0001, -0.0000000001, -1, 0.0001, "
        "'0000-00-00 00:00:00', '9999-12-31 23:59:59', '1000-01-01 00:00:00.5', NULL, "
        "'1970-01-01 00:00:01', '1000-01-01', 1901, 'x', 'y', 'z', X'', X'', '', '', '', '', "
        "'a', 'y', NULL, b'000000001', NULL, '838:59:59', '23:59:59.99', '-12:00:00.5', NULL)",
        f"UPDATE {table} SET vc = 'changed', d1 = d1 + 1",
        f"DELETE FROM {table} WHERE id = 3",
    )
    library = _decode_all(server, start, fast=False)
    ours = _decode_all(server, start, fast=True)
    assert [len(rows) for rows in library] == [3, 3, 1]
    assert ours == library
