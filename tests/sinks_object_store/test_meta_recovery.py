"""The meta object protocol against a real directory: every crash point of a write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from etl.config import ETLSettings
from etl.errors import FatalError
from etl.redact import Redactor
from sinks.base import SinkBatch
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSink
from tests.sinks_object_store.conftest import data_objects, lines_of, local_objects

TOPIC = "orders"


def record(offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    value = b"value-%d" % offset
    return ConsumerRecord(
        TOPIC, partition, offset, 1_700_000_000_000, 0, None, value, None, 0, len(value), []
    )


async def open_sink(root: Path, name: str = "archive", **options: Any) -> ObjectStoreSink:
    config = ObjectStoreSinkConfig.model_validate(
        {"name": name, "type": "object_store", "topics": [TOPIC], "url": str(root), **options}
    )
    sink = ObjectStoreSink(config, settings=ETLSettings(data_dir=root.parent), redact=Redactor())
    await sink.open()
    return sink


def meta_path(root: Path, partition: int = 0, instance: str = "archive") -> Path:
    return root / instance / TOPIC / f"oss_meta_file_partition_{partition}"


async def crashed_write(root: Path, offsets: range, *, written: int) -> None:
    """What a worker killed during a write leaves: the intent and ``written`` objects."""
    sink = await open_sink(root)
    meta = await sink._meta(TOPIC, 0)
    records = [record(o) for o in offsets]
    half = len(records) // 2
    pieces = [records[:half], records[half:]]
    from sinks.object_store.meta import PendingObject

    meta.pending = [
        PendingObject(
            path=str(root / "archive" / TOPIC / f"partition_0_offset_{p[0].offset}_crashed{i}"),
            first_offset=p[0].offset,
            last_offset=p[-1].offset,
            records=len(p),
        )
        for i, p in enumerate(pieces)
    ]
    meta_path(root).parent.mkdir(parents=True, exist_ok=True)
    meta_path(root).write_bytes(meta.to_bytes())
    for item, piece in zip(meta.pending[:written], pieces, strict=False):
        data = sink.format.encode([sink.format.prepare(r) for r in piece])
        Path(item.path).write_bytes(data)  # noqa: ASYNC240 - a test staging a crash


@pytest.mark.parametrize("written", [0, 1, 2])
async def test_restart_after_a_crash_mid_write_loses_and_doubles_nothing(
    tmp_path: Path, written: int
) -> None:
    root = tmp_path / "store"
    sink = await open_sink(root)
    await sink.write(SinkBatch([record(o) for o in range(10)]))  # a clean first object
    await crashed_write(root, range(10, 30), written=written)

    # The restarted worker re-reads everything after the last commit (offset 10).
    restarted = await open_sink(root)
    await restarted.write(SinkBatch([record(o) for o in range(10, 40)]))

    offsets = [line["offset"] for line in lines_of(local_objects(root))]
    assert sorted(offsets) == list(range(40))
    meta = json.loads(meta_path(root).read_text())
    assert meta["last_offset"] == 39 and meta["pending"] == []


async def test_an_unfinished_temporary_file_is_not_an_object(tmp_path: Path) -> None:
    root = tmp_path / "store"
    sink = await open_sink(root)
    await sink.write(SinkBatch([record(o) for o in range(3)]))
    (root / "archive" / TOPIC / ".partition_0_offset_3_abcdefgh.tmp").write_bytes(b"half a li")
    await sink.write(SinkBatch([record(o) for o in range(3, 6)]))
    assert sorted(line["offset"] for line in lines_of(local_objects(root))) == list(range(6))


async def test_rejected_records_are_tried_again_after_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "store"
    sink = await open_sink(root, format="raw")
    records = [record(o) for o in range(6)]
    records[2] = ConsumerRecord(TOPIC, 0, 2, 0, 0, None, b"a\nb", None, 0, 3, [])
    failures = await sink.write(SinkBatch(records))
    assert [f.record.offset for f in failures] == [2]
    restarted = await open_sink(root, format="raw")
    again = await restarted.write(SinkBatch(records))
    assert [f.record.offset for f in again] == [2], "the rejected record is not taken as written"
    assert len(data_objects(local_objects(root))) == 1


async def test_two_sinks_sharing_a_meta_object_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    first = await open_sink(root, instance_id="shared")
    await first.write(SinkBatch([record(0)]))
    other = await open_sink(root, name="other", instance_id="shared")
    with pytest.raises(FatalError, match="belongs to sink 'archive'"):
        await other.write(SinkBatch([record(1)]))


async def test_a_damaged_meta_object_is_named(tmp_path: Path) -> None:
    root = tmp_path / "store"
    meta_path(root).parent.mkdir(parents=True)
    meta_path(root).write_text("{not json")
    sink = await open_sink(root)
    with pytest.raises(FatalError, match="oss_meta_file_partition_0 is not readable"):
        await sink.write(SinkBatch([record(0)]))
