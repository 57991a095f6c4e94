"""Cluster commands: ``etl offsets show|reset``, ``etl show`` and ``etl logs``.

They read Kafka (the control topic, the groups' offsets, the logs topic)
directly, so they work from any machine that reaches the cluster, with or
without a worker; ``etl show`` asks a worker first (it knows its own files).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from etl.cli_common import CONFIG_OPTION, fail
from etl.cli_common import settings_or_exit as _settings
from etl.cli_ops import (
    BOOTSTRAP_OPTION,
    JSON_OPTION,
    OPS_COMMANDS,
    URL_OPTION,
    _console,
    _run,
    with_bootstrap,
)
from etl.config import ETLSettings
from etl.errors import ETLError


async def _with_control(settings: ETLSettings, name: str, work: Any) -> Any:
    """Run ``work(plane, key)`` with the control table read and ``name`` resolved."""
    from etl.control.plane import ControlPlane

    plane = ControlPlane(settings)
    await plane.start(follow_changes=False)
    try:
        keys = plane.table.pipeline_keys()
        if name in keys:
            key = name
        else:
            matches = sorted(k for k in keys if k.split(":", 1)[-1] == name)
            if not matches:
                known = ", ".join(sorted(keys)) or "none"
                raise ETLError(f"no pipeline {name!r} in this cluster (known: {known})")
            if len(matches) > 1:
                raise ETLError(f"{name!r} is ambiguous: use one of {', '.join(matches)}")
            key = matches[0]
        return await work(plane, key)
    finally:
        await plane.stop()


def _run_or_fail(settings: ETLSettings, name: str, work: Any, as_json: bool) -> Any:
    """Run ``work`` against the control table; a refusal is one line; --json prints it all."""
    from etl.ops.reset import ResetRefused

    try:
        result = _run(lambda: _with_control(settings, name, work), settings)
    except ResetRefused as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        raise SystemExit(0)
    return result


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


# ---- offsets ----------------------------------------------------------------------------


@click.group("offsets")
def offsets_group() -> None:
    """Show or move a pipeline's committed offsets (to earliest, latest, a time, an offset)."""


OPS_COMMANDS.append(offsets_group)


@offsets_group.command("show")
@CONFIG_OPTION
@BOOTSTRAP_OPTION
@JSON_OPTION
@click.argument("name")
def offsets_show(config: str | None, bootstrap: str | None, as_json: bool, name: str) -> None:
    """Committed offset, log start, end and lag of every partition of pipeline NAME."""
    from etl.ops.reset import show_offsets

    settings = with_bootstrap(_settings(config), bootstrap)

    async def work(plane: Any, key: str) -> Any:
        return await show_offsets(settings, plane, key)

    result = _run_or_fail(settings, name, work, as_json)
    table = Table(title=f"{result['pipeline']} (group {result['group_id']})", title_justify="left")
    for header in ("TOPIC/PARTITION", "COMMITTED", "LOG START", "END", "LAG"):
        table.add_column(header, justify="left" if header == "TOPIC/PARTITION" else "right")
    for tp, row in result["partitions"].items():
        table.add_row(
            tp, _num(row["committed"]), _num(row["log_start"]), _num(row["end"]), _num(row["lag"])
        )
    _console().print(table)
    runs = result["running_on"]
    click.echo(f"desired state: {result['desired']}; running on: {'; '.join(runs) or 'nowhere'}")


