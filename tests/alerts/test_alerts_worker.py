"""Alerts end to end: real `etl worker` processes on the test broker, a real webhook receiver.

* lag built by pausing a pipeline fires once, repeats at the interval, and resolves
  after resume and drain (webhook and Slack bodies);
* a poison record under ``ON_ERROR = "stop"`` halts the pipeline and fires the halted
  alert, to a command notifier too;
* two workers: one notification per event, also when the evaluator stops and the
  other takes over.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from etl.cli import main
from etl.testing import waits
from etl.testing.kafka import create_topic, read_all
from etl.testing.ports import reserve_port
from etl.testing.worker import WebWorker, WorkerProcess, suffix_transform, write_config

from .conftest import WebhookReceiver

pytestmark = pytest.mark.kafka

POISON_TRANSFORM = """\
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
ON_ERROR = "stop"


def deal_message(message):
    if message["value"] == "poison":
        raise ValueError("poison record")
    return message
"""

RECORD_COMMAND = """\
import json, os, sys
alert = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("ETL_ALERT_")}}
with open({path!r}, "a") as out:
    out.write(json.dumps({{"stdin": alert, "env": env}}) + "\\n")
"""


HOOK_SECRET = "hook-s3cret-7f2a"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    return waits.wait_until(predicate, what, timeout)


def send(bootstrap: str, topic: str, values: list[str]) -> None:
    """One record per request: the test broker reports a partition's end as the start of
    its last batch + 1."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for index, value in enumerate(values):
                await producer.send_and_wait(topic, value.encode(), f"k{index % 4}".encode())
        finally:
            await producer.stop()

    asyncio.run(go())


Worker = WebWorker


def make_worker(
    directory: Path,
    bootstrap: str,
    prefix: str,
    transform: tuple[str, str],
    alerts: dict[str, Any],
    worker_id: str | None = None,
) -> Worker:
    (directory / "transforms").mkdir(parents=True, exist_ok=True)
    (directory / "transforms" / f"{transform[0]}.py").write_text(transform[1])
    port = reserve_port()
    kafka: dict[str, Any] = {"group_prefix": prefix}
    if worker_id:
        kafka["worker_id"] = worker_id
    config = write_config(
        directory,
        bootstrap,
        kafka=kafka,
        errors={"dead_letter_topic": f"{prefix}-dlq"},
        web={"enabled": True, "port": port},
        control={"heartbeat_seconds": 0.5},
        alerts=alerts,
    )
    return Worker(config, port, WorkerProcess(config, name=directory.name).start())


def alert_settings(receiver: WebhookReceiver, rules: list[dict[str, Any]], **extra: Any) -> Any:
    notifiers = [
        {
            "name": "hook",
            "type": "webhook",
            "url": receiver.url("/hook"),
            "headers": {"Authorization": f"Bearer {HOOK_SECRET}"},
            "retry_backoff": 0.2,
        },
        {"name": "chat", "type": "slack", "url": receiver.url("/slack"), "retry_backoff": 0.2},
        *extra.pop("notifiers", []),
    ]
    return {"evaluate_every": 0.3, "notifiers": notifiers, "rules": rules, **extra}


def of(receiver: WebhookReceiver, rule: str, path: str = "/hook") -> list[dict[str, Any]]:
    return [b for b in receiver.bodies(path) if b.get("rule") == rule]


def kinds(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["event"] for b in bodies]


@pytest.fixture
def topics(kafka_bootstrap: str, uid: str) -> tuple[str, str]:
    source, target = f"al-src-{uid}", f"al-dst-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 2))
    return source, target


@pytest.fixture
def stop_at_end() -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    try:
        yield workers
    finally:
        for worker in workers:
            worker.process.stop()


LAG_RULE = {
    "name": "lag",
    "condition": "lag",
    "above": 5,
    "for": "1s",
    "repeat_every": "2s",
    "pipelines": ["transform:t*"],
}


