"""The object-store sink on a local directory: layout, names, lines, rotation, formats."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etl.testing.kafka import create_topic, read_all
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSinkPipeline
from tests.sinks_object_store.conftest import NAME, data_objects, lines_of, local_objects
from tests.sinks_object_store.harness import (
    produce_records,
    running,
    sink_config,
    sink_settings,
    wait_until,
)

pytestmark = pytest.mark.kafka

MIB = 1024 * 1024


def stamp(text: str) -> int:
    """Epoch ms of an ISO time in UTC."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def object_config(uid: str, topic: str, root: Path, **options: Any) -> ObjectStoreSinkConfig:
    options = {"url": str(root), "batch_window_minutes": 0.02, **options}
    return sink_config(ObjectStoreSinkConfig, "object_store", f"obj-{uid}", topic, **options)


async def write_all(
    tmp_path: Path,
    bootstrap: str,
    uid: str,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None, int | None, int | None]],
    last_offsets: dict[int, int],
    *,
    partitions: int = 1,
    **options: Any,
) -> Path:
    """Produce ``items``, run the sink until the meta objects say ``last_offsets``; the root."""
    await create_topic(bootstrap, topic, partitions)
    await produce_records(bootstrap, topic, items)
    root = tmp_path / "store"
    config = object_config(uid, topic, root, **options)
    async with running(
        ObjectStoreSinkPipeline, config, sink_settings(tmp_path, bootstrap, uid)
    ) as p:
        await wait_until(lambda: meta_offsets(root) == last_offsets, pipeline=p, what="written")
    return root


def meta_offsets(root: Path) -> dict[int, int]:
    """partition -> last_offset recorded in the meta objects below ``root``."""
    found = {}
    for path in root.rglob("oss_meta_file_partition_*"):
        meta = json.loads(path.read_text())
        found[meta["partition"]] = meta["last_offset"]
    return found


async def test_layout_names_and_lines(tmp_path: Path, kafka_bootstrap: str, uid: str) -> None:
    topic = f"objects-{uid}"
    ten, eleven = stamp("2024-03-05T10:59:30"), stamp("2024-03-05T11:00:10")
    items: list[tuple[bytes | None, bytes | None, int | None, int | None]] = [
        (f"k{i}".encode(), f'v{i} ünïcode "q"'.encode(), 0, ten if i < 15 else eleven)
        for i in range(30)
    ]
    items += [(None, b"no key", 1, ten), (b"tombstone", None, 1, ten)]
    root = await write_all(
        tmp_path, kafka_bootstrap, uid, topic, items, {0: 29, 1: 1},
        partitions=2, instance_id=f"inst-{uid}", path_layout="YYYY/MM/dd/HH",
    )  # fmt: skip
    objects = data_objects(local_objects(root))
    base = f"inst-{uid}/{topic}"
    dirs = sorted(path.rsplit("/", 1)[0] for path in objects)
    assert dirs == [f"{base}/2024/03/05/10", f"{base}/2024/03/05/10", f"{base}/2024/03/05/11"]
    by_first: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for path, data in objects.items():
        match = NAME.match(path.rsplit("/", 1)[-1])
        assert match, path
        lines = [json.loads(line) for line in data.decode().splitlines()]
        partition, first = int(match[1]), int(match[2])
        assert first == min(line["offset"] for line in lines), "name carries the smallest offset"
        assert {line["partition"] for line in lines} == {partition}
        by_first[(partition, first)] = lines
    assert sorted(by_first) == [(0, 0), (0, 15), (1, 0)]
    assert by_first[(0, 0)][3] == {
        "key": "k3",
        "offset": 3,
        "overflowFlag": False,
        "partition": 0,
        "timestamp": ten,
        "topic": topic,
        "value": 'v3 ünïcode "q"',
        "valueSize": len('v3 ünïcode "q"'.encode()),
    }
    assert by_first[(1, 0)] == [
        {"offset": 0, "overflowFlag": False, "partition": 1, "timestamp": ten, "topic": topic,
         "value": "no key", "valueSize": 6},
        {"key": "tombstone", "offset": 1, "overflowFlag": False, "partition": 1,
         "timestamp": ten, "topic": topic, "valueSize": 0},
    ]  # fmt: skip
    assert [line["offset"] for line in by_first[(0, 0)] + by_first[(0, 15)]] == list(range(30))
    meta = json.loads((root / base / "oss_meta_file_partition_0").read_text())
    assert meta["last_offset"] == 29 and meta["pending"] == [] and meta["records_written"] == 30


async def test_rotation_by_size(tmp_path: Path, kafka_bootstrap: str, uid: str) -> None:
    topic = f"big-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    value = b"x" * 1000
    count = 3000
    await produce_records(
        kafka_bootstrap, topic, ((str(i).encode(), value, 0, None) for i in range(count))
    )
    root = tmp_path / "store"
    # A long window: only the size limit can close objects while the test waits.
    config = object_config(uid, topic, root, batch_size_mb=1, batch_window_minutes=60)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await wait_until(
            lambda: len(data_objects(local_objects(root))) >= 2,
            pipeline=pipeline,
            what="two objects closed by size",
        )
    objects = data_objects(local_objects(root))
    assert all(len(data) <= MIB for data in objects.values())
    assert sum(len(data) for data in objects.values()) > 3 * MIB
    assert len(objects) <= 5, "objects close near the limit, not far below it"
    offsets = [line["offset"] for line in lines_of(objects)]
    assert sorted(offsets) == list(range(count)), "nothing lost or doubled"


