"""Unit tests of the SQL sinks' own code: options, row building, statement planning,
connection parameters, and the pipeline's stop rule (no server needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
import pytest
from aiokafka import TopicPartition

from etl.config import ETLSettings, load_settings
from etl.errors import ConfigurationError, RecordError
from etl.redact import Redactor
from etl.runtime.consumer import PipelineHalted
from etl.testing.sink_conformance import make_record
from sinks.base import RecordFailure, Sink, SinkBatch, SinkPipeline
from sinks.mysql.config import MySQLSinkConfig, parse_dsn
from sinks.mysql.sink import MySQLSink, connect_kwargs, quote, quote_fmt
from sinks.postgres.config import PostgresSinkConfig
from sinks.postgres.sink import connection_params
from sinks.sql.rows import RowBuilder
from sinks.sql.table import Column, PlannedColumn, TableInfo
from sinks.sql.writer import plan_statements

PG = {"name": "pg", "type": "postgres", "topics": ["t"], "dsn": "postgresql://u@h/db"}


def pg(**options: Any) -> PostgresSinkConfig:
    return PostgresSinkConfig.model_validate({**PG, "table": "t", **options})


def problems(tmp_path: Path, sink: dict[str, Any]) -> list[str]:
    path = tmp_path / "etl.yaml"
    path.write_text(json.dumps({"sinks": [sink]}))
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ={})
    return caught.value.problems


def test_bad_options_are_reported_by_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {**PG, "format": "json", "mode": "default", "insert_mode": "upsert", "table": "{nope}"},
    )
    assert "sinks[0].table: field required" not in found
    assert any(p.startswith("sinks[0].table: ") and "{nope}" in p for p in found)
    assert any(p.startswith("sinks[0].mode: ") and "TEXT or BINARY only" in p for p in found)
    assert any(p.startswith("sinks[0].pk_mode: ") and "needs a primary key" in p for p in found)
    missing = problems(tmp_path, {"name": "m", "type": "mysql", "topics": ["t"]})
    assert "sinks[0].table: field required" in missing
    assert any("set dsn, or host" in p for p in missing)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delete_enabled": True, "pk_mode": "kafka"}, "delete_enabled needs pk_mode record_key"),
        ({"format": "FLATTEN", "mode": "VALUE", "pk_mode": "record_value"}, "needs pk_fields"),
        ({"format": "CSV", "mode": "VALUE", "auto_create": True}, "needs columns"),
        ({"pk_mode": "kafka", "fixed_columns": ["topic"]}, "needs the fixed columns"),
        ({"columns": [{"name": "x", "type": "INT; DROP TABLE y"}]}, "is not a column type"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"delete_mode": "column", "pk_mode": "kafka"}, "delete_mode column needs pk_mode"),
        (
            {"delete_enabled": True, "delete_mode": "column", "pk_mode": "record_key"},
            "delete_enabled: true means delete_mode: row",
        ),
        ({"auto_create": True, "pk_mode": "record_key", "pk_fields": ["id"]}, "in columns"),
    ],
)
def test_option_checks(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pg(**options)


def test_secrets_stay_secret() -> None:
    config = pg(dsn="postgresql://u:hunter22@h/db", password="hunter22")
    assert "hunter22" not in repr(config) and "hunter22" not in str(config.model_dump())
    settings = ETLSettings(sinks=[{**PG, "table": "t", "password": "hunter22"}])
    assert Redactor(settings.secret_values())("failed with hunter22") == "failed with ***"


# ---- rows -----------------------------------------------------------------------------------


def table(*names: str, auto: tuple[str, ...] = ()) -> TableInfo:
    return TableInfo("t", [Column(n, auto=n in auto) for n in names])


FIXED = ("topic", "partition", "offset", "pt")


def test_pt_windows_follow_the_documents() -> None:
    stamp = datetime(2023, 7, 13, 21, 13, 42, tzinfo=UTC).timestamp()
    record = make_record("t", 0, 0, None, "x", timestamp=int(stamp * 1000))
    expected = {"DAY": "07-13-2023", "HOUR": "07-13-2023 21", "MINUTE": "07-13-2023 21:13"}
    for window, text in expected.items():
        builder = RowBuilder(pg(partition_window_type=window), clock=lambda: stamp)
        assert builder.pt(record) == text
    shanghai = RowBuilder(pg(partition_time="record", timezone="Asia/Shanghai"), clock=lambda: 0.0)
    assert shanghai.pt(record) == "07-14-2023 05"


def test_flatten_fields_map_to_columns() -> None:
    builder = RowBuilder(pg(format="FLATTEN", mode="VALUE"))
    info = table(*FIXED, "Id", "name", "extra", "created", auto=("created",))
    record = make_record("t", 1, 5, None, '{"id": 1, "name": {"a": [1, 2]}}')
    op = builder.build(record, info)
    assert op.values["Id"] == "1"  # a field matches a column ignoring case
    assert op.values["name"] == '{"a":[1,2]}'  # nested -> JSON text
    assert op.values["extra"] is None  # put: the whole row
    assert "created" not in op.values  # a column with a default is left to the database
    assert (op.values["topic"], op.values["partition"], op.values["offset"]) == ("t", 1, 5)
    collide = make_record("t", 0, 0, None, '{"offset": 3}')
    with pytest.raises(RecordError, match="collides with the fixed column"):
        builder.build(collide, info)
    for bad, message in (("[1]", "JSON list, not an object"), ("{", "not valid JSON")):
        with pytest.raises(RecordError, match=message):
            builder.build(make_record("t", 0, 0, None, bad), info)


def test_native_scalars_for_mysql() -> None:
    builder = RowBuilder(pg(format="FLATTEN", mode="VALUE", fixed_columns=[]), native_scalars=True)
    op = builder.build(
        make_record("t", 0, 0, None, '{"a": 1, "b": true, "c": 1.5}'), table("a", "b", "c")
    )
    assert op.values == {"a": 1, "b": True, "c": 1.5}


def test_record_key_fields() -> None:
    config = pg(format="FLATTEN", mode="VALUE", pk_mode="record_key", pk_fields=["k1", "k2"])
    builder = RowBuilder(config)
    info = table(*FIXED, "k1", "k2", "v")
    op = builder.build(make_record("t", 0, 0, '{"k1": "a", "k2": 2}', '{"v": 1}'), info)
    assert op.key == ("a", "2")
    with pytest.raises(RecordError, match="lacks primary-key field 'k2'"):
        builder.build(make_record("t", 0, 0, '{"k1": "a"}', '{"v": 1}'), info)
    with pytest.raises(RecordError, match="not a JSON object with fields k1, k2"):
        builder.build(make_record("t", 0, 0, "plain", '{"v": 1}'), info)


# ---- statements -----------------------------------------------------------------------------


def ops(*spec: tuple[str, bool]) -> list[Any]:
    config = pg(format="TEXT", mode="DEFAULT", pk_mode="record_key", delete_enabled=True)
    builder = RowBuilder(config)
    info = table(*FIXED, "key", "value")
    return [
        builder.build(make_record("t", 0, i, key, None if delete else "v"), info)
        for i, (key, delete) in enumerate(spec)
    ]


def test_statements_keep_order_and_split_repeated_keys() -> None:
    rows = ops(("a", False), ("b", False), ("a", False), ("a", True), ("c", True))
    plain = plan_statements(rows, "upsert", ("key",))
    assert [(s.kind, [o.record.offset for o in s.ops]) for s in plain] == [
        ("upsert", [0, 1, 2]),
        ("delete", [3, 4]),
    ]
    split = plan_statements(rows, "upsert", ("key",), split_repeats=frozenset({"upsert"}))
    assert [[o.record.offset for o in s.ops] for s in split] == [[0, 1], [2], [3, 4]]


# ---- connections ----------------------------------------------------------------------------


def test_postgres_verifies_tls_by_default() -> None:
    _, params = connection_params(pg())
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "system"
    _, params = connection_params(pg(dsn="postgresql://u@h/db?sslmode=require"))
    assert params["sslmode"] == "require" and "sslrootcert" not in params
    _, params = connection_params(pg(sslmode="disable"))
    assert params["sslmode"] == "disable"


def test_mysql_dsn_and_tls() -> None:
    address = parse_dsn("mysql://us%40r:p%3Ass@db.example:3307/shop?ssl_mode=required")
    assert (address.user, address.password, address.host, address.port) == (
        "us@r",
        "p:ss",
        "db.example",
        3307,
    )
    base = {"name": "m", "type": "mysql", "topics": ["t"], "table": "t"}
    config = MySQLSinkConfig.model_validate({**base, "host": "db", "database": "shop"})
    kwargs = connect_kwargs(config)
    assert kwargs["ssl"].check_hostname is True  # verify_identity by default
    config = MySQLSinkConfig.model_validate({**base, "dsn": "mysql://db/shop?ssl_mode=disabled"})
    assert connect_kwargs(config)["ssl_disabled"] is True
    with pytest.raises(ValueError, match="set database"):
        MySQLSinkConfig.model_validate({**base, "dsn": "mysql://db"})
    with pytest.raises(ValueError, match="dsn option 'sslmode' is not known"):
        MySQLSinkConfig.model_validate({**base, "dsn": "mysql://db/x?sslmode=x"})
    assert (quote("a`b%s"), quote_fmt("a`b%s")) == ("`a``b%s`", "`a``b%%s`")


async def test_mysql_add_columns_is_plain_sql_and_tolerates_a_duplicate() -> None:
    # MySQL (unlike MariaDB) has no ADD COLUMN IF NOT EXISTS; a column another worker
    # added meanwhile (error 1060) is fine, any other error is not.
    base = {"name": "m", "type": "mysql", "topics": ["t"], "table": "t"}
    config = MySQLSinkConfig.model_validate({**base, "host": "db", "database": "shop"})
    sink = MySQLSink(config, settings=ETLSettings(), redact=Redactor())
    sent: list[str] = []

    def run_sql(query: str, args: Any = None) -> list[Any]:
        sent.append(query)
        raise pymysql.err.OperationalError(1060 if "dup" in query else 1146, "no")

    sink._sql = run_sql  # type: ignore[method-assign]
    try:
        await sink.add_columns("t", [PlannedColumn("dup", None, "BIGINT", True)])
        with pytest.raises(pymysql.err.OperationalError):
            await sink.add_columns("t", [PlannedColumn("other", None, "BIGINT", True)])
    finally:
        await sink.close()
    assert sent == [
        "ALTER TABLE `t` ADD COLUMN `dup` BIGINT",
        "ALTER TABLE `t` ADD COLUMN `other` BIGINT",
    ]


# ---- the pipeline's stop rule ----------------------------------------------------------------


class RejectingSink(Sink[Any]):
    """Rejects values ``bad``; remembers what it was asked to write."""

    seen: list[list[int]]

    async def write(self, batch: SinkBatch) -> list[RecordFailure]:
        self.seen.append([r.offset for r in batch.records])
        assert batch.halt_on_failure
        return [RecordFailure(r, RecordError("bad")) for r in batch.records if r.value == b"bad"]


async def test_stop_rule_writes_nothing_after_the_bad_record() -> None:
    config = pg(batch_size=2, on_error="stop")
    settings = ETLSettings()
    pipeline_class = type("P", (SinkPipeline,), {"sink_class": RejectingSink})
    pipeline = pipeline_class(config, settings=settings, redact=Redactor())
    pipeline.sink.seen = []
    values = [b"ok", b"bad", b"ok", b"ok", b"ok"]
    tp = TopicPartition("t", 0)
    with pytest.raises(PipelineHalted) as caught:
        await pipeline.process(
            {tp: [make_record("t", 0, i, None, v) for i, v in enumerate(values)]}
        )
    assert pipeline.sink.seen == [[0, 1]]  # the chunks after the bad record were not written
    assert caught.value.commit == {tp: 1}
