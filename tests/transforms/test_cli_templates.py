"""``etl templates list`` and ``etl templates render``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from etl.cli import main
from etl.message import make_message
from etl.transforms.loader import load_transform_file


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_every_template_with_its_params() -> None:
    code, out, _ = invoke("templates", "list")
    assert code == 0
    for name in ("add_prefix_suffix", "filter_prefix_suffix", "json_fields", "mask_fields"):
        assert name in out
    assert 'value_suffix (text; default "")' in out
    assert "pattern (text; required)" in out
    code, out, _ = invoke("templates", "list", "--json")
    items = {item["name"]: item for item in json.loads(out)}
    params = {p["name"]: p for p in items["filter_prefix_suffix"]["params"]}
    assert set(params) >= {"field", "prefix", "suffix", "keep"}
    assert params["keep"]["default"] is True and params["keep"]["type"] == "bool"
    assert params["prefix"]["type"] == "text or list of text"


def test_render_prints_an_editable_transform(tmp_path: Path) -> None:
    code, out, err = invoke(
        "templates",
        "render",
        "add_prefix_suffix",
        "-p",
        "value_suffix=ValueSuffix",
        "--source-topic",
        "orders",
        "--target-topic",
        "orders-suffixed",
    )
    assert code == 0, err
    path = tmp_path / "x.py"
    path.write_text(out)
    spec = load_transform_file(path)
    assert (spec.source_topic, spec.target_topic) == ("orders", "orders-suffixed")
    assert spec.deal_message(make_message("demo", "v"))["value"] == "vValueSuffix"


def test_render_to_file_types_params_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "transforms" / "keep_errors.py"
    target.parent.mkdir()
    args = [
        "templates",
        "render",
        "filter_prefix_suffix",
        "--param",
        "field=value.level",
        "--param",
        "prefix=[ERR, FATAL]",
        "--param",
        "keep=false",
        "-s",
        "logs",
        "-t",
        "logs-quiet",
        "--start-offset",
        "earliest",
        "--on-error",
        "stop",
        "-o",
        str(target),
    ]
    code, out, err = invoke(*args)
    assert code == 0, err
    assert f"wrote {target}: logs -> logs-quiet" in out
    spec = load_transform_file(target)
    assert (spec.start_offset, spec.on_error) == ("earliest", "stop")
    module = spec.deal_message.__globals__
    assert module["PREFIXES"] == ("ERR", "FATAL") and module["KEEP"] is False
    assert spec.deal_message(make_message("k", '{"level": "FATAL"}')) is None
    assert spec.deal_message(make_message("k", '{"level": "INFO"}')) is not None
    code, _, err = invoke(*args)
    assert code == 2 and "exists; use --force" in err
    code, _, err = invoke(*args, "--force")
    assert code == 0, err


def test_render_text_params_stay_text(tmp_path: Path) -> None:
    # "007" and "true" are text for a text param, not a number or a bool.
    code, out, err = invoke(
        "templates",
        "render",
        "add_prefix_suffix",
        "-p",
        "key_prefix=007",
        "-p",
        "value_suffix=true",
        "-s",
        "a",
        "-t",
        "b",
    )
    assert code == 0, err
    assert "KEY_PREFIX = '007'" in out and "VALUE_SUFFIX = 'true'" in out


def test_render_from_yaml_ejects_the_same_transform(tmp_path: Path) -> None:
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text(
        "template: mask_fields\nsource_topic: users\ntarget_topic: users-masked\n"
        "params: {names: [password], style: partial, show_last: 2}\n"
    )
    code, out, err = invoke("templates", "render", "--from", str(yaml_file))
    assert code == 0, err
    assert "SOURCE_TOPIC = 'users'" in out and "configured in 't.yaml'" in out


def test_render_errors_are_clear() -> None:
    code, _, err = invoke("templates", "render", "nope", "-s", "a", "-t", "b")
    assert code == 2 and "unknown template 'nope'; known templates: add_prefix_suffix" in err
    code, _, err = invoke(
        "templates", "render", "regex_replace", "-p", "pattern=(", "-s", "a", "-t", "b"
    )
    assert code == 2
    assert "params: pattern '(' is not a valid regular expression" in err
    code, _, err = invoke(
        "templates", "render", "add_prefix_suffix", "-p", "bogus=1", "-s", "a", "-t", "b"
    )
    assert code == 2 and "params.bogus: unknown option" in err
    code, _, err = invoke("templates", "render", "add_prefix_suffix", "-p", "value_suffix=x")
    assert code == 2 and "--source-topic and --target-topic are required" in err
    code, _, err = invoke(
        "templates", "render", "add_prefix_suffix", "-p", "novalue", "-s", "a", "-t", "b"
    )
    assert code == 2 and "'novalue' is not NAME=VALUE" in err
    code, _, err = invoke("templates", "render")
    assert code == 2 and "give a template NAME" in err
