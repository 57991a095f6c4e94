"""Restarts of a real ``etl worker`` running the mysql_binlog source.

A clean stop (SIGTERM) and restart loses and repeats nothing; a kill -9 and
restart loses nothing (changes after the last saved position are published again).
The topic is read back with kcat, a client independent of ours.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from etl.testing.kcat import kcat_consume
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, post_json, write_config
from tests.sources.helpers import CDC_PASSWORD, BinlogServer, source_options

pytestmark = [pytest.mark.kafka, pytest.mark.mysql, pytest.mark.slow]


def ids_in_topic(bootstrap: str, topic: str) -> list[int]:
    """The row ids of every INSERT on the topic, read with kcat (repeats kept)."""
    ids = []
    for line in kcat_consume(bootstrap, topic, fmt="%s\n"):
        payload = json.loads(line[0])["payload"]
        if payload["op"] == "INSERT":
            ids.append(payload["after"]["dataColumn"]["id"])
    return ids


def wait_for_ids(bootstrap: str, topic: str, expected: set[int], timeout: float = 90) -> list[int]:
    deadline = time.monotonic() + timeout
    ids: list[int] = []
    while time.monotonic() < deadline:
        ids = ids_in_topic(bootstrap, topic)
        if expected <= set(ids):
            return ids
        time.sleep(0.5)
    missing = sorted(expected - set(ids))
    raise AssertionError(f"{len(missing)} rows never arrived, e.g. {missing[:10]}")


def insert(server: BinlogServer, database: str, ids: range, per_tx: int = 5) -> None:
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            batch = list(ids)
            for i in range(0, len(batch), per_tx):
                values = ",".join(f"({n}, 'row {n}')" for n in batch[i : i + per_tx])
                cursor.execute(f"INSERT INTO `{database}`.events VALUES {values}")
    finally:
        conn.close()


def start_worker(
    workdir: Path, bootstrap: str, options: dict[str, object], name: str
) -> WorkerProcess:
    config = workdir / "etl.yaml"
    if not config.exists():
        write_config(workdir, bootstrap, sources=[{**options, "password": "${CDC_PW}"}])
    worker = WorkerProcess(config, name=name, env={"CDC_PW": CDC_PASSWORD}).start()
    worker.wait_running(str(options["name"]), timeout=90)
    return worker


def events_source(
    server: BinlogServer, database: str, uid: str
) -> tuple[dict[str, object], str, str]:
    """Table ``events`` and a source reading it from now: options, topic, source name."""
    server.execute(f"CREATE TABLE `{database}`.events (id INT PRIMARY KEY, note VARCHAR(20))")
    options = source_options(server, database, uid, tables="events", start=server.position())
    return options, f"t{uid}_events", str(options["name"])


def run_cli(config: Path, *args: str) -> Any:
    """``etl ARGS -c CONFIG`` in this process, with the source's password in the env."""
    from click.testing import CliRunner

    from etl.cli import main

    return CliRunner(env={"CDC_PW": CDC_PASSWORD}).invoke(
        main, [*args, "-c", str(config)], catch_exceptions=False
    )


def test_clean_restart_loses_and_repeats_nothing(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str, workdir: Path
) -> None:
    server = binlog_server
    server.execute(f"CREATE TABLE `{database}`.events (id INT PRIMARY KEY, note VARCHAR(20))")
    options = source_options(server, database, uid, tables="events", start=server.position())
    topic = f"t{uid}_events"

    worker = start_worker(workdir, kafka_bootstrap, options, "first")
    insert(server, database, range(1, 101))
    wait_for_ids(kafka_bootstrap, topic, set(range(1, 101)))
    assert worker.stop() == 0
    insert(server, database, range(101, 201))  # while no worker runs

    worker = start_worker(workdir, kafka_bootstrap, options, "second")
    try:
        insert(server, database, range(201, 251))
        wait_for_ids(kafka_bootstrap, topic, set(range(1, 251)))

        def caught_up(w: WorkerProcess) -> bool:
            item = w.pipeline(str(options["name"])) or {}
            progress = item.get("partitions", {}).get("binlog", {})
            return progress.get("lag") == 0 and progress.get("position") == progress.get("end")

        # The status shows the binlog bytes read, saved and written: nothing left behind.
        worker.wait_for(caught_up, timeout=30, what="binlog lag 0")
        time.sleep(0.5)  # anything repeated would arrive by now
        ids = ids_in_topic(kafka_bootstrap, topic)
    finally:
        assert worker.stop() == 0
    assert sorted(ids) == list(range(1, 251)), "lost or repeated rows"
    assert CDC_PASSWORD not in worker.log()


def test_kill_9_and_restart_loses_nothing(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str, workdir: Path
) -> None:
    server = binlog_server
    server.execute(f"CREATE TABLE `{database}`.events (id INT PRIMARY KEY, note VARCHAR(20))")
    options = source_options(server, database, uid, tables="events", start=server.position())
    topic = f"t{uid}_events"
    total = 1500

    worker = start_worker(workdir, kafka_bootstrap, options, "first")
    writer = threading.Thread(target=insert, args=(server, database, range(1, total + 1), 3))
    writer.start()
    deadline = time.monotonic() + 60
    while len(ids_in_topic(kafka_bootstrap, topic)) < 600 and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.kill()  # mid-stream: no flush, no final position
    writer.join()

    worker = start_worker(workdir, kafka_bootstrap, options, "second")
    try:
        ids = wait_for_ids(kafka_bootstrap, topic, set(range(1, total + 1)))
    finally:
        worker.stop()
    assert set(ids) == set(range(1, total + 1))
    repeats = sum(n - 1 for n in Counter(ids).values())
    # At-least-once: only what followed the last saved position may come twice.
    assert repeats < total


