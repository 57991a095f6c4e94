"""Templates: every shipped template renders, compiles and does what it says."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from etl.errors import TransformLoadError
from etl.message import make_message
from etl.transforms.loader import compile_transform, discover_transforms, load_any
from etl.transforms.templates import (
    TEMPLATE_DIR,
    UnknownTemplateError,
    list_templates,
    python_literal,
    render_template,
)


def build(name: str, tmp_path: Path, **params: Any) -> Any:
    """Render a template and compile it like the worker does; returns deal_message."""
    source = render_template(name, params, source_topic="in", target_topic="out")
    return compile_transform(source, tmp_path / f"{name}.py").deal_message


def run(fn: Any, value: str | None, key: str | None = "k") -> Any:
    return fn(make_message(key, value))


def test_five_templates_ship_in_the_package() -> None:
    names = [t.name for t in list_templates()]
    assert names == [
        "add_prefix_suffix",
        "filter_prefix_suffix",
        "json_fields",
        "mask_fields",
        "regex_replace",
    ]
    for template in list_templates():
        assert (TEMPLATE_DIR / template.filename).is_file()


# ---- add_prefix_suffix --------------------------------------------------------------------


def test_add_prefix_suffix_the_console_example(tmp_path: Path) -> None:
    fn = build("add_prefix_suffix", tmp_path, value_suffix="ValueSuffix")
    out = run(fn, '{"key": "test"}', key="demo")
    assert out["key"] == "demo"
    assert out["value"] == '{"key": "test"}ValueSuffix'


def test_add_prefix_suffix_key_and_value_and_nulls(tmp_path: Path) -> None:
    fn = build(
        "add_prefix_suffix",
        tmp_path,
        key_prefix="<",
        key_suffix=">",
        value_prefix="[",
        value_suffix="]",
    )
    assert (run(fn, "v")["key"], run(fn, "v")["value"]) == ("<k>", "[v]")
    tombstone = run(fn, None, key=None)
    assert tombstone["key"] is None and tombstone["value"] is None


# ---- filter_prefix_suffix -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "value", "kept"),
    [
        ({"prefix": "ERROR"}, "ERROR disk full", True),
        ({"prefix": "ERROR"}, "INFO ok", False),
        ({"prefix": "ERROR", "keep": False}, "ERROR disk full", False),
        ({"prefix": "ERROR", "keep": False}, "INFO ok", True),
        ({"suffix": [".jpg", ".png"]}, "cat.png", True),
        ({"suffix": [".jpg", ".png"]}, "cat.gif", False),
        ({"prefix": "a", "suffix": "z"}, "abcz", True),
        ({"prefix": "a", "suffix": "z"}, "abc", False),
        ({"prefix": "error", "ignore_case": True}, "ERROR x", True),
        ({"field": "value.level", "prefix": "ERR"}, '{"level": "ERROR", "msg": "x"}', True),
        ({"field": "value.level", "prefix": "ERR"}, '{"level": "INFO"}', False),
        ({"field": "value.level", "prefix": "ERR"}, '{"msg": "no level"}', False),
        ({"field": "value.a.b.1", "suffix": "!"}, '{"a": {"b": ["x", "y!"]}}', True),
        ({"field": "value.code", "prefix": "5"}, '{"code": 503}', True),
        ({"field": "key", "prefix": "user-"}, "anything", False),
    ],
)
def test_filter_prefix_suffix(
    tmp_path: Path, params: dict[str, Any], value: str, kept: bool
) -> None:
    fn = build("filter_prefix_suffix", tmp_path, **params)
    out = run(fn, value, key="order-1")
    assert (out is not None) is kept
    if kept:
        assert out["value"] == value


def test_filter_on_key_and_null_key(tmp_path: Path) -> None:
    fn = build("filter_prefix_suffix", tmp_path, field="key", prefix="user-")
    assert run(fn, "v", key="user-7") is not None
    assert run(fn, "v", key=None) is None


def test_filter_json_field_of_invalid_value_follows_on_invalid(tmp_path: Path) -> None:
    strict = build("filter_prefix_suffix", tmp_path, field="value.level", prefix="E")
    with pytest.raises(ValueError, match="not a JSON object"):
        run(strict, "plain text")
    drop = build(
        "filter_prefix_suffix", tmp_path, field="value.level", prefix="E", on_invalid="drop"
    )
    assert run(drop, "plain text") is None
    keep = build(
        "filter_prefix_suffix", tmp_path, field="value.level", prefix="E", on_invalid="keep"
    )
    assert run(keep, "[1, 2]")["value"] == "[1, 2]"


# ---- json_fields ---------------------------------------------------------------------------


def test_json_fields_pick_drop_rename(tmp_path: Path) -> None:
    fn = build(
        "json_fields",
        tmp_path,
        pick=["id", "user.name", "user.email", "items"],
        drop=["user.email"],
        rename={"user.name": "customer", "id": "meta.order_id"},
    )
    value = json.dumps(
        {"id": 7, "user": {"name": "Ann", "email": "a@x", "pw": "s"}, "items": [1], "junk": 1}
    )
    out = json.loads(run(fn, value)["value"])
    assert out == {"user": {}, "items": [1], "customer": "Ann", "meta": {"order_id": 7}}


def test_json_fields_keeps_tombstones_and_reports_bad_json(tmp_path: Path) -> None:
    fn = build("json_fields", tmp_path, drop=["x"])
    assert run(fn, None)["value"] is None
    with pytest.raises(ValueError, match="not a JSON object"):
        run(fn, "{broken")


# ---- mask_fields ---------------------------------------------------------------------------


def test_mask_fields_fixed_by_path_and_name(tmp_path: Path) -> None:
    fn = build("mask_fields", tmp_path, paths=["card.number"], names=["Password", "token"])
    value = json.dumps(
        {
            "card": {"number": "4111111111111111", "holder": "Ann"},
            "password": "hunter2",
            "nested": [{"TOKEN": "abc", "keep": "me"}],
            "none": None,
        }
    )
    out = json.loads(run(fn, value)["value"])
    assert out == {
        "card": {"number": "****", "holder": "Ann"},
        "password": "****",
        "nested": [{"TOKEN": "****", "keep": "me"}],
        "none": None,
    }


def test_mask_fields_partial_and_sha256(tmp_path: Path) -> None:
    partial = build("mask_fields", tmp_path, paths=["card"], style="partial", show_last=4)
    assert json.loads(run(partial, '{"card": "4111111111111111"}')["value"]) == {
        "card": "************1111"
    }
    hashed = build("mask_fields", tmp_path, names=["email"], style="sha256")
    out = json.loads(run(hashed, '{"email": "a@x.org"}')["value"])
    assert out["email"] == hashlib.sha256(b"a@x.org").hexdigest()


# ---- regex_replace -------------------------------------------------------------------------


def test_regex_replace_value_key_and_json_field(tmp_path: Path) -> None:
    digits = build("regex_replace", tmp_path, pattern=r"\d{3}-\d{4}", replacement="XXX-XXXX")
    assert run(digits, "call 555-1234 now")["value"] == "call XXX-XXXX now"
    groups = build(
        "regex_replace", tmp_path, field="key", pattern=r"(?P<a>\w+)@(\w+)", replacement=r"\2:\g<a>"
    )
    assert run(groups, "v", key="ann@shop")["key"] == "shop:ann"
    field = build(
        "regex_replace",
        tmp_path,
        field="value.msg",
        pattern="secret",
        replacement="***",
        flags=["ignorecase"],
        count=1,
    )
    out = json.loads(run(field, '{"msg": "SECRET and secret", "n": 1}')["value"])
    assert out == {"msg": "*** and secret", "n": 1}


# ---- params are data, never code -------------------------------------------------------------

NASTY = [
    "'",
    '"',
    "'''",
    '"""',
    "\\",
    "\\'",
    "a\nb",
    "\r\n",
    "{{ 7 * 7 }}",
    "{% raw %}x{% endraw %}",
    "{# c #}",
    "\x00\x0c\u2028\u2029\x85",
    "\"\nimport os\nos.system('touch PWNED')\n#",
    "'); __import__('os').system('touch PWNED'); ('",
    '" + __import__("os").getcwd() + "',
    "#",
    "\\N{BULLET}",
    "ñ✓😀",
]


