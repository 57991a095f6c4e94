"""The ``alerts:`` section of etl.yaml, and rule files in ``alerts/`` beside it.

Rules kept here:

* every problem is reported by its path (``alerts.rules[0].above: ...``,
  ``alerts/lag.yaml[1].for: ...``) and stops start-up, as for the rest of etl.yaml;
* webhook URLs, headers and a command's extra environment are ``SecretStr``: the
  redactor learns them from the settings, so they are never logged or shown;
* a command is a list of arguments, never a shell string: alert data reaches it on
  stdin and in environment variables only.

This module imports nothing of :mod:`etl` (``etl.config`` imports it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from etl.validation import validate_together

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.I)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """``30``, ``"500ms"``, ``"1.5s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` -> seconds.

    A bare number is seconds. Anything else is handed on for pydantic to reject.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h30m, 500ms)")
    return sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``0.5`` -> ``500ms``; ``3600`` -> ``1h``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    if whole < 60:
        text = f"{seconds:.1f}".rstrip("0").rstrip(".")
        return f"{text}s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out


def _argument_list(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            f"give the command as a list of arguments, e.g. {value.split()!r}: "
            "it is never run through a shell"
        )
    return value


#: Seconds, written as a number or as ``30s``, ``5m``, ``1h30m``, ``500ms``.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]

Condition = Literal["lag", "halted", "dead_letters", "no_messages", "latency"]
CONDITIONS: tuple[str, ...] = ("lag", "halted", "dead_letters", "no_messages", "latency")
#: What ``above`` means per condition (for messages and docs).
ABOVE_UNITS = {"lag": "messages", "dead_letters": "per minute", "latency": "seconds"}
#: States a ``halted`` rule may name; its default is the first three.
ALERT_STATES = ("halted", "failed", "load_error", "stopped", "paused", "unassigned", "starting")
DEFAULT_HALTED_STATES = ("halted", "failed", "load_error")


class NotifierConfig(BaseModel):
    """Where alerts go: ``webhook`` (generic JSON), ``slack`` (incoming webhook) or ``command``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["webhook", "slack", "command"]
    #: webhook / slack: the URL to POST to (often carries a token: a secret).
    url: SecretStr | None = None
    #: webhook / slack: extra request headers (``Authorization: Bearer ...``); secrets.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: command: the program and its arguments, as a list (never run through a shell).
    command: Annotated[list[str], BeforeValidator(_argument_list)] | None = None
    #: command: extra environment variables for it (secrets).
    env: dict[str, SecretStr] = Field(default_factory=dict)
    #: Longest one attempt may take (an HTTP request, or the command until it exits).
    timeout: Duration = 10.0
    #: Attempts after the first one failed; then the notification is given up and logged.
    retries: int = Field(default=3, ge=0, le=20)
    #: Wait before the first retry; it doubles up to ``retry_backoff_max``.
    retry_backoff: Duration = 1.0
    retry_backoff_max: Duration = 30.0
    #: False: keep the notifier configured but send nothing to it.
    enabled: bool = True

    @model_validator(mode="after")
    def _check_type_options(self) -> NotifierConfig:
        problems = []
        if self.type in ("webhook", "slack"):
            if self.url is None or not self.url.get_secret_value():
                problems.append(f"url is required for a {self.type} notifier")
            if self.command is not None or self.env:
                problems.append(f"command and env are for command notifiers, not {self.type}")
        else:
            if not self.command:
                problems.append(
                    "command is required for a command notifier: a list such as "
                    '["/usr/local/bin/page", "--team", "data"]'
                )
            if self.url is not None or self.headers:
                problems.append("url and headers are for webhook and slack notifiers")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AlertRule(BaseModel):
    """One condition over the pipelines it names, and whom to notify."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    condition: Condition
    #: lag: messages; dead_letters: per minute; latency: seconds (``2s``, ``500ms``).
    above: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] | None = None
    #: How long the condition must hold before the alert fires (``no_messages``: the
    #: time without a consumed message).
    for_: Duration = Field(default=0.0, alias="for")
    #: Names, ``kind:name`` or globs (``orders-*``, ``sink:*``); empty = every pipeline.
    pipelines: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    #: halted: the states that count (default halted, failed, load_error).
    states: list[str] | None = None
    #: dead_letters: the trailing window the rate is counted over (default 1m).
    window: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] | None = None
    #: While the alert holds, send it again this often; 0 = never.
    repeat_every: Duration = 3600.0
    #: Notifier names; empty = every enabled notifier.
    notify: list[str] = Field(default_factory=list)
    #: A free-form label passed on to notifiers (``warning``, ``critical``).
    severity: str = "warning"
    #: Set by the loader: the file the rule came from, if not etl.yaml.
    file: str | None = Field(default=None, exclude=True)

    @model_validator(mode="wrap")
    @classmethod
    def _check_condition_options(cls, data: Any, handler: Any) -> Any:
        # Checked on the raw mapping and merged with the field errors, so that every
        # problem of a rule is reported at once (as KafkaSettings does).
        return validate_together(data, handler, _rule_problems)

    @property
    def halted_states(self) -> tuple[str, ...]:
        """The states that make a ``halted`` rule hold."""
        return tuple(self.states) if self.states is not None else DEFAULT_HALTED_STATES

    @property
    def rate_window(self) -> float:
        """dead_letters: the trailing window in seconds (default one minute)."""
        return self.window or 60.0


