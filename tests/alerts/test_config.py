"""The alerts section: rules and notifiers in etl.yaml and alerts/, every problem by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.alerts.config import format_duration, parse_duration
from etl.config import load_settings
from etl.errors import ConfigurationError
from etl.redact import Redactor

CONFIG = """
alerts:
  evaluate_every: 2s
  notifiers:
    - name: hook
      type: webhook
      url: http://127.0.0.1:9/hook?token=${HOOK_TOKEN}
      headers: {Authorization: "Bearer ${HOOK_BEARER}"}
    - {name: chat, type: slack, url: "https://hooks.slack.example/services/T0/B0/s3cr3tpath"}
    - {name: page, type: command, command: [/usr/local/bin/page, --team, data], timeout: 1m}
  rules:
    - {name: lag, condition: lag, above: 1000, for: 5m, pipelines: [orders, "sink:*"]}
    - {name: halted, condition: halted, notify: [page], repeat_every: 0}
"""


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ=environ or {})
    return list(caught.value.problems)


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("45") == 45
    assert parse_duration(3) == 3
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_duration("5m and some")
    assert format_duration(90) == "1m30s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(3600) == "1h"
    assert format_duration(1.5) == "1.5s"


def test_rules_and_notifiers_from_etl_yaml_and_the_alerts_directory(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text(CONFIG)
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "slow.yaml").write_text(
        "name: slow\ncondition: latency\nabove: 2.5s\nfor: 30s\nnotify: [chat]\n"
    )
    (tmp_path / "alerts" / "more.yml").write_text(
        "- {name: idle, condition: no_messages, for: 10m}\n"
        "- {name: dlq, condition: dead_letters, above: 10, window: 5m, severity: critical}\n"
    )
    environ = {"HOOK_TOKEN": "tok-123456", "HOOK_BEARER": "bearer-abcdef"}
    settings = load_settings(tmp_path / "etl.yaml", environ=environ)
    alerts = settings.alerts
    assert alerts.evaluate_every == 2
    assert [r.name for r in alerts.rules] == ["lag", "halted", "idle", "dlq", "slow"]
    by_name = {r.name: r for r in alerts.rules}
    assert by_name["lag"].for_ == 300 and by_name["lag"].repeat_every == 3600
    assert by_name["halted"].repeat_every == 0
    assert by_name["slow"].above == 2.5 and by_name["slow"].file == "alerts/slow.yaml"
    assert by_name["dlq"].rate_window == 300 and by_name["idle"].rate_window == 60
    assert [n.name for n in alerts.targets(by_name["lag"])] == ["hook", "chat", "page"]
    assert [n.name for n in alerts.targets(by_name["halted"])] == ["page"]
    # The webhook URL, its headers and the Slack URL are secrets: redacted anywhere.
    redact = Redactor(settings.secret_values())
    line = (
        "POST http://127.0.0.1:9/hook?token=tok-123456 Bearer bearer-abcdef "
        "https://hooks.slack.example/services/T0/B0/s3cr3tpath"
    )
    cleaned = redact(line)
    for secret in ("tok-123456", "bearer-abcdef", "s3cr3tpath"):
        assert secret not in cleaned
    assert "tok-123456" not in repr(alerts) and "s3cr3tpath" not in str(alerts.notifiers)


def test_every_problem_by_path(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text(
        """
alerts:
  notifiers:
    - {name: hook, type: webhook}
    - {name: run, type: command, command: "page --now"}
    - {name: x, type: email}
  rules:
    - {name: a, condition: lag, for: 1m}
    - {name: b, condition: halted, above: 3, states: [halted, sleeping]}
    - {name: c, condition: no_messages}
    - {name: d, condition: latency, above: fast}
    - {name: e, condition: lag, above: 1, window: 1m, frequency: 2}
"""
    )
    found = problems(tmp_path / "etl.yaml")
    text = "\n".join(found)
    assert "alerts.notifiers[0]: url is required for a webhook notifier" in text
    assert (
        "alerts.notifiers[1].command: give the command as a list of arguments, "
        "e.g. ['page', '--now']: it is never run through a shell" in text
    )
    assert "alerts.notifiers[2].type:" in text
    assert "alerts.rules[0]: above is required for condition lag" in text
    assert "alerts.rules[1]: above does not apply to condition halted" in text
    assert "states: unknown sleeping" in text
    assert "alerts.rules[2]: for is required for condition no_messages" in text
    assert "alerts.rules[3].above: not a duration: 'fast'" in text
    assert "alerts.rules[4].frequency: unknown option" in text
    assert "window applies to condition dead_letters only" in text


def test_names_are_unique_and_notify_names_a_notifier(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    (tmp_path / "etl.yaml").write_text(
        "alerts:\n  notifiers: [{name: page, type: command, command: [/bin/true]}]\n"
        "  rules: [{name: a, condition: halted}]\n"
    )
    (tmp_path / "alerts" / "dup.yaml").write_text(
        "- {name: a, condition: halted}\n- {name: b, condition: halted, notify: [pager]}\n"
    )
    found = problems(tmp_path / "etl.yaml")
    assert "alerts/dup.yaml: duplicate rule name 'a'" in found
    assert (
        "alerts/dup.yaml: rule 'b': notify names no notifier called 'pager' (configured: page)"
        in found
    )


def test_rule_file_problems_name_file_entry_and_line(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text("transforms_dir: t\n")
    rules = tmp_path / "alerts"
    rules.mkdir()
    (rules / "one.yaml").write_text("name: dl\ncondition: dead_letters\nfro: 1m\n")
    (rules / "list.yaml").write_text("- {name: y, condition: no_messages, for: soon}\n- [1]\n")
    (rules / "broken.yml").write_text("a: [\n")
    (rules / "env.yaml").write_text("name: z\ncondition: lag\nabove: ${LAG_LIMIT}\n")
    found = problems(tmp_path / "etl.yaml")
    assert "alerts/one.yaml: fro: unknown option" in found
    assert "alerts/one.yaml: above is required for condition dead_letters" in found
    assert any(p.startswith("alerts/list.yaml[0]: for: not a duration") for p in found)
    assert "alerts/list.yaml[1]: a rule must be a mapping" in found
    assert any(p.startswith("alerts/broken.yml:2:1: invalid YAML") for p in found)
    assert "alerts/env.yaml: above: environment variable LAG_LIMIT is not set" in found
    # With the variable set, only the others remain.
    assert not any("env.yaml" in p for p in problems(tmp_path / "etl.yaml", {"LAG_LIMIT": "5"}))


def test_rules_dir_is_relative_to_etl_yaml_and_may_be_absent(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "etl.yaml").write_text("alerts: {rules_dir: rules}\n")
    settings = load_settings(tmp_path / "conf" / "etl.yaml", environ={})
    assert settings.alerts.rules_dir == tmp_path / "conf" / "rules"
    assert settings.alerts.rules == []


def test_alerts_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text("{}\n")
    environ = {
        "ETL_ALERTS__NOTIFIERS": '[{"name": "c", "type": "command", "command": ["/bin/true"]}]',
        "ETL_ALERTS__RULES": '[{"name": "h", "condition": "halted"}]',
        "ETL_ALERTS__EVALUATE_EVERY": "1s",
    }
    alerts = load_settings(tmp_path / "etl.yaml", environ=environ).alerts
    assert [r.name for r in alerts.rules] == ["h"] and alerts.evaluate_every == 1
