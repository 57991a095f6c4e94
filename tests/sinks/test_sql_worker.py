"""The SQL sinks end to end: kcat -> real broker -> a real ``etl worker`` process -> a real
PostgreSQL / MariaDB, including a 20 s database outage and a kill -9 mid-stream."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etl.testing.kafka import create_topic, produce, read_all
from etl.testing.kcat import kcat_produce
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, post_json, write_config
from tests.sinks.sqlharness import SqlTarget, as_json, unique_table
from tests.sinks.test_sql_formats import BAD_EXAMPLE, fixed_table, flatten_table

pytestmark = pytest.mark.kafka


def sink(target: SqlTarget, name: str, topic: str, **options: Any) -> dict[str, Any]:
    """A sink entry for etl.yaml: earliest offset, short linger and backoff for tests."""
    values = target.options(
        name=name,
        topics=[topic],
        start_offset="earliest",
        linger_ms=200,
        retry_backoff_ms=200,
        retry_backoff_max_ms=2000,
        **options,
    )
    return values


def worker_config(tmp_path: Path, bootstrap: str, uid: str, sinks: list[dict[str, Any]]) -> Path:
    return write_config(
        tmp_path,
        bootstrap,
        kafka={"group_prefix": f"t{uid}"},
        errors={"dead_letter_topic": f"dlq-{uid}"},
        sinks=sinks,
    )


def wait(
    check: Callable[[], Any], worker: WorkerProcess, timeout: float = 90, what: str = ""
) -> Any:
    """Poll ``check`` until truthy, failing with the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if worker.process is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log()[-5000:]}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.log()[-5000:]}")


def landed(target: SqlTarget, table: str, rows: int) -> bool:
    return count_or_zero(target, table) >= rows


def count_or_zero(target: SqlTarget, table: str) -> int:
    try:
        return target.count(table)
    except Exception:  # the table is not there yet, or the server is down
        return 0


