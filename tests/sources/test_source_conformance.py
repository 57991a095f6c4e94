"""The source conformance suite (etl.testing.source_conformance) on the in-memory double,
the object_store replay source and the mysql_binlog source (on the real MariaDB)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.source import MySQLBinlogSource
from etl.sources.object_store.config import ObjectStoreSourceConfig
from etl.sources.object_store.source import ObjectStoreSource
from etl.testing.doubles import MemorySource, MemorySourceConfig
from etl.testing.source_conformance import SourceConformance, SourceHarness
from sinks.exported import export_json_line
from tests.sources.helpers import BinlogServer, source_options

pytestmark = [pytest.mark.kafka]


class MemoryHarness(SourceHarness):
    source_class = MemorySource
    config_model = MemorySourceConfig

    async def prepare(
        self, name: str, count: int, *, bad_at: int | None = None, slow: bool = False
    ) -> tuple[dict[str, Any], str, list[Any]]:
        items = [{"key": f"k{i}", "value": f"v{i}", "bad": i == bad_at} for i in range(count)]
        expected = [(b"k%d" % i, b"v%d" % i) for i in range(count) if i != bad_at]
        options = {"name": name, "type": "memory", "topic": name, "items": items, "partition": 0}
        if slow:
            options.update(batch_size=5, batch_delay_ms=100)
        return options, name, expected


class _Record:
    def __init__(self, i: int, topic: str) -> None:
        self.key, self.value = b"k%d" % i, b"v%d" % i
        self.topic, self.partition, self.offset = topic, 0, i
        self.timestamp = 1_700_000_000_000 + i


class ObjectStoreHarness(SourceHarness):
    """An archive written in the sink's jsonl form; the bad record is a line that is no JSON."""

    source_class = ObjectStoreSource
    config_model = ObjectStoreSourceConfig

    def __init__(self, root: Path) -> None:
        self.root = root

    async def prepare(
        self, name: str, count: int, *, bad_at: int | None = None, slow: bool = False
    ) -> tuple[dict[str, Any], str, list[Any]]:
        folder = self.root / "prod" / name
        folder.mkdir(parents=True)
        for start in range(0, count, 10):  # objects of 10 lines, as the sink names them
            lines = [
                b"{garbage\n" if i == bad_at else export_json_line(_Record(i, name))
                for i in range(start, min(start + 10, count))
            ]
            (folder / f"partition_0_offset_{start}_abcdefgh").write_bytes(b"".join(lines))
        expected = [(b"k%d" % i, b"v%d" % i) for i in range(count) if i != bad_at]
        options = {
            "name": name,
            "type": "object_store",
            "url": str(self.root),
            "instance_id": "prod",
            "topics": [name],
            "target_topic": "{topic}-restored",
            "settle_seconds": 0,
            "batch_size": 3 if slow else 100,
        }
        return options, f"{name}-restored", expected


class BinlogHarness(SourceHarness):
    """A table's INSERTs, one transaction each, read from the binlog position before them.

    The bad record is a row whose change event is larger than the broker takes
    (``kafka.max_request_size``, 1 MiB). ``slow``: the rows are inserted one
    every 0.1 s while the test runs. A change event carries times of its own,
    so a message is identified by its key, operation and row.
    """

    source_class = MySQLBinlogSource
    config_model = MySQLBinlogSourceConfig
    finishes = False

    def __init__(self, server: BinlogServer, database: str, uid: str) -> None:
        self.server, self.database, self.uid = server, database, uid
        self.writers: list[threading.Thread] = []

    async def prepare(
        self, name: str, count: int, *, bad_at: int | None = None, slow: bool = False
    ) -> tuple[dict[str, Any], str, list[Any]]:
        table = name.replace("-", "_")
        quoted = f"`{self.database}`.`{table}`"
        await asyncio.to_thread(
            self.server.execute, f"CREATE TABLE {quoted} (id INT PRIMARY KEY, note LONGTEXT)"
        )
        start = await asyncio.to_thread(self.server.position)
        rows = [(i, "x" * 1_100_000 if i == bad_at else f"row {i}") for i in range(count)]
        writer = threading.Thread(
            target=self._insert, args=(quoted, rows, 0.1 if slow else 0.0), daemon=True
        )
        writer.start()
        self.writers.append(writer)
        if not slow:
            await asyncio.to_thread(writer.join)
        options = source_options(
            self.server,
            self.database,
            self.uid,
            name=name,
            tables=table,
            start=start,
            partitions_with_primary_key=1,
        )
        expected = [
            (b"[%d]" % i, "INSERT", {"id": i, "note": note}) for i, note in rows if i != bad_at
        ]
        return options, f"t{self.uid}_{table}", expected

    def _insert(self, table: str, rows: list[tuple[int, str]], pause: float) -> None:
        connection = self.server.connect()
        try:
            with connection.cursor() as cursor:
                for i, note in rows:
                    cursor.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, note))
                    time.sleep(pause)
        finally:
            connection.close()

    def identify(self, key: bytes | None, value: bytes | None) -> Any:
        payload = json.loads(value or b"null")["payload"]
        return (key, payload["op"], (payload["after"] or {}).get("dataColumn"))


class TestMemorySourceConformance(SourceConformance):
    @pytest.fixture
    def harness(self) -> SourceHarness:
        return MemoryHarness()


class TestObjectStoreSourceConformance(SourceConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> SourceHarness:
        return ObjectStoreHarness(tmp_path / "archive")


@pytest.mark.mysql
class TestMySQLBinlogSourceConformance(SourceConformance):
    @pytest.fixture
    def harness(
        self, binlog_server: BinlogServer, database: str, uid: str
    ) -> Iterator[SourceHarness]:
        harness = BinlogHarness(binlog_server, database, uid)
        yield harness
        for writer in harness.writers:
            writer.join(30)
