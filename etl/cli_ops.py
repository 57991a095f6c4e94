"""Operator commands: ``etl status``, ``pause``, ``resume``, ``stop``, ``restart``,
``query``, ``search`` and ``deadletters`` (``offsets``, ``show`` and ``logs`` are in
:mod:`etl.cli_cluster`)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from etl.cli_common import CONFIG_OPTION, error_line, fail
from etl.cli_common import settings_or_exit as _settings
from etl.config import ETLSettings
from etl.errors import ETLError
from etl.ops.client import WorkerClient, WorkerRequestError, WorkerUnreachable, find_worker
from etl.ops.messages import FoundMessage, MessageLookupError, display_text, parse_time

T = TypeVar("T")

#: The operations commands (status, pause, resume, query, search, deadletters):
#: :mod:`etl.cli` attaches them to its group, as it does the templates group.
OPS_COMMANDS: list[click.Command] = []


def _command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """``@click.command(...)`` that also lists the command in :data:`OPS_COMMANDS`."""

    def register(function: Callable[..., Any]) -> click.Command:
        command = click.command(*args, **kwargs)(function)
        OPS_COMMANDS.append(command)
        return command

    return register


URL_OPTION = click.option(
    "--url",
    default=None,
    help=(
        "The worker's HTTP address (default: $ETL_WORKER_URL, else the worker recorded "
        "in this project's data_dir/worker.json, else web.host/web.port)."
    ),
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
TOKEN_OPTION = click.option(
    "--token",
    default=None,
    help="The worker's web.token (default: $ETL_WEB_TOKEN, else web.token of the config).",
)
BOOTSTRAP_OPTION = click.option(
    "--bootstrap",
    default=None,
    help="Ask Kafka at HOST:PORT directly, without a worker (default broker: the config's).",
)


def with_bootstrap(settings: ETLSettings, bootstrap: str | None) -> ETLSettings:
    """The settings with ``--bootstrap`` as kafka.bootstrap_servers, when given."""
    if bootstrap:
        settings.kafka.bootstrap_servers = bootstrap
    return settings


OUT_OPTION = click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write each key and value whole to DIR/TOPIC-PARTITION-OFFSET.key|.value.",
)


def _fail(message: str, code: int = 1) -> NoReturn:
    fail(message, code)


def _console() -> Console:
    # Off a terminal rich would wrap at 80 columns; status tables need more.
    return Console(width=None if sys.stdout.isatty() else 160)


# ---- status ------------------------------------------------------------------------


def fetch_status(
    settings: ETLSettings, url: str | None, bootstrap: str | None = None
) -> tuple[dict[str, Any], str]:
    """The cluster's status from a worker over HTTP, else from Kafka (``--bootstrap``),
    else the worker's ``status.json``; (snapshot, source)."""
    if bootstrap:
        from etl.ops.cluster import status_from_kafka

        snapshot = _run(lambda: status_from_kafka(with_bootstrap(settings, bootstrap)), settings)
        return snapshot, f"Kafka at {bootstrap} (read-only, no worker asked)"
    target = find_worker(settings, url)
    base, label = target.url, target.label
    problem = f"{label}: its web server is off (web.enabled: false)"
    if base is not None:
        try:
            snapshot = WorkerClient(base).status()
        except (WorkerUnreachable, WorkerRequestError) as exc:
            problem = str(exc)
        else:
            if target.guessed:
                _check_project(settings, snapshot, base)
            return snapshot, label
    path = settings.data_dir / "status.json"
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        _fail(f"{problem}; and no readable {path} (is a worker running with this config?)")
    return snapshot, f"{path}; {problem}"


@_command()
@CONFIG_OPTION
@URL_OPTION
@BOOTSTRAP_OPTION
@JSON_OPTION
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.option("--iterations", type=int, default=None, hidden=True)
def status(
    config: str | None,
    url: str | None,
    bootstrap: str | None,
    as_json: bool,
    watch: bool,
    interval: float,
    iterations: int | None,
) -> None:
    """Every pipeline of the cluster: state, rates, owner and lag per partition, workers.

    Asks a worker (any one: each knows the whole cluster), or with --bootstrap
    reads it from Kafka alone, with no worker running.
    """
    from rich.live import Live

    from etl.ops.render import render_status

    settings = _settings(config)
    if not watch:
        snapshot, source = fetch_status(settings, url, bootstrap)
        if as_json:
            click.echo(json.dumps(snapshot, indent=2, default=str))
        else:
            _console().print(render_status(snapshot, source))
        return
    count = 0
    try:
        if as_json:
            while iterations is None or count < iterations:
                snapshot, _ = fetch_status(settings, url, bootstrap)
                click.echo(json.dumps(snapshot, default=str))
                count += 1
                time.sleep(interval)
            return
        console = _console()
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while iterations is None or count < iterations:
                snapshot, source = fetch_status(settings, url, bootstrap)
                live.update(render_status(snapshot, source), refresh=True)
                count += 1
                if iterations is None or count < iterations:
                    time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _check_project(settings: ETLSettings, snapshot: dict[str, Any], base: str) -> None:
    """Warn when the worker that answered runs another project's transforms."""
    theirs = snapshot.get("worker", {}).get("transforms_dir")
    if theirs and Path(theirs) != settings.transforms_dir:
        click.echo(
            f"etl: note: the worker at {base} runs {theirs}, not this project's "
            f"{settings.transforms_dir}; pass --url for another worker",
            err=True,
        )


