"""The cluster's shared table, as every worker rebuilds it from the control topic.

Keys (values are JSON objects; a tombstone deletes the key):

==========================  =========================================================
``desired/<kind:name>``     what an operator asked of a pipeline: ``{"state":
                            "running" | "paused" | "stopped", "by", "at"}``; no
                            record means running
``restart/<kind:name>``     a restart request ``{"id", "at", "by", "broken_only"}``;
                            a worker restarts its instance if it started before
                            ``at`` (``broken_only``: only halted partitions and failed
                            pipelines, what ``etl resume`` asks for)
``worker/<id>``             a worker's heartbeat: host, pid, web address, and the
                            status of every pipeline it runs (written every
                            ``control.heartbeat_seconds``; deleted on a clean stop)
``pipeline/<kind:name>``    a pipeline's details for ``etl show`` (configuration with
                            secrets redacted, file, version, group, topics)
``connector/<name>``        a connector created through the API: ``{"config", "at",
                            "by"}``, secrets sealed (:mod:`etl.connectors.secrets`)
==========================  =========================================================

Everything here is plain data, so it is the same in a worker, in ``etl status
--bootstrap`` and in a unit test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from etl.control.log import Entry

DESIRED = "desired/"
RESTART = "restart/"
WORKER = "worker/"
PIPELINE = "pipeline/"
CONNECTOR = "connector/"

DesiredState = Literal["running", "paused", "stopped"]
DESIRED_STATES: tuple[DesiredState, ...] = ("running", "paused", "stopped")

#: A worker whose heartbeat is older than this many intervals is presumed gone.
LIVENESS_INTERVALS = 3.0
#: Gone workers are still listed (as lost) for this long, then forgotten.
FORGET_AFTER_S = 3600.0


@dataclass
class ControlTable:
    """The latest value of every key of the control topic, by section."""

    desired: dict[str, dict[str, Any]] = field(default_factory=dict)
    restarts: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    other: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, entry: Entry) -> tuple[str, str]:
        """Take one record in; returns (section prefix, the key within it)."""
        for prefix, table in (
            (DESIRED, self.desired),
            (RESTART, self.restarts),
            (WORKER, self.workers),
            (PIPELINE, self.details),
            (CONNECTOR, self.connectors),
        ):
            if entry.key.startswith(prefix):
                name = entry.key[len(prefix) :]
                if entry.value is None:
                    table.pop(name, None)
                else:
                    table[name] = {**entry.value, "_offset": entry.offset}
                return prefix, name
        if entry.value is None:
            self.other.pop(entry.key, None)
        else:
            self.other[entry.key] = entry.value
        return "", entry.key

    def desired_state(self, key: str) -> DesiredState:
        """What operators asked of ``key`` (running when nobody asked anything)."""
        state = (self.desired.get(key) or {}).get("state")
        return state if state in DESIRED_STATES else "running"  # type: ignore[return-value]

    def live_workers(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """The workers whose last heartbeat is recent enough."""
        now = time.time() if now is None else now
        return {wid: w for wid, w in self.workers.items() if worker_alive(w, now)}

    def pipeline_keys(self, now: float | None = None) -> set[str]:
        """Every pipeline a live worker runs or an operator gave a desired state to."""
        keys = set(self.desired) | set(self.details)
        for worker in self.live_workers(now).values():
            keys.update((worker.get("pipelines") or {}).keys())
        return keys


def worker_alive(worker: dict[str, Any], now: float) -> bool:
    """True while the worker's heartbeat is younger than a few intervals."""
    interval = float(worker.get("interval") or 3.0)
    return now - float(worker.get("at") or 0) <= max(LIVENESS_INTERVALS * interval, 10.0)
