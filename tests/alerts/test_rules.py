"""The alert state machine, conditions and pipeline patterns: pure functions, explicit clock."""

from __future__ import annotations

from typing import Any

import pytest

from etl.alerts.config import AlertRule
from etl.alerts.rules import (
    AlertState,
    Counters,
    alert_key,
    counter_increase,
    covers,
    describe,
    halted_state,
    measure,
    split_alert_key,
    step,
)


def rule(**fields: Any) -> AlertRule:
    fields.setdefault("name", "r")
    return AlertRule.model_validate(fields)


def run(
    holds: list[bool | None], *, for_s: float, repeat_s: float, start: float = 1000.0
) -> list[tuple[float, str]]:
    """Feed one observation per second; return (time, event) for every notification."""
    state: AlertState | None = None
    events = []
    for index, value in enumerate(holds):
        now = start + index
        state, event = step(state, value, now, for_s, repeat_s)
        if event:
            events.append((now, event))
    return events


def test_fires_once_after_for_then_repeats_then_resolves() -> None:
    holds: list[bool | None] = [False, True, True, True, True, True, True, True, False, False]
    events = run(holds, for_s=2, repeat_s=3)
    # Holds from t=1001; fires at 1003 (held 2 s); repeats at 1006; resolves at 1008.
    assert events == [(1003, "fire"), (1006, "repeat"), (1008, "resolve")]


def test_for_zero_fires_on_first_observation() -> None:
    assert run([True, True, False], for_s=0, repeat_s=0) == [(1000, "fire"), (1002, "resolve")]


def test_a_blip_shorter_than_for_sends_nothing() -> None:
    assert run([True, True, False, True, False], for_s=3, repeat_s=0) == []


def test_repeat_zero_never_repeats() -> None:
    events = run([True] * 50, for_s=0, repeat_s=0)
    assert events == [(1000, "fire")]


def test_unknown_keeps_the_state_and_its_timer() -> None:
    # Unknown (no offsets yet, a new evaluator's first sample) neither fires nor resolves.
    events = run([True, None, None, True, None, False], for_s=2, repeat_s=0)
    assert events == [(1003, "fire"), (1005, "resolve")]
    assert run([None, None, None], for_s=0, repeat_s=1) == []


def test_state_survives_a_record_round_trip() -> None:
    state, event = step(None, True, 10.0, 0, 60)
    assert event == "fire" and state is not None
    record = {
        "state": state.phase,
        "since": state.since,
        "fired_at": state.fired_at,
        "last_sent": state.last_sent,
        "sent": state.sent,
    }
    again = AlertState.from_record(record)
    assert again == state
    # A new evaluator with that record: no new fire, a repeat only after the interval.
    assert step(again, True, 30.0, 0, 60) == (again, None)
    repeated, event = step(again, True, 70.0, 0, 60)
    assert event == "repeat" and repeated is not None and repeated.sent == 2
    assert step(repeated, False, 71.0, 0, 60) == (None, "resolve")
    assert AlertState.from_record({"state": "resolved", "since": 1}) is None
    assert AlertState.from_record(None) is None


def test_pending_since_is_kept_across_observations() -> None:
    state, _ = step(None, True, 100.0, 10, 0)
    assert state == AlertState("pending", since=100.0)
    state, _ = step(state, True, 105.0, 10, 0)
    assert state == AlertState("pending", since=100.0)
    state, event = step(state, True, 110.0, 10, 0)
    assert event == "fire" and state is not None and state.since == 100.0


@pytest.mark.parametrize(
    ("patterns", "exclude", "key", "expected"),
    [
        ([], [], "transform:orders", True),
        (["orders"], [], "transform:orders", True),
        (["orders"], [], "sink:orders", True),
        (["transform:orders"], [], "sink:orders", False),
        (["orders-*"], [], "sink:orders-pg", True),
        (["sink:*"], [], "sink:orders-pg", True),
        (["sink:*"], [], "transform:orders-pg", False),
        (["orders?"], [], "transform:orders2", True),
        ([], ["*-test"], "transform:orders-test", False),
        (["orders*"], ["sink:*"], "sink:orders", False),
    ],
)
def test_pipeline_patterns(
    patterns: list[str], exclude: list[str], key: str, expected: bool
) -> None:
    assert covers(rule(condition="halted", pipelines=patterns, exclude=exclude), key) is expected


def test_alert_keys() -> None:
    key = alert_key("lag", "sink:orders-pg")
    assert key == "alert/lag/sink:orders-pg"
    assert split_alert_key(key) == ("lag", "sink:orders-pg")


def test_counter_increase_per_worker() -> None:
    assert counter_increase(None, {"a": (1.0, 5)}, None) is None
    previous = {"a": (1.0, 10), "b": (2.0, 20)}
    # a grew by 5; b left (its count vanishing is not activity).
    assert counter_increase(previous, {"a": (1.0, 15)}, 100.0) == 5
    # b restarted (other started_at): its whole new count is new.
    assert counter_increase(previous, {"a": (1.0, 10), "b": (150.0, 3)}, 100.0) == 3
    # c started after the previous sample: all of its count is new ...
    assert counter_increase(previous, {**previous, "c": (120.0, 7)}, 100.0) == 7
    # ... but d, running before our baseline and never seen, adds nothing.
    assert counter_increase(previous, {**previous, "d": (50.0, 900)}, 100.0) == 0


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"key": "transform:t", "name": "t", "kind": "transform"}
    base.update(fields)
    return base