@pytest.mark.parametrize("text", NASTY)
def test_python_literal_round_trips(text: str) -> None:
    literal = python_literal(text)
    assert ast.literal_eval(literal) == text
    assert "\n" not in literal and "\r" not in literal
    nested = {"k": [text, 1, 2.5, True, None], text: {"x": text}}
    assert ast.literal_eval(python_literal(nested)) == nested


def test_python_literal_refuses_code_and_odd_values() -> None:
    for bad in (object(), float("nan"), {1: "x"}, b"bytes", {"x": {1, 2}}):
        with pytest.raises(TypeError):
            python_literal(bad)


class _Blank(ast.NodeTransformer):
    """Replaces every literal (constant, or list/dict/tuple of literals) by ``None``."""

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.expr):
            try:
                ast.literal_eval(node)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
            else:
                return ast.Constant(value=None)
        return super().visit(node)


def _shape(source: str) -> str:
    """The module's code with every constant blanked: what runs, not the data."""
    return ast.dump(_Blank().visit(ast.parse(source)))


@pytest.mark.parametrize("text", NASTY)
def test_params_cannot_inject_code(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("add_prefix_suffix", {"key_prefix": text, "value_suffix": text}, "VALUE_SUFFIX"),
        ("filter_prefix_suffix", {"field": "value.a", "prefix": [text]}, "PREFIXES"),
        ("json_fields", {"rename": {text: "b"}, "drop": [text]}, "DROP"),
        ("mask_fields", {"names": [text], "mask": text}, "MASK"),
        ("regex_replace", {"pattern": "x", "replacement": text.replace("\\", "")}, "REPLACEMENT"),
    ]
    for name, params, constant in cases:
        source = render_template(name, params, source_topic="t" + text, target_topic=text + "-o")
        benign = render_template(
            name,
            {k: v if k in ("field", "pattern") else _benign(v) for k, v in params.items()},
            source_topic="s",
            target_topic="s-out",
        )
        # Same code as with harmless params: only constants differ.
        assert _shape(source) == _shape(benign), name
        spec = compile_transform(source, tmp_path / f"{name}.py")
        module = spec.deal_message.__globals__
        assert (spec.source_topic, spec.target_topic) == ("t" + text, text + "-o")
        expected = {
            "VALUE_SUFFIX": text,
            "PREFIXES": (text,),
            "DROP": [text.split(".")],
            "MASK": text,
            "REPLACEMENT": text.replace("\\", ""),
        }[constant]
        assert module[constant] == expected
    assert not (tmp_path / "PWNED").exists()


