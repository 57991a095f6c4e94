"""The MySQL / MariaDB sink on PyMySQL: multi-row ``INSERT`` (``... ON DUPLICATE KEY
UPDATE`` for upserts), as large as the server's ``max_allowed_packet`` allows.

PyMySQL is blocking, so every call runs on one thread of the sink's own (so the
connection is never used by two threads at once) and the event loop never waits
on the database. Identifiers are quoted with backticks (doubled inside); values
are escaped as PyMySQL escapes them; in the statements PyMySQL %-formats (UPDATE,
DELETE by key) ``%`` in identifiers is doubled. The session runs in strict mode so
that a bad value is a rejected row, never silently truncated.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import pymysql
import pymysql.err
from pymysql import converters
from pymysql.constants import SERVER_STATUS

from etl.errors import FatalError
from sinks.base import sink_pipeline_factory
from sinks.mysql.config import MySQLSinkConfig
from sinks.sql.table import Column, PlannedColumn, TableInfo
from sinks.sql.writer import ErrorKind, SqlSink, Statement

T = TypeVar("T")

#: Logical column types; a text column in a primary key needs a length in MySQL.
LOGICAL_TYPES = {
    "short_text": "VARCHAR(255)",
    "text": "LONGTEXT",
    "int": "INT",
    "bigint": "BIGINT",
    "binary": "LONGBLOB",
    "json": "JSON",
}
KEY_TYPES = {"text": "VARCHAR(255)", "binary": "VARBINARY(255)", "json": "VARCHAR(255)"}
#: Server/client error numbers worth a retry: too many connections, shutdown, lock
#: wait timeout, deadlock, interrupted, killed, network errors, lost connection.
RETRIABLE_ERRNOS = {
    1040, 1053, 1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161,
    1205, 1213, 1317, 1927, 2002, 2003, 2006, 2013, 2055,
}  # fmt: skip
#: Errors about the row's data: null in NOT NULL, duplicate key, out of range,
#: truncated, incorrect value, too long, foreign key, no default, bad JSON, CHECK.
RECORD_ERRNOS = {
    1048, 1062, 1263, 1264, 1265, 1292, 1364, 1366, 1367, 1406, 1411, 1416,
    1451, 1452, 1690, 3140, 3819, 4025, 4078,
}  # fmt: skip
#: Connection failures retrying cannot fix: access denied, unknown database, TLS.
SETUP_ERRNOS = {1044, 1045, 1049, 1251, 2026, 2059}
#: ER_DUP_FIELDNAME: ADD COLUMN of a column the table already has.
DUPLICATE_COLUMN = 1060
RECORD_CLASSES = (pymysql.err.DataError, pymysql.err.IntegrityError)


def quote(name: str) -> str:
    """A backtick-quoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def quote_fmt(name: str) -> str:
    """A quoted identifier for a statement PyMySQL %-formats (with parameters)."""
    return quote(name).replace("%", "%%")


def literal_writer(conn: Any) -> Callable[[Any], str]:
    """A value as an SQL literal, as PyMySQL escapes it, with fast paths for the common
    types (a multi-row INSERT is mostly this)."""
    escape = conn.escape
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return escape  # type: ignore[no-any-return]
    escape_string = converters.escape_string

    def literal(value: Any) -> str:
        kind = value.__class__
        if kind is str:
            return "'" + escape_string(value) + "'"
        if value is None:
            return "NULL"
        if kind is int:
            return str(value)
        return escape(value)  # type: ignore[no-any-return]

    return literal


def ssl_context(config: MySQLSinkConfig, mode: str) -> ssl.SSLContext | None:
    """The TLS context of an ssl_mode; None for ``disabled``/``preferred``."""
    if mode in ("disabled", "preferred"):
        return None
    ca = str(config.ssl_ca) if config.ssl_ca else None
    context = ssl.create_default_context(cafile=ca)
    if mode == "required":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify_ca":
        context.check_hostname = False
    if config.ssl_cert:
        context.load_cert_chain(
            str(config.ssl_cert), str(config.ssl_key) if config.ssl_key else None
        )
    return context


def connect_kwargs(config: MySQLSinkConfig) -> dict[str, Any]:
    """Keyword arguments of ``pymysql.connect`` (TLS verified unless told otherwise)."""
    address = config.address()
    mode = config.ssl_mode or address.options.get("ssl_mode") or "verify_identity"
    kwargs: dict[str, Any] = {
        "host": address.host,
        "port": address.port,
        "user": address.user or "root",
        "password": address.password or "",
        "database": address.database,
        "charset": address.options.get("charset", config.charset),
        "autocommit": True,
        "connect_timeout": config.connect_timeout_s,
        "read_timeout": config.statement_timeout_s,
        "write_timeout": config.statement_timeout_s,
        # Strict mode: a bad value is an error (a rejected row), not a silent truncation.
        "init_command": "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, "
        "'STRICT_ALL_TABLES')",
    }
    context = ssl_context(config, mode)
    if context is not None:
        kwargs["ssl"] = context
    elif mode == "disabled":
        kwargs["ssl_disabled"] = True
    return kwargs


