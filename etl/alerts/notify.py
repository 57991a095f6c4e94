"""Send one alert to a notifier: a webhook (generic JSON), Slack-compatible, or a command.

Rules kept here:

* a failed attempt is retried ``retries`` times with a doubling backoff, then given
  up and logged; nothing here raises into the worker;
* a notifier's URL, headers and environment are secrets: log lines name the
  notifier, never its address, and every error text passes the redactor;
* a command gets the alert as JSON on stdin and as ``ETL_ALERT_*`` environment
  variables; it is started without a shell and killed (with its process group)
  when it outlives ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from etl.alerts.config import NotifierConfig

log = logging.getLogger("etl.alerts")

Redact = Callable[[str], str]
Sleep = Callable[[float], Awaitable[Any]]

#: Most output of a failed command kept for the log line.
_OUTPUT_LIMIT = 500


class NotifyError(Exception):
    """One attempt failed; ``retriable`` False stops the retries (e.g. HTTP 404)."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (``2024-05-20T06:30:00Z``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def slack_text(alert: dict[str, Any]) -> str:
    """The ``text`` of a Slack-compatible message: state, rule, then the message."""
    state = "RESOLVED" if alert.get("state") == "resolved" else "FIRING"
    if alert.get("event") == "test":
        state = "TEST"
    severity = f" ({alert['severity']})" if alert.get("severity") else ""
    return f"[{state}] {alert.get('rule')}{severity}: {alert.get('message')}"


def alert_environment(alert: dict[str, Any]) -> dict[str, str]:
    """``ETL_ALERT_RULE``, ``ETL_ALERT_PIPELINE``, ... for a command notifier."""
    names = (
        "id",
        "event_id",
        "rule",
        "condition",
        "severity",
        "pipeline",
        "kind",
        "name",
        "state",
        "event",
        "value",
        "threshold",
        "since",
        "at",
        "message",
        "worker",
        "cluster",
    )
    env = {}
    for name in names:
        value = alert.get(name)
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        env[f"ETL_ALERT_{name.upper()}"] = text
    return env


async def _post(notifier: NotifierConfig, body: dict[str, Any]) -> None:
    import aiohttp

    assert notifier.url is not None
    headers = {"Content-Type": "application/json", "User-Agent": "faust-etl-alerts"}
    headers.update({k: v.get_secret_value() for k, v in notifier.headers.items()})
    timeout = aiohttp.ClientTimeout(total=notifier.timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                notifier.url.get_secret_value(),
                data=json.dumps(body).encode(),
                headers=headers,
            ) as response,
        ):
            text = (await response.text())[:_OUTPUT_LIMIT]
            if response.status >= 300:
                retriable = response.status in (408, 425, 429) or response.status >= 500
                raise NotifyError(f"HTTP {response.status}: {text}", retriable=retriable)
    except TimeoutError:
        raise NotifyError(f"no answer within {notifier.timeout:g}s") from None
    except aiohttp.ClientError as exc:
        # The text of a client error can carry the URL: only its class is kept.
        raise NotifyError(f"{type(exc).__name__}") from None


async def _run_command(notifier: NotifierConfig, alert: dict[str, Any]) -> None:
    assert notifier.command
    env = {**os.environ, **alert_environment(alert)}
    env.update({k: v.get_secret_value() for k, v in notifier.env.items()})
    try:
        process = await asyncio.create_subprocess_exec(
            *notifier.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise NotifyError(f"cannot run {notifier.command[0]}: {exc.strerror}") from None
    try:
        output, _ = await asyncio.wait_for(
            process.communicate(json.dumps(alert).encode() + b"\n"), notifier.timeout
        )
    except TimeoutError:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()
        raise NotifyError(f"still running after {notifier.timeout:g}s: killed") from None
    if process.returncode != 0:
        text = output.decode("utf-8", "replace").strip()[-_OUTPUT_LIMIT:]
        raise NotifyError(f"exit code {process.returncode}: {text}")


async def send_once(notifier: NotifierConfig, alert: dict[str, Any]) -> None:
    """One attempt; raises :class:`NotifyError`."""
    if notifier.type == "webhook":
        await _post(notifier, alert)
    elif notifier.type == "slack":
        await _post(notifier, {"text": slack_text(alert)})
    else:
        await _run_command(notifier, alert)


async def send(
    notifier: NotifierConfig,
    alert: dict[str, Any],
    redact: Redact,
    *,
    sleep: Sleep = asyncio.sleep,
) -> str | None:
    """Send with retries; returns None when sent, else the last error (logged)."""
    delay = notifier.retry_backoff
    attempts = notifier.retries + 1
    error = ""
    for attempt in range(1, attempts + 1):
        started = time.monotonic()
        try:
            await send_once(notifier, alert)
        except asyncio.CancelledError:
            raise
        except NotifyError as exc:
            error = redact(str(exc))
            retriable = exc.retriable
        except Exception as exc:  # a bug or an odd failure: logged, never raised
            error = redact(f"{type(exc).__name__}: {exc}")
            retriable = True
        else:
            log.info(
                "alert sent notifier=%s rule=%s pipeline=%s event=%s attempt=%d ms=%.0f",
                notifier.name,
                alert.get("rule"),
                alert.get("pipeline"),
                alert.get("event"),
                attempt,
                (time.monotonic() - started) * 1000,
            )
            return None
        if attempt < attempts and retriable:
            log.warning(
                "alert not sent, retrying notifier=%s rule=%s pipeline=%s attempt=%d "
                "retry_in=%.1fs error=%r",
                notifier.name,
                alert.get("rule"),
                alert.get("pipeline"),
                attempt,
                delay,
                error,
            )
            await sleep(delay)
            delay = min(delay * 2, notifier.retry_backoff_max)
            continue
        break
    log.error(
        "alert not sent, giving up notifier=%s rule=%s pipeline=%s event=%s attempts=%d error=%r",
        notifier.name,
        alert.get("rule"),
        alert.get("pipeline"),
        alert.get("event"),
        attempt,
        error,
    )
    return error