def _benign(value: Any) -> Any:
    if isinstance(value, str):
        return "b"
    if isinstance(value, list):
        return ["b" for _ in value]
    if isinstance(value, dict):
        return {f"b{i}": "c" for i, _ in enumerate(value)}
    return value


def test_rendered_value_suffix_with_braces_is_used_verbatim(tmp_path: Path) -> None:
    fn = build("add_prefix_suffix", tmp_path, value_suffix="{{ params }}\\n'\"")
    assert run(fn, "v")["value"] == "v{{ params }}\\n'\""


# ---- YAML files -----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_file_loads_as_a_transform(tmp_path: Path) -> None:
    write(
        tmp_path / "errors.yaml",
        "template: filter_prefix_suffix\n"
        "source_topic: logs\n"
        "target_topic: logs-errors\n"
        "params: {field: value, prefix: ERROR, keep: true}\n"
        "start_offset: earliest\n"
        "on_error: stop\n",
    )
    specs, errors = discover_transforms(tmp_path)
    assert errors == []
    [spec] = specs
    assert (spec.name, spec.source_topic, spec.target_topic) == ("errors", "logs", "logs-errors")
    assert (spec.start_offset, spec.on_error, spec.origin) == (
        "earliest",
        "stop",
        "template:filter_prefix_suffix",
    )
    assert spec.deal_message(make_message("k", "ERROR x")) is not None
    assert spec.deal_message(make_message("k", "INFO x")) is None
    # The version is the hash of the rendered source: other params, other version.
    write(tmp_path / "errors.yaml", (tmp_path / "errors.yaml").read_text().replace("ERROR", "WARN"))
    assert load_any(tmp_path / "errors.yaml").version != spec.version


