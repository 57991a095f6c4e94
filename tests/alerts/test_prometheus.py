"""The Prometheus alerting rules: well-formed, and over metrics the worker really exports.

promtool cannot be installed here, so the file is checked by parsing it: the rule
file's structure, Prometheus durations and alert names, and every metric and label
an expression uses against what ``GET /metrics`` (:func:`render_metrics`) serves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from etl.alerts.config import AlertRule
from etl.alerts.prometheus import (
    DEFAULT_RULES,
    HEADER,
    expression,
    glob_to_regex,
    render,
    shipped_rules,
)
from etl.cli import main
from etl.ops.metrics import render_metrics

PROM_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
#: PromQL words an expression may use that are not metric names.
PROMQL_WORDS = {
    "max",
    "min",
    "sum",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "unless",
    "or",
    "and",
    "increase",
    "rate",
    "changes",
    "bool",
}


def exported() -> dict[str, set[str]]:
    """metric name -> its label names, from the worker's own metrics text."""
    snapshot = {
        "pipelines": [
            {
                "key": "transform:t",
                "name": "t",
                "kind": "transform",
                "state": "running",
                "consumed": 1,
                "produced": 1,
                "filtered": 0,
                "dead_lettered": 0,
                "batches": 1,
                "last_batch_ms": 3.0,
                "partitions": {"src/0": {"lag": 1, "committed": 1, "end": 2}},
            }
        ]
    }
    metrics: dict[str, set[str]] = {}
    for line in render_metrics(snapshot).splitlines():
        if line.startswith("# TYPE "):
            metrics.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', rest.split("}")[0])
            metrics.setdefault(name, set()).update(labels)
    return metrics


def used(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels: set[str] = set()
    for match in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels.update(name.strip() for name in match.group(1).split(",") if name.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(1)))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return words - PROMQL_WORDS, labels


def check_rules_file(text: str) -> list[dict[str, Any]]:
    document = yaml.safe_load(text)
    assert set(document) == {"groups"}
    metrics = exported()
    all_labels = set().union(*metrics.values())
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert METRIC_NAME.match(rule["alert"]), rule["alert"]
            if "for" in rule:
                assert PROM_DURATION.match(rule["for"]) and rule["for"], rule["for"]
            for window in re.findall(r"\[([^\]]*)\]", rule["expr"]):
                assert PROM_DURATION.match(window), window
            names, labels = used(rule["expr"])
            assert names, rule["expr"]
            assert names <= set(metrics), f"{rule['alert']}: not exported: {names - set(metrics)}"
            assert labels <= all_labels, f"{rule['alert']}: unknown labels {labels - all_labels}"
            assert rule["expr"].count("(") == rule["expr"].count(")")
            assert all(isinstance(v, str) for v in rule["labels"].values())
            rules.append(rule)
    return rules


def test_the_shipped_file_is_the_default_rules_and_valid() -> None:
    text = shipped_rules()
    assert text == render(DEFAULT_RULES, HEADER)
    rules = check_rules_file(text)
    names = {rule["alert"] for rule in rules}
    assert names == {"EtlLag", "EtlHalted", "EtlDeadLetters", "EtlNoMessages", "EtlSlowBatches"}
    by_name = {rule["alert"]: rule for rule in rules}
    assert "etl_consumer_lag" in by_name["EtlLag"]["expr"] and by_name["EtlLag"]["for"] == "5m"
    assert 'state=~"halted|failed|load_error"' in by_name["EtlHalted"]["expr"]
    assert "increase(etl_messages_dead_lettered_total[1m])" in by_name["EtlDeadLetters"]["expr"]
    assert "[15m]" in by_name["EtlNoMessages"]["expr"]
    assert by_name["EtlSlowBatches"]["expr"].endswith("> 30")


def test_the_shipped_file_is_in_the_package_source() -> None:
    path = Path(__file__).parents[2] / "etl" / "alerts" / "prometheus-rules.yml"
    assert path.read_text(encoding="utf-8") == shipped_rules()


def rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate({"name": "r", **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"condition": "lag", "above": 5, "pipelines": ["sink:orders-*"]},
            "max by (pipeline, kind) (sum without (topic, partition) "
            '(etl_consumer_lag{kind="sink", pipeline=~"orders-.*"})) > 5',
        ),
        (
            {"condition": "latency", "above": "1500ms", "pipelines": ["a", "b"]},
            '(max by (pipeline, kind) (etl_last_batch_duration_seconds{pipeline="a"}) > 1.5) or '
            '(max by (pipeline, kind) (etl_last_batch_duration_seconds{pipeline="b"}) > 1.5)',
        ),
        (
            {"condition": "dead_letters", "above": 2, "window": "5m", "exclude": ["test-*"]},
            "(max by (pipeline, kind) (increase(etl_messages_dead_lettered_total[5m])) * 60 / 300"
            " > 2) unless on (pipeline, kind) (max by (pipeline, kind) "
            '(increase(etl_messages_dead_lettered_total{pipeline=~"test-.*"}[5m])) * 60 / 300)',
        ),
        (
            {"condition": "halted", "states": ["failed"], "pipelines": ["transform:*"]},
            'max by (pipeline, kind) (etl_pipeline_state{state=~"failed", kind="transform"}) > 0',
        ),
        (
            {"condition": "no_messages", "for": "90s"},
            "max by (pipeline, kind) (increase(etl_messages_consumed_total[1m30s])) == 0",
        ),
    ],
)
def test_expressions_from_rules(fields: dict[str, Any], expected: str) -> None:
    assert expression(rule(**fields)) == expected


def test_globs_become_re2() -> None:
    assert glob_to_regex("orders.v2-*") == "orders\\.v2-.*"
    assert glob_to_regex("x?[!ab]") == "x.[^ab]"


def test_cli_prints_the_file_and_the_configured_rules(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["alerts", "prometheus"])
    assert result.exit_code == 0 and result.output == shipped_rules()
    config = tmp_path / "etl.yaml"
    config.write_text(
        "alerts:\n  rules:\n"
        "    - {name: orders-lag, condition: lag, above: 50, for: 2m, pipelines: [orders]}\n"
        "    - {name: stuck, condition: no_messages, for: 1h, exclude: [sink:*]}\n"
        "    - {name: slow, condition: latency, above: 10s, severity: critical}\n"
    )
    result = runner.invoke(main, ["alerts", "prometheus", "--from-config", "-c", str(config)])
    assert result.exit_code == 0, result.output
    rules = check_rules_file(result.output)
    assert [r["alert"] for r in rules] == ["EtlOrdersLag", "EtlStuck", "EtlSlow"]
    assert rules[0]["for"] == "2m" and 'pipeline="orders"' in rules[0]["expr"]
    assert rules[2]["labels"] == {"severity": "critical", "etl_rule": "slow"}
    out = tmp_path / "rules.yml"
    result = runner.invoke(
        main, ["alerts", "prometheus", "--from-config", "-c", str(config), "-o", str(out)]
    )
    assert result.exit_code == 0 and check_rules_file(out.read_text())
