"""Primary keys, insert/write modes, deletes, auto-create and quoting, on both databases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from etl.errors import FatalError, RetriableError
from etl.testing.sink_conformance import make_record
from sinks.sql.table import PlannedColumn
from tests.sinks.sqlharness import SqlTarget, unique_table
from tests.sinks.test_sql_formats import write

COLUMNS = [
    {"name": "id", "type": "BIGINT"},
    {"name": "name", "type": "VARCHAR(64)"},
    {"name": "extra", "type": "VARCHAR(64)"},
]


def value(**fields: Any) -> str:
    return json.dumps(fields)


def keyed(target: SqlTarget, **options: Any) -> Any:
    """FLATTEN rows keyed by the JSON key's ``id``, in an auto-created table."""
    values: dict[str, Any] = {
        "table": unique_table("keyed"),
        "format": "FLATTEN",
        "mode": "VALUE",
        "insert_mode": "upsert",
        "pk_mode": "record_key",
        "pk_fields": ["id"],
        "auto_create": True,
        "columns": COLUMNS,
    }
    values.update(options)
    return target.config(**values)


async def test_upsert_by_kafka_coordinates_survives_redelivery(sql_target: SqlTarget) -> None:
    q = sql_target.q
    table = unique_table("coords")
    config = sql_target.config(
        table=table,
        format="TEXT",
        mode="DEFAULT",
        insert_mode="upsert",
        pk_mode="kafka",
        auto_create=True,
    )
    records = [make_record("t", p, o, f"k{p}{o}", f"v{p}{o}") for p in (0, 1) for o in range(5)]
    assert await write(sql_target, config, records) == []
    assert await write(sql_target, config, records[3:]) == []  # redelivered
    assert sql_target.count(table) == 10
    with pytest.raises(Exception, match=r"(?i)duplicate"):
        # the table really has the (topic, partition, offset) primary key
        sql_target.execute(
            f"INSERT INTO {q(table)} ({q('topic')}, {q('partition')}, {q('offset')}) "
            "VALUES ('t', 0, 0)"
        )


async def test_upsert_by_record_key_keeps_one_row_per_key(sql_target: SqlTarget) -> None:
    config = keyed(sql_target)
    first = [make_record("t", 0, i, json.dumps({"id": i}), value(name=f"a{i}")) for i in range(3)]
    again = [
        make_record("t", 0, 3, json.dumps({"id": 1}), value(name="b1")),
        make_record("t", 0, 4, json.dumps({"id": 1}), value(name="c1")),  # same key, same batch
        make_record("t", 0, 5, json.dumps({"id": 2}), value(id=99, name="b2")),  # the key wins
    ]
    assert await write(sql_target, config, first) == []
    assert await write(sql_target, config, again) == []
    assert sql_target.rows(config.table, "id", "name", order="id") == [
        (0, "a0"),
        (1, "c1"),
        (2, "b2"),
    ]


async def test_plain_key_is_the_only_pk_field(sql_target: SqlTarget) -> None:
    config = keyed(sql_target)
    records = [make_record("t", 0, 0, "5", value(name="x")), make_record("t", 0, 1, "5", "{}")]
    assert await write(sql_target, config, records) == []
    assert sql_target.rows(config.table, "id", "name", order="id") == [(5, None)]


async def test_text_key_column_as_primary_key(sql_target: SqlTarget) -> None:
    table = unique_table("textkey")
    config = sql_target.config(
        table=table,
        format="TEXT",
        mode="DEFAULT",
        insert_mode="upsert",
        pk_mode="record_key",
        auto_create=True,
        delete_enabled=True,
    )
    records = [
        make_record("t", 0, 0, "a", "1"),
        make_record("t", 0, 1, "b", "1"),
        make_record("t", 0, 2, "a", "2"),
        make_record("t", 0, 3, "b", None),  # tombstone: delete b
    ]
    assert await write(sql_target, config, records) == []
    assert sql_target.rows(table, "key", "value", order="key") == [("a", "2")]


async def test_write_mode_put_replaces_update_keeps(sql_target: SqlTarget) -> None:
    for write_mode, expected in (("put", [(1, "b", None)]), ("update", [(1, "b", "x")])):
        config = keyed(sql_target, write_mode=write_mode)
        full = make_record("t", 0, 0, '{"id": 1}', value(name="a", extra="x"))
        partial = make_record("t", 0, 1, '{"id": 1}', value(name="b"))
        assert await write(sql_target, config, [full]) == []
        assert await write(sql_target, config, [partial]) == []
        assert sql_target.rows(config.table, "id", "name", "extra", order="id") == expected


