"""``etl alerts list | prometheus | test``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from etl.alerts.config import format_duration
from etl.cli_common import CONFIG_OPTION, error_line, fail
from etl.cli_common import settings_or_exit as _settings

_STATE_STYLES = {"firing": "bold red", "pending": "yellow", "resolved": "green"}


@click.group("alerts")
def alerts_group() -> None:
    """Alert rules: their state across the cluster, a test notification, Prometheus rules."""


@alerts_group.command("list")
@CONFIG_OPTION
@click.option(
    "--bootstrap",
    default=None,
    help="Read the control topic from Kafka at HOST:PORT (default: the config's broker).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(config: str | None, bootstrap: str | None, as_json: bool) -> None:
    """The rules of etl.yaml (and alerts/) and every alert's state, from the control topic."""
    from etl.alerts.evaluator import alerts_view
    from etl.kafka import wait_for_broker
    from etl.ops.cluster import read_control_table

    settings = _settings(config)
    if bootstrap:
        settings.kafka.bootstrap_servers = bootstrap

    async def go() -> Any:
        await wait_for_broker(settings.kafka, attempts=3)
        return await read_control_table(settings)

    try:
        table = asyncio.run(go())
    except Exception as exc:
        fail(error_line(exc))
    view = alerts_view(settings, table, time.time())
    if as_json:
        click.echo(json.dumps(view, indent=2, default=str))
        return
    print_view(view, Console(width=max(120, Console().width)))


def _when(epoch: Any) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))


def print_view(view: dict[str, Any], console: Console) -> None:
    """Rules, then alerts, then who evaluates."""
    rules = Table(title="Alert rules", title_justify="left")
    for header in ("RULE", "CONDITION", "ABOVE", "FOR", "REPEAT", "PIPELINES", "NOTIFY", "FILE"):
        rules.add_column(header)
    for rule in view["rules"]:
        covered = ", ".join(rule["pipelines"])
        if rule["exclude"]:
            covered += f" (not {', '.join(rule['exclude'])})"
        above = rule["above"]
        if rule["condition"] == "latency" and above is not None:
            above = format_duration(above)
        rules.add_row(
            rule["name"],
            rule["condition"],
            "-" if above is None else str(above),
            format_duration(rule["for"]) if rule["for"] else "-",
            format_duration(rule["repeat_every"]) if rule["repeat_every"] else "never",
            ", ".join(rule["pipelines"])
            + (f" (not {', '.join(rule['exclude'])})" if rule["exclude"] else ""),
            ", ".join(rule["notify"]) or "(none)",
            rule["file"] or "etl.yaml",
        )
    console.print(rules)
    alerts = Table(title="Alerts", title_justify="left")
    for header in ("RULE", "PIPELINE", "STATE", "VALUE", "SINCE", "LAST SENT", "SENT", "DELIVERY"):
        alerts.add_column(header)
    for alert in view["alerts"]:
        delivery = alert.get("last_delivery") or {}
        failed = delivery.get("failed") or {}
        text = "sending" if alert["delivering"] else ""
        if failed:
            text = "failed: " + ", ".join(failed)
        alerts.add_row(
            alert["rule"],
            alert["pipeline"],
            Text(str(alert["state"]), style=_STATE_STYLES.get(str(alert["state"]), "")),
            "-" if alert["value"] is None else str(alert["value"]),
            _when(alert["since"]),
            _when(alert["last_sent"]),
            str(alert["sent"] or 0),
            text,
        )
    console.print(alerts if view["alerts"] else "Alerts: none pending or firing")
    evaluator = view["evaluator"] or "none (no live worker with alert rules)"
    console.print(f"evaluated by: {evaluator}")
    if not view["same_rules_everywhere"]:
        console.print(
            "[yellow]note: the live workers have different alert rules; the evaluator's apply"
        )


@alerts_group.command("prometheus")
@CONFIG_OPTION
@click.option(
    "--from-config",
    is_flag=True,
    help="Write the rules of etl.yaml (and alerts/) instead of the shipped defaults.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write here.")
def prometheus_command(config: str | None, from_config: bool, output: str | None) -> None:
    """Prometheus alerting rules for the same conditions over GET /metrics."""
    from etl.alerts.prometheus import render, shipped_rules

    if from_config:
        rules = _settings(config).alerts.rules
        if not rules:
            fail("no alert rules in the configuration (alerts.rules or alerts/)")
        text = render(rules)
    else:
        text = shipped_rules()
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"wrote {output}")
    else:
        sys.stdout.write(text)


@alerts_group.command("test")
@CONFIG_OPTION
@click.argument("notifiers", nargs=-1)
def test_command(config: str | None, notifiers: tuple[str, ...]) -> None:
    """Send a test notification to NOTIFIERS (default: every enabled one), once each."""
    from etl.alerts.notify import iso, send
    from etl.redact import Redactor

    settings = _settings(config)
    alerts = settings.alerts
    configured = ", ".join(n.name for n in alerts.notifiers) or "none"
    unknown = [n for n in notifiers if alerts.notifier(n) is None]
    if unknown:
        fail(f"no notifier {', '.join(unknown)} (configured: {configured})")
    if notifiers:
        targets = [n for n in alerts.notifiers if n.name in notifiers]
    else:
        targets = [n for n in alerts.notifiers if n.enabled]
    if not targets:
        fail("no notifier configured (alerts.notifiers)")
    now = time.time()
    alert = {
        "id": f"test/{now:.3f}",
        "event_id": f"test/{now:.3f}",
        "rule": "test",
        "condition": "test",
        "severity": "info",
        "pipeline": "-",
        "state": "firing",
        "event": "test",
        "value": None,
        "threshold": None,
        "since": now,
        "since_iso": iso(now),
        "at": now,
        "at_iso": iso(now),
        "message": "a test notification from `etl alerts test`",
        "cluster": settings.kafka.group_prefix,
    }
    redact = Redactor(settings.secret_values())

    async def go() -> list[str | None]:
        return await asyncio.gather(
            *(send(n.model_copy(update={"retries": 0}), alert, redact) for n in targets)
        )

    results = asyncio.run(go())
    failed = 0
    for notifier, error in zip(targets, results, strict=True):
        if error is None:
            click.echo(f"{notifier.name} ({notifier.type}): sent")
        else:
            failed += 1
            click.echo(f"{notifier.name} ({notifier.type}): failed: {error}")
    if failed:
        raise SystemExit(1)
