"""The initial snapshot: the rows that exist before the source starts, read consistently.

The snapshot reads every published table inside one ``START TRANSACTION WITH
CONSISTENT SNAPSHOT``. On MariaDB the server reports the binlog position of exactly
that snapshot (``binlog_snapshot_file``/``binlog_snapshot_position``), so streaming
continues from there with nothing missed or repeated. On MySQL, which does not
report it without a global lock, the position is read just before the snapshot
starts: changes made while it starts may be published twice (at-least-once).

Each existing row becomes an ``INSERT`` event (``before`` null) with the Kafka
header ``etl.snapshot: true``; their sequence ids are below every binlog event
after the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.cursors

from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import connect
from etl.sources.mysql_binlog.envelope import TableShape
from etl.sources.mysql_binlog.position import BinlogPosition
from etl.sources.mysql_binlog.preflight import binlog_end, quote_ident
from etl.sources.mysql_binlog.types import ValueConverters, column_from_schema

SNAPSHOT_HEADERS = [("etl.snapshot", b"true")]


def primary_key_columns(cursor: Any, database: str, table: str) -> tuple[str, ...]:
    """The table's primary-key columns in key order (empty without a primary key)."""
    cursor.execute(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' "
        "ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    return tuple(str(row[0]) for row in cursor.fetchall())


def shape_from_schema(
    cursor: Any, database: str, table: str, converters: ValueConverters
) -> TableShape | None:
    """The table as ``information_schema`` describes it now (None if it does not exist)."""
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, DATETIME_PRECISION "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    rows = cursor.fetchall()
    if not rows:
        return None
    columns = tuple(
        column_from_schema(
            str(name), str(data_type), str(column_type), charset, precision, converters
        )
        for name, data_type, column_type, charset, precision in rows
    )
    return TableShape(database, table, columns, primary_key_columns(cursor, database, table))


class SnapshotReader:
    """One consistent read of the published tables (blocking; runs in the reader thread)."""

    def __init__(self, config: MySQLBinlogSourceConfig, converters: ValueConverters) -> None:
        self.config = config
        self.converters = converters
        self.connection: Any = None
        self.position: BinlogPosition | None = None
        self.exact = False

    def begin(self, is_mariadb: bool) -> BinlogPosition:
        """Open the snapshot transaction; returns the binlog position it corresponds to."""
        conn = connect(self.config, autocommit=False)
        self.connection = conn
        cursor = conn.cursor()
        # TIMESTAMP values arrive in UTC, as the binlog has them.
        cursor.execute("SET SESSION time_zone = '+00:00'")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        before = None if is_mariadb else binlog_end(cursor)
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        position = before
        if is_mariadb:
            cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {str(name).lower(): str(value) for name, value in cursor.fetchall()}
            if status.get("binlog_snapshot_file"):
                position = BinlogPosition(
                    status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
                )
                self.exact = True
        if position is None:
            position = binlog_end(cursor)
        if position is None:
            raise RuntimeError("cannot read the binlog position of the snapshot")
        cursor.close()
        self.position = position
        return position

    def tables(self) -> list[str]:
        """Base tables of the database that the source publishes, by name."""
        cursor = self.connection.cursor()
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (self.config.database,),
        )
        selector = self.config.selector()
        names = [str(row[0]) for row in cursor.fetchall() if selector(str(row[0]))]
        cursor.close()
        return names

    def shape(self, table: str) -> TableShape | None:
        """The table's columns and primary key."""
        cursor = self.connection.cursor()
        try:
            return shape_from_schema(cursor, self.config.database, table, self.converters)
        finally:
            cursor.close()

    def rows(self, shape: TableShape) -> Iterator[dict[str, Any]]:
        """Every row of the table as of the snapshot, streamed (not held in memory)."""
        names = [column.name for column in shape.columns]
        select = ", ".join(quote_ident(name) for name in names)
        # Every identifier is quoted (quote_ident), none is a value.
        table = f"{quote_ident(shape.database)}.{quote_ident(shape.table)}"
        sql = f"SELECT {select} FROM {table}"  # noqa: S608
        cursor = self.connection.cursor(pymysql.cursors.SSCursor)
        try:
            cursor.execute(sql)
            while True:
                chunk = cursor.fetchmany(1000)
                if not chunk:
                    return
                for row in chunk:
                    yield dict(zip(names, row, strict=True))
        finally:
            cursor.close()

    def close(self) -> None:
        """End the snapshot transaction and disconnect."""
        conn, self.connection = self.connection, None
        if conn is not None:
            try:
                conn.rollback()
                conn.close()
            except pymysql.err.MySQLError:
                pass
