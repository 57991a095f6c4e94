"""`etl offsets reset` on a real sink: replaying from a point in time into an upsert table.

A day's rows went missing downstream (here: deleted by hand); the operator stops
the sink everywhere, moves its offsets back to a time and resumes it: the rows
come back, and with upsert nothing is doubled.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from etl.cli import main
from etl.testing.kafka import create_topic, produce
from etl.testing.worker import WorkerProcess
from tests.sinks.sqlharness import SqlTarget, unique_table
from tests.sinks.test_sql_worker import KEYED, count_or_zero, sink, values, wait, worker_config

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(main, [*args, "-c", str(config)], catch_exceptions=False)


def test_replay_from_a_time_into_an_upsert_sink_gives_the_same_rows(
    pg_target: SqlTarget, kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    target = pg_target
    topic, table = f"replay-{uid}", unique_table("replay")
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    config = worker_config(
        tmp_path, kafka_bootstrap, uid, [sink(target, "pg", topic, table=table, **KEYED)]
    )
    with WorkerProcess(config) as worker:
        asyncio.run(produce(kafka_bootstrap, topic, values(0, 60)))
        wait(lambda: count_or_zero(target, table) == 60, worker, what="60 rows")
        time.sleep(1.5)
        since = int(time.time() * 1000)
        time.sleep(0.5)
        asyncio.run(produce(kafka_bootstrap, topic, values(60, 100)))
        wait(lambda: count_or_zero(target, table) == 100, worker, what="100 rows")
        before = target.rows(table, "id", "name", order="id")
        wait(lambda: (worker.pipeline("pg") or {}).get("partitions"), worker, what="status")

        # The rows written since ``since`` are lost downstream.
        target.execute(f"DELETE FROM {target.q(table)} WHERE id >= 60")
        assert target.count(table) == 60

        # A running sink is not reset: the operator is told where it runs.
        refused = cli(config, "offsets", "reset", "pg", "--to-time", str(since))
        assert refused.exit_code == 1 and "is running on" in refused.stderr
        preview = cli(config, "offsets", "reset", "pg", "--to-time", str(since), "--dry-run")
        assert preview.exit_code == 0 and "dry run: nothing changed" in preview.stdout

        moved = cli(config, "offsets", "reset", "pg", "--to-time", str(since), "--stop", "--json")
        assert moved.exit_code == 0, moved.output
        result = json.loads(moved.stdout)
        rows = result["partitions"].values()
        assert sum(r["before"] for r in rows) == 100
        assert sum(r["after"] for r in rows) == 60  # the 40 rows since ``since`` again
        assert result["desired"] == "stopped"
        shown = cli(config, "offsets", "show", "pg", "--json")
        assert sum(r["lag"] for r in json.loads(shown.stdout)["partitions"].values()) == 40

        resumed = cli(config, "resume", "pg")
        assert resumed.exit_code == 0, resumed.output
        wait(lambda: count_or_zero(target, table) == 100, worker, what="the 40 rows again")
        assert target.rows(table, "id", "name", order="id") == before
