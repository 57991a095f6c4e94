"""``etl templates list`` and ``etl templates render``: the shipped transform templates."""

from __future__ import annotations

import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from pydantic import ValidationError

from etl.errors import TransformLoadError
from etl.transforms.loader import compile_transform
from etl.transforms.templates import (
    TransformTemplate,
    UnknownTemplateError,
    format_problem,
    get_template,
    list_templates,
    load_template_file,
    render_template,
    validation_problems,
)


@click.group("templates")
def templates_group() -> None:
    """Transform templates: list them, or render one into an editable transform file."""


def _param_rows(template: TransformTemplate) -> list[dict[str, Any]]:
    schema = template.params.model_json_schema()
    required = set(schema.get("required", []))
    fields = template.params.model_fields
    rows = []
    for name, prop in schema.get("properties", {}).items():
        rows.append(
            {
                "name": name,
                "type": _schema_type(prop),
                "required": name in required,
                "default": None
                if name in required
                else fields[name].get_default(call_default_factory=True, validated_data={}),
                "description": prop.get("description", ""),
            }
        )
    return rows


_TYPE_NAMES = {"string": "text", "integer": "int", "boolean": "bool", "number": "number"}


def _schema_type(prop: dict[str, Any]) -> str:
    """A short type name from a JSON-schema property: ``text``, ``list of text``, ..."""
    if "enum" in prop:
        return "|".join(str(value) for value in prop["enum"])
    if "anyOf" in prop:
        kinds = [_schema_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds)
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_schema_type(prop.get('items', {}))}"
    if kind == "object":
        return f"map of text to {_schema_type(prop.get('additionalProperties', {}))}"
    return _TYPE_NAMES.get(str(kind), str(kind or "any"))


@templates_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def list_command(as_json: bool) -> None:
    """Every template with its description and params."""
    items: list[dict[str, Any]] = [
        {"name": t.name, "description": t.description, "params": _param_rows(t)}
        for t in list_templates()
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    for item in items:
        click.echo(f"{item['name']}\n  {item['description']}")
        for row in item["params"]:
            default = "required" if row["required"] else f"default {json.dumps(row['default'])}"
            click.echo(f"    {row['name']} ({row['type']}; {default}): {row['description']}")
        click.echo("")


def _only_list(annotation: Any) -> bool:
    """True for ``list[...]`` (or ``list[...] | None``), not for ``str | list[str]``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return len(kinds) == 1 and _only_list(kinds[0])
    return typing.get_origin(annotation) is list


def _parse_params(template: TransformTemplate, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; a value is YAML (``[a, b]``, ``true``) unless the param is text.

    A list param also takes ``a,b`` (one item per comma).
    """
    fields = template.params.model_fields
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        field = fields.get(name)
        if field is None:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            _fail(
                f"params.{name}: unknown option of template {template.name!r}{hint} "
                f"(its params: {', '.join(fields)}; see `etl templates list`)"
            )
        if field.annotation is str:
            params[name] = raw
            continue
        if _only_list(field.annotation) and not raw.lstrip().startswith("["):
            params[name] = [item.strip() for item in raw.split(",") if item.strip()]
            continue
        try:
            params[name] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="--param") from None
    return params


def _fail(text: str) -> NoReturn:
    click.echo(f"etl: {text}", err=True)
    raise SystemExit(2)


@templates_group.command("render")
@click.argument("name", required=False)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    help="NAME=VALUE, repeatable; a list as a,b or [a, b]; true/false and numbers as such.",
)
@click.option(
    "--source-topic", "-s", default=None, help="SOURCE_TOPIC of the transform (required)."
)
@click.option(
    "--target-topic", "-t", default=None, help="TARGET_TOPIC of the transform (required)."
)
@click.option(
    "--start-offset", type=click.Choice(["earliest", "latest"]), default="latest", show_default=True
)
@click.option("--on-error", type=click.Choice(["continue", "stop"]), default=None)
@click.option(
    "--from",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Render what a transforms/*.yaml file names (instead of NAME and options).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the transform to this file (e.g. transforms/x.py) instead of printing it.",
)
@click.option("--force", is_flag=True, help="Overwrite the output file.")
def render_command(
    name: str | None,
    params: tuple[str, ...],
    source_topic: str | None,
    target_topic: str | None,
    start_offset: str,
    on_error: str | None,
    from_file: str | None,
    output: str | None,
    force: bool,
) -> None:
    """Render template NAME with its params into Python source of an editable transform.

    Example: etl templates render mask_fields -s users -t users-masked
    -p names=email,phone -o transforms/users.py
    """
    if from_file is not None:
        if name or params or source_topic or target_topic:
            _fail("--from takes everything from the file; give no NAME, --param or topics")
        try:
            source = load_template_file(from_file).extra["source"]
        except TransformLoadError as exc:
            _fail(str(exc))
    else:
        if not name:
            _fail("give a template NAME (see `etl templates list`) or --from FILE.yaml")
        if not source_topic or not target_topic:
            _fail(
                "--source-topic and --target-topic are required: the topics the transform "
                f"reads and writes, e.g. etl templates render {name} -s orders -t orders-clean"
            )
        assert name is not None and source_topic is not None and target_topic is not None
        try:
            template = get_template(name)
            parsed = _parse_params(template, params)
            source = render_template(
                name,
                parsed,
                source_topic=source_topic,
                target_topic=target_topic,
                start_offset=start_offset,
                on_error=on_error,
            )
        except UnknownTemplateError as exc:
            _fail(str(exc))
        except ValidationError as exc:
            problems = [
                format_problem(loc, message)
                for loc, message in validation_problems(exc, parsed, ("params",))
            ]
            _fail("invalid params:\n  " + "\n  ".join(problems))
    if output is None:
        click.echo(source, nl=False)
        return
    path = Path(output)
    if path.exists() and not force:
        _fail(f"{path} exists; use --force to overwrite it")
    try:
        spec = compile_transform(source, path)
    except TransformLoadError as exc:
        _fail(str(exc))
    # Written whole and renamed, so a watching worker never loads a half-written file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(source, encoding="utf-8")
    tmp.replace(path)
    click.echo(f"wrote {path}: {spec.source_topic} -> {spec.target_topic}, version {spec.version}")