async def test_rotation_by_time_flushes_an_idle_partition(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"idle-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    root = tmp_path / "store"
    config = object_config(uid, topic, root, batch_window_minutes=0.01)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await produce_records(
            kafka_bootstrap, topic, ((None, b"a%d" % i, 0, None) for i in range(5))
        )
        await wait_until(
            lambda: meta_offsets(root) == {0: 4}, pipeline=pipeline, what="first window"
        )
        await produce_records(
            kafka_bootstrap, topic, ((None, b"b%d" % i, 0, None) for i in range(5))
        )
        await wait_until(
            lambda: meta_offsets(root) == {0: 9}, pipeline=pipeline, what="second window"
        )
    objects = data_objects(local_objects(root))
    firsts = sorted(int(NAME.match(path.rsplit("/", 1)[-1])[2]) for path in objects)  # type: ignore[index]
    assert firsts == [0, 5]
    assert sorted(line["offset"] for line in lines_of(objects)) == list(range(10))


async def test_parquet_objects(tmp_path: Path, kafka_bootstrap: str, uid: str) -> None:
    import pyarrow.parquet as pq

    topic = f"lake-{uid}"
    items = [(f"k{i}".encode(), json.dumps({"n": i}).encode(), 0, 1000 + i) for i in range(50)]
    items.append((b"null-value", None, 0, 2000))
    root = await write_all(
        tmp_path,
        kafka_bootstrap,
        uid,
        topic,
        items,
        {0: 50},
        format="parquet",
        path_layout="YYYYMMdd",
    )
    objects = data_objects(local_objects(root))
    assert all(path.endswith(".parquet") and "/19700101/" in path for path in objects)
    rows = [row for data in objects.values() for row in pq.read_table(io.BytesIO(data)).to_pylist()]
    rows.sort(key=lambda row: row["offset"])
    assert [row["offset"] for row in rows] == list(range(51))
    assert rows[7] == {
        "key": "k7",
        "offset": 7,
        "overflowFlag": False,
        "partition": 0,
        "timestamp": 1007,
        "topic": topic,
        "value": '{"n": 7}',
        "valueSize": 8,
    }
    assert rows[50]["key"] == "null-value"
    assert rows[50]["value"] is None and rows[50]["valueSize"] == 0


async def test_bad_records_are_dead_lettered_and_nothing_else_is_lost(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    values = [b"line-%d" % i for i in range(10)]
    values[4] = b"two\nlines"  # raw format cannot hold a line break
    items = [(None, v, 0, None) for v in values]
    root = await write_all(
        tmp_path,
        kafka_bootstrap,
        uid,
        f"raw-{uid}",
        items,
        {0: 9},
        format="raw",
        on_error="continue",
    )
    lines = [
        line
        for data in data_objects(local_objects(root)).values()
        for line in data.decode().splitlines()
    ]
    assert lines == [v.decode() for i, v in enumerate(values) if i != 4]
    dead = await read_all(kafka_bootstrap, f"dlq-{uid}")
    assert [record.value for record in dead] == [b"two\nlines"]
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["etl.stage"] == "sink" and headers["etl.source.offset"] == "4"
    assert "line break" in headers["etl.exception.message"]


async def test_invalid_utf8_is_dead_lettered_with_its_bytes(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    items = [(None, b"ok-1", 0, None), (b"k", b"\xff\xfe", 0, None), (None, b"ok-2", 0, None)]
    root = await write_all(
        tmp_path, kafka_bootstrap, uid, f"utf-{uid}", items, {0: 2}, on_error="continue"
    )
    assert [line["value"] for line in lines_of(local_objects(root))] == ["ok-1", "ok-2"]
    dead = await read_all(kafka_bootstrap, f"dlq-{uid}")
    assert [(r.key, r.value) for r in dead] == [(b"k", b"\xff\xfe")]
    assert dict(dead[0].headers)["etl.stage"] == b"sink"


async def test_stop_policy_writes_nothing_past_the_bad_record(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"stop-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    values = [b"v%d" % i for i in range(10)]
    values[5] = b"bad\n"
    await produce_records(kafka_bootstrap, topic, ((None, v, 0, None) for v in values))
    root = tmp_path / "store"
    config = object_config(uid, topic, root, format="raw", on_error="stop")
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: pipeline.status.state == "halted", what="halted by policy")
        committed = pipeline.status.partitions[f"{topic}/0"].committed
    assert committed == 5, "the offset stays before the bad record"
    data = b"".join(data_objects(local_objects(root)).values())
    assert data.decode().splitlines() == ["v0", "v1", "v2", "v3", "v4"]
    assert meta_offsets(root) == {0: 4}


async def test_redelivery_writes_nothing_twice(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    """A new consumer group reads everything again; the meta objects make it a no-op."""
    topic = f"again-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce_records(
        kafka_bootstrap, topic, ((None, b"m%d" % i, i % 2, None) for i in range(40))
    )
    root = tmp_path / "store"
    config = object_config(uid, topic, root)
    async with running(
        ObjectStoreSinkPipeline, config, sink_settings(tmp_path, kafka_bootstrap, uid)
    ) as p:
        await wait_until(lambda: meta_offsets(root) == {0: 19, 1: 19}, pipeline=p, what="written")
    before = local_objects(root)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid + "x")  # another group: from earliest
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: pipeline.status.consumed == 40, pipeline=pipeline, what="re-read")
        await wait_until(
            lambda: all(p.committed == 20 for p in pipeline.status.partitions.values()),
            pipeline=pipeline,
            what="committed",
        )
    assert data_objects(local_objects(root)) == data_objects(before)
    assert len(lines_of(before)) == 40
