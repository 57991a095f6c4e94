"""What a rule measures, and when an alert fires, repeats and resolves: pure functions.

Everything here takes the time as an argument and touches no I/O, so the unit tests
drive it with an explicit clock. Rules kept here:

* a condition that cannot be measured right now (no offsets read yet, no baseline
  for a counter) is *unknown*: the alert keeps its state, so a new evaluator never
  resolves (or fires) on a blank memory;
* an alert fires once, when its condition has held for ``for`` seconds; it repeats
  every ``repeat_every`` while it holds; it resolves the first time it stops holding;
* counters are counted per worker (each worker's own counter, reset when it restarts),
  so a worker that leaves or restarts is neither activity nor a burst of dead letters.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from etl.alerts.config import ABOVE_UNITS, AlertRule, format_duration

AlertPhase = Literal["pending", "firing"]
Event = Literal["fire", "repeat", "resolve"]

#: ``alert/<rule>/<kind:name>`` in the control topic.
ALERT_PREFIX = "alert/"


def alert_key(rule: str, pipeline: str) -> str:
    """The control-topic key of one rule's alert for one pipeline."""
    return f"{ALERT_PREFIX}{rule}/{pipeline}"


def split_alert_key(key: str) -> tuple[str, str]:
    """``alert/lag/transform:orders`` -> ``("lag", "transform:orders")``."""
    rule, _, pipeline = key.removeprefix(ALERT_PREFIX).partition("/")
    return rule, pipeline


# ---- which pipelines a rule covers ----------------------------------------------------


def pattern_matches(pattern: str, key: str) -> bool:
    """``orders``, ``orders-*`` match the name; ``sink:orders-*`` matches ``kind:name``."""
    if ":" in pattern:
        return fnmatch.fnmatchcase(key, pattern)
    return fnmatch.fnmatchcase(key.partition(":")[2] or key, pattern)


def covers(rule: AlertRule, key: str) -> bool:
    """True when ``rule`` applies to the pipeline ``kind:name``."""
    if rule.pipelines and not any(pattern_matches(p, key) for p in rule.pipelines):
        return False
    return not any(pattern_matches(p, key) for p in rule.exclude)


# ---- counters over time ---------------------------------------------------------------


def counter_increase(
    previous: dict[str, tuple[float, int]] | None,
    current: dict[str, tuple[float, int]],
    previous_at: float | None,
) -> int | None:
    """Messages counted since ``previous``, over workers: ``worker -> (started_at, count)``.

    A worker seen before adds what its counter grew by; one that restarted (another
    ``started_at``) adds its whole count; one that started after the previous sample
    adds its whole count; one already running but not seen before adds nothing (its
    count is older than our baseline). None without a previous sample.
    """
    if previous is None or previous_at is None:
        return None
    total = 0
    for worker, (started_at, count) in current.items():
        before = previous.get(worker)
        if before is not None and before[0] == started_at:
            total += max(0, count - before[1])
        elif before is not None or started_at >= previous_at:
            total += count
    return total


@dataclass
class CounterTrack:
    """One counter of one pipeline: its last per-worker sample and recent increases."""

    sample: dict[str, tuple[float, int]] | None = None
    sample_at: float | None = None
    first_at: float | None = None
    increases: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, now: float, current: dict[str, tuple[float, int]], keep_s: float) -> None:
        increase = counter_increase(self.sample, current, self.sample_at)
        if increase is None:
            self.first_at = now
        else:
            self.increases.append((now, increase))
        self.sample, self.sample_at = current, now
        while self.increases and self.increases[0][0] < now - keep_s:
            self.increases.popleft()

    def last_increase(self) -> int | None:
        """What the counter grew by at the latest sample (None: no baseline yet)."""
        if not self.increases or self.increases[-1][0] != self.sample_at:
            return None
        return self.increases[-1][1]

    def total_since(self, since: float) -> int:
        return sum(n for at, n in self.increases if at > since)


class Counters:
    """Per pipeline, the ``consumed`` and ``dead_lettered`` counters as the heartbeats show them."""

    FIELDS = ("consumed", "dead_lettered")

    def __init__(self, keep_s: float = 3600.0) -> None:
        self.keep_s = keep_s
        self.tracks: dict[tuple[str, str], CounterTrack] = {}

    def observe(self, now: float, workers: dict[str, dict[str, Any]]) -> None:
        """Take one sample from the live workers' heartbeats."""
        per_pipeline: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
        for wid, worker in workers.items():
            started = float(worker.get("started_at") or 0)
            for key, report in (worker.get("pipelines") or {}).items():
                for name in self.FIELDS:
                    value = report.get(name)
                    if isinstance(value, int | float):
                        per_pipeline.setdefault((key, name), {})[wid] = (started, int(value))
        for ident, current in per_pipeline.items():
            self.tracks.setdefault(ident, CounterTrack()).observe(now, current, self.keep_s)
        for ident in [i for i in self.tracks if i not in per_pipeline]:
            # No live worker reports it: no activity (and no baseline for when one does).
            track = self.tracks[ident]
            track.observe(now, {}, self.keep_s)

    def track(self, key: str, name: str) -> CounterTrack:
        return self.tracks.get((key, name)) or CounterTrack()

    def clear(self) -> None:
        self.tracks.clear()


# ---- what a condition measures -----------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """A condition now: whether it holds (None: cannot tell), its value, and a detail."""

    holds: bool | None
    value: float | str | None
    detail: str = ""


