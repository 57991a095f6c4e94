"""The testing kit as a user outside this repository uses it: run_transform, and the
sink conformance suite on the in-memory sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etl.config import SinkConfigBase
from etl.errors import RecordError
from etl.testing.doubles import MemorySink, MemorySinkConfig
from etl.testing.sink_conformance import ConformanceHarness, SinkConformance
from etl.testing.transforms import run_transform

TRANSFORM = """
SOURCE_TOPIC = "orders"
TARGET_TOPIC = "orders-big"


def deal_message(message):
    order = message["value"]
    if order == "boom":
        raise ValueError("no order")
    if int(order) < 10:
        return None
    return [{"key": message["key"], "value": order}, {"key": "total", "value": {"n": int(order)}}]
"""


def test_run_transform_returns_what_the_worker_would_produce(tmp_path: Path) -> None:
    path = tmp_path / "big_orders.py"
    path.write_text(TRANSFORM)
    out = run_transform(path, [("a", "5"), ("b", "12")])
    assert [(r.key, r.value) for r in out] == [(b"b", b"12"), (b"total", b'{"n":12}')]
    with pytest.raises(RecordError, match=r"message 1: ValueError: no order"):
        run_transform(path, ["20", "boom"])


class MemoryHarness(ConformanceHarness):
    sink_class = MemorySink
    bad_value = b'{"id": 3, "name": "rejected"}'
    holds_back = False

    def config(self, **options: Any) -> SinkConfigBase:
        return MemorySinkConfig.model_validate(
            {"type": "memory", "reject_values": [self.bad_value.decode()], **options}
        )

    async def landed(self, config: SinkConfigBase) -> list[int]:
        return [_id(r) for r in MemorySink.landed.get(config.name, [])]


def _id(record: Any) -> int:
    """The value's ``id``; for a value that is no JSON object, offset + 1 (etl.testing.hostile)."""
    try:
        return int(json.loads(record.value)["id"])
    except (ValueError, TypeError, KeyError):
        return int(record.offset) + 1


@pytest.mark.kafka
class TestMemorySinkConformance(SinkConformance):
    @pytest.fixture
    def harness(self) -> ConformanceHarness:
        return MemoryHarness()
