"""The worker-side alert loop: one evaluator per cluster, alert state in the control topic.

Every worker runs this loop; only one evaluates at a time: the live worker (by the
control topic's heartbeats) that has alerts configured and started first, ties
broken by the smaller id (:func:`choose_evaluator`). Every worker reads the same
heartbeats, so all agree without talking to each other, and a worker that joins
later never takes the role over: it moves only when its holder stops (its heartbeat
is deleted: at once) or dies (its heartbeat ages out: ``control.heartbeat_seconds``
x 3, at least 10 s). A worker whose own heartbeat is stale in its table (it cannot
reach Kafka) evaluates nothing.

Each alert's state is the record ``alert/<rule>/<kind:name>`` of the control topic
(see :mod:`etl.alerts.rules` for the state machine). Rules kept here:

* a notification is decided by writing it into its record first (``deliver``:
  the notification and its notifiers), acknowledged and read back; only then is it
  sent; once every notifier answered or gave up, the record is rewritten without
  ``deliver`` (a resolve deletes the record). A worker that cannot write to Kafka
  sends nothing;
* a new evaluator finds an unfinished ``deliver`` and sends it again: if the old
  evaluator died between sending and rewriting, that notification arrives twice
  (with the same ``event_id``). Nothing else is sent twice and nothing is lost:
  a firing alert stays firing (no new fire) and resolves when its condition ends;
* a record is written only when an alert changes (pending, fire, repeat, resolve,
  delivered), never on every evaluation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from etl.alerts import notify
from etl.alerts.config import ABOVE_UNITS, AlertRule, AlertSettings
from etl.alerts.rules import (
    ALERT_PREFIX,
    AlertState,
    Counters,
    Event,
    Measure,
    alert_key,
    covers,
    describe,
    measure,
    split_alert_key,
    step,
    threshold_of,
)
from etl.config import ETLSettings
from etl.control.log import Entry
from etl.control.plane import ControlPlane
from etl.control.state import ControlTable
from etl.redact import Redactor

log = logging.getLogger("etl.alerts")

#: How long a stopping worker waits for notifications in flight.
STOP_GRACE_S = 5.0


class AlertHost(Protocol):
    """What the evaluator needs of the worker (:class:`etl.supervisor.PipelineSupervisor`)."""

    settings: ETLSettings
    worker_id: str
    control: ControlPlane
    #: Replaces secrets in text.
    redact: Redactor

    def cluster_snapshot(self) -> dict[str, Any]:
        """Every pipeline of the cluster (:func:`etl.ops.cluster.cluster_snapshot`)."""
        ...


def rules_fingerprint(alerts: AlertSettings) -> str:
    """A short hash of the rules and notifier names: equal on workers with equal rules."""
    data: list[Any] = [r.model_dump(mode="json", by_alias=True) for r in alerts.rules]
    data.append(sorted(n.name for n in alerts.notifiers))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def choose_evaluator(table: ControlTable, now: float) -> str | None:
    """The worker that evaluates alerts: among live workers that have alerts, the one
    that started first (then the smallest id); None when there is none."""
    candidates = {
        wid: worker for wid, worker in table.live_workers(now).items() if worker.get("alerts")
    }
    if not candidates:
        return None
    return min(candidates, key=lambda wid: (float(candidates[wid].get("started_at") or 0), wid))


def alert_records(table: ControlTable) -> dict[str, dict[str, Any]]:
    """Every ``alert/...`` record of the control table."""
    return {k: v for k, v in table.other.items() if k.startswith(ALERT_PREFIX)}


class AlertEvaluator:
    """Evaluates the rules when this worker is the cluster's evaluator; sends notifications."""

    def __init__(self, host: AlertHost, *, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.settings = host.settings.alerts
        self.clock = clock
        self.rules = {rule.name: rule for rule in self.settings.rules}
        self.counters = Counters()
        self.evaluating = False
        self.evaluator: str | None = None
        self.fingerprint = rules_fingerprint(self.settings)
        #: alert key -> the measure and state of the last evaluation (this worker only).
        self.current: dict[str, tuple[Measure, AlertState | None]] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        #: alert key -> the event_id this worker sent last (its record may not say so yet).
        self._sent: dict[str, str] = {}
        self._stopping = False

    # ---- lifecycle -----------------------------------------------------------------

    def heartbeat_fields(self) -> dict[str, Any]:
        """What this worker's heartbeat says about its alerts (makes it a candidate)."""
        return {"rules": len(self.rules), "fingerprint": self.fingerprint}

    async def run(self, should_stop: Callable[[], bool]) -> None:
        """Evaluate every ``evaluate_every`` seconds until ``should_stop()``."""
        log.info(
            "alerts configured rules=%d notifiers=%d every=%.1fs",
            len(self.rules),
            len(self.settings.notifiers),
            self.settings.evaluate_every,
        )
        while not should_stop() and not self._stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(self.settings.evaluate_every)

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Evaluate no more; give notifications in flight ``grace`` seconds to finish."""
        self._stopping = True
        tasks = list(self._inflight.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()

    # ---- one evaluation -------------------------------------------------------------

    async def tick(self) -> None:
        """Evaluate every rule once (if this worker is the evaluator)."""
        if self._stopping:
            return
        now = self.clock()
        table = self.host.control.table
        chosen = choose_evaluator(table, now)
        self.evaluator = chosen
        if chosen != self.host.worker_id:
            if self.evaluating:
                log.info("alerts no longer evaluated here evaluator=%s", chosen)
            self.evaluating = False
            self.counters.clear()
            self.current.clear()
            return
        if not self.evaluating:
            log.info("alerts evaluated by this worker rules=%d", len(self.rules))
            self.evaluating = True
        snapshot = self.host.cluster_snapshot()
        items = {str(p["key"]): p for p in snapshot.get("pipelines", []) if p.get("key")}
        self.counters.observe(now, table.live_workers(now))
        records = alert_records(table)
        for key, record in records.items():
            if record.get("deliver") and key not in self._inflight:
                # Left by an evaluator that stopped before it finished (or by this one,
                # when the record could not be rewritten: then only the rewrite is retried).
                self._start_delivery(key, record)
        visited: set[str] = set()
        for rule in self.rules.values():
            for pipeline, item in items.items():
                if not covers(rule, pipeline):
                    continue
                key = alert_key(rule.name, pipeline)
                visited.add(key)
                if key in self._inflight:
                    continue
                await self._evaluate(rule, pipeline, item, records.get(key), now)
        for key, record in records.items():
            if key not in visited and key not in self._inflight:
                await self._orphan(key, record, now)

    async def _evaluate(
        self,
        rule: AlertRule,
        pipeline: str,
        item: dict[str, Any],
        record: dict[str, Any] | None,
        now: float,
    ) -> None:
        key = alert_key(rule.name, pipeline)
        if record is not None and record.get("state") == "resolved":
            # Its resolve was delivered but the record not deleted yet (a handover).
            await self._write(key, None)
            record = None
        found = measure(rule, item, self.counters, now)
        previous = AlertState.from_record(record)
        state, event = step(previous, found.holds, now, rule.for_, rule.repeat_every)
        self.current[key] = (found, state)
        if event is not None:
            await self._decide(rule, pipeline, item, record, state, event, found, now)
        elif state != previous:
            await self._write(key, None if state is None else self._record(rule, pipeline, state))

    async def _orphan(self, key: str, record: dict[str, Any], now: float) -> None:
        """A record whose pipeline left the cluster, or whose rule is gone or changed."""
        rule_name, pipeline = split_alert_key(key)
        rule = self.rules.get(rule_name)
        self.current.pop(key, None)
        if rule is None or record.get("state") != "firing":
            if rule is None:
                log.info("alert record dropped (no such rule here) key=%s", key)
            await self._write(key, None)
            return
        previous = AlertState.from_record(record)
        item = {"key": pipeline, "kind": pipeline.partition(":")[0]}
        gone = Measure(False, None)
        await self._decide(rule, pipeline, item, record, None, "resolve", gone, now, previous)

    # ---- records and notifications ---------------------------------------------------

    def _record(self, rule: AlertRule, pipeline: str, state: AlertState) -> dict[str, Any]:
        return {
            "rule": rule.name,
            "pipeline": pipeline,
            "condition": rule.condition,
            "state": state.phase,
            "since": state.since,
            "fired_at": state.fired_at,
            "last_sent": state.last_sent,
            "sent": state.sent,
            "threshold": threshold_of(rule),
            "by": self.host.worker_id,
        }

    async def _decide(
        self,
        rule: AlertRule,
        pipeline: str,
        item: dict[str, Any],
        record: dict[str, Any] | None,
        state: AlertState | None,
        event: Event,
        found: Measure,
        now: float,
        previous: AlertState | None = None,
    ) -> None:
        """Record the notification (``deliver``), then send it in the background."""
        key = alert_key(rule.name, pipeline)
        previous = previous or AlertState.from_record(record)
        basis = state or previous
        assert basis is not None
        notification = self.notification(rule, pipeline, item, basis, event, found, now)
        if state is None:
            new = {
                **self._record(rule, pipeline, basis),
                "state": "resolved",
                "resolved_at": now,
                "value": found.value,
            }
        else:
            new = {**self._record(rule, pipeline, state), "value": found.value}
        targets = [n.name for n in self.settings.targets(rule)]
        if not targets:
            log.warning("alert has no notifier to go to rule=%s pipeline=%s", rule.name, pipeline)
            await self._write(key, None if state is None else new)
            return
        new["deliver"] = {"notification": notification, "notifiers": targets}
        await self._write(key, new)
        log.info(
            "alert %s rule=%s pipeline=%s value=%s notifiers=%s",
            event,
            rule.name,
            pipeline,
            found.value,
            ",".join(targets),
        )
        self._start_delivery(key, new)

    def notification(
        self,
        rule: AlertRule,
        pipeline: str,
        item: dict[str, Any],
        state: AlertState,
        event: Event,
        found: Measure,
        now: float,
    ) -> dict[str, Any]:
        """The alert as every notifier gets it (the webhook body, the command's stdin)."""
        kind, _, name = pipeline.partition(":")
        fired_at = state.fired_at if state.fired_at is not None else now
        sent = state.sent
        return {
            "id": f"{rule.name}/{pipeline}/{fired_at:.3f}",
            "event_id": f"{rule.name}/{pipeline}/{fired_at:.3f}/{event}/{sent}",
            "rule": rule.name,
            "condition": rule.condition,
            "severity": rule.severity,
            "pipeline": pipeline,
            "kind": kind,
            "name": name,
            "state": "resolved" if event == "resolve" else "firing",
            "event": event,
            "value": found.value,
            "threshold": threshold_of(rule),
            "unit": ABOVE_UNITS.get(rule.condition),
            "for": rule.for_,
            "since": state.since,
            "since_iso": notify.iso(state.since),
            "fired_at": state.fired_at,
            "at": now,
            "at_iso": notify.iso(now),
            "message": describe(rule, pipeline, event, found.value, state.since, now, found.detail),
            "error": item.get("error") if rule.condition == "halted" else None,
            "worker": self.host.worker_id,
            "cluster": self.host.settings.kafka.group_prefix,
        }

    def _start_delivery(self, key: str, record: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._deliver(key, record))
        self._inflight[key] = task

    async def _deliver(self, key: str, record: dict[str, Any]) -> None:
        try:
            deliver = record.get("deliver") or {}
            alert = dict(deliver.get("notification") or {})
            names = [str(n) for n in deliver.get("notifiers") or []]
            event_id = str(alert.get("event_id"))
            if self._sent.get(key) == event_id:
                failed: dict[str, str] = {}
            else:
                results = await asyncio.gather(*(self._send(name, alert) for name in names))
                failed = {name: error for name, error in zip(names, results, strict=True) if error}
                self._sent[key] = event_id
            if alert.get("state") == "resolved":
                await self._write(key, None)
                self._sent.pop(key, None)
                return
            done = {k: v for k, v in record.items() if k not in ("deliver", "_offset")}
            done["last_delivery"] = {
                "event": alert.get("event"),
                "at": self.clock(),
                "sent": [n for n in names if n not in failed],
                "failed": failed,
            }
            await self._write(key, done)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("alert delivery failed key=%s", key)
        finally:
            if self._inflight.get(key) is asyncio.current_task():
                self._inflight.pop(key, None)

    async def _send(self, name: str, alert: dict[str, Any]) -> str | None:
        notifier = self.settings.notifier(name)
        if notifier is None:
            log.error("alert not sent: no notifier %r on this worker rule=%s", name, alert["rule"])
            return f"no notifier {name!r} on this worker"
        return await notify.send(notifier, alert, self.host.redact)

    async def _write(self, key: str, value: dict[str, Any] | None) -> None:
        plane = self.host.control
        if plane.log is not None:
            await plane.log.put(key, value)
        else:
            plane.table.apply(Entry(key, value, -1, self.clock()))

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no notification is in flight (tests, shutdown)."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # ---- what GET /etl/alerts/ shows ------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The rules and every alert's state, with live values where this worker evaluates."""
        view = alerts_view(self.host.settings, self.host.control.table, self.clock())
        view["this_worker"] = self.host.worker_id
        view["evaluating"] = self.evaluating
        if self.evaluating:
            for alert in view["alerts"]:
                found = self.current.get(alert["key"])
                if found is not None:
                    alert["value"] = found[0].value
        return view


def alerts_view(settings: ETLSettings, table: ControlTable, now: float) -> dict[str, Any]:
    """Rules and alert records as ``etl alerts list`` and ``GET /etl/alerts/`` show them."""
    alerts = settings.alerts
    rules = [
        {
            "name": rule.name,
            "condition": rule.condition,
            "above": rule.above,
            "for": rule.for_,
            "repeat_every": rule.repeat_every,
            "pipelines": rule.pipelines or ["*"],
            "exclude": rule.exclude,
            "notify": [n.name for n in alerts.targets(rule)],
            "severity": rule.severity,
            "file": rule.file,
        }
        for rule in alerts.rules
    ]
    records = []
    for key, record in sorted(alert_records(table).items()):
        rule, pipeline = split_alert_key(key)
        records.append(
            {
                "key": key,
                "rule": rule,
                "pipeline": pipeline,
                "state": record.get("state"),
                "since": record.get("since"),
                "fired_at": record.get("fired_at"),
                "last_sent": record.get("last_sent"),
                "sent": record.get("sent"),
                "value": record.get("value"),
                "threshold": record.get("threshold"),
                "delivering": bool(record.get("deliver")),
                "last_delivery": record.get("last_delivery"),
                "by": record.get("by"),
            }
        )
    live = table.live_workers(now)
    fingerprints = {
        wid: (w.get("alerts") or {}).get("fingerprint")
        for wid, w in live.items()
        if w.get("alerts")
    }
    return {
        "enabled": alerts.enabled,
        "evaluator": choose_evaluator(table, now),
        "workers_with_alerts": sorted(fingerprints),
        "same_rules_everywhere": len(set(fingerprints.values())) <= 1,
        "rules": rules,
        "alerts": records,
        "generated_at": now,
    }
