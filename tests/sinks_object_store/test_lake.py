"""The lake layout: table per topic, Hive partitions, a stable schema, read back by DuckDB."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from etl.errors import RecordError
from etl.testing.kafka import create_topic, wait_count
from etl.testing.worker import WorkerProcess
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.lake import LakeFormat, LakeLayout, LakeOptions, convert
from sinks.object_store.sink import ObjectStoreSinkPipeline
from sinks.object_store.store import LocalStore
from tests.sinks_object_store.harness import (
    produce_records,
    running,
    sink_settings,
    wait_until,
    worker_config,
)
from tests.sinks_object_store.test_local import meta_offsets, stamp, write_all
from tests.sinks_object_store.test_s3 import bucket_objects, s3_config
from tests.sinks_object_store.test_s3 import meta_offsets as s3_meta_offsets

HOURS = [stamp("2026-12-01T12:10:00"), stamp("2026-12-01T13:20:00"), stamp("2026-12-01T14:30:00")]


def query(sql: str) -> list[tuple[Any, ...]]:
    import duckdb

    with duckdb.connect() as db:
        return db.execute(sql).fetchall()


def order(i: int) -> bytes:
    return json.dumps(
        {"id": i, "item": f"sku-{i % 7}", "price": i / 4, "paid": i % 2 == 0}
    ).encode()


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_writes_a_lake_duckdb_reads_with_partitions(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"lake.orders-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    hour = [i * 3 // 10_000 for i in range(10_000)]  # 12:10, 13:20, 14:30, in order
    items = [(b"%d" % i, order(i), i % 2, HOURS[hour[i]]) for i in range(10_000)]
    # Two records that do not fit the schema inferred from the first one: dead letters.
    items += [
        (b"bad-type", b'{"id": "ten", "item": "x"}', 0, HOURS[2]),
        (b"not-json", b"<xml/>", 1, HOURS[2]),
    ]
    asyncio.run(produce_records(kafka_bootstrap, topic, items))
    root = tmp_path / "lake"
    sink = {
        "name": f"lake-{uid}",
        "type": "object_store",
        "topics": [topic],
        "url": str(root),
        "format": "parquet",
        "batch_window_minutes": 0.01,
        "lake": {"database": "dla_fromkafka"},
    }
    config = worker_config(tmp_path, kafka_bootstrap, uid, [sink])
    with WorkerProcess(config, name="lake") as worker:
        worker.wait_for(
            lambda _w: meta_offsets(root) == {0: 4999, 1: 4999}, 90, "every record written"
        )
        dead = asyncio.run(wait_count(kafka_bootstrap, f"dlq-{uid}", 2))
    table = root / "dla_fromkafka" / f"lake_orders_{uid.replace('-', '_')}"
    assert sorted(p.name for p in table.iterdir()) == ["_meta", "dt=2026-12-01"]
    assert sorted(p.name for p in (table / "dt=2026-12-01").iterdir()) == [
        "hr=12",
        "hr=13",
        "hr=14",
    ]

    files = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    assert query(f"SELECT count(*), count(DISTINCT id), sum(id) FROM {files}") == [
        (10_000, 10_000, sum(range(10_000)))
    ]
    in_hour = query(
        f"SELECT count(*), min(id) FROM {files} WHERE dt = DATE '2026-12-01' AND hr = 13"
    )
    assert in_hour == [(hour.count(1), hour.index(1))]
    row = query(
        f"SELECT id, item, price, paid, _kafka_key, _kafka_topic FROM {files} WHERE id = 42"
    )
    assert row == [(42, "sku-0", 10.5, True, "42", topic)]
    assert sorted(record.key for record in dead) == [b"bad-type", b"not-json"]


@pytest.mark.kafka
async def test_declared_schema_with_added_fields_and_misfits(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    """Declared columns are converted; new fields become columns; a misfit is a dead letter."""
    import duckdb

    topic = f"events-{uid}"
    docs = [
        {"id": 1, "at": "2026-12-01T13:00:05Z", "extra": "x"},
        {"id": 2, "at": 1796130000000, "day": "2026-12-01"},
        {"id": 3.0, "at": None},
        {"id": "five"},
        {"id": 4, "note": "added", "n": None},
    ]
    lake = {
        "partition_by": "day",
        "new_fields": "add",
        "schemas": {topic.replace("-", "_"): {"id": "int64", "at": "timestamp", "day": "date"}},
    }
    root = await write_all(
        tmp_path,
        kafka_bootstrap,
        uid,
        topic,
        [(None, json.dumps(d).encode(), 0, HOURS[1]) for d in docs],
        {0: 4},
        format="parquet",
        lake=lake,
    )
    dead = await wait_count(kafka_bootstrap, f"dlq-{uid}", 1)
    assert [json.loads(r.value) for r in dead] == [{"id": "five"}]
    files = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    rows = duckdb.sql(
        f'SELECT id, epoch_ms("at"), day, extra, note, dt FROM {files} ORDER BY id'
    ).fetchall()
    assert [r[:5] for r in rows] == [
        (1, stamp("2026-12-01T13:00:05"), None, "x", None),
        (2, 1796130000000, date(2026, 12, 1), None, None),
        (3, None, None, None, None),
        (4, None, None, None, "added"),
    ]
    assert {str(r[5]) for r in rows} == {"2026-12-01"}
    schema = json.loads(next(root.rglob("schema.json")).read_text())
    assert [c["name"] for c in schema["columns"]] == ["id", "at", "day", "extra", "note"]


async def test_inferred_schema_is_kept_across_restarts(tmp_path: Path) -> None:
    """The first record's schema is saved; after a restart it still decides (no re-inference)."""
    store = LocalStore(tmp_path, fsync=False)
    await store.open()
    options = LakeOptions.model_validate({"database": "db"})
    layout = LakeLayout(str(tmp_path), options, time_source="record", timezone="UTC")

    def record(offset: int, doc: dict[str, Any]) -> Any:
        value = json.dumps(doc).encode()
        return SimpleNamespace(
            topic="a-b", partition=0, offset=offset, key=None, value=value, timestamp=HOURS[0]
        )

    first = LakeFormat(options, sink="s")
    await first.load(store, layout, "a-b")
    _, row = first.prepare(record(0, {"n": 1, "s": "x", "nothing": None, "obj": {"k": [1]}}))
    assert row["obj"] == '{"k":[1]}' and row["nothing"] is None
    await first.save(store, layout, "a-b")
    saved = json.loads((tmp_path / "db" / "a_b" / "_meta" / "schema.json").read_text())
    assert saved["columns"] == [
        {"name": "n", "type": "int64"},
        {"name": "s", "type": "string"},
        {"name": "nothing", "type": "json"},
        {"name": "obj", "type": "json"},
    ]

    again = LakeFormat(options, sink="s")
    await again.load(store, layout, "a-b")
    with pytest.raises(RecordError, match="field 'n' does not fit column n int64"):
        again.prepare(record(1, {"n": "one"}))
    with pytest.raises(RecordError, match="partition or _kafka_"):
        again.prepare(record(2, {"n": 2, "dt": "today"}))
    _, row = again.prepare(record(3, {"n": 3, "new": True, "nothing": 5}))
    assert "new" not in row and row["nothing"] == "5"
    assert layout.object_path("a-b", "dt=2026-12-01/hr=12", "o.parquet") == (
        f"{tmp_path}/db/a_b/dt=2026-12-01/hr=12/o.parquet"
    )
    assert layout.meta_path("a-b", 0) == f"{tmp_path}/db/a_b/_meta/a-b/oss_meta_file_partition_0"


