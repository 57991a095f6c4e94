"""The group-wide status: every pipeline of the cluster, whoever runs it.

Built from two things only, so that any worker (or ``etl status --bootstrap``
without a worker) gives the same answer:

* the control topic's table (:mod:`etl.control.state`): which workers live and
  what each reports of the pipelines it runs (state, counters, rates, the
  partitions it owns, halted partitions), and what operators asked;
* Kafka's own offsets (:mod:`etl.ops.offsets`): committed offset, log start and
  true end of every partition a pipeline's group reads, so lag keeps updating
  while a pipeline is paused, halted, stopped or has no worker at all.

A pipeline's state across workers: failed or load error on any worker wins, then
halted, then what an operator asked (stopped, paused), then running; a pipeline
that an operator wants running but no live worker runs is ``unassigned``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from etl.config import KafkaSettings
from etl.control.state import FORGET_AFTER_S, ControlTable
from etl.ops.offsets import TP, KafkaOffsets, OffsetsError, PartitionOffsets, group_offsets, tp_text

log = logging.getLogger("etl.ops")

_SUMMED = ("consumed", "produced", "filtered", "dead_lettered", "batches", "rate_in", "rate_out")
_STATE_RANK = {"failed": 0, "load_error": 1, "halted": 2}


def pipeline_groups(items: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """group id -> topics it reads, for the pipelines that consume (transforms, sinks)."""
    groups: dict[str, list[str]] = {}
    for item in items:
        group = item.get("group_id")
        topics = [t for t in str(item.get("source") or "").split(",") if t]
        if group and topics and item.get("kind") in ("transform", "sink"):
            groups.setdefault(group, [])
            groups[group] += [t for t in topics if t not in groups[group]]
    return groups


class ClusterView:
    """Kafka offsets for the cluster's pipelines, refreshed on demand or in the background."""

    def __init__(self, kafka: KafkaSettings, table: Callable[[], ControlTable]) -> None:
        self.kafka = kafka
        self.table = table
        self.offsets: dict[str, dict[TP, PartitionOffsets]] = {}
        self.refreshed_at: float | None = None
        self.error: str | None = None
        self._reader: KafkaOffsets | None = None
        self._lock = asyncio.Lock()

    def _groups(self) -> dict[str, list[str]]:
        table = self.table()
        items: list[dict[str, Any]] = []
        for worker in table.live_workers().values():
            items += (worker.get("pipelines") or {}).values()
        items += table.details.values()
        return pipeline_groups(items)

    async def refresh(self, groups: dict[str, list[str]] | None = None) -> None:
        """Read committed offsets and watermarks of every known pipeline group."""
        async with self._lock:
            wanted = self._groups() if groups is None else groups
            if self._reader is None:
                self._reader = KafkaOffsets(self.kafka)
            reader = self._reader
            try:
                self.offsets = await asyncio.to_thread(group_offsets, reader, wanted)
                self.error = None
            except OffsetsError as exc:
                self.error = str(exc)
                log.warning("cluster offsets not read error=%r", self.error)
            self.refreshed_at = time.time()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def snapshot(self, me: dict[str, Any] | None = None) -> dict[str, Any]:
        """The cluster status document (see :func:`cluster_snapshot`)."""
        return cluster_snapshot(self.table(), self.offsets, me=me, offsets_error=self.error)


def cluster_snapshot(
    table: ControlTable,
    offsets: dict[str, dict[TP, PartitionOffsets]],
    *,
    me: dict[str, Any] | None = None,
    now: float | None = None,
    offsets_error: str | None = None,
) -> dict[str, Any]:
    """``{"worker", "workers", "pipelines", ...}``: what ``GET /etl/status/`` returns."""
    now = time.time() if now is None else now
    live = table.live_workers(now)
    workers = []
    for wid, worker in sorted(table.workers.items()):
        alive = wid in live
        if not alive and now - float(worker.get("at") or 0) > FORGET_AFTER_S:
            continue
        workers.append(
            {
                "id": wid,
                "host": worker.get("host"),
                "pid": worker.get("pid"),
                "url": worker.get("url"),
                "started_at": worker.get("started_at"),
                "last_seen": worker.get("at"),
                "alive": alive,
                "pipelines": len(worker.get("pipelines") or {}),
                "this": bool(me and me.get("id") == wid),
            }
        )
    keys = table.pipeline_keys(now)
    pipelines = [
        _merge(key, table, live, offsets) for key in sorted(keys, key=lambda k: k.split(":", 1))
    ]
    return {
        "scope": "cluster",
        "worker": me or {},
        "workers": workers,
        "pipelines": sorted(pipelines, key=lambda p: (p["kind"], p["name"])),
        "generated_at": now,
        "offsets_error": offsets_error,
    }