T_ADD = "template: add_prefix_suffix\nsource_topic: a\n"
T_FILTER = "template: filter_prefix_suffix\nsource_topic: a\ntarget_topic: b\nparams:\n"
T_REGEX = "template: regex_replace\nsource_topic: a\ntarget_topic: b\nparams:\n"
T_MASK = "template: mask_fields\nsource_topic: a\ntarget_topic: b\nparams:\n"
BAD_YAML = [
    ("template: nope\nsource_topic: a\ntarget_topic: b\n", 1, "unknown template 'nope'; known"),
    (T_ADD + "target_topic: a\nparams: {value_suffix: x}\n", 3, "must differ"),
    (T_ADD + "target_topic: b\nparams:\n  value_suffix: 5\n", 5, "params.value_suffix: Input"),
    (T_ADD + "target_topic: b\nparams:\n  suffix: x\n", 5, "params.suffix: unknown option"),
    (T_ADD + "target_topic: b\nparams: {}\n", 4, "set at least one of"),
    (T_FILTER + "  field: body.x\n  prefix: y\n", 5, "'body.x' must be 'key', 'value' or"),
    (T_FILTER + "  keep: true\n", 4, "set prefix, suffix or both"),
    (T_REGEX + "  pattern: '(unclosed'\n", 4, "is not a valid regular expression"),
    (T_REGEX + "  pattern: 'a'\n  replacement: '\\2'\n", 4, "invalid group reference 2"),
    (T_MASK + "  paths: ['a..b']\n", 5, "is not a dotted JSON path"),
    (T_ADD + "target_topic: b\nstart_offset: first\n", 4, "start_offset: String should match"),
    (T_ADD + "  target_topic: b\n", 3, "invalid YAML"),
    (T_ADD + "target_topic: 'a b'\nparams: {value_suffix: x}\n", 3, "target_topic: String should"),
    ("- just\n- a list\n", None, "expected a mapping"),
    (T_ADD + "params: {value_suffix: x}\n", None, "target_topic: Field required"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_YAML)
def test_yaml_errors_name_file_line_and_param(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = write(tmp_path / "t.yaml", text)
    with pytest.raises(TransformLoadError) as info:
        load_any(path)
    assert info.value.path == str(path)
    assert info.value.line == line
    assert message in info.value.message


def test_unknown_template_error_lists_known_ones() -> None:
    with pytest.raises(UnknownTemplateError, match="known templates: add_prefix_suffix, filter"):
        render_template("nope", {}, source_topic="a", target_topic="b")


def test_yml_suffix_and_name_clash_with_py(tmp_path: Path) -> None:
    write(
        tmp_path / "x.yml",
        "template: add_prefix_suffix\nsource_topic: a\ntarget_topic: b\nparams: {key_prefix: p}\n",
    )
    write(
        tmp_path / "x.py",
        "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'c'\ndef deal_message(m):\n    return m\n",
    )
    specs, errors = discover_transforms(tmp_path)
    assert [s.path.name for s in specs] == ["x.py"]
    assert len(errors) == 1 and "a transform named 'x' exists already" in errors[0].message