def measure(rule: AlertRule, item: dict[str, Any], counters: Counters, now: float) -> Measure:
    """Evaluate ``rule`` for one pipeline of the cluster status (:mod:`etl.ops.cluster`)."""
    above = rule.above or 0.0
    if rule.condition == "lag":
        lag = item.get("lag")
        if lag is None:
            return Measure(None, None)
        return Measure(float(lag) > above, int(lag))
    if rule.condition == "latency":
        ms = item.get("last_batch_ms")
        if ms is None:
            return Measure(None, None)
        seconds = float(ms) / 1000
        return Measure(seconds > above, round(seconds, 3))
    if rule.condition == "halted":
        state = halted_state(item, rule.halted_states)
        if state is None:
            return Measure(False, str(item.get("state")))
        return Measure(True, state, str(item.get("error") or ""))
    if rule.condition == "dead_letters":
        track = counters.track(str(item["key"]), "dead_lettered")
        window = rule.rate_window
        if track.first_at is None:
            return Measure(None, None)
        per_minute = round(track.total_since(now - window) * 60.0 / window, 3)
        if per_minute > above:
            return Measure(True, per_minute)
        # Not above yet: only a full window of samples says it is not.
        covered = now - track.first_at >= window
        return Measure(False if covered else None, per_minute)
    if rule.condition == "no_messages":
        track = counters.track(str(item["key"]), "consumed")
        increase = track.last_increase()
        if increase is None:
            return Measure(None, None)
        return Measure(increase == 0, int(increase))
    raise ValueError(f"unknown condition {rule.condition!r}")


def halted_state(item: dict[str, Any], states: tuple[str, ...]) -> str | None:
    """The state that makes a ``halted`` rule hold for this pipeline, if any.

    A halt by the ``stop`` policy shows as ``halted`` (older runtimes: ``stopped``
    without an operator's stop), or as halted partitions while others run.
    """
    state = str(item.get("state") or "")
    if state == "stopped" and item.get("desired") != "stopped" and "halted" in states:
        return "halted"
    if state in states:
        return state
    if item.get("halted") and "halted" in states:
        return "halted"
    return None


# ---- the state machine ---------------------------------------------------------------------


@dataclass(frozen=True)
class AlertState:
    """One alert (a rule for a pipeline) between notifications."""

    phase: AlertPhase
    #: When the condition started holding.
    since: float
    fired_at: float | None = None
    last_sent: float | None = None
    #: Notifications sent so far (the fire and its repeats).
    sent: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> AlertState | None:
        """The state in a control-topic record (None: no alert, or one already resolved)."""
        if not record or record.get("state") not in ("pending", "firing"):
            return None
        return cls(
            phase=record["state"],
            since=float(record.get("since") or 0),
            fired_at=_float(record.get("fired_at")),
            last_sent=_float(record.get("last_sent")),
            sent=int(record.get("sent") or 0),
        )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def step(
    previous: AlertState | None,
    holds: bool | None,
    now: float,
    for_s: float,
    repeat_s: float,
) -> tuple[AlertState | None, Event | None]:
    """The next state and the notification to send, if any.

    ``holds`` None (unknown) changes nothing. ``repeat_s`` 0 never repeats.
    """
    if holds is None:
        return previous, None
    if not holds:
        if previous is not None and previous.phase == "firing":
            return None, "resolve"
        return None, None
    current = previous or AlertState("pending", since=now)
    if current.phase == "pending":
        if now - current.since >= for_s:
            return replace(current, phase="firing", fired_at=now, last_sent=now, sent=1), "fire"
        return current, None
    last = current.last_sent if current.last_sent is not None else (current.fired_at or now)
    if repeat_s > 0 and now - last >= repeat_s:
        return replace(current, last_sent=now, sent=current.sent + 1), "repeat"
    return current, None


# ---- what a notification says -----------------------------------------------------------------


def threshold_of(rule: AlertRule) -> float | list[str] | None:
    """The rule's threshold as notifications carry it."""
    if rule.condition == "halted":
        return list(rule.halted_states)
    if rule.condition == "no_messages":
        return rule.for_
    return rule.above


def describe(
    rule: AlertRule,
    pipeline: str,
    event: Event,
    value: Any,
    since: float,
    now: float,
    detail: str = "",
) -> str:
    """A one-line human message for a notification."""
    held = format_duration(max(0.0, now - since))
    if event == "resolve":
        what = {
            "lag": f"lag back to {_number(value)} (threshold {_number(rule.above)})",
            "latency": f"last batch took {_seconds(value)} (threshold {_seconds(rule.above)})",
            "halted": f"no longer {' / '.join(rule.halted_states)} (now {value})",
            "dead_letters": f"dead letters down to {_number(value)}/min "
            f"(threshold {_number(rule.above)}/min)",
            "no_messages": "consuming messages again",
        }[rule.condition]
        if value is None:
            what = "no longer in the cluster or no longer covered by the rule"
        return f"resolved: {pipeline} {what}, after {held}"
    prefix = "still " if event == "repeat" else ""
    unit = ABOVE_UNITS.get(rule.condition, "")
    if rule.condition == "lag":
        text = f"lag {_number(value)} {unit} above {_number(rule.above)} for {held}"
    elif rule.condition == "latency":
        text = f"last batch took {_seconds(value)}, above {_seconds(rule.above)} for {held}"
    elif rule.condition == "halted":
        text = f"is {value} for {held}" + (f": {detail}" if detail else "")
    elif rule.condition == "dead_letters":
        text = (
            f"{_number(value)} dead letters/min, above {_number(rule.above)}/min for {held} "
            f"(over the last {format_duration(rule.rate_window)})"
        )
    else:
        text = f"no messages consumed for {held}"
    return f"{prefix}{pipeline}: {text}" if prefix else f"{pipeline}: {text}"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _seconds(value: Any) -> str:
    return format_duration(float(value)) if isinstance(value, int | float) else str(value)