# ---- pause / resume / stop / restart ----------------------------------------------------


def _control(
    config: str | None,
    url: str | None,
    name: str,
    action: str,
    token: str | None = None,
    bootstrap: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Ask for ``action`` through a worker's API, or (``--bootstrap``) the control topic."""
    from etl.ops.client import worker_token

    settings = _settings(config)
    if bootstrap:
        return _control_direct(with_bootstrap(settings, bootstrap), name, action), (
            f"the control topic at {bootstrap}"
        )
    target = find_worker(settings, url)
    base, label = target.url, target.label
    direct = f"the control topic at {settings.kafka.bootstrap_servers}"
    if base is None:
        # Requests are records in the control topic: no worker needs to relay them.
        return _control_direct(settings, name, action), f"{direct}; {label}"
    client = WorkerClient(base, token=worker_token(settings, token))
    try:
        if target.guessed:
            _check_project(settings, client.status("local"), base)
        answer = client.action(name, action)
    except WorkerRequestError as exc:
        _fail(f"{action} {name} on {label}: {exc}")
    except WorkerUnreachable as exc:
        if url:
            _fail(f"{exc} ({label}); is the worker running? `etl worker` starts it")
        return _control_direct(settings, name, action), f"{direct}; {exc}"
    return answer, label


def _control_direct(settings: ETLSettings, name: str, action: str) -> dict[str, Any]:
    from etl.control.plane import ControlPlane

    async def go() -> dict[str, Any]:
        plane = ControlPlane(settings)
        await plane.start(follow_changes=False)
        try:
            keys = plane.table.pipeline_keys()
            key = name if name in keys else None
            if key is None:
                matches = sorted(k for k in keys if k.split(":", 1)[-1] == name)
                if len(matches) != 1:
                    raise ETLError(
                        f"no pipeline {name!r} in this cluster"
                        if not matches
                        else f"{name!r} is ambiguous: use one of {', '.join(matches)}"
                    )
                key = matches[0]
            if action in ("pause", "stop"):
                await plane.set_desired(key, "paused" if action == "pause" else "stopped")
            else:
                await plane.set_desired(key, "running")
                await plane.request_restart(key, broken_only=action == "resume")
            return {"pipeline": key, "action": action}
        finally:
            await plane.stop()

    return _run(go, settings)


_DONE = {
    "pause": "paused {key} on every worker ({label})\n"
    "it stays paused, also across restarts, until: etl resume {key}",
    "resume": "resumed {key} on every worker ({label}); halted partitions and a failed "
    "pipeline start again from their committed offsets",
    "stop": "stopped {key} on every worker ({label}): its consumers left the group, its "
    "offsets can be reset now (etl offsets reset {key} ...)\nstart it again: etl resume {key}",
    "restart": "restarted {key} on every worker ({label}) from its committed offsets",
}


def _control_command(action: str, help_text: str) -> click.Command:
    @_command(name=action, help=help_text)
    @CONFIG_OPTION
    @URL_OPTION
    @TOKEN_OPTION
    @BOOTSTRAP_OPTION
    @click.argument("name")
    def command(
        config: str | None, url: str | None, token: str | None, bootstrap: str | None, name: str
    ) -> None:
        answer, label = _control(config, url, name, action, token, bootstrap)
        click.echo(_DONE[action].format(key=answer["pipeline"], label=label))

    return command


pause = _control_command(
    "pause", "Pause pipeline NAME (or KIND:NAME) on every worker until resumed, across restarts."
)
resume = _control_command(
    "resume",
    "Resume pipeline NAME on every worker; also restarts it if it halted or failed.",
)
stop = _control_command(
    "stop",
    "Stop pipeline NAME on every worker (consumers leave the group) until resumed.",
)
restart = _control_command(
    "restart", "Restart pipeline NAME on every worker from its committed offsets."
)


# ---- query / search -------------------------------------------------------------------


def _time_option(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _run(make: Callable[[], Coroutine[Any, Any, T]], settings: ETLSettings) -> T:
    from aiokafka.errors import KafkaError

    from etl.kafka import wait_for_broker

    async def go() -> T:
        await wait_for_broker(settings.kafka, attempts=3)
        return await make()

    try:
        return asyncio.run(go())
    except (MessageLookupError, ETLError) as exc:
        _fail(str(exc))
    except (KafkaError, OSError) as exc:
        _fail(error_line(exc))


HEADERS_OPTION = click.option(
    "--headers", "show_headers", is_flag=True, help="Show each message's headers."
)


def print_messages(messages: list[FoundMessage], show_headers: bool = False) -> None:
    """One block per message; key and value cut at 1 KB (``--out`` writes them whole)."""
    from etl.ops.messages import format_time

    for msg in messages:
        click.echo(
            f"partition {msg.partition}  offset {msg.offset}  time {format_time(msg.timestamp)}"
        )
        _print_key_value(msg)
        if show_headers:
            _print_headers(msg)
        click.echo("")


def _print_key_value(msg: FoundMessage) -> None:
    for label, data in (("key", msg.key), ("value", msg.value)):
        text, cut = display_text(data)
        shown = "(null)" if text is None else text
        if cut:
            shown += f" ... [cut at 1 KB of {len(data or b'')} bytes; --out DIR writes it whole]"
        click.echo(f"  {label + ':':<6} {shown}")


def _print_headers(msg: FoundMessage) -> None:
    if not msg.headers:
        click.echo("  headers: (none)")
    for name, text in msg.header_texts().items():
        click.echo(f"  header {name}: {'(null)' if text is None else text}")


def _write_out(messages: list[FoundMessage], out: str | None, as_json: bool) -> None:
    if out is None:
        return
    from etl.ops.messages import write_whole

    paths = write_whole(messages, Path(out))
    if not as_json:
        click.echo(f"wrote {len(paths)} file(s) to {out}")


@_command()
@CONFIG_OPTION
@click.argument("topic")
@click.option("--partition", "-p", type=click.IntRange(min=0), default=None)
@click.option("--offset", "-o", type=click.IntRange(min=0), default=None, help="Needs --partition.")
@click.option("--time", "-t", "at", default=None, help="'YYYY-MM-DD HH:MM:SS' (local time).")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Write keys/values whole."
)
@HEADERS_OPTION
@JSON_OPTION
def query(
    config: str | None,
    topic: str,
    partition: int | None,
    offset: int | None,
    at: str | None,
    limit: int,
    out: str | None,
    show_headers: bool,
    as_json: bool,
) -> None:
    """Show up to 10 messages of TOPIC: the newest, or from an offset (one partition)
    or a point in time."""
    from etl.ops.query import query_by_offset, query_by_time, query_newest

    if offset is not None and at is not None:
        raise click.UsageError("give --offset (with --partition) or --time, not both")
    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition")
    at_ms = _time_option(at, "--time")
    settings = _settings(config)
    if at_ms is not None:
        result = _run(
            lambda: query_by_time(settings.kafka, topic, at_ms, partition, limit), settings
        )
    elif offset is None:
        result = _run(lambda: query_newest(settings.kafka, topic, partition, limit), settings)
    else:
        assert offset is not None and partition is not None
        result = _run(
            lambda: query_by_offset(settings.kafka, topic, partition, offset, limit), settings
        )
    _write_out(result.messages, out, as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(1024), indent=2, ensure_ascii=False))
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    print_messages(result.messages, show_headers)
    click.echo(f"{len(result.messages)} message(s)")


