"""The source conformance suite (etl.testing.source_conformance) on the in-memory double
and on the object_store replay source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etl.sources.object_store.config import ObjectStoreSourceConfig
from etl.sources.object_store.source import ObjectStoreSource
from etl.testing.doubles import MemorySource, MemorySourceConfig
from etl.testing.source_conformance import Pairs, SourceConformance, SourceHarness
from sinks.exported import export_json_line

pytestmark = [pytest.mark.kafka]


class MemoryHarness(SourceHarness):
    source_class = MemorySource
    config_model = MemorySourceConfig

    async def prepare(
        self, name: str, count: int, *, bad_at: int | None = None, slow: bool = False
    ) -> tuple[dict[str, Any], str, Pairs]:
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
    ) -> tuple[dict[str, Any], str, Pairs]:
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


class TestMemorySourceConformance(SourceConformance):
    @pytest.fixture
    def harness(self) -> SourceHarness:
        return MemoryHarness()


class TestObjectStoreSourceConformance(SourceConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> SourceHarness:
        return ObjectStoreHarness(tmp_path / "archive")
