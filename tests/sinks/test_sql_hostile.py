"""Hostile input through a SQL sink pipeline on the real broker and databases:
a dead letter that cannot be written halts the sink once (no row written twice),
and a 5 MiB record goes to the error topic in its reduced form."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition

from etl.deadletter import dead_letter_headers, record_bytes, smallest_dead_letter
from etl.redact import Redactor
from etl.testing.hostile import FIVE_MIB, HostileRecord, produce_hostile
from etl.testing.kafka import create_topic, read_all
from etl.testing.sink_conformance import ConformanceHarness, _committed, _until, make_record
from sinks.base import sink_pipeline_factory
from tests.sinks.sqlharness import SqlTarget, unique_table
from tests.sinks.test_sql_worker import sink

pytestmark = pytest.mark.kafka


def text_records(bad_value: bytes) -> list[HostileRecord]:
    """Values "v1".."v5" (TEXT rows) with the third one replaced by ``bad_value``."""
    out = [HostileRecord(f"v{n}", str(n).encode(), f"v{n}".encode(), n) for n in range(1, 6)]
    out[2] = HostileRecord("bad", b"3", bad_value, 3)
    return out


async def run_sink(
    target: SqlTarget,
    bootstrap: str,
    topic: str,
    records: list[HostileRecord],
    name: str,
    **options: Any,
) -> tuple[Any, Any]:
    """Produce ``records`` to a new ``topic``; a started TEXT/VALUE sink pipeline reading it."""
    await create_topic(bootstrap, topic, 1)
    await produce_hostile(bootstrap, topic, records)
    settings = ConformanceHarness().settings(bootstrap)
    kafka = options.pop("kafka", {})
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update=kafka)})
    config = target.config_class.model_validate(
        sink(target, name, topic, auto_create=True, format="TEXT", mode="VALUE", **options)
    )
    pipeline = sink_pipeline_factory(target.sink_class)(
        config, settings=settings, redact=Redactor(settings.secret_values())
    )
    await pipeline.start()
    return pipeline, config


async def test_an_unwritable_dead_letter_halts_once_and_writes_no_row_twice(
    sql_target: SqlTarget, kafka_bootstrap: str
) -> None:
    # max_request_size 1024 (the least allowed) and long names: even the smallest dead
    # letter (only the etl.* headers) is larger than the producer may send.
    uid = uuid.uuid4().hex[:8]
    topic = f"t{uid}-" + "x" * 200
    name = f"s{uid}-" + "n" * 150
    table = unique_table("dlq_refused")
    bad = b"\xff not UTF-8"
    probe = make_record(topic, 0, 2, b"3", bad)
    headers = dead_letter_headers(
        probe, pipeline=name, stage="sink", exc=ValueError("x" * 300), redact=Redactor()
    )
    smallest = smallest_dead_letter(probe.key, probe.value, headers)
    assert record_bytes(smallest.key, smallest.value, smallest.headers) > 1024
    errors = f"errors-{uid}"
    pipeline, _ = await run_sink(
        sql_target,
        kafka_bootstrap,
        topic,
        text_records(bad),
        name,
        table=table,
        runtime_error_topic=errors,
        kafka={"max_request_size": 1024},
    )
    try:
        await _until(
            lambda: asyncio.sleep(0, str(pipeline.status.state) == "halted"), what="the halt"
        )
        await asyncio.sleep(1.5)  # time enough for a retry loop to write rows again
    finally:
        await pipeline.stop()
    assert "cannot dead-letter" in (pipeline.status.error or "")
    assert f"{topic}/0@2" in (pipeline.status.error or "")
    values = [row[0] for row in sql_target.rows(table, "value")]
    assert sorted(values) == ["v1", "v2", "v4", "v5"]  # each once: nothing rewritten
    committed = await _committed(kafka_bootstrap, pipeline.group_id, TopicPartition(topic, 0))
    assert committed == 2  # nothing past the record whose dead letter failed
    assert await read_all(kafka_bootstrap, errors) == []


async def test_a_5_mib_record_goes_to_the_error_topic_in_reduced_form(
    sql_target: SqlTarget, kafka_bootstrap: str
) -> None:
    uid = uuid.uuid4().hex[:8]
    topic = f"big-{uid}"
    table = unique_table("big")
    big = b"\xff" + b"x" * (FIVE_MIB - 1)  # not UTF-8: a TEXT row rejects it
    errors = f"errors-{uid}"
    pipeline, _ = await run_sink(
        sql_target,
        kafka_bootstrap,
        topic,
        text_records(big),
        f"big-{uid}",
        table=table,
        runtime_error_topic=errors,
    )
    try:

        async def committed() -> bool:
            tp = TopicPartition(topic, 0)
            return await _committed(kafka_bootstrap, pipeline.group_id, tp) == 5

        await _until(committed, what="all 5 records handled")
    finally:
        await pipeline.stop()
    assert str(pipeline.status.state) != "failed", pipeline.status.error
    assert sorted(row[0] for row in sql_target.rows(table, "value")) == ["v1", "v2", "v4", "v5"]
    [dead] = await read_all(kafka_bootstrap, errors)
    headers = dict(dead.headers)
    assert headers["etl.truncated"] == b"true"
    assert headers["etl.original.size"] == str(FIVE_MIB).encode()
    assert headers["etl.original.sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert headers["etl.source.offset"] == b"2"
    assert big.startswith(dead.value)
    assert 1024 * 1024 - 8192 < len(dead.value) < 1024 * 1024


async def test_a_hostile_topic_name_is_one_quoted_table(
    sql_target: SqlTarget, kafka_bootstrap: str
) -> None:
    # Quotes, a statement end, format placeholders and a comment: one table of that name.
    uid = uuid.uuid4().hex[:8]
    topic = f"h{uid}'\"`;%s%%--)"
    pipeline, _ = await run_sink(
        sql_target,
        kafka_bootstrap,
        topic,
        text_records(b"v3"),
        f"tables-{uid}",
        table="{topic}_rows",
    )
    table = f"{topic}_rows"
    try:

        async def landed() -> bool:
            return sql_target.table_exists(table) and sql_target.count(table) == 5

        await _until(landed, what="5 rows in the table named after the topic")
    finally:
        await pipeline.stop()
    assert sorted(row[0] for row in sql_target.rows(table, "value")) == [
        "v1",
        "v2",
        "v3",
        "v4",
        "v5",
    ]