async def test_insert_mode_update_touches_existing_rows_only(sql_target: SqlTarget) -> None:
    config = keyed(sql_target)
    assert await write(sql_target, config, [make_record("t", 0, 0, "1", value(name="a"))]) == []
    update = keyed(sql_target, table=config.table, insert_mode="update", write_mode="update")
    records = [
        make_record("t", 0, 1, "1", value(name="b")),
        make_record("t", 0, 2, "2", value(name="n")),
    ]
    assert await write(sql_target, update, records) == []
    assert sql_target.rows(config.table, "id", "name", order="id") == [(1, "b")]


async def test_tombstone_deletes_only_when_enabled(sql_target: SqlTarget) -> None:
    config = keyed(sql_target, delete_enabled=True)
    rows = [make_record("t", 0, i, str(i), value(name=f"n{i}")) for i in range(3)]
    assert await write(sql_target, config, rows) == []
    assert await write(sql_target, config, [make_record("t", 0, 3, "1", None)]) == []
    assert sql_target.rows(config.table, "id", order="id") == [(0,), (2,)]
    # The same key written, deleted and written again in one batch: the last write wins.
    batch = [
        make_record("t", 0, 4, "7", value(name="a")),
        make_record("t", 0, 5, "7", None),
        make_record("t", 0, 6, "7", value(name="b")),
    ]
    assert await write(sql_target, config, batch) == []
    assert sql_target.rows(config.table, "id", "name", order="id")[-1] == (7, "b")
    disabled = keyed(sql_target)
    failures = await write(sql_target, disabled, [make_record("t", 0, 0, "1", None)])
    assert "is null; format FLATTEN needs a JSON object" in str(failures[0].error)


async def test_tablestore_update_and_delete_modes(sql_target: SqlTarget) -> None:
    """The documents' Tablestore rules (003_660b7a57af9440c3.txt, line 3175)."""

    def rec(offset: int, key: int, data: str | None) -> Any:
        return make_record("t", 0, offset, str(key), data)

    start = [rec(0, 1, value(name="a", extra="x")), rec(1, 2, value(name="b", extra="y"))]
    # update + none (or row): a null field is ignored; all fields null is a rejected record.
    config = keyed(sql_target, write_mode="update", delete_mode="none")
    assert await write(sql_target, config, start) == []
    failures = await write(
        sql_target,
        config,
        [rec(2, 1, value(name=None, extra="x2")), rec(3, 2, value(name=None, extra=None))],
    )
    assert [f.record.offset for f in failures] == [3]
    assert "every field of t/0@3 is null" in str(failures[0].error)
    assert sql_target.rows(config.table, "id", "name", "extra", order="id") == [
        (1, "a", "x2"),
        (2, "b", "y"),
    ]
    # update + column: a null field sets its column NULL; a tombstone deletes nothing.
    column = keyed(sql_target, table=config.table, write_mode="update", delete_mode="column")
    failures = await write(sql_target, column, [rec(4, 1, value(name=None)), rec(5, 2, None)])
    assert [f.record.offset for f in failures] == [5]
    assert sql_target.rows(config.table, "id", "name", "extra", order="id") == [
        (1, None, "x2"),
        (2, "b", "y"),
    ]
    # update + row_and_column: both.
    both = keyed(sql_target, table=config.table, write_mode="update", delete_mode="row_and_column")
    assert await write(sql_target, both, [rec(6, 1, None), rec(7, 2, value(extra=None))]) == []
    assert sql_target.rows(config.table, "id", "name", "extra", order="id") == [(2, "b", None)]
    # put + row: nulls overwrite (the whole row is written), a tombstone deletes the row.
    put = keyed(sql_target, table=config.table, write_mode="put", delete_mode="row")
    assert await write(sql_target, put, [rec(8, 2, value(name=None)), rec(9, 3, "{}")]) == []
    assert sql_target.rows(config.table, "id", "name", "extra", order="id") == [
        (2, None, None),
        (3, None, None),
    ]
    assert await write(sql_target, put, [rec(10, 3, None)]) == []
    assert sql_target.rows(config.table, "id", order="id") == [(2,)]


async def test_insert_mode_rejects_a_duplicate_key(sql_target: SqlTarget) -> None:
    config = keyed(sql_target, insert_mode="insert")
    records = [
        make_record("t", 0, 0, "1", value(name="a")),
        make_record("t", 0, 1, "1", value(name="again")),
        make_record("t", 0, 2, "2", value(name="b")),
    ]
    failures = await write(sql_target, config, records)
    assert [f.record.offset for f in failures] == [1]
    assert sql_target.rows(config.table, "id", "name", order="id") == [(1, "a"), (2, "b")]


