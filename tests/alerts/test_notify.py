"""Notifiers against a real HTTP receiver and real commands: bodies, retries, secrets, timeouts."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from etl.alerts.config import NotifierConfig
from etl.alerts.notify import alert_environment, send, slack_text
from etl.redact import Redactor
from etl.testing.ports import reserve_port

from .conftest import WebhookReceiver

ALERT: dict[str, Any] = {
    "id": "lag/transform:orders/1000.000",
    "event_id": "lag/transform:orders/1000.000/fire/1",
    "rule": "lag",
    "condition": "lag",
    "severity": "warning",
    "pipeline": "transform:orders",
    "kind": "transform",
    "name": "orders",
    "state": "firing",
    "event": "fire",
    "value": 1520,
    "threshold": 1000.0,
    "since": 1000.0,
    "at": 1300.0,
    "message": "transform:orders: lag 1520 messages above 1000 for 5m",
    "worker": "w1",
    "cluster": "etl",
}


async def no_wait(_seconds: float) -> None:
    return None


def notifier(**fields: Any) -> NotifierConfig:
    return NotifierConfig.model_validate({"name": "n", "retry_backoff": 0.01, **fields})


async def test_webhook_posts_the_alert_with_its_headers(receiver: WebhookReceiver) -> None:
    hook = notifier(type="webhook", url=receiver.url(), headers={"Authorization": "Bearer t0k3n"})
    assert await send(hook, ALERT, Redactor()) is None
    [got] = receiver.received
    assert got.body == ALERT
    assert got.headers["Authorization"] == "Bearer t0k3n"
    assert got.headers["Content-Type"] == "application/json"


async def test_failures_are_retried_with_backoff_then_sent(receiver: WebhookReceiver) -> None:
    receiver.fail("/hook", 2)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    hook = notifier(type="webhook", url=receiver.url(), retries=3, retry_backoff=1, timeout=5)
    assert await send(hook, ALERT, Redactor(), sleep=sleep) is None
    assert len(receiver.bodies()) == 3
    assert waits == [1.0, 2.0]


async def test_a_client_error_is_not_retried(receiver: WebhookReceiver) -> None:
    receiver.fail("/hook", 5, status=404)
    hook = notifier(type="webhook", url=receiver.url(), retries=3)
    error = await send(hook, ALERT, Redactor(), sleep=no_wait)
    assert error is not None and error.startswith("HTTP 404")
    assert len(receiver.bodies()) == 1


async def test_an_unreachable_webhook_gives_up_and_never_logs_its_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{reserve_port()}/services/T0/B0/very-secret-token"
    settings_secret = [url]
    hook = notifier(type="slack", url=url, retries=2)
    with caplog.at_level(logging.INFO, logger="etl.alerts"):
        error = await send(hook, ALERT, Redactor(settings_secret), sleep=no_wait)
    assert error is not None
    assert "very-secret-token" not in error
    assert "very-secret-token" not in caplog.text
    assert "giving up notifier=n" in caplog.text and caplog.text.count("retrying") == 2


async def test_slack_gets_one_text_field(receiver: WebhookReceiver) -> None:
    chat = notifier(type="slack", url=receiver.url("/slack"))
    assert await send(chat, ALERT, Redactor()) is None
    resolved = {**ALERT, "state": "resolved", "event": "resolve", "message": "resolved: x"}
    assert await send(chat, resolved, Redactor()) is None
    first, second = receiver.bodies("/slack")
    assert first == {
        "text": "[FIRING] lag (warning): transform:orders: lag 1520 messages above 1000 for 5m"
    }
    assert second == {"text": "[RESOLVED] lag (warning): resolved: x"}
    assert slack_text({**ALERT, "severity": ""}).startswith("[FIRING] lag: ")


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "notify.py"
    path.write_text(body)
    return [sys.executable, str(path)]


async def test_a_command_gets_the_alert_on_stdin_and_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    command = script(
        tmp_path,
        "import json, os, sys\n"
        "alert = json.load(sys.stdin)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith(('ETL_ALERT_', 'EXTRA'))}\n"
        f"open({str(out)!r}, 'w').write(json.dumps({{'stdin': alert, 'env': env, "
        "'argv': sys.argv[1:]}))\n",
    )
    page = notifier(
        type="command", command=[*command, "--team", "data; rm -rf /"], env={"EXTRA": "x1"}
    )
    assert await send(page, ALERT, Redactor()) is None
    got = json.loads(out.read_text())
    assert got["stdin"] == ALERT
    # Arguments stay arguments: nothing went through a shell.
    assert got["argv"] == ["--team", "data; rm -rf /"]
    env = got["env"]
    assert env["ETL_ALERT_RULE"] == "lag" and env["ETL_ALERT_PIPELINE"] == "transform:orders"
    assert env["ETL_ALERT_STATE"] == "firing" and env["ETL_ALERT_VALUE"] == "1520"
    assert env["ETL_ALERT_THRESHOLD"] == "1000.0" and env["ETL_ALERT_SINCE"] == "1000.0"
    assert env["ETL_ALERT_MESSAGE"] == ALERT["message"] and env["EXTRA"] == "x1"
    assert set(alert_environment(ALERT)) <= set(env)


async def test_a_failing_command_is_retried_and_a_hung_one_killed(tmp_path: Path) -> None:
    counter = tmp_path / "tries"
    failing = script(
        tmp_path,
        f"import pathlib, sys\np = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\np.write_text(str(n + 1))\n"
        "print('no pager today'); sys.exit(3)\n",
    )
    error = await send(
        notifier(type="command", command=failing, retries=2), ALERT, Redactor(), sleep=no_wait
    )
    assert error == "exit code 3: no pager today"
    assert counter.read_text() == "3"
    hung = [sys.executable, "-c", "import time; time.sleep(60)"]
    error = await send(
        notifier(type="command", command=hung, timeout=0.5, retries=0), ALERT, Redactor()
    )
    assert error == "still running after 0.5s: killed"
    missing = notifier(type="command", command=[str(tmp_path / "nope")], retries=0)
    error = await send(missing, ALERT, Redactor())
    assert error is not None and error.startswith("cannot run")


def test_etl_alerts_test_sends_to_each_notifier(tmp_path: Path, receiver: WebhookReceiver) -> None:
    from click.testing import CliRunner

    from etl.cli import main

    config = tmp_path / "etl.yaml"
    config.write_text(
        "alerts:\n  notifiers:\n"
        f"    - {{name: hook, type: webhook, url: '{receiver.url()}?token=t0ps3cret'}}\n"
        f"    - {{name: chat, type: slack, url: '{receiver.url('/slack')}'}}\n"
        f"    - {{name: muted, type: slack, url: '{receiver.url('/off')}', enabled: false}}\n"
    )
    result = CliRunner().invoke(main, ["alerts", "test", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["hook (webhook): sent", "chat (slack): sent"]
    assert receiver.bodies("/hook?token=t0ps3cret")[0]["event"] == "test"
    assert receiver.bodies("/slack")[0]["text"].startswith("[TEST] test (info): ")
    assert receiver.bodies("/off") == []
    receiver.fail("/slack", 1, status=403)
    result = CliRunner().invoke(main, ["alerts", "test", "chat", "-c", str(config)])
    assert result.exit_code == 1 and result.output.startswith("chat (slack): failed: HTTP 403")
    result = CliRunner().invoke(main, ["alerts", "test", "nope", "-c", str(config)])
    assert result.exit_code == 1
    assert "no notifier nope (configured: hook, chat, muted)" in result.output