class MySQLSink(SqlSink[MySQLSinkConfig]):
    """Writes records into MySQL / MariaDB tables."""

    config_model = MySQLSinkConfig
    native_scalars = True

    def __init__(self, config: MySQLSinkConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.conn: pymysql.connections.Connection[Any] | None = None
        #: Longest INSERT in characters: a quarter of max_allowed_packet (4 bytes a char).
        self._max_statement = 1 << 20
        self._executor: ThreadPoolExecutor | None = None
        self._savepoints = 0

    def identifier_too_long(self, name: str) -> bool:
        return len(name) > 64

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sink-{self.config.name}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _conn(self) -> pymysql.connections.Connection[Any]:
        if self.conn is None:
            raise pymysql.err.InterfaceError(0, "not connected")
        return self.conn

    def _sql(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self._conn().cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    # ---- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        # Building the TLS context reads certificate files: not on the event loop.
        kwargs = await self._run(connect_kwargs, self.config)
        try:
            self.conn = await self._run(functools.partial(pymysql.connect, **kwargs))
        except pymysql.err.MySQLError as exc:
            if exc.args and exc.args[0] in SETUP_ERRNOS:
                hint = ""
                if exc.args[0] == 2026:  # CR_SSL_CONNECTION_ERROR
                    hint = (
                        "; for a server without TLS set ssl_mode: disabled on the sink, for a "
                        "private CA set ssl_ca"
                    )
                raise FatalError(self.redact(f"cannot connect: {exc.args[-1]}{hint}")) from exc
            raise
        packet = await self._run(self._sql, "SELECT @@max_allowed_packet")
        self._max_statement = max(1 << 16, min(int(packet[0][0]), 64 << 20) // 4)
        self.log.info(
            "connected sink=%s host=%s port=%s database=%s user=%s",
            self.config.name,
            kwargs["host"],
            kwargs["port"],
            kwargs["database"],
            kwargs["user"],
        )

    async def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await self._run(conn.close)
            except Exception as exc:  # already gone
                self.log.debug("close failed sink=%s error=%r", self.config.name, exc)

    async def close(self) -> None:
        await super().close()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        conn = self._conn()
        await self._run(conn.begin)
        try:
            yield
        except Exception:
            try:
                await self._run(conn.rollback)
            except pymysql.err.MySQLError:
                pass  # the connection is gone; the server rolls back
            raise
        await self._run(conn.commit)

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        return self._transaction()

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"etl_sp_{self._savepoints}"
        await self._run(self._sql, f"SAVEPOINT {name}")
        try:
            yield
        except Exception:
            await self._run(self._sql, f"ROLLBACK TO SAVEPOINT {name}")
            raise
        await self._run(self._sql, f"RELEASE SAVEPOINT {name}")

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        return self._savepoint()

    # ---- tables -------------------------------------------------------------------------

    async def describe_table(self, name: str) -> TableInfo | None:
        rows = await self._run(
            self._sql,
            "SELECT column_name, column_type, column_default, extra"
            " FROM information_schema.columns"
            " WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position",
            (name,),
        )
        if not rows:
            return None
        columns = []
        for column, type_, default, extra in rows:
            extra = (extra or "").lower()
            # MariaDB shows a plain NULL default as the text 'NULL'.
            auto = (default is not None and default != "NULL") or any(
                word in extra for word in ("auto_increment", "generated")
            )
            columns.append(Column(column, type_, auto))
        return TableInfo(name, columns)

    def _column_sql(self, column: PlannedColumn, pk: list[str]) -> str:
        if column.sql_type:
            type_sql = column.sql_type
        else:
            logical = column.logical or "text"
            type_sql = KEY_TYPES.get(logical, "") if column.name in pk else ""
            type_sql = type_sql or LOGICAL_TYPES[logical]
        null = "" if column.nullable else " NOT NULL"
        return f"{quote(column.name)} {type_sql}{null}"

    async def create_table(self, name: str, columns: list[PlannedColumn], pk: list[str]) -> None:
        defs = [self._column_sql(c, pk) for c in columns]
        if pk:
            defs.append(f"PRIMARY KEY ({', '.join(quote(c) for c in pk)})")
        await self._run(
            self._sql,
            f"CREATE TABLE IF NOT EXISTS {quote(name)} ({', '.join(defs)})"
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        )

    async def add_columns(self, name: str, columns: list[PlannedColumn]) -> None:
        for column in columns:
            definition = self._column_sql(column, [])
            await self._run(self._add_column, f"ALTER TABLE {quote(name)} ADD COLUMN {definition}")

    def _add_column(self, query: str) -> None:
        # MySQL has no ADD COLUMN IF NOT EXISTS (only MariaDB has): a column another
        # worker added meanwhile is "duplicate column name", which is fine here.
        try:
            self._sql(query)
        except pymysql.err.MySQLError as exc:
            if not (exc.args and exc.args[0] == DUPLICATE_COLUMN):
                raise

    async def unique_keys(self, name: str) -> list[set[str]]:
        rows = await self._run(
            self._sql,
            "SELECT index_name, column_name FROM information_schema.statistics"
            " WHERE table_schema = DATABASE() AND table_name = %s AND non_unique = 0",
            (name,),
        )
        keys: dict[str, set[str]] = {}
        for index, column in rows:
            keys.setdefault(index, set()).add(column)
        return list(keys.values())

    # ---- writing ------------------------------------------------------------------------

    async def execute(self, statement: Statement) -> None:
        if statement.kind in ("insert", "upsert"):
            await self._run(self._insert, statement)
            return
        query, params = self._keyed_sql(statement)
        if query:
            await self._run(self._executemany, query, params)

    def _insert(self, statement: Statement) -> None:
        """Multi-row INSERT (... ON DUPLICATE KEY UPDATE), as long as the server takes."""
        conn = self._conn()
        columns = statement.columns
        names = ", ".join(quote(c) for c in columns)
        head = f"INSERT INTO {quote(statement.table)} ({names}) VALUES "  # noqa: S608
        tail = ""
        if statement.kind == "upsert":
            updates = [c for c in columns if c not in statement.pk]
            assignments = [f"{quote(c)} = VALUES({quote(c)})" for c in updates] or [
                f"{quote(statement.pk[0])} = {quote(statement.pk[0])}"
            ]
            tail = " ON DUPLICATE KEY UPDATE " + ", ".join(assignments)
        literal = literal_writer(conn)
        parts: list[str] = []
        size = limit = self._max_statement - len(head) - len(tail)
        with conn.cursor() as cur:
            for op in statement.ops:
                values = op.values
                text = "(" + ",".join([literal(values[c]) for c in columns]) + ")"
                if parts and len(text) >= size:
                    cur.execute(head + ",".join(parts) + tail)
                    parts, size = [], limit
                parts.append(text)
                size -= len(text) + 1
            if parts:
                cur.execute(head + ",".join(parts) + tail)

    def _executemany(self, query: str, params: list[tuple[Any, ...]]) -> None:
        with self._conn().cursor() as cur:
            cur.executemany(query, params)

    def _keyed_sql(self, statement: Statement) -> tuple[str, list[tuple[Any, ...]]]:
        """UPDATE or DELETE by key, one statement per row (PyMySQL formats them)."""
        table = quote_fmt(statement.table)
        match = " AND ".join(f"{quote_fmt(c)} = %s" for c in statement.pk)
        if statement.kind == "delete":
            params = [tuple(op.values[c] for c in statement.pk) for op in statement.ops]
            return f"DELETE FROM {table} WHERE {match}", params  # noqa: S608 - quoted
        sets = [c for c in statement.columns if c not in statement.pk]
        if not sets:
            return "", []  # only the key: nothing to change
        order = sets + list(statement.pk)
        params = [tuple(op.values[c] for c in order) for op in statement.ops]
        setters = ", ".join(f"{quote_fmt(c)} = %s" for c in sets)
        return f"UPDATE {table} SET {setters} WHERE {match}", params  # noqa: S608 - quoted

    # ---- errors -------------------------------------------------------------------------

    def classify(self, exc: BaseException) -> ErrorKind | None:
        if isinstance(exc, pymysql.err.InterfaceError):
            return "retriable"  # the connection is closed
        if not isinstance(exc, pymysql.err.MySQLError):
            if isinstance(exc, OSError):  # a socket error outside PyMySQL's wrapping
                return "retriable"
            return None
        errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if errno in RECORD_ERRNOS or isinstance(exc, RECORD_CLASSES):
            return "record"
        if errno in RETRIABLE_ERRNOS or errno >= 2000 or errno == 0:
            return "retriable"
        return "fatal"


MySQLSinkPipeline = sink_pipeline_factory(MySQLSink)