async def test_a_bad_row_in_a_keyed_batch_keeps_order_of_the_rest(sql_target: SqlTarget) -> None:
    config = keyed(sql_target)
    records = [
        make_record("t", 0, 0, "1", value(name="a")),
        make_record("t", 0, 1, "1", value(name="x" * 100)),  # too long for VARCHAR(64)
        make_record("t", 0, 2, "2", value(name="b")),
        make_record("t", 0, 3, "1", value(name="c")),
    ]
    failures = await write(sql_target, config, records)
    assert [f.record.offset for f in failures] == [1]
    assert sql_target.rows(config.table, "id", "name", order="id") == [(1, "c"), (2, "b")]


HOSTILE = ['we"ird', "back`tick", "per%cent%s", "%(x)s", "drop; --", "Ünï cödé"]


async def test_hostile_identifiers_are_quoted(sql_target: SqlTarget) -> None:
    table = 'tab"le`%s; drop'
    columns = [{"name": name, "type": "VARCHAR(32)"} for name in HOSTILE]
    config = sql_target.config(
        table=table + "{topic}",
        format="FLATTEN",
        mode="VALUE",
        auto_create=True,
        columns=columns,
        insert_mode="upsert",
        pk_mode="kafka",
    )
    fields = {name: f"v{i}" for i, name in enumerate(HOSTILE)}
    records = [make_record("x", 0, 0, None, json.dumps(fields))]
    assert await write(sql_target, config, records) == []
    assert await write(sql_target, config, records) == []  # the upsert path too
    assert sql_target.rows(table + "x", *HOSTILE) == [tuple(fields.values())]


async def test_auto_create_adds_declared_columns_and_never_drops(sql_target: SqlTarget) -> None:
    table = unique_table("grow")
    base = {"table": table, "format": "FLATTEN", "mode": "VALUE", "auto_create": True}
    first = sql_target.config(**base, columns=COLUMNS)
    assert await write(sql_target, first, [make_record("t", 0, 0, None, value(id=1))]) == []
    second = sql_target.config(**base, columns=[*COLUMNS[:1], {"name": "more", "type": "BIGINT"}])
    assert await write(sql_target, second, [make_record("t", 0, 1, None, value(more=2))]) == []
    assert sql_target.rows(table, "id", "name", "extra", "more") == [
        (1, None, None, None),
        (None, None, None, 2),
    ]


async def test_missing_table_without_auto_create_is_fatal(sql_target: SqlTarget) -> None:
    config = sql_target.config(table=unique_table("absent"), format="TEXT", mode="VALUE")
    with pytest.raises(FatalError, match="does not exist; create it or set auto_create"):
        await write(sql_target, config, [make_record("t", 0, 0, None, "x")])


async def test_unreachable_database_is_retriable_and_keeps_the_password(
    sql_target: SqlTarget,
) -> None:
    secret = "s3cr3t-pass-word"
    port = 9  # discard port: nothing listens
    if sql_target.kind == "postgres":
        dsn = f"postgresql://etl:{secret}@127.0.0.1:{port}/db"
    else:
        dsn = f"mysql://etl:{secret}@127.0.0.1:{port}/db"
    config = sql_target.config(table="t", dsn=dsn, connect_timeout_s=2)
    sink = sql_target.sink(config)
    with pytest.raises(RetriableError) as caught:
        await sink.open()
    assert secret not in str(caught.value)
    assert secret not in repr(config)


async def test_upsert_without_a_unique_key_is_a_clear_error(sql_target: SqlTarget) -> None:
    table = unique_table("nokey")
    sql_target.execute(f"CREATE TABLE {sql_target.q(table)} (id BIGINT, name TEXT)")
    config = sql_target.config(
        table=table,
        format="FLATTEN",
        mode="VALUE",
        fixed_columns=[],
        insert_mode="upsert",
        pk_mode="record_value",
        pk_fields=["id"],
    )
    with pytest.raises(FatalError, match=r"no primary key or unique index on exactly \(id\)"):
        await write(sql_target, config, [make_record("t", 0, 0, None, '{"id": 1}')])


async def test_adding_a_column_another_worker_just_added_is_harmless(
    sql_target: SqlTarget,
) -> None:
    # Two workers may both see a declared column missing; the second ADD must not fail.
    # (MySQL, unlike MariaDB, has no ADD COLUMN IF NOT EXISTS.)
    table = unique_table("race")
    config = sql_target.config(
        table=table, format="FLATTEN", mode="VALUE", auto_create=True, columns=COLUMNS
    )
    assert await write(sql_target, config, [make_record("t", 0, 0, None, value(id=1))]) == []
    sink = sql_target.sink(config)
    await sink.open()
    try:
        await sink.add_columns(table, [PlannedColumn("name", None, "VARCHAR(64)", True)])
    finally:
        await sink.close()
    assert sql_target.rows(table, "id", "name") == [(1, None)]