def test_document_examples_through_a_worker(
    sql_target: SqlTarget, kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    """TEXT, CSV, JSON and FLATTEN examples, and the bad-record example under each rule."""
    q = sql_target.q
    tables = {name: unique_table(f"doc_{name}") for name in ("text", "csv", "json", "flatten")}
    fixed_table(sql_target, tables["text"], f"{q('key')} TEXT", f"{q('value')} TEXT")
    fixed_table(sql_target, tables["csv"], "id BIGINT", "name TEXT", "region TEXT")
    fixed_table(
        sql_target, tables["json"], f"{q('key')} TEXT", f"{q('value')} {sql_target.json_type}"
    )
    flatten_table(sql_target, tables["flatten"])
    lines = {
        "text": ["123\tabc", "456\tedf"],
        "csv": ["123\t1103,zhangsan,china", "456\t1104,lisi,usa"],
        "json": [
            '123\t{"id":123,"name":"json-1","region":"beijing"}',
            '456\t{"id":456,"name":"json-2","region":"hangzhou"}',
        ],
        "flatten": [
            '123\t{"id":123,"name":"json-1","extendinfo":{"region":"beijing","sex":"M"}}',
            '456\t{"id":456,"name":"json-2","extendinfo":{"region":"hangzhou","sex":"W"}}',
        ],
    }
    formats = {"text": "TEXT", "csv": "CSV", "json": "JSON", "flatten": "FLATTEN"}
    sinks = []
    for name, fmt in formats.items():
        topic = f"topic_{name}-{uid}"
        asyncio.run(create_topic(kafka_bootstrap, topic, 1))
        sinks.append(
            sink(
                sql_target,
                f"doc-{name}",
                topic,
                table=tables[name],
                format=fmt,
                mode="VALUE",
                partition_window_type="MINUTE",
            )
        )
    # The abnormal-data example under each rule, each on its own topic and table.
    rules: dict[str, dict[str, Any]] = {
        "errtopic": {"skip_error": False, "runtime_error_topic": f"runtime_error-{uid}"},
        "skip": {"skip_error": True},
        "stop": {"skip_error": False, "on_error": "stop"},
    }
    for name, options in rules.items():
        topic, table = f"abnormal_{name}-{uid}", unique_table(f"abn_{name}")
        tables[name] = table
        flatten_table(sql_target, table)
        asyncio.run(create_topic(kafka_bootstrap, topic, 1))
        lines[name] = [f"{key}\t{value}" for key, value in BAD_EXAMPLE]
        sinks.append(
            sink(
                sql_target,
                f"abn-{name}",
                topic,
                table=table,
                format="FLATTEN",
                mode="VALUE",
                **options,
            )
        )
    config = worker_config(tmp_path, kafka_bootstrap, uid, sinks)
    with WorkerProcess(config) as worker:
        for name in lines:
            topic = f"topic_{name}-{uid}" if name in formats else f"abnormal_{name}-{uid}"
            kcat_produce(kafka_bootstrap, topic, lines[name])
        for name in ("text", "csv", "json", "flatten", "errtopic", "skip"):
            wait(functools.partial(landed, sql_target, tables[name], 2), worker, what=name)

        def stopped() -> bool:
            status = worker.pipeline("abn-stop") or {}
            return status.get("state") == "halted"

        wait(stopped, worker, what="the stop-rule sink to halt")
        status = worker.pipeline("abn-stop") or {}
        errors = asyncio.run(read_all(kafka_bootstrap, f"runtime_error-{uid}"))

    rows = sql_target.rows(tables["text"], "partition", "offset", "key", "value")
    assert rows == [(0, 0, None, "abc"), (0, 1, None, "edf")]
    rows = sql_target.rows(tables["csv"], "offset", "id", "name", "region")
    assert rows == [(0, 1103, "zhangsan", "china"), (1, 1104, "lisi", "usa")]
    rows = sql_target.rows(tables["json"], "offset", "key", "value")
    assert [(o, k, as_json(v)) for o, k, v in rows] == [
        (0, None, {"id": 123, "name": "json-1", "region": "beijing"}),
        (1, None, {"id": 456, "name": "json-2", "region": "hangzhou"}),
    ]
    rows = sql_target.rows(tables["flatten"], "offset", "id", "name", "extendinfo")
    assert [(o, i, n, as_json(e)) for o, i, n, e in rows] == [
        (0, 123, "json-1", {"region": "beijing", "sex": "M"}),
        (1, 456, "json-2", {"region": "hangzhou", "sex": "W"}),
    ]
    # skip_error=false + error topic: 101 goes to the topic, writing goes on.
    assert sql_target.rows(tables["errtopic"], "offset", "id") == [(0, 100), (2, 102)]
    assert [r.value.decode() for r in errors] == [BAD_EXAMPLE[1][1]]
    # skip_error=true, no topic: 101 is dropped, writing goes on.
    assert sql_target.rows(tables["skip"], "offset", "id") == [(0, 100), (2, 102)]
    # Neither: the sink stops before 101 and commits nothing past it.
    assert sql_target.rows(tables["stop"], "offset", "id") == [(0, 100)]
    assert "extendinfos" in status["error"]
    assert [p["committed"] for p in status["partitions"].values()] == [1]


@pytest.mark.postgres
def test_a_rejected_row_halts_its_partition_the_others_flow_and_resume_writes_it(
    pg_target: SqlTarget, kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    """Under the stop rule the bad row's partition halts and the other partition flows;
    once the table is fixed, a resume writes the halted partition from the bad row on."""
    topic, table = f"halt-{uid}", unique_table("halt")
    flatten_table(pg_target, table)
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    port = reserve_port()
    entry = sink(
        pg_target,
        "halting",
        topic,
        table=table,
        format="FLATTEN",
        mode="VALUE",
        skip_error=False,
        on_error="stop",
    )
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"t{uid}"},
        errors={"dead_letter_topic": f"dlq-{uid}"},
        sinks=[entry],
        web={"enabled": True, "host": "127.0.0.1", "port": port},
    )

    def row(n: int, field: str = "extendinfo") -> tuple[str, str]:
        return str(n), json.dumps({"id": n, "name": f"n{n}", field: {"region": "r"}})

    def ids() -> list[int]:
        return (
            sorted(r[0] for r in pg_target.rows(table, "id")) if landed(pg_target, table, 1) else []
        )

    def status() -> dict[str, Any]:
        return worker.pipeline("halting") or {}

    with WorkerProcess(config) as worker:
        asyncio.run(
            produce(
                kafka_bootstrap, topic, [row(100), row(101, "extendinfos"), row(102)], partition=0
            )
        )
        asyncio.run(produce(kafka_bootstrap, topic, [row(200), row(201), row(202)], partition=1))
        wait(lambda: f"{topic}/0" in status().get("halted", {}), worker, what="partition 0 halted")
        assert status()["state"] == "halted"
        assert status()["halted"][f"{topic}/0"]["offset"] == 1
        assert "extendinfos" in status()["error"]
        asyncio.run(produce(kafka_bootstrap, topic, [row(203), row(204)], partition=1))
        wait(lambda: ids() == [100, 200, 201, 202, 203, 204], worker, what="partition 1 flowing")

        def committed() -> dict[str, int]:
            return {tp: p["committed"] for tp, p in status().get("partitions", {}).items()}

        wait(lambda: committed() == {f"{topic}/0": 1, f"{topic}/1": 5}, worker, what="commits")
        # The table gets the column the bad row needs; the operator resumes the sink.
        pg_target.execute(f"ALTER TABLE {pg_target.q(table)} ADD COLUMN extendinfos JSONB")
        post_json(f"http://127.0.0.1:{port}/etl/pipelines/halting/resume/")
        wait(lambda: len(ids()) == 8, worker, what="the halted partition written")
        wait(lambda: status().get("state") == "running", worker, what="running again")
        assert status()["halted"] == {}
        wait(lambda: committed() == {f"{topic}/0": 3, f"{topic}/1": 5}, worker, what="commits")
    assert ids() == [100, 101, 102, 200, 201, 202, 203, 204], "each row once"


