"""The evaluator with an explicit clock: one evaluator per cluster, handovers, deliveries.

The control table is the in-process one (``control.enabled: false``) shared by the
simulated workers, as the control topic is shared by real ones; notifications go to
a real HTTP receiver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etl.alerts.evaluator import AlertEvaluator, alerts_view, choose_evaluator
from etl.alerts.rules import alert_key
from etl.config import ETLSettings
from etl.control.log import Entry
from etl.control.plane import ControlPlane
from etl.control.state import ControlTable
from etl.redact import Redactor

from .conftest import WebhookReceiver


class Clock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Host:
    """A worker as the evaluator sees it."""

    settings: ETLSettings
    worker_id: str
    control: ControlPlane
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    redact: Redactor = field(default_factory=Redactor)

    def cluster_snapshot(self) -> dict[str, Any]:
        return {"pipelines": self.pipelines}


def settings_for(receiver: WebhookReceiver, rules: list[dict[str, Any]]) -> ETLSettings:
    return ETLSettings.model_validate(
        {
            "control": {"enabled": False},
            "alerts": {
                "notifiers": [
                    {"name": "hook", "type": "webhook", "url": receiver.url(), "retries": 0}
                ],
                "rules": rules,
            },
        }
    )


def beat(
    plane: ControlPlane, wid: str, at: float, started_at: float = 1.0, alerts: bool = True
) -> None:
    record: dict[str, Any] = {"at": at, "interval": 2.0, "started_at": started_at, "pipelines": {}}
    if alerts:
        record["alerts"] = {"rules": 1, "fingerprint": "x"}
    plane.table.apply(Entry(f"worker/{wid}", record, -1, at))


def lagging(lag: int | None) -> dict[str, Any]:
    return {"key": "transform:t", "name": "t", "kind": "transform", "state": "running", "lag": lag}


LAG_RULE = {"name": "lag", "condition": "lag", "above": 10, "for": "2s", "repeat_every": "5s"}


class Cluster:
    """Workers sharing one control table and one clock."""

    def __init__(self, receiver: WebhookReceiver, rules: list[dict[str, Any]]) -> None:
        self.settings = settings_for(receiver, rules)
        self.plane = ControlPlane(self.settings)
        self.clock = Clock()
        self.workers: dict[str, AlertEvaluator] = {}
        self.hosts: dict[str, Host] = {}

    def add(self, wid: str, started_at: float) -> AlertEvaluator:
        host = Host(self.settings, wid, self.plane)
        self.hosts[wid] = host
        evaluator = AlertEvaluator(host, clock=self.clock)
        self.workers[wid] = evaluator
        beat(self.plane, wid, self.clock.now, started_at)
        return evaluator

    def pipelines(self, *items: dict[str, Any]) -> None:
        for host in self.hosts.values():
            host.pipelines = list(items)

    async def advance(self, seconds: float, *alive: str) -> None:
        """Move the clock; the named workers beat and every worker evaluates once."""
        self.clock.now += seconds
        for wid in alive:
            started = float(self.plane.table.workers[wid]["started_at"])
            beat(self.plane, wid, self.clock.now, started)
        for wid, evaluator in self.workers.items():
            if wid in alive:
                await evaluator.tick()
                await evaluator.wait_idle()

    def record(self, key: str = alert_key("lag", "transform:t")) -> dict[str, Any] | None:
        return self.plane.table.other.get(key)


def events(receiver: WebhookReceiver) -> list[tuple[str, Any]]:
    return [(b["event"], b["value"]) for b in receiver.bodies()]


async def test_fire_repeat_resolve_with_state_in_the_control_table(
    receiver: WebhookReceiver,
) -> None:
    cluster = Cluster(receiver, [LAG_RULE])
    cluster.add("a", started_at=1.0)
    cluster.pipelines(lagging(None))
    await cluster.advance(1, "a")
    assert cluster.record() is None  # lag unknown: nothing
    cluster.pipelines(lagging(50))
    await cluster.advance(1, "a")
    pending = cluster.record()
    assert pending is not None and pending["state"] == "pending"
    await cluster.advance(1, "a")
    await cluster.advance(1, "a")
    assert events(receiver) == [("fire", 50)]
    firing = cluster.record()
    assert firing is not None and firing["state"] == "firing" and "deliver" not in firing
    assert firing["last_delivery"]["sent"] == ["hook"]
    for _ in range(5):
        await cluster.advance(1, "a")
    assert events(receiver) == [("fire", 50), ("repeat", 50)]
    cluster.pipelines(lagging(3))
    await cluster.advance(1, "a")
    assert events(receiver) == [("fire", 50), ("repeat", 50), ("resolve", 3)]
    assert cluster.record() is None
    fire, repeat, resolve = receiver.bodies()
    assert fire["since"] == pending["since"] == repeat["since"] == resolve["since"]
    assert fire["id"] == repeat["id"] == resolve["id"]
    assert len({fire["event_id"], repeat["event_id"], resolve["event_id"]}) == 3
    assert fire["state"] == "firing" and resolve["state"] == "resolved"
    assert fire["threshold"] == 10 and fire["worker"] == "a" and fire["pipeline"] == "transform:t"
    assert "lag 50 messages above 10" in fire["message"]


async def test_only_the_oldest_live_worker_with_alerts_evaluates(receiver: WebhookReceiver) -> None:
    cluster = Cluster(receiver, [{**LAG_RULE, "for": 0}])
    cluster.add("b", started_at=5.0)
    cluster.add("a", started_at=9.0)  # a smaller id, but started later
    beat(cluster.plane, "0-no-alerts", cluster.clock.now, started_at=0.0, alerts=False)
    cluster.pipelines(lagging(50))
    await cluster.advance(1, "a", "b")
    assert choose_evaluator(cluster.plane.table, cluster.clock.now) == "b"
    assert cluster.workers["b"].evaluating and not cluster.workers["a"].evaluating
    assert [b["worker"] for b in receiver.bodies()] == ["b"]
    # A worker that joins later never takes over.
    cluster.add("0-new", started_at=cluster.clock.now)
    await cluster.advance(1, "a", "b", "0-new")
    assert cluster.workers["b"].evaluating and not cluster.workers["0-new"].evaluating
    assert len(receiver.bodies()) == 1


async def test_a_new_evaluator_neither_fires_again_nor_forgets_to_resolve(
    receiver: WebhookReceiver,
) -> None:
    cluster = Cluster(receiver, [LAG_RULE])
    cluster.add("a", started_at=1.0)
    cluster.add("b", started_at=2.0)
    cluster.pipelines(lagging(50))
    for _ in range(3):
        await cluster.advance(1, "a", "b")
    assert [(b["event"], b["worker"]) for b in receiver.bodies()] == [("fire", "a")]
    # a dies: its heartbeat ages out (three intervals, at least 10 s); b takes over.
    for _ in range(12):
        await cluster.advance(1, "b")
    assert cluster.workers["b"].evaluating
    sent = [(b["event"], b["worker"]) for b in receiver.bodies()]
    assert sent[0] == ("fire", "a") and ("fire", "b") not in sent
    assert set(sent[1:]) == {("repeat", "b")}
    cluster.pipelines(lagging(0))
    await cluster.advance(1, "b")
    assert [(b["event"], b["worker"]) for b in receiver.bodies()][-1] == ("resolve", "b")
    assert cluster.record() is None


async def test_a_notification_decided_but_not_sent_is_sent_by_the_next_evaluator(
    receiver: WebhookReceiver,
) -> None:
    cluster = Cluster(receiver, [{**LAG_RULE, "for": 0, "repeat_every": "1h"}])
    a = cluster.add("a", started_at=1.0)
    cluster.add("b", started_at=2.0)
    cluster.pipelines(lagging(50))

    # a records the fire, then dies before its delivery starts.
    a._start_delivery = lambda key, record: None  # type: ignore[method-assign]
    cluster.clock.now += 1
    await a.tick()
    record = cluster.record()
    assert record is not None and record["deliver"]["notification"]["event"] == "fire"
    assert receiver.bodies() == []
    for _ in range(11):
        await cluster.advance(1, "b")
    # b sends that same notification once (the worker field says who decided it) ...
    assert [(b["event"], b["worker"]) for b in receiver.bodies()] == [("fire", "a")]
    after = cluster.record()
    assert after is not None and "deliver" not in after and after["state"] == "firing"
    # ... and sends nothing more until the repeat is due.
    await cluster.advance(1, "b")
    assert len(receiver.bodies()) == 1


async def test_a_stale_worker_evaluates_nothing(receiver: WebhookReceiver) -> None:
    cluster = Cluster(receiver, [{**LAG_RULE, "for": 0}])
    a = cluster.add("a", started_at=1.0)
    cluster.pipelines(lagging(50))
    # Its own heartbeat is 11 s old in its table (it cannot reach Kafka): not live.
    cluster.clock.now += 11
    await a.tick()
    assert not a.evaluating and receiver.bodies() == [] and cluster.record() is None


async def test_gone_pipelines_resolve_and_gone_rules_are_dropped(
    receiver: WebhookReceiver,
) -> None:
    rules = [{**LAG_RULE, "for": 0}, {"name": "halted", "condition": "halted"}]
    cluster = Cluster(receiver, rules)
    cluster.add("a", started_at=1.0)
    cluster.pipelines({**lagging(50), "state": "failed", "error": "boom"})
    await cluster.advance(1, "a")
    assert sorted(b["rule"] for b in receiver.bodies()) == ["halted", "lag"]
    halted = next(b for b in receiver.bodies() if b["rule"] == "halted")
    assert halted["value"] == "failed" and halted["error"] == "boom"
    assert halted["message"].endswith("is failed for 0ms: boom")
    # A record of a rule this worker does not have: deleted, nobody notified.
    cluster.plane.table.apply(
        Entry("alert/old-rule/transform:t", {"state": "firing", "since": 1}, -1, 0)
    )
    # The pipeline leaves the cluster: its firing alerts resolve.
    cluster.pipelines()
    await cluster.advance(1, "a")
    resolved = [b for b in receiver.bodies() if b["event"] == "resolve"]
    assert sorted(b["rule"] for b in resolved) == ["halted", "lag"]
    assert all("no longer in the cluster" in b["message"] for b in resolved)
    assert not [k for k in cluster.plane.table.other if k.startswith("alert/")]


async def test_a_failing_notifier_is_recorded_not_raised(receiver: WebhookReceiver) -> None:
    cluster = Cluster(receiver, [{**LAG_RULE, "for": 0}])
    cluster.add("a", started_at=1.0)
    receiver.fail("/hook", 1, status=400)
    cluster.pipelines(lagging(50))
    await cluster.advance(1, "a")
    record = cluster.record()
    assert record is not None and record["state"] == "firing"
    assert list(record["last_delivery"]["failed"]) == ["hook"]
    assert record["last_delivery"]["failed"]["hook"].startswith("HTTP 400")
    view = alerts_view(cluster.settings, cluster.plane.table, cluster.clock.now)
    assert view["evaluator"] == "a" and view["alerts"][0]["state"] == "firing"
    assert view["rules"][0]["notify"] == ["hook"] and view["same_rules_everywhere"]


def test_choose_evaluator_without_candidates() -> None:
    table = ControlTable()
    assert choose_evaluator(table, 100.0) is None
    table.apply(Entry("worker/x", {"at": 100.0, "started_at": 1.0}, -1, 100.0))
    assert choose_evaluator(table, 100.0) is None  # x has no alert rules
