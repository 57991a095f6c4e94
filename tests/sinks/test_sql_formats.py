"""The documents' format and mode examples, written by each SQL sink into a real database.

Same inputs and same tables as the examples (TEXT, CSV, JSON, FLATTEN, and the bad
record); ``pt`` is the time of writing, so only its shape and minute are checked.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition

from etl.errors import RecordError
from etl.testing.sink_conformance import make_record
from sinks.base import SinkBatch
from tests.sinks.sqlharness import SqlTarget, as_json, unique_table

PT_MINUTE = re.compile(r"^\d\d-\d\d-\d{4} \d\d:\d\d$")


async def write(
    target: SqlTarget, config: Any, records: list[Any], halt: bool = False
) -> list[Any]:
    """Open a sink, write one batch, close it; the failures."""
    sink = target.sink(config)
    await sink.open()
    try:
        partitions = {TopicPartition(r.topic, r.partition) for r in records}
        return list(await sink.write(SinkBatch(records, partitions, halt_on_failure=halt)))
    finally:
        await sink.close()


def fixed_table(target: SqlTarget, name: str, *columns: str) -> None:
    """The documents' table: topic, partition, offset, the given columns, pt."""
    q = target.q
    body = ", ".join(
        [f"{q('topic')} TEXT", f"{q('partition')} BIGINT", f"{q('offset')} BIGINT", *columns]
    )
    target.execute(f"CREATE TABLE {q(name)} ({body}, {q('pt')} TEXT)")


def check_pt(value: str) -> None:
    assert PT_MINUTE.match(value), value
    written = datetime.strptime(value, "%m-%d-%Y %H:%M").replace(tzinfo=UTC).timestamp()
    assert abs(written - time.time()) < 600


async def test_text_value_mode(sql_target: SqlTarget) -> None:
    q = sql_target.q
    table = unique_table("table_text")
    fixed_table(sql_target, table, f"{q('key')} TEXT", f"{q('value')} TEXT")
    config = sql_target.config(
        table=table, format="TEXT", mode="VALUE", partition_window_type="MINUTE"
    )
    records = [
        make_record("topic_text", 0, 0, "123", "abc"),
        make_record("topic_text", 0, 1, "456", "edf"),
    ]
    assert await write(sql_target, config, records) == []
    rows = sql_target.rows(table, "topic", "partition", "offset", "key", "value", "pt")
    assert [r[:5] for r in rows] == [
        ("topic_text", 0, 0, None, "abc"),
        ("topic_text", 0, 1, None, "edf"),
    ]
    for row in rows:
        check_pt(row[5])


async def test_text_key_and_default_modes(sql_target: SqlTarget) -> None:
    q = sql_target.q
    records = [make_record("t", 0, 0, "123", "abc"), make_record("t", 0, 1, None, "edf")]
    expected = {"KEY": [("123", None), (None, None)], "DEFAULT": [("123", "abc"), (None, "edf")]}
    for mode, rows in expected.items():
        table = unique_table(f"text_{mode.lower()}")
        fixed_table(sql_target, table, f"{q('key')} TEXT", f"{q('value')} TEXT")
        config = sql_target.config(table=table, format="TEXT", mode=mode)
        assert await write(sql_target, config, records) == []
        assert sql_target.rows(table, "key", "value") == rows


async def test_csv_value_mode(sql_target: SqlTarget) -> None:
    table = unique_table("table_csv")
    fixed_table(sql_target, table, "id BIGINT", "name TEXT", "region TEXT")
    config = sql_target.config(
        table=table, format="CSV", mode="VALUE", partition_window_type="MINUTE"
    )
    records = [
        make_record("csv_test", 0, 0, "123", "1103,zhangsan,china"),
        make_record("csv_test", 0, 1, "456", "1104,lisi,usa"),
    ]
    assert await write(sql_target, config, records) == []
    rows = sql_target.rows(table, "topic", "partition", "offset", "id", "name", "region", "pt")
    assert [r[:6] for r in rows] == [
        ("csv_test", 0, 0, 1103, "zhangsan", "china"),
        ("csv_test", 0, 1, 1104, "lisi", "usa"),
    ]
    check_pt(rows[0][6])