@_command()
@CONFIG_OPTION
@click.argument("topic")
@click.option("--partition", "-p", type=click.IntRange(min=0), default=None)
@click.option("--offsets", default=None, help="Offset range A-B (inclusive), A- or -B.")
@click.option("--key", "keys", multiple=True, help="Keyword in the key (repeatable, AND).")
@click.option("--value", "values", multiple=True, help="Keyword in the value (repeatable, AND).")
@click.option("--since", default=None, help="'YYYY-MM-DD HH:MM:SS' (local time), inclusive.")
@click.option("--until", default=None, help="'YYYY-MM-DD HH:MM:SS' (local time), inclusive.")
@click.option("--limit", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option(
    "--index", "index_sink", default=None, help="Search the index of this OpenSearch sink."
)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Write keys/values whole."
)
@HEADERS_OPTION
@JSON_OPTION
def search(
    config: str | None,
    topic: str,
    partition: int | None,
    offsets: str | None,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int,
    index_sink: str | None,
    out: str | None,
    show_headers: bool,
    as_json: bool,
) -> None:
    """Find messages of TOPIC by partition, offsets, time and key/value keywords (AND).

    A keyword matches anywhere in the key or value, case-insensitively; * stands
    for any characters and ? for one.
    """
    from etl.ops.search import SearchQuery, parse_offset_range

    first = last = None
    if offsets is not None:
        try:
            first, last = parse_offset_range(offsets)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--offsets") from None
    try:
        query_ = SearchQuery(
            partition=partition,
            first_offset=first,
            last_offset=last,
            keys=list(keys),
            values=list(values),
            since_ms=_time_option(since, "--since"),
            until_ms=_time_option(until, "--until"),
            limit=limit,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = _settings(config)
    if index_sink is not None:
        result = _search_index(settings, index_sink, topic, query_)
    else:
        result = _scan(settings, topic, query_, show_progress=not as_json)
    _write_out(result.messages, out, as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(1024), indent=2, ensure_ascii=False))
        return
    print_messages(result.messages, show_headers)
    summary = f"{len(result.messages)} match(es); scanned {result.scanned} of {result.to_scan}"
    if result.source != "kafka":
        summary = f"{len(result.messages)} match(es) of {result.scanned} in {result.source}"
    if result.limit_reached:
        summary += f"; stopped at --limit {limit}: narrow the search or raise the limit"
    click.echo(summary)


