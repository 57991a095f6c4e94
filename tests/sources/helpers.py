"""Helpers of the source tests: the test server's accounts, running a source, reading events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pymysql

from etl.config import ETLSettings
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.source import MySQLBinlogSource
from etl.testing.kafka import read_all, wait_count

CDC_USER = "cdc"
CDC_PASSWORD = "cdc-pw-7f3a91"


@dataclass
class BinlogServer:
    """A running MariaDB: root access for the tests, the ``cdc`` account for the source."""

    server: Any
    host: str
    port: int

    def connect(self, **extra: Any) -> Any:
        return pymysql.connect(
            host=self.host, port=self.port, user="root", password="", autocommit=True, **extra
        )

    def execute(self, *statements: str, args: Any = None) -> list[Any]:
        """Run statements as root; returns the rows of the last one."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                rows: list[Any] = []
                for statement in statements:
                    cursor.execute(statement, args)
                    rows = list(cursor.fetchall())
                return rows
        finally:
            conn.close()

    def id_table(self, database: str, name: str) -> str:
        """Create ``database.name (id INT PRIMARY KEY)``; returns its quoted name."""
        table = f"`{database}`.`{name}`"
        self.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
        return table

    def insert_ids(self, table: str, ids: range) -> None:
        """One single-row INSERT transaction per id."""
        self.execute(*[f"INSERT INTO {table} VALUES ({i})" for i in ids])

    def position(self) -> str:
        """The binlog end now, as a ``start`` value (``file:pos``)."""
        rows = self.execute("SHOW MASTER STATUS")
        return f"{rows[0][0]}:{rows[0][1]}"


def source_options(
    server: BinlogServer, database: str, uid: str, **overrides: Any
) -> dict[str, Any]:
    """A ``sources:`` entry for the test server (the cdc account)."""
    options: dict[str, Any] = {
        "name": f"cdc-{uid}",
        "type": "mysql_binlog",
        "host": server.host,
        "port": server.port,
        "user": CDC_USER,
        "password": CDC_PASSWORD,
        "database": database,
        "topic_prefix": f"t{uid}",
        "server_id": 1000 + int(uid[:6], 16) % 100000,
        # The session's server has no TLS (the TLS tests start their own).
        "ssl": False,
    }
    options.update(overrides)
    return options


def make_settings(bootstrap: str, **kafka: Any) -> ETLSettings:
    return ETLSettings.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, "enable_idempotence": False, **kafka}}
    )


@contextlib.asynccontextmanager
async def running_source(
    bootstrap: str, options: dict[str, Any], *, wait: str | None = "running", **kafka: Any
) -> AsyncIterator[MySQLBinlogSource]:
    """Start the source in this event loop; wait for state ``wait`` (or a failure)."""
    config = MySQLBinlogSourceConfig.model_validate(options)
    source = MySQLBinlogSource(config, settings=make_settings(bootstrap, **kafka))
    await source.start()
    try:
        for _ in range(600 if wait else 0):
            state = str(source.status.state)
            if state == wait or (state in ("failed", "halted") and wait == "running"):
                break
            await asyncio.sleep(0.05)
        yield source
    finally:
        await source.stop()


@dataclass
class Event:
    """One message of a table topic: the Kafka record and its parsed envelope."""

    record: Any
    doc: dict[str, Any]

    @property
    def payload(self) -> dict[str, Any]:
        return self.doc["payload"]

    @property
    def op(self) -> str:
        return str(self.doc["payload"]["op"])

    @property
    def after(self) -> dict[str, Any] | None:
        after = self.doc["payload"]["after"]
        return None if after is None else after["dataColumn"]

    @property
    def before(self) -> dict[str, Any] | None:
        before = self.doc["payload"]["before"]
        return None if before is None else before["dataColumn"]


async def events(bootstrap: str, topic: str, count: int | None = None) -> list[Event]:
    """The topic's messages in sequenceId order (waiting until there are ``count``)."""
    records = await (wait_count(bootstrap, topic, count) if count else read_all(bootstrap, topic))
    found = [Event(record, json.loads(record.value)) for record in records]
    return sorted(found, key=lambda e: (int(e.payload["sequenceId"]), e.record.partition))