async def test_csv_bad_fields_are_rejected_records(sql_target: SqlTarget) -> None:
    table = unique_table("csv_bad")
    fixed_table(sql_target, table, "id BIGINT", "name TEXT", "region TEXT")
    config = sql_target.config(table=table, format="CSV", mode="VALUE")
    records = [
        make_record("t", 0, 0, None, "1,a,x"),
        make_record("t", 0, 1, None, "2,b"),  # a field short
        make_record("t", 0, 2, None, "three,c,y"),  # not a BIGINT: the database says no
        make_record("t", 0, 3, None, '4,"d, with comma",z'),
    ]
    failures = await write(sql_target, config, records)
    assert [f.record.offset for f in failures] == [1, 2]
    assert "has 2 CSV fields" in str(failures[0].error)
    assert isinstance(failures[1].error, RecordError)
    assert sql_target.rows(table, "id", "name", "region") == [
        (1, "a", "x"),
        (4, "d, with comma", "z"),
    ]


async def test_json_value_mode(sql_target: SqlTarget) -> None:
    q = sql_target.q
    table = unique_table("table_json")
    fixed_table(sql_target, table, f"{q('key')} TEXT", f"{q('value')} {sql_target.json_type}")
    config = sql_target.config(table=table, format="JSON", mode="VALUE")
    values = [
        '{"id":123,"name":"json-1","region":"beijing"}',
        '{"id":456,"name":"json-2","region":"hangzhou"}',
    ]
    records = [
        make_record("Topic_json", 0, i, key, v)
        for i, (key, v) in enumerate(zip(["123", "456"], values, strict=True))
    ]
    records.append(make_record("Topic_json", 0, 2, "789", "{not json"))
    failures = await write(sql_target, config, records)
    assert [f.record.offset for f in failures] == [2]
    assert "not valid JSON" in str(failures[0].error)
    rows = sql_target.rows(table, "topic", "offset", "key", "value")
    assert [(t, o, k, as_json(v)) for t, o, k, v in rows] == [
        ("Topic_json", 0, None, {"id": 123, "name": "json-1", "region": "beijing"}),
        ("Topic_json", 1, None, {"id": 456, "name": "json-2", "region": "hangzhou"}),
    ]


def flatten_table(target: SqlTarget, name: str) -> None:
    fixed_table(target, name, "id BIGINT", "name TEXT", f"extendinfo {target.json_type}")


async def test_flatten_value_mode(sql_target: SqlTarget) -> None:
    table = unique_table("table_flatten")
    flatten_table(sql_target, table)
    config = sql_target.config(table=table, format="FLATTEN", mode="VALUE")
    records = [
        make_record(
            "topic_flatten",
            0,
            0,
            "123",
            '{"id":123,"name":"json-1","extendinfo":{"region":"beijing","sex":"M"}}',
        ),
        make_record(
            "topic_flatten",
            0,
            1,
            "456",
            '{"id":456,"name":"json-2","extendinfo":{"region":"hangzhou","sex":"W"}}',
        ),
    ]
    assert await write(sql_target, config, records) == []
    rows = sql_target.rows(table, "topic", "partition", "offset", "id", "name", "extendinfo")
    assert [(*r[:5], as_json(r[5])) for r in rows] == [
        ("topic_flatten", 0, 0, 123, "json-1", {"sex": "M", "region": "beijing"}),
        ("topic_flatten", 0, 1, 456, "json-2", {"sex": "W", "region": "hangzhou"}),
    ]


BAD_EXAMPLE = [
    ("100", '{"id":100,"name":"json-3","extendinfo":{"region":"beijing","gender":"M"}}'),
    ("101", '{"id":101,"name":"json-4","extendinfos":"null"}'),
    ("102", '{"id":102,"name":"json-5","extendinfo":{"region":"beijing","gender":"M"}}'),
]


async def test_flatten_bad_record_example(sql_target: SqlTarget) -> None:
    """The documents' abnormal-data example: 101 names no column; 100 and 102 land."""
    table = unique_table("test_flatten")
    flatten_table(sql_target, table)
    config = sql_target.config(table=table, format="FLATTEN", mode="VALUE")
    records = [make_record("flatten_test", 0, i, k, v) for i, (k, v) in enumerate(BAD_EXAMPLE)]
    failures = await write(sql_target, config, records)
    assert [f.record.value for f in failures] == [BAD_EXAMPLE[1][1].encode()]
    assert "'extendinfos' of flatten_test/0@1 has no column" in str(failures[0].error)
    rows = sql_target.rows(table, "offset", "id", "name", "extendinfo")
    assert [(*r[:3], as_json(r[3])) for r in rows] == [
        (0, 100, "json-3", {"gender": "M", "region": "beijing"}),
        (2, 102, "json-5", {"gender": "M", "region": "beijing"}),
    ]