def test_failed_preflight_leaves_the_worker_running(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str, workdir: Path
) -> None:
    server = binlog_server
    user = f"weak{uid}"
    server.execute(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{CDC_PASSWORD}'",
        f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'",
        f"CREATE TABLE `{database}`.events (id INT PRIMARY KEY)",
    )
    options = source_options(server, database, uid, tables="events", user=user)
    write_config(workdir, kafka_bootstrap, sources=[{**options, "password": "${CDC_PW}"}])
    worker = WorkerProcess(workdir / "etl.yaml", env={"CDC_PW": CDC_PASSWORD}).start()
    try:

        def failed(w: WorkerProcess) -> bool:
            item = w.pipeline(str(options["name"]))
            return bool(item and item["state"] == "failed")

        worker.wait_for(failed, timeout=60, what="source failed")
        time.sleep(1.0)
        assert worker.process is not None and worker.process.poll() is None
        item = worker.pipeline(str(options["name"]))
        assert item is not None
        assert "lacks REPLICATION SLAVE, REPLICATION CLIENT" in item["error"]
        log = worker.log()
        assert log.count("source preflight failed") == 1
        assert CDC_PASSWORD not in log
    finally:
        assert worker.stop() == 0
        server.execute(f"DROP USER '{user}'@'%'")


def test_position_reset_to_now_skips_what_came_while_stopped(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str, workdir: Path
) -> None:
    server = binlog_server
    options, topic, name = events_source(server, database, uid)
    worker = start_worker(workdir, kafka_bootstrap, options, "first")

    def cli(*args: str) -> Any:
        result = run_cli(workdir / "etl.yaml", *args)
        assert result.exit_code == 0, result.output
        return result

    try:
        insert(server, database, range(1, 21))
        wait_for_ids(kafka_bootstrap, topic, set(range(1, 21)))
        cli("stop", name)
        worker.wait_for(lambda w: (w.pipeline(name) or {}).get("state") == "stopped", 30, "stop")
        insert(server, database, range(21, 41))  # while stopped: to be skipped
        moved = cli("offsets", "reset", name, "--to-position", "now")
        assert CDC_PASSWORD not in moved.output
        insert(server, database, range(41, 61))
        cli("resume", name)
        ids = wait_for_ids(kafka_bootstrap, topic, set(range(1, 21)) | set(range(41, 61)))
        time.sleep(1.0)
        ids = ids_in_topic(kafka_bootstrap, topic)
    finally:
        worker.stop()
    assert sorted(ids) == [*range(1, 21), *range(41, 61)]


def test_position_reset_to_a_gtid_set_replays_what_came_after_it(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str, workdir: Path
) -> None:
    server = binlog_server
    options, topic, name = events_source(server, database, uid)
    port = reserve_port()
    write_config(
        workdir,
        kafka_bootstrap,
        sources=[{**options, "password": "${CDC_PW}"}],
        web={"enabled": True, "port": port},
    )
    api = f"http://127.0.0.1:{port}/etl/pipelines/{name}/offsets/"
    worker = start_worker(workdir, kafka_bootstrap, options, "first")

    def cli(*args: str) -> Any:
        return run_cli(workdir / "etl.yaml", *args)

    try:
        insert(server, database, range(1, 21))
        wait_for_ids(kafka_bootstrap, topic, set(range(1, 21)))
        [(after_20,)] = server.execute("SELECT @@gtid_binlog_pos")
        insert(server, database, range(21, 41))
        wait_for_ids(kafka_bootstrap, topic, set(range(1, 41)))
        stopped = cli("stop", name)
        assert stopped.exit_code == 0, stopped.output
        worker.wait_for(lambda w: (w.pipeline(name) or {}).get("state") == "stopped", 30, "stop")

        # A GTID the server never wrote is refused, naming what it has.
        unknown = cli("offsets", "reset", name, "--to-position", "gtid:0-1-999999999")
        assert unknown.exit_code != 0
        assert "the server's binlog has no 0-1-999999999" in unknown.output

        # Through the HTTP API: the saved position, a preview, then the reset.
        with urllib.request.urlopen(api, timeout=10) as response:
            shown = json.loads(response.read())
        assert shown["position"]["file"] and shown["desired"] == "stopped"
        preview = post_json(api, {"to_position": f"gtid:{after_20}", "dry_run": True})
        assert preview["after"]["gtid"] == after_20 and preview["dry_run"] is True
        assert preview["before"] == shown["position"]
        moved = post_json(api, {"to_position": f"gtid:{after_20}"})
        assert moved["after"]["gtid"] == after_20 and not moved["after"]["file"]
        assert CDC_PASSWORD not in json.dumps(moved)
        resumed = cli("resume", name)
        assert resumed.exit_code == 0, resumed.output

        def replayed() -> bool:
            counts = Counter(ids_in_topic(kafka_bootstrap, topic))
            return all(counts[i] == 2 for i in range(21, 41))

        worker.wait_for(lambda _: replayed(), 90, "rows 21-40 published again")
        insert(server, database, range(41, 46))
        wait_for_ids(kafka_bootstrap, topic, set(range(1, 46)))
        time.sleep(1.0)
        counts = Counter(ids_in_topic(kafka_bootstrap, topic))
    finally:
        worker.stop()
    # Before the GTID set: once; after it: again (a replay); new rows: once.
    assert counts == Counter(
        {
            **dict.fromkeys(range(1, 21), 1),
            **dict.fromkeys(range(21, 41), 2),
            **dict.fromkeys(range(41, 46), 1),
        }
    )
