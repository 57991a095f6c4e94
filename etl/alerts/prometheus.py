"""The same alert conditions as Prometheus alerting rules over ``GET /metrics``.

``prometheus-rules.yml`` (shipped in this package, printed by ``etl alerts
prometheus``) holds :data:`DEFAULT_RULES`; ``etl alerts prometheus --from-config``
writes the rules of etl.yaml instead, with their thresholds and pipeline patterns.
Every worker exports the cluster's figures (:mod:`etl.ops.metrics`), so each
expression takes the ``max`` over the workers Prometheus scrapes.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml

from etl.alerts.config import AlertRule, format_duration

#: The file in this package.
RULES_FILE = "prometheus-rules.yml"

DEFAULT_RULES = [
    AlertRule.model_validate(raw)
    for raw in (
        {"name": "etl-lag", "condition": "lag", "above": 1000, "for": "5m"},
        {"name": "etl-halted", "condition": "halted", "for": "1m", "severity": "critical"},
        {"name": "etl-dead-letters", "condition": "dead_letters", "above": 10},
        {"name": "etl-no-messages", "condition": "no_messages", "for": "15m"},
        {"name": "etl-slow-batches", "condition": "latency", "above": "30s", "for": "5m"},
    )
]

HEADER = """\
# Prometheus alerting rules for faust-etl (docs/alerts.md, "Prometheus").
# The worker's own alert conditions over the metrics every worker serves at
# GET /metrics, with default thresholds; `etl alerts prometheus --from-config`
# writes the rules of your etl.yaml instead. Every worker exports the figures of
# the whole cluster, so each expression takes the max over the scraped workers.
#
#   prometheus.yml:  rule_files: [etl-alerts.yml]
#   check:           promtool check rules etl-alerts.yml
"""

_GLOB_META = re.compile(r"[*?\[]")
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def shipped_rules() -> str:
    """The text of the rules file shipped in the package."""
    return resources.files("etl.alerts").joinpath(RULES_FILE).read_text(encoding="utf-8")


def prom_duration(seconds: float) -> str:
    """A Prometheus duration: ``5m``, ``1h30m``, ``1500ms`` (no fractions)."""
    if seconds <= 0:
        return "0s"
    if float(seconds).is_integer():
        return format_duration(seconds)
    return f"{round(seconds * 1000)}ms"


def glob_to_regex(glob: str) -> str:
    """A shell glob as an RE2 regular expression (Prometheus anchors it itself)."""
    out, index = "", 0
    while index < len(glob):
        char = glob[index]
        if char == "*":
            out += ".*"
        elif char == "?":
            out += "."
        elif char == "[" and "]" in glob[index + 1 :]:
            end = glob.index("]", index + 1)
            body = glob[index + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            index = end
        else:
            out += "\\" + char if char in _RE2_SPECIAL else char
        index += 1
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label_matcher(label: str, glob: str) -> str | None:
    if glob == "*":
        return None
    if _GLOB_META.search(glob):
        return f"{label}=~{_quote(glob_to_regex(glob))}"
    return f"{label}={_quote(glob)}"


def pattern_matchers(pattern: str) -> list[str]:
    """Label matchers for a rule's pipeline pattern (``orders-*``, ``sink:orders``)."""
    if ":" in pattern:
        kind, name = pattern.split(":", 1)
        found = [_label_matcher("kind", kind), _label_matcher("pipeline", name)]
    else:
        found = [_label_matcher("pipeline", pattern)]
    return [m for m in found if m]


def _vector(rule: AlertRule, matchers: list[str]) -> str:
    """The measured value per (pipeline, kind), without the comparison."""
    extra = list(matchers)
    if rule.condition == "lag":
        lag = f"sum without (topic, partition) (etl_consumer_lag{_sel(extra)})"
        return f"max by (pipeline, kind) ({lag})"
    if rule.condition == "halted":
        states = "|".join(rule.halted_states)
        extra.insert(0, f'state=~"{states}"')
        return f"max by (pipeline, kind) (etl_pipeline_state{_sel(extra)})"
    if rule.condition == "dead_letters":
        window = prom_duration(rule.rate_window)
        vector = (
            "max by (pipeline, kind) "
            f"(increase(etl_messages_dead_lettered_total{_sel(extra)}[{window}]))"
        )
        return vector if rule.rate_window == 60 else f"{vector} * 60 / {rule.rate_window:g}"
    if rule.condition == "no_messages":
        window = prom_duration(rule.for_)
        consumed = f"increase(etl_messages_consumed_total{_sel(extra)}[{window}])"
        return f"max by (pipeline, kind) ({consumed})"
    if rule.condition == "latency":
        return f"max by (pipeline, kind) (etl_last_batch_duration_seconds{_sel(extra)})"
    raise ValueError(f"unknown condition {rule.condition!r}")


def _sel(matchers: list[str]) -> str:
    return "{" + ", ".join(matchers) + "}" if matchers else ""


def _comparison(rule: AlertRule) -> str:
    if rule.condition == "halted":
        return " > 0"
    if rule.condition == "no_messages":
        return " == 0"
    return f" > {rule.above:g}"


def expression(rule: AlertRule) -> str:
    """The PromQL expression of a rule, its pipeline patterns and exclusions included."""
    includes = [pattern_matchers(p) for p in rule.pipelines] or [[]]
    parts = [_vector(rule, m) + _comparison(rule) for m in includes]
    expr = parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)
    if rule.exclude:
        excluded = " or ".join(_vector(rule, pattern_matchers(p)) for p in rule.exclude)
        expr = f"({expr}) unless on (pipeline, kind) ({excluded})"
    return expr


def alert_name(rule_name: str) -> str:
    """``lag-high`` -> ``EtlLagHigh``: alert names must be valid metric names."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", rule_name))
    return name if name.lower().startswith("etl") else f"Etl{name}"


_SUMMARY = {
    "lag": "{{ $labels.kind }}:{{ $labels.pipeline }} lag {{ $value }} above %(above)s messages",
    "halted": "{{ $labels.kind }}:{{ $labels.pipeline }} is %(states)s",
    "dead_letters": "{{ $labels.kind }}:{{ $labels.pipeline }} sends {{ $value }} dead letters "
    "per minute (above %(above)s)",
    "no_messages": "{{ $labels.kind }}:{{ $labels.pipeline }} consumed no message for %(for)s",
    "latency": "{{ $labels.kind }}:{{ $labels.pipeline }} last batch took {{ $value }}s "
    "(above %(above)ss)",
}


def prometheus_rule(rule: AlertRule) -> dict[str, Any]:
    """One entry of a Prometheus rule group."""
    entry: dict[str, Any] = {"alert": alert_name(rule.name), "expr": expression(rule)}
    if rule.for_ > 0 and rule.condition != "no_messages":
        entry["for"] = prom_duration(rule.for_)
    entry["labels"] = {"severity": rule.severity, "etl_rule": rule.name}
    values = {
        "above": f"{rule.above:g}" if rule.above is not None else "",
        "states": " or ".join(rule.halted_states),
        "for": prom_duration(rule.for_),
    }
    entry["annotations"] = {"summary": _SUMMARY[rule.condition] % values}
    return entry


def render(rules: list[AlertRule], header: str = HEADER) -> str:
    """A Prometheus rules file for ``rules``."""
    document = {"groups": [{"name": "faust-etl", "rules": [prometheus_rule(r) for r in rules]}]}
    body = yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)
    return header + body