def values(start: int, stop: int) -> list[tuple[str, str]]:
    return [(str(i), json.dumps({"id": i, "name": f"n{i}"})) for i in range(start, stop)]


KEYED = {
    "format": "FLATTEN",
    "mode": "VALUE",
    "insert_mode": "upsert",
    "pk_mode": "record_key",
    "pk_fields": ["id"],
    "auto_create": True,
    "columns": [{"name": "id", "type": "BIGINT"}, {"name": "name", "type": "VARCHAR(32)"}],
}


@pytest.mark.slow
def test_database_outage_of_20s_loses_nothing(
    sql_target: SqlTarget, kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    server = sql_target.server
    topic, table = f"outage-{uid}", unique_table("outage")
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    config = worker_config(
        tmp_path, kafka_bootstrap, uid, [sink(sql_target, "outage", topic, table=table, **KEYED)]
    )
    with WorkerProcess(config) as worker:
        asyncio.run(produce(kafka_bootstrap, topic, values(0, 500)))
        wait(lambda: count_or_zero(sql_target, table) == 500, worker, what="500 rows")
        server.pause()
        try:
            asyncio.run(produce(kafka_bootstrap, topic, values(500, 1000)))
            time.sleep(20)
            status = worker.pipeline("outage") or {}
        finally:
            server.resume()
        assert status.get("error"), "the sink should report the outage"
        wait(lambda: count_or_zero(sql_target, table) == 1000, worker, 120, "1000 rows")
    ids = [row[0] for row in sql_target.rows(table, "id", order="id")]
    assert ids == list(range(1000))


@pytest.mark.serial  # the kill must land mid-stream
@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing_and_upserts_no_duplicates(
    sql_target: SqlTarget, kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    total = 30000
    topic = f"kill-{uid}"
    upserted, inserted = unique_table("kill_up"), unique_table("kill_in")
    asyncio.run(create_topic(kafka_bootstrap, topic, 3))
    asyncio.run(produce(kafka_bootstrap, topic, values(0, total)))
    plain = {**KEYED, "insert_mode": "insert", "pk_mode": "none", "pk_fields": []}
    config = worker_config(
        tmp_path,
        kafka_bootstrap,
        uid,
        [
            sink(sql_target, "kill-up", topic, table=upserted, batch_size=100, **KEYED),
            sink(sql_target, "kill-in", topic, table=inserted, batch_size=100, **plain),
        ],
    )
    worker = WorkerProcess(config).start()
    try:
        wait(lambda: count_or_zero(sql_target, upserted) >= 500, worker, what="500 rows")
    finally:
        worker.kill()
    landed_before = sql_target.count(upserted)
    with WorkerProcess(config, name="worker2") as again:
        wait(lambda: count_or_zero(sql_target, upserted) == total, again, 120, "all upserts")
        wait(lambda: count_or_zero(sql_target, inserted) >= total, again, 120, "all inserts")
    assert landed_before < total, "the kill should land mid-stream"
    ids = [row[0] for row in sql_target.rows(upserted, "id", order="id")]
    assert ids == list(range(total))  # every record, once
    seen = {row[0] for row in sql_target.rows(inserted, "id", order="id")}
    assert seen == set(range(total))  # insert mode: nothing lost (a re-read may repeat)