def _rule_problems(data: dict[str, Any]) -> list[str]:
    condition = data.get("condition")
    if condition not in CONDITIONS:
        return []
    problems = []
    needs_above = condition in ABOVE_UNITS
    if needs_above and data.get("above") is None:
        problems.append(f"above is required for condition {condition}")
    if not needs_above and data.get("above") is not None:
        problems.append(f"above does not apply to condition {condition}")
    if condition == "no_messages":
        try:
            held = float(parse_duration(data.get("for", 0)) or 0)
        except (TypeError, ValueError):
            held = 1.0  # a bad duration is reported by the field itself
        if held <= 0:
            problems.append("for is required for condition no_messages (e.g. for: 10m)")
    states = data.get("states")
    if states is not None:
        if condition != "halted":
            problems.append("states applies to condition halted only")
        if isinstance(states, list):
            unknown = [str(s) for s in states if s not in ALERT_STATES]
            if unknown:
                problems.append(
                    f"states: unknown {', '.join(unknown)} (known: {', '.join(ALERT_STATES)})"
                )
    if data.get("window") is not None and condition != "dead_letters":
        problems.append("window applies to condition dead_letters only")
    return problems


class AlertSettings(BaseModel):
    """``alerts:`` in etl.yaml: notifiers, rules, and where more rules are."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: How often the evaluating worker checks every rule.
    evaluate_every: Duration = Field(default=5.0, ge=0.1)
    #: A directory of rule files (one rule or a list of rules per YAML file), relative
    #: to etl.yaml; a missing directory is no rules.
    rules_dir: Path = Path("alerts")
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_names(self) -> AlertSettings:
        problems = _name_problems(self.notifiers, self.rules)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def notifier(self, name: str) -> NotifierConfig | None:
        """The notifier called ``name``."""
        return next((n for n in self.notifiers if n.name == name), None)

    def targets(self, rule: AlertRule) -> list[NotifierConfig]:
        """The enabled notifiers a rule sends to."""
        if rule.notify:
            found = [self.notifier(name) for name in rule.notify]
            return [n for n in found if n is not None and n.enabled]
        return [n for n in self.notifiers if n.enabled]

    def load_rule_files(self, base: Path, environ: dict[str, str]) -> list[str]:
        """Add the rules of ``rules_dir`` (relative to ``base``); return the problems found.

        Each ``*.yaml`` / ``*.yml`` file holds one rule (a mapping) or a list of rules;
        ``${VAR}`` is read from the environment as in etl.yaml.
        """
        import yaml

        from etl.config import substitute_env, validation_problems

        base = base.resolve()
        if not self.rules_dir.is_absolute():
            self.rules_dir = (base / self.rules_dir).resolve()
        directory = self.rules_dir
        if not directory.is_dir():
            return []
        problems: list[str] = []
        added: list[AlertRule] = []
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            shown = _shown_path(path, base)
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except OSError as exc:
                problems.append(f"{shown}: cannot read: {exc.strerror}")
                continue
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
                problems.append(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}")
                continue
            if loaded is None:
                continue
            entries = loaded if isinstance(loaded, list) else [loaded]
            for index, raw in enumerate(entries):
                where = f"{shown}[{index}]" if isinstance(loaded, list) else shown
                if not isinstance(raw, dict):
                    problems.append(f"{where}: a rule must be a mapping")
                    continue
                raw, missing = substitute_env(raw, environ)
                problems += [f"{where}: {line}" for line in missing]
                try:
                    rule = AlertRule.model_validate(raw)
                except ValidationError as exc:
                    lines = validation_problems(exc, "", AlertRule)
                    problems += [f"{where}: {line.removeprefix('<root>: ')}" for line in lines]
                    continue
                rule.file = shown
                added.append(rule)
        problems += _name_problems(self.notifiers, [*self.rules, *added])
        if not problems:
            self.rules.extend(added)
        return problems


def _shown_path(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _name_problems(notifiers: list[NotifierConfig], rules: list[AlertRule]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for notifier in notifiers:
        if notifier.name in seen:
            problems.append(f"duplicate notifier name {notifier.name!r}")
        seen.add(notifier.name)
    known = {n.name for n in notifiers}
    names: set[str] = set()
    for rule in rules:
        where = f"{rule.file}: " if rule.file else ""
        if rule.name in names:
            problems.append(f"{where}duplicate rule name {rule.name!r}")
        names.add(rule.name)
        unknown = [n for n in rule.notify if n not in known]
        if unknown:
            problems.append(
                f"{where}rule {rule.name!r}: notify names no notifier called "
                + ", ".join(repr(n) for n in unknown)
                + (f" (configured: {', '.join(sorted(known))})" if known else " (none configured)")
            )
    return problems
