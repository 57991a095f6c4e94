"""One interface over the PostgreSQL and MariaDB test servers, so each SQL sink test
is written once and runs against both databases."""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar

import psycopg
import pymysql

from etl.config import ETLSettings
from etl.redact import Redactor
from etl.testing.sink_conformance import ConformanceHarness
from sinks.mysql.config import MySQLSinkConfig
from sinks.mysql.sink import MySQLSink
from sinks.postgres.config import PostgresSinkConfig
from sinks.postgres.sink import PostgresSink
from sinks.sql.config import SqlSinkConfig
from sinks.sql.writer import SqlSink

MYSQL_DATABASE = "etl_sinks"


class SqlTarget:
    """A database under test: sink options to reach it, and plain SQL to look inside."""

    def __init__(self, kind: str, options: dict[str, Any], server: Any) -> None:
        self.kind = kind
        self.base_options = options
        self.server = server
        self.json_type = "JSONB" if kind == "postgres" else "JSON"
        self.sink_class: type[SqlSink[Any]] = PostgresSink if kind == "postgres" else MySQLSink
        self.config_class: type[SqlSinkConfig] = (
            PostgresSinkConfig if kind == "postgres" else MySQLSinkConfig
        )

    @classmethod
    def postgres(cls, server: Any) -> SqlTarget:
        return cls(
            "postgres", {"type": "postgres", "dsn": server.dsn, "sslmode": "disable"}, server
        )

    @classmethod
    def mysql(cls, server: Any) -> SqlTarget:
        conn = pymysql.connect(
            host=server.host, port=server.port, user=server.user, password=server.password
        )
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE}")
        conn.close()
        auth = server.user + (f":{server.password}" if server.password else "")
        dsn = f"mysql://{auth}@{server.host}:{server.port}/{MYSQL_DATABASE}"
        return cls("mysql", {"type": "mysql", "dsn": dsn, "ssl_mode": "disabled"}, server)

    # ---- sink side ----------------------------------------------------------------------

    def options(self, **options: Any) -> dict[str, Any]:
        """Sink options for this database (name/topics default to something unique)."""
        values: dict[str, Any] = {"name": f"sql-{uuid.uuid4().hex[:8]}", "topics": ["t"]}
        values.update(self.base_options)
        values.update(options)
        return values

    def config(self, **options: Any) -> Any:
        return self.config_class.model_validate(self.options(**options))

    def sink(self, config: Any, settings: ETLSettings | None = None) -> SqlSink[Any]:
        settings = settings or ETLSettings()
        return self.sink_class(config, settings=settings, redact=Redactor(settings.secret_values()))

    # ---- database side ------------------------------------------------------------------

    def q(self, name: str) -> str:
        """A quoted identifier, for the tests' own SQL."""
        if self.kind == "postgres":
            return '"' + name.replace('"', '""') + '"'
        return "`" + name.replace("`", "``") + "`"

    def _connect(self) -> Any:
        if self.kind == "postgres":
            return psycopg.connect(self.server.dsn, autocommit=True)
        return pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            password=self.server.password,
            database=MYSQL_DATABASE,
            autocommit=True,
        )

    def literal(self, text: str) -> str:
        """A string literal, for the tests' own SQL (table names may hold quotes)."""
        if self.kind == "mysql":
            text = text.replace("\\", "\\\\")
        return "'" + text.replace("'", "''") + "'"

    def execute(self, statement: str) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return [tuple(row) for row in cur.fetchall()]
        finally:
            conn.close()

    def rows(self, table: str, *columns: str, order: str = "offset") -> list[tuple[Any, ...]]:
        """``SELECT columns FROM table ORDER BY order`` (identifiers quoted)."""
        names = ", ".join(self.q(c) for c in columns)
        return self.query(f"SELECT {names} FROM {self.q(table)} ORDER BY {self.q(order)}")

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {self.q(table)}")[0][0])

    def table_exists(self, table: str) -> bool:
        if self.kind == "postgres":
            found = self.query(f"SELECT to_regclass({self.literal(self.q(table))}) IS NOT NULL")
        else:
            found = self.query(
                "SELECT COUNT(*) > 0 FROM information_schema.tables WHERE table_schema = "
                f"'{MYSQL_DATABASE}' AND table_name = {self.literal(table)}"
            )
        return bool(found[0][0])


def as_json(value: Any) -> Any:
    """A JSON column's value as Python data (PostgreSQL parses it, MariaDB gives text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def unique_table(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class SqlConformanceHarness(ConformanceHarness):
    """The conformance suite's view of a SQL sink: FLATTEN rows with an ``id`` column."""

    bad_value: ClassVar[bytes | None] = b'{"id": "three", "name": "x"}'  # not a BIGINT
    keyed_options: ClassVar[dict[str, Any] | None] = {
        "insert_mode": "upsert",
        "pk_mode": "record_value",
        "pk_fields": ["id"],
    }
    holds_back: ClassVar[bool] = True
    # A pt column from the record's timestamp: a year-10000 one has no pt.
    hostile_options: ClassVar[dict[str, Any]] = {"partition_time": "record"}
    must_route: ClassVar[frozenset[str]] = frozenset(
        {
            "year-10000",
            "rejected-by-destination",
            "value-5mib",
            "empty-value",
            "tombstone",
            "not-a-number",
        }
    )

    def __init__(self, target: SqlTarget) -> None:
        self.target = target
        self.sink_class = target.sink_class  # type: ignore[misc]

    def config(self, **options: Any) -> Any:
        table = "conf_" + options["name"].replace("-", "_")
        return self.target.config(
            table=table,
            format="FLATTEN",
            mode="VALUE",
            auto_create=True,
            columns=[{"name": "id", "type": "BIGINT"}, {"name": "name", "type": "VARCHAR(64)"}],
            **options,
        )

    async def landed(self, config: Any) -> list[int]:
        if not self.target.table_exists(config.table):
            return []
        return [int(row[0]) for row in self.target.rows(config.table, "id", order="id")]