def _scan(settings: ETLSettings, topic: str, query_: Any, show_progress: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from etl.ops.search import search_topic

    progress = Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not (show_progress and sys.stderr.isatty()),
    )
    task = progress.add_task("scan", total=None)
    with progress:
        return _run(
            lambda: search_topic(
                settings.kafka,
                topic,
                query_,
                on_total=lambda total: progress.update(task, total=total),
                on_progress=lambda n: progress.advance(task, n),
            ),
            settings,
        )


def _search_index(settings: ETLSettings, sink_name: str, topic: str, query_: Any) -> Any:
    from etl.ops.search_index import search_index

    sinks = {sink.name: sink for sink in settings.sink_configs()}
    sink = sinks.get(sink_name)
    if sink is None or sink.type != "opensearch":
        names = sorted(name for name, s in sinks.items() if s.type == "opensearch")
        _fail(
            f"--index {sink_name}: no opensearch sink of that name in the config "
            f"(opensearch sinks: {', '.join(names) or 'none'})"
        )
    try:
        return search_index(sink, topic, query_)
    except (MessageLookupError, ETLError) as exc:
        _fail(str(exc))


# ---- dead letters ----------------------------------------------------------------------


@_command()
@CONFIG_OPTION
@click.argument("pipeline", required=False)
@click.option("--topic", default=None, help="Read this topic (default: errors.dead_letter_topic).")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@JSON_OPTION
def deadletters(
    config: str | None, pipeline: str | None, topic: str | None, limit: int, as_json: bool
) -> None:
    """The newest dead letters (of PIPELINE, or all): why each failed and where it came from.

    For each: pipeline, stage, source topic/partition@offset, the exception and, for
    a transform, the line of its file that raised; then the message's key and value.
    """
    from etl.ops.deadletters import read_dead_letters
    from etl.ops.messages import format_time

    settings = _settings(config)
    topic = topic or settings.errors.dead_letter_topic
    letters, matched = _run(
        lambda: read_dead_letters(settings.kafka, topic, pipeline, limit), settings
    )
    if as_json:
        click.echo(json.dumps([d.to_dict(1024) for d in letters], indent=2, ensure_ascii=False))
        return
    for letter in letters:
        msg = letter.message
        click.echo(
            f"{letter.pipeline or '?'}  stage {letter.get('etl.stage') or '?'}  "
            f"from {letter.source}  dead-lettered {format_time(msg.timestamp)}  "
            f"({topic}/{msg.partition}@{msg.offset})"
        )
        click.echo(f"  error: {letter.reason}")
        if letter.location:
            click.echo(f"  at:    {letter.location}")
        _print_key_value(msg)
        click.echo("")
    whose = f" of {pipeline}" if pipeline else ""
    shown = f"; showing the newest {len(letters)}" if matched > len(letters) else ""
    click.echo(f"{matched} dead letter(s){whose} in {topic}{shown}")
