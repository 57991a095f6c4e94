"""The PostgreSQL sink on psycopg 3 (async): COPY for inserts, multi-row
``INSERT ... ON CONFLICT`` for upserts, pipelined UPDATE/DELETE for the rest.

Every identifier goes through ``psycopg.sql.Identifier``. Values are sent as
text with the ``unknown`` type, so the server casts them to each column's type
(a CSV field ``"1103"`` lands in a BIGINT column; ``"abc"`` is a rejected row).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from etl.errors import FatalError
from sinks.base import sink_pipeline_factory
from sinks.postgres.config import PostgresSinkConfig
from sinks.sql.table import Column, PlannedColumn, TableInfo
from sinks.sql.writer import ErrorKind, SqlSink, Statement

#: libpq's limit of bind parameters in one statement.
MAX_PARAMS = 65535
LOGICAL_TYPES = {
    "short_text": "TEXT",
    "text": "TEXT",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "binary": "BYTEA",
    "json": "JSONB",
}
#: SQLSTATE classes/codes worth a retry: connection, resources, operator
#: intervention (shutdown), system errors, transaction rollback (deadlock,
#: serialization), lock not available, object in use.
RETRIABLE_CLASSES = ("08", "40", "53", "57", "58")
RETRIABLE_STATES = {"55P03", "55006"}
#: Data exceptions and integrity violations concern the row, not the setup.
RECORD_CLASSES = ("22", "23")
RECORD_STATES = {"54000"}  # program limit exceeded (e.g. an index row too big)
#: Connection failures that retrying cannot fix (libpq gives them no SQLSTATE).
SETUP_ERRORS = (
    "authentication failed",
    "does not exist",
    "no password supplied",
    "certificate",
    "SSL is not enabled",
    "server does not support SSL",
    "no pg_hba.conf entry",
)


def tls_hint(error: str) -> str:
    """The setting that fixes a TLS connection failure, as ``; ...`` (or nothing)."""
    if "server does not support SSL" in error or "SSL is not enabled" in error:
        return (
            "; this server has no TLS: set sslmode: disable on the sink (or sslmode=disable "
            "in its dsn) to connect in plain text"
        )
    if "certificate" in error:
        return (
            "; the server's certificate is not trusted: set sslrootcert to its CA file "
            "(or sslmode: require to encrypt without verifying)"
        )
    return ""


def connection_params(config: PostgresSinkConfig) -> tuple[str, dict[str, Any]]:
    """(conninfo, keyword parameters) for psycopg; TLS verified unless told otherwise."""
    conninfo = config.dsn.get_secret_value() if config.dsn is not None else ""
    given = conninfo_to_dict(conninfo) if conninfo else {}
    params: dict[str, Any] = {}
    for key, value in (
        ("host", config.host),
        ("port", config.port),
        ("user", config.user),
        ("dbname", config.database),
        ("password", config.password.get_secret_value() if config.password else None),
        ("sslrootcert", config.sslrootcert),
        ("sslcert", config.sslcert),
        ("sslkey", config.sslkey),
        ("sslpassword", config.sslpassword.get_secret_value() if config.sslpassword else None),
    ):
        if value is not None:
            params[key] = str(value)
    sslmode = str(config.sslmode or given.get("sslmode") or "verify-full")
    params["sslmode"] = sslmode
    if sslmode.startswith("verify") and "sslrootcert" not in params and "sslrootcert" not in given:
        params["sslrootcert"] = "system"
    params["connect_timeout"] = max(1, math.ceil(config.connect_timeout_s))
    params.setdefault("application_name", config.application_name)
    # Notice a dead server on an idle connection instead of waiting on TCP forever.
    params.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    return conninfo, params


def pid(*names: str) -> sql.Identifier:
    """An identifier for a statement with parameters: psycopg reads every ``%`` of such
    a statement as a placeholder, even inside quotes, so ``%`` is doubled."""
    return sql.Identifier(*(name.replace("%", "%%") for name in names))


class PostgresSink(SqlSink[PostgresSinkConfig]):
    """Writes records into PostgreSQL tables."""

    config_model = PostgresSinkConfig
    native_scalars = False
    split_repeats = frozenset({"upsert"})

    def __init__(self, config: PostgresSinkConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._sql_cache: dict[tuple[Any, ...], sql.Composed] = {}

    # ---- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        conninfo, params = connection_params(self.config)
        try:
            self.conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **params)
        except psycopg.OperationalError as exc:
            text = str(exc)
            if any(marker in text for marker in SETUP_ERRORS):
                text = " ".join(text.split())
                raise FatalError(self.redact(f"cannot connect: {text}{tls_hint(text)}")) from exc
            raise
        info = self.conn.info
        self.log.info(
            "connected sink=%s host=%s port=%s database=%s user=%s",
            self.config.name,
            info.host,
            info.port,
            info.dbname,
            info.user,
        )

    async def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # the connection may already be gone
                self.log.debug("close failed sink=%s error=%r", self.config.name, exc)

    def _conn(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None:
            raise psycopg.OperationalError("not connected")
        return self.conn

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        return self._conn().transaction()

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        # A transaction block inside another is a savepoint in psycopg.
        return self._conn().transaction()

    # ---- tables -------------------------------------------------------------------------

    def ident(self, table: str, *, params: bool = False) -> sql.Identifier:
        """The table's (schema-qualified) identifier; see :func:`pid` for ``params``."""
        schema = self.config.table_schema
        names = (schema, table) if schema else (table,)
        return pid(*names) if params else sql.Identifier(*names)

    async def describe_table(self, name: str) -> TableInfo | None:
        conn = self._conn()
        qualified = self.ident(name).as_string(conn)
        cur = await conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
            " a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''"
            " FROM pg_attribute a WHERE a.attrelid = to_regclass(%s)"
            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (qualified,),
        )
        rows = await cur.fetchall()
        if not rows:
            return None
        return TableInfo(name, [Column(n, t, bool(auto)) for n, t, auto in rows])

    def _column_sql(self, column: PlannedColumn) -> sql.Composable:
        type_sql = column.sql_type or LOGICAL_TYPES[column.logical or "text"]
        parts: list[sql.Composable] = [sql.Identifier(column.name), sql.SQL(type_sql)]
        if not column.nullable:
            parts.append(sql.SQL("NOT NULL"))
        return sql.SQL(" ").join(parts)

    async def create_table(self, name: str, columns: list[PlannedColumn], pk: list[str]) -> None:
        defs = [self._column_sql(c) for c in columns]
        if pk:
            defs.append(
                sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, pk)))
            )
        await self._conn().execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                self.ident(name), sql.SQL(", ").join(defs)
            )
        )

    async def add_columns(self, name: str, columns: list[PlannedColumn]) -> None:
        for column in columns:
            await self._conn().execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(
                    self.ident(name), self._column_sql(column)
                )
            )

    async def unique_keys(self, name: str) -> list[set[str]]:
        conn = self._conn()
        cur = await conn.execute(
            "SELECT i.indexrelid, a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = to_regclass(%s) AND i.indisunique",
            (self.ident(name).as_string(conn),),
        )
        keys: dict[int, set[str]] = {}
        for index, column in await cur.fetchall():
            keys.setdefault(index, set()).add(column)
        return list(keys.values())

    # ---- writing ------------------------------------------------------------------------

    async def execute(self, statement: Statement) -> None:
        conn = self._conn()
        if statement.kind == "insert":
            await self._copy(conn, statement)
        elif statement.kind == "upsert":
            await self._upsert(conn, statement)
        elif statement.kind == "update":
            await self._update(conn, statement)
        else:
            await self._delete(conn, statement)

    async def _copy(self, conn: psycopg.AsyncConnection[Any], statement: Statement) -> None:
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(
            self.ident(statement.table), sql.SQL(", ").join(map(sql.Identifier, statement.columns))
        )
        columns = statement.columns
        # itemgetter builds the row tuple in C; with one column it returns the bare value.
        row: Callable[[dict[str, Any]], Any] = (
            itemgetter(*columns) if len(columns) > 1 else lambda values: (values[columns[0]],)
        )
        async with conn.cursor() as cur, cur.copy(query) as copy:
            for op in statement.ops:
                await copy.write_row(row(op.values))

    def _upsert_sql(self, statement: Statement, rows: int) -> sql.Composed:
        key = ("upsert", statement.table, statement.columns, statement.pk, rows)
        cached = self._sql_cache.get(key)
        if cached is not None:
            return cached
        row = sql.SQL("({})").format(
            sql.SQL(", ").join([sql.Placeholder()] * len(statement.columns))
        )
        updates = [c for c in statement.columns if c not in statement.pk]
        action: sql.Composable
        if updates:
            action = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(pid(c)) for c in updates)
            )
        else:
            action = sql.SQL("DO NOTHING")
        query = sql.SQL("INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) {}").format(
            self.ident(statement.table, params=True),
            sql.SQL(", ").join(map(pid, statement.columns)),
            sql.SQL(", ").join([row] * rows),
            sql.SQL(", ").join(map(pid, statement.pk)),
            action,
        )
        if len(self._sql_cache) > 256:
            self._sql_cache.clear()
        self._sql_cache[key] = query
        return query

    async def _upsert(self, conn: psycopg.AsyncConnection[Any], statement: Statement) -> None:
        rows = statement.rows()
        per_statement = max(1, MAX_PARAMS // len(statement.columns))
        async with conn.cursor() as cur:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                params = [value for row in chunk for value in row]
                await cur.execute(self._upsert_sql(statement, len(chunk)), params)

    async def _update(self, conn: psycopg.AsyncConnection[Any], statement: Statement) -> None:
        sets = [c for c in statement.columns if c not in statement.pk]
        if not sets:
            return  # only the key: nothing to change
        query = sql.SQL("UPDATE {} SET {} WHERE {}").format(
            self.ident(statement.table, params=True),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(pid(c)) for c in sets),
            self._key_match(statement.pk),
        )
        order = sets + list(statement.pk)
        params = [[op.values[c] for c in order] for op in statement.ops]
        async with conn.cursor() as cur:
            await cur.executemany(query, params)

    async def _delete(self, conn: psycopg.AsyncConnection[Any], statement: Statement) -> None:
        query = sql.SQL("DELETE FROM {} WHERE {}").format(
            self.ident(statement.table, params=True), self._key_match(statement.pk)
        )
        params = [[op.values[c] for c in statement.pk] for op in statement.ops]
        async with conn.cursor() as cur:
            await cur.executemany(query, params)

    @staticmethod
    def _key_match(pk: tuple[str, ...]) -> sql.Composable:
        return sql.SQL(" AND ").join(sql.SQL("{} = %s").format(pid(c)) for c in pk)

    # ---- errors -------------------------------------------------------------------------

    def classify(self, exc: BaseException) -> ErrorKind | None:
        if not isinstance(exc, psycopg.Error):
            return None
        state = exc.sqlstate or ""
        if state[:2] in RECORD_CLASSES or state in RECORD_STATES:
            return "record"
        if state[:2] in RETRIABLE_CLASSES or state in RETRIABLE_STATES:
            return "retriable"
        if not state:
            if isinstance(exc, psycopg.DataError):  # raised by psycopg itself, e.g. NUL in text
                return "record"
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                return "retriable"  # connection lost or refused
        if self.conn is None or self.conn.broken or self.conn.closed:
            return "retriable"
        return "fatal"


PostgresSinkPipeline = sink_pipeline_factory(PostgresSink)
