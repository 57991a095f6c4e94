"""The connectors REST API (Kafka Connect's shape) on two real workers sharing a cluster.

A create, an edit and a delete made through one worker are applied by both; API
connectors survive a restart of every worker; secrets never appear in an answer
or a log; validate lists every problem by field; delete --purge lists, then removes
the group, the connector's own error topic and the object store's meta objects;
a kill -9 during an edit loses and doubles nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from etl.cli import main
from etl.testing.kafka import create_topic, produce
from etl.testing.ports import reserve_port
from etl.testing.waits import wait_until
from etl.testing.worker import WorkerProcess, write_config
from tests.connectors.test_connector_files import archive, lines_under

pytestmark = pytest.mark.kafka

SECRET = "s3cr3t-value-never-shown"


def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


class Node:
    def __init__(self, directory: Path, bootstrap: str, prefix: str, name: str) -> None:
        self.port = reserve_port()
        self.config = write_config(
            directory,
            bootstrap,
            # A join waits at most this long for members that do not rejoin (a killed
            # one): the test broker ends no session, so this bounds a rebalance.
            kafka={"group_prefix": prefix, "max_poll_interval_ms": 10000},
            web={"enabled": True, "port": self.port},
            control={"heartbeat_seconds": 0.5, "secrets_key": "a-long-shared-passphrase"},
            errors={"dead_letter_topic": f"{prefix}-dlq"},
        )
        self.name = name
        self.process = WorkerProcess(self.config, name=name).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def local(self, name: str) -> dict[str, Any]:
        _code, snapshot = call(self.url + "/etl/status/?scope=local")
        return next((i for i in snapshot["pipelines"] if i["name"] == name), {})

    def restart(self) -> None:
        self.process.stop()
        self.process = WorkerProcess(self.config, name=self.name + "-again").start()

    def kill_and_start(self) -> None:
        self.process.kill()
        self.process = WorkerProcess(self.config, name=self.name + "-after-kill").start()


@pytest.fixture
def nodes(tmp_path: Path, kafka_bootstrap: str, uid: str) -> Iterator[tuple[Node, Node]]:
    pair = (
        Node(tmp_path / "a", kafka_bootstrap, f"ca{uid}", "a"),
        Node(tmp_path / "b", kafka_bootstrap, f"ca{uid}", "b"),
    )
    try:
        for node in pair:
            wait_until(lambda n=node: call(n.url + "/connectors")[0] == 200, "API up")
        yield pair
    finally:
        for node in pair:
            node.process.stop()


def test_create_edit_delete_converge_and_survive_restarts(
    nodes: tuple[Node, Node], kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    a, b = nodes
    topic, store = f"ca-{uid}", tmp_path / "store"
    asyncio.run(create_topic(kafka_bootstrap, topic, 4))
    asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(200)]))

    # Validation lists every problem by field, and nothing is created.
    code, answer = call(
        a.url + "/connector-plugins/object_store/config/validate",
        "PUT",
        {"kind": "sink", "name": "x", "batch_size_mb": 0, "bogus": 1},
    )
    assert code == 200 and answer["error_count"] >= 3
    errors = {c["value"]["name"]: c["value"]["errors"] for c in answer["configs"]}
    assert errors["topics"] and errors["batch_size_mb"] and errors["bogus"]
    code, answer = call(a.url + "/connectors", "POST", {"name": "bad", "config": {"type": "x"}})
    assert code == 400 and "unknown type" in answer["message"]

    # Create through A: both workers run it and share the partitions.
    config = archive(topic, store, secret_key=SECRET, access_key="${NOT_SET_ANYWHERE:-k}")
    code, answer = call(a.url + "/connectors", "POST", {"name": "arch", "config": config})
    assert code == 201, answer
    assert answer["config"]["secret_key"] == "***" and answer["type"] == "sink"
    for node in (a, b):
        wait_until(lambda n=node: n.local("arch").get("partitions"), f"arch on {node.name}")
    wait_until(lambda: sum(lines_under(store).values()) == 200, "200 lines")
    code, _again = call(a.url + "/connectors", "POST", {"name": "arch", "config": config})
    assert code == 409
    assert call(b.url + "/connectors")[1] == ["arch"]
    code, status = call(b.url + "/connectors/arch/status")
    assert status["connector"]["state"] == "RUNNING" and len(status["tasks"]) == 2
    code, shown = call(b.url + "/connectors/arch/config")
    assert shown["secret_key"] == "***" and shown["batch_window_minutes"] == 0.01

    # Edit through B (batching only): applied in place on both.
    started = {n.name: n.local("arch")["started_at"] for n in (a, b)}
    code, _ = call(b.url + "/connectors/arch/config", "PUT", {**shown, "batch_size": 99})
    assert code == 200
    for node in (a, b):
        wait_until(
            lambda n=node: call(n.url + "/connectors/arch/config")[1].get("batch_size") == 99,
            "the edit",
        )
        assert node.local("arch")["started_at"] == started[node.name]

    # Pause and resume as in Kafka Connect.
    assert call(a.url + "/connectors/arch/pause", "PUT")[0] == 202
    wait_until(lambda: b.local("arch").get("state") == "paused", "paused on B")
    assert call(a.url + "/connectors/arch/resume", "PUT")[0] == 202
    wait_until(lambda: b.local("arch").get("state") == "running", "running on B")

    # Every worker restarts (one after the other, as in a rolling deploy: the test
    # broker takes 20-30 s to settle a group whose members all left at once): the
    # API connector is still there, with its secret.
    for node in (a, b):
        node.restart()
        for each in (a, b):
            wait_until(lambda n=each: n.local("arch").get("partitions"), "arch after restart", 90)
    asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(200, 260)]))
    wait_until(lambda: sum(lines_under(store).values()) == 260, "260 lines")
    assert set(lines_under(store).values()) == {1}

    # Delete with purge: listed first, then removed everywhere.
    code, listed = call(a.url + "/connectors/arch?purge=true&dry_run=true", "DELETE")
    kinds = {(i["kind"], i["name"].rsplit("/", 1)[-1]) for i in listed["purge"]}
    assert ("group", f"ca{uid}-sink-arch") in kinds
    assert sum(1 for k, n in kinds if k == "object" and n.startswith("oss_meta_file")) == 4
    assert call(a.url + "/connectors")[1] == ["arch"]  # a dry run removes nothing
    code, purged = call(a.url + "/connectors/arch?purge=true", "DELETE")
    assert code == 200, purged
    for node in (a, b):
        wait_until(lambda n=node: not n.local("arch"), f"arch gone from {node.name}")
    assert call(b.url + "/connectors")[1] == []
    assert not list(store.rglob("oss_meta_file_partition_*"))
    assert sum(lines_under(store).values()) == 260  # data objects stay
    for node in (a, b):
        assert SECRET not in node.process.log()


@pytest.mark.serial  # several workers and rebalances: deadlines need a quiet machine
def test_kill_9_during_an_edit_loses_and_doubles_nothing(
    nodes: tuple[Node, Node], kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    a, b = nodes
    topic, store = f"ck-{uid}", tmp_path / "store"
    asyncio.run(create_topic(kafka_bootstrap, topic, 4))
    code, _ = call(a.url + "/connectors", "POST", {"name": "arch", "config": archive(topic, store)})
    assert code == 201
    for node in (a, b):
        wait_until(lambda n=node: n.local("arch").get("partitions"), f"arch on {node.name}")

    total = 3000
    stop = threading.Event()

    def feed() -> None:
        for start in range(0, total, 100):
            if stop.is_set():
                return
            items = [(f"k{i}", f"v{i}") for i in range(start, start + 100)]
            asyncio.run(produce(kafka_bootstrap, topic, items))
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        wait_until(lambda: sum(lines_under(store).values()) >= 500, "flow")
        edit = archive(topic, store, batch_window_minutes=0.02)
        code, _ = call(a.url + "/connectors/arch/config", "PUT", edit)
        assert code == 200
        a.kill_and_start()  # during the edit's restart on A
    finally:
        feeder.join()
    wait_until(lambda: len(lines_under(store)) == total, f"all {total} lines", 120)
    assert set(lines_under(store).values()) == {1}, "a line was written twice"
    for node in (a, b):
        wait_until(
            lambda n=node: (
                call(n.url + "/connectors/arch/config")[1].get("batch_window_minutes") == 0.02
            ),
            "the edit everywhere",
            90,
        )


def test_cli_lists_shows_and_validates(
    nodes: tuple[Node, Node], kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    a, _b = nodes
    topic = f"cc-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 1))
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps({**archive(topic, tmp_path / "s"), "name": "viacli"}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: sink\ntype: object_store\nbatch_size_mb: 0\n")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(
            main, ["connectors", *args, "-c", str(a.config), "--url", a.url], catch_exceptions=False
        )

    checked = cli("validate", str(bad))
    assert (
        checked.exit_code == 1 and "batch_size_mb" in checked.output and "topics" in checked.output
    )
    created = cli("create", str(good))
    assert created.exit_code == 0, created.output
    listed = cli("list")
    assert (
        "viacli" in listed.output and "RUNNING" in listed.output
    ) or "UNASSIGNED" in listed.output
    shown = cli("show", "viacli")
    assert json.loads(shown.output)["topics"] == [topic]
    deleted = cli("delete", "viacli", "--yes")
    assert deleted.exit_code == 0, deleted.output
    wait_until(lambda: "viacli" not in cli("list").output, "viacli gone from the list", 30)