def heartbeats(**counts: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """worker -> (consumed, dead_lettered) of pipeline transform:t."""
    return {
        wid: {
            "started_at": 1.0,
            "pipelines": {"transform:t": {"consumed": c, "dead_lettered": d}},
        }
        for wid, (c, d) in counts.items()
    }


def test_lag_latency_and_halted_measures() -> None:
    counters = Counters()
    lag = rule(condition="lag", above=10)
    assert measure(lag, item(lag=None), counters, 0).holds is None
    assert measure(lag, item(lag=10), counters, 0).holds is False
    found = measure(lag, item(lag=11), counters, 0)
    assert (found.holds, found.value) == (True, 11)
    slow = rule(condition="latency", above="1.5s")
    assert measure(slow, item(last_batch_ms=1400.0), counters, 0).holds is False
    assert measure(slow, item(last_batch_ms=1600.0), counters, 0).value == 1.6
    halted = rule(condition="halted")
    assert measure(halted, item(state="running", halted={}), counters, 0).holds is False
    found = measure(halted, item(state="halted", error="boom"), counters, 0)
    assert (found.holds, found.value, found.detail) == (True, "halted", "boom")
    # Halted by the stop policy before the runtime reported "halted": stopped, not asked.
    assert halted_state(item(state="stopped", desired="running"), ("halted",)) == "halted"
    assert halted_state(item(state="stopped", desired="stopped"), ("halted",)) is None
    # One partition halted while others run.
    assert halted_state(item(state="running", halted={"t/0": 5}), ("halted",)) == "halted"
    assert halted_state(item(state="failed"), ("halted", "failed")) == "failed"
    assert halted_state(item(state="unassigned"), ("halted", "failed")) is None
    unassigned = rule(condition="halted", states=["unassigned"])
    assert measure(unassigned, item(state="unassigned"), counters, 0).holds is True


def test_no_messages_needs_a_baseline_then_watches_increases() -> None:
    counters = Counters()
    idle = rule(condition="no_messages", **{"for": "2s"})
    counters.observe(0.0, heartbeats(a=(5, 0)))
    assert measure(idle, item(), counters, 0.0).holds is None  # first sample: baseline
    counters.observe(1.0, heartbeats(a=(5, 0)))
    assert measure(idle, item(), counters, 1.0).holds is True
    counters.observe(2.0, heartbeats(a=(6, 0)))
    assert measure(idle, item(), counters, 2.0).holds is False
    # A worker leaving (its count vanishes) is no activity.
    counters.observe(3.0, heartbeats(a=(6, 0), b=(0, 0)))
    counters.observe(4.0, heartbeats(b=(0, 0)))
    assert measure(idle, item(), counters, 4.0).holds is True


def test_dead_letters_per_minute_over_the_window() -> None:
    counters = Counters()
    dead = rule(condition="dead_letters", above=5, window="10s")
    counters.observe(0.0, heartbeats(a=(0, 0)))
    assert measure(dead, item(), counters, 0.0).holds is None
    counters.observe(1.0, heartbeats(a=(0, 1)))
    # 1 in a 10 s window = 6/min, above 5: holds although the window is not full yet.
    found = measure(dead, item(), counters, 1.0)
    assert (found.holds, found.value) == (True, 6.0)
    counters.observe(12.0, heartbeats(a=(0, 1)))
    # The dead letter is out of the window now and the window is covered: not above.
    found = measure(dead, item(), counters, 12.0)
    assert (found.holds, found.value) == (False, 0.0)


def test_dead_letters_below_threshold_is_unknown_until_a_window_is_covered() -> None:
    counters = Counters()
    dead = rule(condition="dead_letters", above=100)
    counters.observe(0.0, heartbeats(a=(0, 0)))
    counters.observe(5.0, heartbeats(a=(0, 2)))
    # A new evaluator must not resolve a firing alert on 5 s of memory.
    assert measure(dead, item(), counters, 5.0).holds is None
    counters.observe(61.0, heartbeats(a=(0, 2)))
    assert measure(dead, item(), counters, 61.0).holds is False


def test_messages_name_pipeline_value_threshold_and_duration() -> None:
    lag = rule(condition="lag", above=100)
    text = describe(lag, "transform:orders", "fire", 1520, 0.0, 300.0)
    assert text == "transform:orders: lag 1520 messages above 100 for 5m"
    assert describe(lag, "transform:orders", "repeat", 1600, 0.0, 3600.0).startswith(
        "still transform:orders: lag 1600"
    )
    resolved = describe(lag, "transform:orders", "resolve", 0, 0.0, 90.0)
    assert resolved == "resolved: transform:orders lag back to 0 (threshold 100), after 1m30s"
    halted = rule(condition="halted")
    text = describe(halted, "transform:p", "fire", "halted", 0.0, 0.5, "ValueError: poison")
    assert text == "transform:p: is halted for 500ms: ValueError: poison"