def test_lag_by_pausing_fires_once_repeats_and_resolves_after_drain(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    topics: tuple[str, str],
    receiver: WebhookReceiver,
    stop_at_end: list[Worker],
) -> None:
    source, target = topics
    worker = make_worker(
        tmp_path / "w",
        kafka_bootstrap,
        f"al{uid}",
        ("t", suffix_transform(source, target, "!")),
        alert_settings(receiver, [LAG_RULE]),
    )
    stop_at_end.append(worker)
    worker.process.wait_running("t", timeout=90)
    worker.post("/etl/pipelines/t/pause/")
    send(kafka_bootstrap, source, [f"m{i}" for i in range(20)])

    fired = receiver.wait_for(lambda r: of(r, "lag"), "the lag alert")
    assert kinds(fired) == ["fire"]
    fire = fired[0]
    assert fire["pipeline"] == "transform:t" and fire["state"] == "firing"
    assert fire["value"] > 5 and fire["threshold"] == 5 and fire["since"] <= fire["at"]
    assert "lag" in fire["message"] and "above 5" in fire["message"]
    receiver.wait_for(lambda r: "repeat" in kinds(of(r, "lag")), "a repeat")
    assert kinds(of(receiver, "lag")).count("fire") == 1

    # Slack-compatible: one text field.
    slack = receiver.wait_for(lambda r: r.bodies("/slack"), "the Slack message")
    assert set(slack[0]) == {"text"}
    assert slack[0]["text"].startswith("[FIRING] lag (warning): transform:t: lag ")

    # Every worker shows it; the CLI reads it from the control topic.
    view = worker.get("/etl/alerts/")
    assert view["evaluating"] and view["evaluator"] == view["this_worker"]
    [alert] = [a for a in view["alerts"] if a["rule"] == "lag"]
    assert alert["state"] == "firing" and alert["pipeline"] == "transform:t"
    result = CliRunner().invoke(main, ["alerts", "list", "-c", str(worker.config), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(a["rule"], a["state"]) for a in listed["alerts"]] == [("lag", "firing")]
    assert listed["evaluator"] == view["evaluator"]
    text = CliRunner().invoke(main, ["alerts", "list", "-c", str(worker.config)])
    assert "firing" in text.output and "evaluated by:" in text.output

    worker.post("/etl/pipelines/t/resume/")
    resolved = receiver.wait_for(
        lambda r: [b for b in of(r, "lag") if b["event"] == "resolve"], "the resolve"
    )
    assert resolved[0]["state"] == "resolved" and resolved[0]["id"] == fire["id"]
    outputs = asyncio.run(read_all(kafka_bootstrap, target))
    assert sorted(r.value.decode() for r in outputs) == sorted(f"m{i}!" for i in range(20))
    wait_until(lambda: not worker.get("/etl/alerts/")["alerts"], "the record deleted")
    events = kinds(of(receiver, "lag"))
    assert events[0] == "fire" and events[-1] == "resolve"
    assert events.count("fire") == 1 and events.count("resolve") == 1
    assert set(events[1:-1]) <= {"repeat"}
    slack_texts = [b["text"] for b in receiver.bodies("/slack")]
    assert slack_texts[-1].startswith("[RESOLVED] lag (warning): resolved: transform:t lag")
    # The webhook's header reached it, and appears in no log, status or alert view.
    hooked = next(r for r in receiver.received if r.path == "/hook")
    assert hooked.headers["Authorization"] == f"Bearer {HOOK_SECRET}"
    shown = json.dumps([worker.get("/etl/status/"), worker.get("/etl/alerts/")])
    assert HOOK_SECRET not in worker.process.log() + shown + result.output


def test_a_poison_record_halts_the_pipeline_and_fires_the_halted_alert(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    topics: tuple[str, str],
    receiver: WebhookReceiver,
    stop_at_end: list[Worker],
) -> None:
    source, target = topics
    calls = tmp_path / "command-calls.jsonl"
    script = tmp_path / "page.py"
    script.write_text(RECORD_COMMAND.format(path=str(calls)))
    rules = [{"name": "halted", "condition": "halted", "severity": "critical"}]
    command = {"name": "page", "type": "command", "command": [sys.executable, str(script)]}
    worker = make_worker(
        tmp_path / "w",
        kafka_bootstrap,
        f"ah{uid}",
        ("poison", POISON_TRANSFORM.format(source=source, target=target)),
        alert_settings(receiver, rules, notifiers=[command]),
    )
    stop_at_end.append(worker)
    worker.process.wait_running("poison", timeout=90)
    send(kafka_bootstrap, source, ["fine-1", "poison", "fine-2"])

    def halted() -> bool:
        item = worker.process.pipeline("poison") or {}
        return item.get("state") in ("halted", "stopped") or bool(item.get("halted"))

    wait_until(halted, "the pipeline halted")
    [fire] = receiver.wait_for(lambda r: of(r, "halted"), "the halted alert")
    assert fire["event"] == "fire" and fire["pipeline"] == "transform:poison"
    assert fire["value"] == "halted" and fire["severity"] == "critical"
    assert "poison record" in (fire["error"] or "") and "poison record" in fire["message"]
    slack = receiver.wait_for(lambda r: r.bodies("/slack"), "the Slack message")
    assert slack[0]["text"].startswith("[FIRING] halted (critical): transform:poison: is halted")
    lines = wait_until(lambda: calls.exists() and calls.read_text().splitlines(), "the command")
    [call] = [json.loads(line) for line in lines]
    assert call["stdin"]["rule"] == "halted" and call["stdin"]["event_id"] == fire["event_id"]
    assert call["env"]["ETL_ALERT_RULE"] == "halted"
    assert call["env"]["ETL_ALERT_PIPELINE"] == "transform:poison"
    assert call["env"]["ETL_ALERT_STATE"] == "firing"
    assert json.loads(call["env"]["ETL_ALERT_THRESHOLD"]) == ["halted", "failed", "load_error"]
    # Once: no repeat within repeat_every (1 h by default).
    time.sleep(2)
    assert len(of(receiver, "halted")) == 1 and len(calls.read_text().splitlines()) == 1


@pytest.mark.serial  # several workers and rebalances: deadlines need a quiet machine
def test_two_workers_send_one_notification_per_event_across_a_handover(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    topics: tuple[str, str],
    receiver: WebhookReceiver,
    stop_at_end: list[Worker],
) -> None:
    source, target = topics
    prefix = f"a2{uid}"
    rule = {**LAG_RULE, "repeat_every": "3s"}
    transform = ("t", suffix_transform(source, target, "!"))
    first = make_worker(
        tmp_path / "a",
        kafka_bootstrap,
        prefix,
        transform,
        alert_settings(receiver, [rule]),
        worker_id=f"a-{uid}",
    )
    stop_at_end.append(first)
    first.process.wait_running("t", timeout=90)
    second = make_worker(
        tmp_path / "b",
        kafka_bootstrap,
        prefix,
        transform,
        alert_settings(receiver, [rule]),
        worker_id=f"b-{uid}",
    )
    stop_at_end.append(second)
    wait_until(
        lambda: len(first.get("/etl/alerts/")["workers_with_alerts"]) == 2, "both workers seen"
    )
    # Pause once the group settled (both own a partition), not in the middle of b's join.
    wait_until(
        lambda: (
            len(
                {
                    (row.get("owner") or {}).get("worker")
                    for row in first.get("/etl/pipelines/t/")["partitions"].values()
                }
                - {None}
            )
            == 2
        ),
        "both workers owning a partition",
    )
    # The one that started first evaluates, and both agree.
    assert first.get("/etl/alerts/")["evaluator"] == f"a-{uid}"
    assert second.get("/etl/alerts/")["evaluator"] == f"a-{uid}"
    first.post("/etl/pipelines/t/pause/")
    # The request returns once the worker it went to applied it; the other applies it
    # a moment later.
    wait_until(
        lambda: all(w.item("t", "local").get("state") == "paused" for w in (first, second)),
        "both paused",
    )
    send(kafka_bootstrap, source, [f"m{i}" for i in range(20)])
    receiver.wait_for(lambda r: "repeat" in kinds(of(r, "lag")), "fire and a repeat")
    fired = of(receiver, "lag")
    assert kinds(fired).count("fire") == 1
    assert {b["worker"] for b in fired} == {f"a-{uid}"}

    # The evaluator stops; the other worker takes over: repeats, no second fire.
    first.process.stop()
    wait_until(lambda: second.get("/etl/alerts/")["evaluating"], "the second worker evaluating", 60)
    receiver.wait_for(
        lambda r: [b for b in of(r, "lag") if b["worker"] == f"b-{uid}"], "a repeat from b"
    )
    assert kinds(of(receiver, "lag")).count("fire") == 1
    second.post("/etl/pipelines/t/resume/")
    receiver.wait_for(lambda r: "resolve" in kinds(of(r, "lag")), "the resolve")
    wait_until(lambda: not second.get("/etl/alerts/")["alerts"], "the record deleted")
    events = kinds(of(receiver, "lag"))
    assert events.count("fire") == 1 and events.count("resolve") == 1
    assert events[-1] == "resolve"
    # One notification per event: no event_id twice.
    ids = [b["event_id"] for b in of(receiver, "lag")]
    assert len(ids) == len(set(ids))