def _merge(
    key: str,
    table: ControlTable,
    live: dict[str, dict[str, Any]],
    offsets: dict[str, dict[TP, PartitionOffsets]],
) -> dict[str, Any]:
    kind, _, name = key.partition(":")
    reports = [
        (wid, worker, (worker.get("pipelines") or {})[key])
        for wid, worker in sorted(live.items())
        if key in (worker.get("pipelines") or {})
    ]
    details = table.details.get(key) or {}
    base: dict[str, Any] = dict(reports[0][2]) if reports else {}
    item: dict[str, Any] = {
        "key": key,
        "name": base.get("name", name),
        "kind": base.get("kind", kind),
        "source": base.get("source", details.get("source", "")),
        "target": base.get("target", details.get("target", "")),
        "group_id": base.get("group_id", details.get("group_id", "")),
        "version": base.get("version", details.get("version", "")),
        "path": base.get("path", details.get("path", "")),
        "dead_letter_topic": base.get("dead_letter_topic", ""),
        "desired": table.desired_state(key),
        "error": None,
        "error_at": None,
        "workers": [wid for wid, _w, _r in reports],
        "halted": {},
    }
    for field_name in _SUMMED:
        values = [r.get(field_name) for _w, _wk, r in reports if r.get(field_name) is not None]
        item[field_name] = (
            round(sum(values), 3) if values else (None if "rate" in field_name else 0)
        )
    for field_name in ("last_batch_ms", "call_p99_ms"):
        values = [r.get(field_name) for _w, _wk, r in reports if r.get(field_name) is not None]
        item[field_name] = max(values) if values else None
    states = [str(r.get("state")) for _w, _wk, r in reports]
    worst = sorted(
        (r for _w, _wk, r in reports if str(r.get("state")) in _STATE_RANK),
        key=lambda r: _STATE_RANK[str(r.get("state"))],
    )
    for _w, _wk, r in reports:
        item["halted"].update(r.get("halted") or {})
    if worst:
        item["state"] = str(worst[0].get("state"))
        item["error"], item["error_at"] = worst[0].get("error"), worst[0].get("error_at")
    elif item["desired"] in ("stopped", "paused"):
        item["state"] = item["desired"]
    elif "running" in states:
        item["state"] = "running"
    elif states:
        item["state"] = states[0]
    else:
        item["state"] = "unassigned"
    if item["error"] is None:
        errors = [
            (r.get("error_at") or 0, r.get("error")) for _w, _wk, r in reports if r.get("error")
        ]
        if errors:
            item["error_at"], item["error"] = max(errors)
    item["partitions"] = _partitions(item, reports, offsets.get(item["group_id"]))
    lags = [p["lag"] for p in item["partitions"].values() if p.get("lag") is not None]
    item["lag"] = sum(lags) if lags else None
    return item


def _partitions(
    item: dict[str, Any],
    reports: list[tuple[str, dict[str, Any], dict[str, Any]]],
    kafka: dict[TP, PartitionOffsets] | None,
) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for wid, worker, report in reports:
        paused = str(report.get("state")) == "paused"
        for text, progress in (report.get("partitions") or {}).items():
            row = dict(progress)
            row["owner"] = {
                "worker": wid,
                "host": worker.get("host"),
                "pid": worker.get("pid"),
                "client_id": report.get("client_id") or worker.get("client_id"),
            }
            row["state"] = "paused" if paused else "running"
            rows[text] = row
    for tp, numbers in (kafka or {}).items():
        text = tp_text(tp)
        row = rows.setdefault(text, {"owner": None, "state": "unassigned", "position": None})
        row.update(numbers.to_dict())
    for text in item["halted"]:
        if text in rows:
            rows[text]["state"] = "halted"
    for row in rows.values():
        if kafka is None and "lag" not in row:
            row["lag"] = None
    return dict(sorted(rows.items()))


async def read_control_table(settings: Any) -> ControlTable:
    """The control topic's table as of now (no worker needed); empty when control is off."""
    from etl.control.plane import ControlPlane

    plane = ControlPlane(settings)
    if not plane.enabled:
        return plane.table
    await plane.start(follow_changes=False)
    try:
        return plane.table
    finally:
        await plane.stop()


async def status_from_kafka(settings: Any) -> dict[str, Any]:
    """``etl status --bootstrap``: the cluster status read from Kafka alone (read-only).

    Without any worker record (no worker ever ran with the control topic), the
    pipelines are found from the consumer groups named ``<group_prefix>-transform-*``
    and ``<group_prefix>-sink-*`` and the topics they committed offsets for.
    """
    table = await read_control_table(settings)
    view = ClusterView(settings.kafka, lambda: table)
    try:
        if not table.workers and not table.details:
            await asyncio.to_thread(_details_from_groups, view, table, settings)
        await view.refresh()
        snapshot = view.snapshot(me={"source": f"Kafka at {settings.kafka.bootstrap_servers}"})
    finally:
        view.close()
    snapshot["scope"] = "cluster (read from Kafka)"
    return snapshot


def _details_from_groups(view: ClusterView, table: ControlTable, settings: Any) -> None:
    reader = KafkaOffsets(settings.kafka)
    try:
        prefix = f"{settings.kafka.group_prefix}-"
        for group in reader.groups():
            kind, _, name = group.removeprefix(prefix).partition("-")
            if not group.startswith(prefix) or kind not in ("transform", "sink") or not name:
                continue
            committed = reader.committed([group]).get(group, {})
            topics = sorted({topic for topic, _p in committed})
            table.details[f"{kind}:{name}"] = {
                "key": f"{kind}:{name}",
                "name": name,
                "kind": kind,
                "group_id": group,
                "source": ",".join(topics),
            }
    finally:
        reader.close()
