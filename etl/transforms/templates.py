"""Transform templates: jinja2 templates shipped in the package, rendered to transform modules.

A ``transforms/NAME.yaml`` file names a template, its topics and its params::

    template: add_prefix_suffix
    source_topic: orders
    target_topic: orders-suffixed
    params: {value_suffix: "ValueSuffix"}

The params are validated by the template's pydantic model, then rendered into
Python source that :func:`~etl.transforms.loader.compile_transform` loads like a
``.py`` transform. Params are data, never code: they reach the source only as
Python literals made by :func:`python_literal` (the ``pyrepr`` filter), so no
param value can add a statement, and ``{{ }}`` in a value is never rendered again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etl.errors import TransformLoadError
from etl.transforms.loader import (
    LOADERS,
    TOPIC_PATTERN,
    TransformSpec,
    compile_transform,
    content_version,
)
from etl.transforms.template_params import (
    AddPrefixSuffixParams,
    FilterPrefixSuffixParams,
    JsonFieldsParams,
    MaskFieldsParams,
    RegexReplaceParams,
    TemplateParams,
)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class TransformTemplate:
    """A template: its name, what it does, its params model and its jinja2 file."""

    name: str
    description: str
    params: type[TemplateParams]

    @property
    def filename(self) -> str:
        """The jinja2 file under ``etl/templates``."""
        return f"{self.name}.py.j2"


_TEMPLATES: dict[str, TransformTemplate] = {}


def register_template(template: TransformTemplate) -> TransformTemplate:
    """Add (or replace) a template by name."""
    _TEMPLATES[template.name] = template
    return template


def list_templates() -> list[TransformTemplate]:
    """Every registered template, by name."""
    return [_TEMPLATES[name] for name in sorted(_TEMPLATES)]


class UnknownTemplateError(KeyError):
    """No template of that name; the message lists the known ones."""

    def __init__(self, name: str) -> None:
        self.text = f"unknown template {name!r}; known templates: {', '.join(sorted(_TEMPLATES))}"
        super().__init__(self.text)

    def __str__(self) -> str:
        return self.text


def get_template(name: str) -> TransformTemplate:
    """The template named ``name``, or :class:`UnknownTemplateError`."""
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise UnknownTemplateError(name) from None


for _template in (
    TransformTemplate(
        "add_prefix_suffix",
        "Add a prefix and/or a suffix to the key and/or the value of every message "
        "(the console's example).",
        AddPrefixSuffixParams,
    ),
    TransformTemplate(
        "filter_prefix_suffix",
        "Keep (or drop) messages whose key, value or a JSON field of the value starts "
        "and/or ends with given strings.",
        FilterPrefixSuffixParams,
    ),
    TransformTemplate(
        "json_fields",
        "Reshape a JSON value: pick the fields to keep, drop fields, rename or move fields.",
        JsonFieldsParams,
    ),
    TransformTemplate(
        "mask_fields",
        "Mask sensitive JSON fields (by path, or by name at any depth): fixed text, "
        "all but the last characters, or a SHA-256 hash.",
        MaskFieldsParams,
    ),
    TransformTemplate(
        "regex_replace",
        "Replace regular-expression matches in the key, the value or a JSON field of the value.",
        RegexReplaceParams,
    ),
):
    register_template(_template)


# ---- rendering --------------------------------------------------------------------------


def python_literal(value: Any) -> str:
    """Python source for a plain data value (str, int, float, bool, None, list, dict).

    ``ast.literal_eval`` of the result equals the value. Anything else is refused:
    only data may reach a rendered module.
    """
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot render the non-finite number {value!r}")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot render a dict key of type {type(key).__name__}")
            items.append(f"{python_literal(key)}: {python_literal(item)}")
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot render a value of type {type(value).__name__} as a Python literal")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # the output is Python source, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pyrepr"] = python_literal
    return env


_ENV = _environment()


def render_template(
    name: str,
    params: TemplateParams | Mapping[str, Any],
    *,
    source_topic: str,
    target_topic: str,
    start_offset: str = "latest",
    on_error: str | None = None,
    target_partitions: int | None = None,
    dead_letter_topic: str | None = None,
    timeout: float | None = None,
    processing_guarantee: str | None = None,
    origin: str = "",
) -> str:
    """Python source of the transform ``name`` renders to (params validated first)."""
    template = get_template(name)
    model = params if isinstance(params, TemplateParams) else template.params(**params)
    return _ENV.get_template(template.filename).render(
        template=template.name,
        description=template.description,
        origin=origin,
        source_topic=source_topic,
        target_topic=target_topic,
        start_offset=start_offset,
        on_error=on_error,
        target_partitions=target_partitions,
        dead_letter_topic=dead_letter_topic,
        timeout=timeout,
        processing_guarantee=processing_guarantee,
        params=model.render_context(),
    )


# ---- transforms/*.yaml ----------------------------------------------------------------


class TemplateFile(BaseModel):
    """The contents of a ``transforms/*.yaml`` file."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1)
    source_topic: str = Field(pattern=TOPIC_PATTERN)
    target_topic: str = Field(pattern=TOPIC_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict)
    start_offset: str = Field(default="latest", pattern="^(earliest|latest)$")
    on_error: str | None = Field(default=None, pattern="^(continue|stop)$")
    target_partitions: int | None = Field(default=None, ge=1)
    #: This transform's dead-letter topic; unset = ``errors.dead_letter_topic``.
    dead_letter_topic: str | None = Field(default=None, pattern=TOPIC_PATTERN)
    #: Seconds one call may take; unset = ``transform_timeout``.
    timeout: float | None = Field(default=None, gt=0)
    #: at_least_once | exactly_once; unset = ``kafka.processing_guarantee``.
    processing_guarantee: str | None = Field(default=None, pattern="^(at_least_once|exactly_once)$")

    def render(self, params: TemplateParams | Mapping[str, Any] | None = None, origin: str = "") -> str:
        """The Python source this file renders to (``params``: validated ones, else
        the file's own)."""
        return render_template(
            self.template,
            self.params if params is None else params,
            source_topic=self.source_topic,
            target_topic=self.target_topic,
            start_offset=self.start_offset,
            on_error=self.on_error,
            target_partitions=self.target_partitions,
            dead_letter_topic=self.dead_letter_topic,
            timeout=self.timeout,
            processing_guarantee=self.processing_guarantee,
            origin=origin,
        )


Loc = tuple[str | int, ...]


def _key_lines(text: str) -> dict[Loc, int]:
    """Line (1-based) of every mapping key in the YAML text, by its path."""
    lines: dict[Loc, int] = {}

    def walk(node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[(*loc, key.value)] = key.start_mark.line + 1
                    walk(value, (*loc, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*loc, index)] = item.start_mark.line + 1
                walk(item, (*loc, index))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _data_loc(data: Any, loc: Loc) -> Loc:
    """The part of an error location found in the data (drops pydantic's union member tags)."""
    kept: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            if isinstance(data, dict) and isinstance(part, str):
                kept.append(part)  # a missing field: name it
            break
        kept.append(part)
    return tuple(kept)


def validation_problems(exc: ValidationError, data: Any, prefix: Loc = ()) -> list[tuple[Loc, str]]:
    """One ``(location, message)`` per problem; a union's alternatives become one message."""
    merged: dict[Loc, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = _data_loc(data, tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown option"
        messages = merged.setdefault((*prefix, *loc), [])
        if message not in messages:
            messages.append(message)
    return [(loc, " or ".join(messages)) for loc, messages in merged.items()]


def format_problem(loc: Loc, message: str) -> str:
    """``params.prefix: message`` (or the bare message when there is no location)."""
    return f"{'.'.join(str(part) for part in loc)}: {message}" if loc else message


def _raise_problems(path: Path, problems: list[tuple[Loc, str]], lines: dict[Loc, int]) -> None:
    text = "; ".join(format_problem(loc, message) for loc, message in problems)
    line = next((ln for loc, _ in problems if (ln := _line_of(lines, loc))), None)
    raise TransformLoadError(str(path), text, line)


def load_template_file(path: str | Path) -> TransformSpec:
    """Load a ``.yaml``/``.yml`` transform: validate, render the template, compile."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TransformLoadError(str(path), f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise TransformLoadError(str(path), f"invalid YAML: {problem}", line) from None
    if not isinstance(data, dict):
        raise TransformLoadError(
            str(path), "expected a mapping with template, source_topic, target_topic and params"
        )
    lines = _key_lines(text)
    try:
        spec_file = TemplateFile(**data)
    except ValidationError as exc:
        _raise_problems(path, validation_problems(exc, data, ()), lines)
        raise  # unreachable: _raise_problems raises
    if spec_file.source_topic == spec_file.target_topic:
        _raise_problems(
            path,
            [(("target_topic",), f"equals source_topic {spec_file.source_topic!r}; must differ")],
            lines,
        )
    try:
        template = get_template(spec_file.template)
    except UnknownTemplateError as exc:
        _raise_problems(path, [(("template",), str(exc))], lines)
        raise
    try:
        params = template.params(**spec_file.params)
    except ValidationError as exc:
        _raise_problems(path, validation_problems(exc, spec_file.params, ("params",)), lines)
        raise
    source = spec_file.render(params, origin=path.name)
    spec = compile_transform(source, path, origin=f"template:{template.name}")
    spec.extra["file_version"] = content_version(text)
    spec.extra["source"] = source
    return spec


LOADERS[".yaml"] = load_template_file
LOADERS[".yml"] = load_template_file