async def test_flatten_key_mode_and_json_scalars(sql_target: SqlTarget) -> None:
    table = unique_table("flatten_key")
    q = sql_target.q
    fixed_table(
        sql_target,
        table,
        "id BIGINT",
        "price NUMERIC(10,2)",
        "ok BOOLEAN",
        f"tags {sql_target.json_type}",
        f"{q('Name')} TEXT",
    )
    config = sql_target.config(table=table, format="FLATTEN", mode="KEY")
    key = '{"id": 7, "price": 12.5, "ok": true, "tags": ["a", "b"], "name": "Mixed"}'
    records = [make_record("t", 0, 0, key, "ignored"), make_record("t", 0, 1, None, "x")]
    failures = await write(sql_target, config, records)
    assert [f.record.offset for f in failures] == [1]  # a null key cannot be flattened
    [row] = sql_target.rows(table, "id", "price", "ok", "tags", "Name")
    assert (row[0], float(row[1]), bool(row[2]), as_json(row[3]), row[4]) == (
        7,
        12.5,
        True,
        ["a", "b"],
        "Mixed",
    )


async def test_binary_format_keeps_bytes(sql_target: SqlTarget) -> None:
    q = sql_target.q
    table = unique_table("binary")
    blob = "BYTEA" if sql_target.kind == "postgres" else "LONGBLOB"
    fixed_table(sql_target, table, f"{q('key')} {blob}", f"{q('value')} {blob}")
    config = sql_target.config(table=table, format="BINARY", mode="DEFAULT")
    raw = bytes(range(256))
    assert await write(sql_target, config, [make_record("t", 0, 0, b"\x00\xff", raw)]) == []
    [(key, value)] = sql_target.rows(table, "key", "value")
    assert (bytes(key), bytes(value)) == (b"\x00\xff", raw)


async def test_text_rejects_bytes_that_are_not_utf8(sql_target: SqlTarget) -> None:
    q = sql_target.q
    table = unique_table("text_utf8")
    fixed_table(sql_target, table, f"{q('key')} TEXT", f"{q('value')} TEXT")
    config = sql_target.config(table=table, format="TEXT", mode="VALUE")
    records = [make_record("t", 0, 0, None, b"\xff\xfe"), make_record("t", 0, 1, None, "ok")]
    failures = await write(sql_target, config, records)
    assert [f.record.offset for f in failures] == [0]
    assert "not valid UTF-8" in str(failures[0].error)
    assert sql_target.rows(table, "value") == [("ok",)]


async def test_fixed_columns_can_be_left_out(sql_target: SqlTarget) -> None:
    """AnalyticDB style: the JSON keys are the column names, nothing else is written."""
    table = unique_table("adb")
    sql_target.execute(f"CREATE TABLE {sql_target.q(table)} (id BIGINT, name TEXT)")
    config = sql_target.config(table=table, format="FLATTEN", mode="VALUE", fixed_columns=[])
    records = [make_record("t", 0, 0, None, '{"id": 1, "name": "test"}')]
    assert await write(sql_target, config, records) == []
    assert sql_target.rows(table, "id", "name", order="id") == [(1, "test")]
    single = unique_table("adb_one")
    sql_target.execute(f"CREATE TABLE {sql_target.q(single)} (id BIGINT)")
    config = sql_target.config(table=single, format="FLATTEN", mode="VALUE", fixed_columns=[])
    assert await write(sql_target, config, [make_record("t", 0, 0, None, '{"id": 2}')]) == []
    assert sql_target.rows(single, "id", order="id") == [(2,)]


async def test_a_missing_fixed_column_is_a_clear_error(sql_target: SqlTarget) -> None:
    table = unique_table("nopt")
    sql_target.execute(f"CREATE TABLE {sql_target.q(table)} (id BIGINT)")
    config = sql_target.config(table=table, format="FLATTEN", mode="VALUE")
    with pytest.raises(Exception, match=r"has no column 'topic', 'partition', 'offset', 'pt'"):
        await write(sql_target, config, [make_record("t", 0, 0, None, '{"id": 1}')])