@offsets_group.command("reset")
@CONFIG_OPTION
@BOOTSTRAP_OPTION
@JSON_OPTION
@click.option("--to-earliest", "earliest", is_flag=True, help="To the log start.")
@click.option("--to-latest", "latest", is_flag=True, help="To the end (skip what is waiting).")
@click.option("--to-time", "to_time", default=None, help="To the first message at/after TIME.")
@click.option(
    "--to-offset",
    "to_offsets",
    multiple=True,
    help="PARTITION:OFFSET (or TOPIC:PARTITION:OFFSET); repeat for more partitions.",
)
@click.option(
    "--to-position",
    "to_position",
    default=None,
    help="A source's position (binlog: now, FILE:POS or gtid:SET).",
)
@click.option(
    "--forget",
    is_flag=True,
    help="A source: drop its saved position (it begins as configured by start/snapshot).",
)
@click.option("--dry-run", is_flag=True, help="Show before/after, change nothing.")
@click.option("--stop", "stop_first", is_flag=True, help="Stop the pipeline on every worker first.")
@click.argument("name")
def offsets_reset(
    config: str | None,
    bootstrap: str | None,
    as_json: bool,
    earliest: bool,
    latest: bool,
    to_time: str | None,
    to_offsets: tuple[str, ...],
    to_position: str | None,
    forget: bool,
    dry_run: bool,
    stop_first: bool,
    name: str,
) -> None:
    """Move pipeline NAME's committed offsets; it must run nowhere (see --stop).

    After a reset, `etl resume NAME` starts it from the new offsets. To skip a
    poison message at offset O of partition P: --to-offset P:O+1. A source has a
    position instead: --to-position (binlog: now, FILE:POS or gtid:SET) or --forget.
    """
    from etl.ops.messages import parse_time
    from etl.ops.reset import (
        ResetRefused,
        ResetTarget,
        pipeline_item,
        reset_offsets,
        reset_source_position,
    )

    chosen = sum(
        [earliest, latest, to_time is not None, bool(to_offsets), bool(to_position), forget]
    )
    if chosen != 1:
        fail(
            "say where to: exactly one of --to-earliest, --to-latest, --to-time, --to-offset "
            "(transforms, sinks) or --to-position, --forget (sources)"
        )
    settings = with_bootstrap(_settings(config), bootstrap)
    if to_position or forget:

        async def move(plane: Any, key: str) -> Any:
            return await reset_source_position(
                settings, plane, key, to_position, dry_run=dry_run, stop=stop_first
            )

        _run_or_fail(settings, name, move, as_json=True)

    async def work(plane: Any, key: str) -> Any:
        if earliest or latest:
            target = ResetTarget("earliest" if earliest else "latest")
        elif to_time is not None:
            try:
                target = ResetTarget("time", time_ms=parse_time(to_time))
            except ValueError as exc:
                raise ResetRefused(str(exc)) from None
        else:
            source = str(pipeline_item(plane, key).get("source") or "")
            target = ResetTarget.parse_offsets(
                list(to_offsets), [t for t in source.split(",") if t]
            )
        return await reset_offsets(settings, plane, key, target, dry_run=dry_run, stop=stop_first)

    result = _run_or_fail(settings, name, work, as_json)
    title = f"{result['pipeline']} -> {result['target']}" + (" (dry run)" if dry_run else "")
    table = Table(title=title, title_justify="left")
    for header in ("TOPIC/PARTITION", "BEFORE", "AFTER", "LOG START", "END", "LAG AFTER"):
        table.add_column(header, justify="left" if header == "TOPIC/PARTITION" else "right")
    for tp, row in result["partitions"].items():
        table.add_row(
            tp,
            _num(row["before"]),
            _num(row["after"]),
            _num(row["log_start"]),
            _num(row["end"]),
            _num(row["lag_after"]),
        )
    _console().print(table)
    for note in result["notes"]:
        click.echo(f"note: {note}")
    if dry_run:
        click.echo("dry run: nothing changed")
    else:
        click.echo(
            f"{result['changed']} partition(s) moved; {result['pipeline']} is "
            f"{result['desired']}: `etl resume {result['pipeline']}` starts it from there"
        )


# ---- show -------------------------------------------------------------------------------


@click.command("show")
@CONFIG_OPTION
@URL_OPTION
@BOOTSTRAP_OPTION
@click.argument("name")
def show(config: str | None, url: str | None, bootstrap: str | None, name: str) -> None:
    """Pipeline NAME's effective configuration (secrets redacted), file, group and topics."""
    import urllib.parse

    from etl.ops.client import WorkerClient, WorkerRequestError, WorkerUnreachable, find_worker

    settings = with_bootstrap(_settings(config), bootstrap)
    details: dict[str, Any] | None = None
    target = find_worker(settings, url)
    if not bootstrap and target.url is not None:
        try:
            details = WorkerClient(target.url).get(
                f"/etl/pipelines/{urllib.parse.quote(name)}/config/"
            )
        except WorkerRequestError as exc:
            fail(f"show {name} on {target.label}: {exc}")
        except WorkerUnreachable:
            details = None
    if details is None:

        async def work(plane: Any, key: str) -> Any:
            found = plane.table.details.get(key)
            if found is None:
                raise ETLError(f"no details of {key} in the control topic")
            return {k: v for k, v in found.items() if k != "_offset"}

        details = _run(lambda: _with_control(settings, name, work), settings)
    click.echo(json.dumps(details, indent=2, default=str))


OPS_COMMANDS.append(show)


# ---- logs -------------------------------------------------------------------------------


def _print_line(line: dict[str, Any]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(line.get("at") or 0)))
    level = str(line.get("level", "")).upper()
    click.echo(f"{stamp} {level:<7} [{line.get('worker', '-')}] {line.get('message', '')}")


@click.command("logs")
@CONFIG_OPTION
@URL_OPTION
@BOOTSTRAP_OPTION
@click.option("--lines", "-n", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.argument("name")
def logs(
    config: str | None, url: str | None, bootstrap: str | None, lines: int, follow: bool, name: str
) -> None:
    """Recent log lines of pipeline NAME from every worker that ran it (the logs topic)."""
    import asyncio

    from etl.ops.logs import read_cluster_logs

    settings = with_bootstrap(_settings(config), bootstrap)

    async def work(plane: Any, key: str) -> Any:
        return key

    key = _run(lambda: _with_control(settings, name, work), settings)
    try:
        if follow:
            read_cluster_logs(settings, key, lines, follow=_print_line)
        else:
            for line in asyncio.run(asyncio.to_thread(read_cluster_logs, settings, key, lines)):
                _print_line(line)
    except KeyboardInterrupt:
        pass


OPS_COMMANDS.append(logs)
