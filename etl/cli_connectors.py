"""``etl connectors list|show|create|edit|delete|validate``: the connectors REST API
(docs/connectors.md) from the command line, through any worker."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.table import Table

from etl.cli_common import CONFIG_OPTION, fail
from etl.cli_common import settings_or_exit as _settings
from etl.cli_ops import OPS_COMMANDS, TOKEN_OPTION, URL_OPTION, _console
from etl.ops.client import (
    WorkerClient,
    WorkerRequestError,
    WorkerUnreachable,
    find_worker,
    worker_token,
)


def _client(config: str | None, url: str | None, token: str | None) -> tuple[WorkerClient, str]:
    settings = _settings(config)
    target = find_worker(settings, url)
    if target.url is None:
        fail(f"the connectors API is served by a worker: {target.label}; pass --url")
    return WorkerClient(target.url, timeout=90, token=worker_token(settings, token)), target.label


def _call(client: WorkerClient, label: str, method: str, path: str, body: Any = None) -> Any:
    try:
        return client.call(method, path, body)
    except WorkerRequestError as exc:
        fail(f"{method} {path} on {label}: {exc}")
    except WorkerUnreachable as exc:
        fail(f"{exc} ({label}); is a worker running? `etl worker` starts one")


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _read_file(path: str) -> tuple[str, dict[str, Any]]:
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"{path}: {exc}")
    if not isinstance(data, dict):
        fail(f"{path}: a connector file is a mapping of options")
    name = str(data.pop("name", None) or file.stem)
    return name, data


def _problems(answer: dict[str, Any]) -> list[str]:
    return [
        f"{config['value']['name']}: {error}"
        for config in answer.get("configs", [])
        for error in config["value"].get("errors", [])
    ]


def _die(lines: list[str]) -> NoReturn:
    for line in lines:
        click.echo(f"  {line}", err=True)
    raise SystemExit(1)


@click.group("connectors")
def connectors_group() -> None:
    """Sinks and sources at runtime: list, show, create, edit, delete, validate."""


OPS_COMMANDS.append(connectors_group)

_OPTIONS = (CONFIG_OPTION, URL_OPTION, TOKEN_OPTION)


def _with_options(function: Any) -> Any:
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


@connectors_group.command("list")
@_with_options
def list_connectors(config: str | None, url: str | None, token: str | None) -> None:
    """Every connector of the cluster with its state and workers."""
    client, label = _client(config, url, token)
    answer = _call(client, label, "GET", "/connectors?expand=status&expand=info") or {}
    table = Table(title="Connectors", title_justify="left")
    for header in ("NAME", "KIND", "TYPE", "STATE", "WORKERS", "TRACE"):
        table.add_column(header, overflow="fold")
    for name, entry in sorted(answer.items()):
        status = entry.get("status", {})
        info = entry.get("info", {})
        table.add_row(
            name,
            str(status.get("type", "-")),
            str(info.get("config", {}).get("type", "-")),
            str(status.get("connector", {}).get("state", "-")),
            ", ".join(t["worker_id"] for t in status.get("tasks", []) if t.get("worker_id")),
            str(status.get("connector", {}).get("trace") or ""),
        )
    _console().print(table)


@connectors_group.command("show")
@_with_options
@click.argument("name")
def show_connector(config: str | None, url: str | None, token: str | None, name: str) -> None:
    """The configuration of connector NAME (secrets as ***)."""
    client, label = _client(config, url, token)
    click.echo(
        json.dumps(_call(client, label, "GET", f"/connectors/{_quote(name)}/config"), indent=2)
    )


@connectors_group.command("validate")
@_with_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def validate_connector(config: str | None, url: str | None, token: str | None, file: str) -> None:
    """Check a connector file: every problem by option; exit 1 if any."""
    client, label = _client(config, url, token)
    name, data = _read_file(file)
    type_name = str(data.get("type") or "")
    if not type_name:
        _die([f"{file}: type: field required"])
    answer = _call(
        client,
        label,
        "PUT",
        f"/connector-plugins/{_quote(type_name)}/config/validate",
        {**data, "name": name},
    )
    problems = _problems(answer)
    if problems:
        click.echo(f"{file}: {len(problems)} problem(s)", err=True)
        _die(problems)
    click.echo(f"{file}: valid {type_name} connector {name!r}")


@connectors_group.command("create")
@_with_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def create_connector(config: str | None, url: str | None, token: str | None, file: str) -> None:
    """Create a connector from a YAML file (its name: `name:` or the file name)."""
    client, label = _client(config, url, token)
    name, data = _read_file(file)
    _call(client, label, "POST", "/connectors", {"name": name, "config": data})
    click.echo(f"created connector {name}: it runs on every worker (etl connectors list)")


@connectors_group.command("edit")
@_with_options
@click.argument("name")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def edit_connector(
    config: str | None, url: str | None, token: str | None, name: str, file: str | None
) -> None:
    """Change connector NAME: from FILE, or in $EDITOR (secrets left as *** keep their value)."""
    client, label = _client(config, url, token)
    if file is not None:
        _given, data = _read_file(file)
    else:
        current = _call(client, label, "GET", f"/connectors/{_quote(name)}/config")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(current, handle, sort_keys=False)
        try:
            subprocess.run([os.environ.get("EDITOR", "vi"), handle.name], check=True)
            _given, data = _read_file(handle.name)
        finally:
            os.unlink(handle.name)
    _call(client, label, "PUT", f"/connectors/{_quote(name)}/config", data)
    click.echo(f"connector {name} changed; every worker applies it")


@connectors_group.command("delete")
@_with_options
@click.option("--purge", is_flag=True, help="Also remove its group, own topics, meta objects.")
@click.option("--purge-data", is_flag=True, help="With --purge: its data objects too.")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.argument("name")
def delete_connector(
    config: str | None,
    url: str | None,
    token: str | None,
    purge: bool,
    purge_data: bool,
    yes: bool,
    name: str,
) -> None:
    """Delete connector NAME (stopped after committing on every worker)."""
    client, label = _client(config, url, token)
    path = f"/connectors/{_quote(name)}"
    query = "?purge=true" + ("&data=true" if purge_data else "") if purge else ""
    if purge:
        listed = _call(client, label, "DELETE", f"{path}{query}&dry_run=true") or {}
        items = listed.get("purge", [])
        click.echo(f"deleting {name} also removes {len(items) or 'nothing else'}:")
        for item in items:
            click.echo(f"  {item['kind']} {item['name']} ({item['why']})")
    if not yes and not click.confirm(f"delete connector {name}?", default=False):
        fail("nothing deleted")
    _call(client, label, "DELETE", f"{path}{query}")
    click.echo(f"deleted connector {name}")