@pytest.mark.kafka
@pytest.mark.s3
async def test_lake_in_s3(
    tmp_path: Path, kafka_bootstrap: str, uid: str, s3_endpoint: str, s3_client: Any
) -> None:
    import pyarrow.parquet as pq

    topic, bucket = f"s3.lake-{uid}", f"lake-{uid}"
    config = s3_config(uid, topic, s3_endpoint, bucket, format="parquet", lake={"database": "db"})
    s3_client.create_bucket(Bucket=bucket)
    await create_topic(kafka_bootstrap, topic, 1)
    items = [(None, order(i), 0, HOURS[i // 100]) for i in range(200)]
    await produce_records(kafka_bootstrap, topic, items)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await wait_until(
            lambda: s3_meta_offsets(bucket_objects(s3_client, bucket)) == {0: 199},
            pipeline=pipeline,
            what="written",
        )
    objects = bucket_objects(s3_client, bucket)
    table = f"archive/db/s3_lake_{uid}"
    files = {k: v for k, v in objects.items() if k.endswith(".parquet")}
    assert {k.rsplit("/", 1)[0] for k in files} == {
        f"{table}/dt=2026-12-01/hr=12",
        f"{table}/dt=2026-12-01/hr=13",
    }
    ids = sorted(
        i for data in files.values() for i in pq.read_table(pa_input(data))["id"].to_pylist()
    )
    assert ids == list(range(200))
    schema = json.loads(objects[f"{table}/_meta/schema.json"])
    assert [c["type"] for c in schema["columns"]] == ["int64", "string", "float64", "bool"]
    assert f"{table}/_meta/{topic}/oss_meta_file_partition_0" in objects


def pa_input(data: bytes) -> Any:
    import pyarrow as pa

    return pa.BufferReader(data)


def test_lake_options_are_checked() -> None:
    base = {"name": "l", "type": "object_store", "topics": ["t"]}
    with pytest.raises(ValidationError, match="lake: needs format: parquet"):
        ObjectStoreSinkConfig.model_validate({**base, "lake": {}})
    with pytest.raises(ValidationError, match="path_layout: not used with lake"):
        ObjectStoreSinkConfig.model_validate(
            {**base, "format": "parquet", "path_layout": "YYYYMMdd", "lake": {}}
        )
    with pytest.raises(ValidationError, match="the sink's own columns"):
        LakeOptions.model_validate({"schemas": {"t": {"hr": "int32"}}})
    with pytest.raises(ValidationError, match="letters, digits and _"):
        LakeOptions.model_validate({"tables": {"t": "../up"}})
    options = LakeOptions.model_validate({"tables": {"a": "orders"}})
    assert options.table_of("dla-test") == "dla_test"
    assert options.table_of("a") == "orders"


def test_values_fit_or_are_refused_by_column_type() -> None:
    assert convert(3.0, "int64") == 3
    assert convert(3, "float64") == 3.0
    assert convert({"a": [1]}, "json") == '{"a":[1]}'
    assert convert("1970-01-01T00:00:01+00:00", "timestamp") == 1000
    for value, kind in [
        (True, "int64"),
        (2**40, "int32"),
        (1, "string"),
        ("x", "bool"),
        ("10000-01-01", "date"),
        (10**17, "timestamp"),
        ([1], "float64"),
    ]:
        with pytest.raises(ValueError):
            convert(value, kind)
