"""A worker's part in the cluster's control state (see :mod:`etl.control.state`).

Every worker reads the control topic from the start before it starts any
pipeline (so a worker that starts later obeys what was asked before), follows
it while it runs, and calls the supervisor back for every change that concerns
a pipeline. It also writes this worker's heartbeat. Rules kept here:

* a request (pause, resume, stop, restart) is a record in the topic, never a
  message to one worker: it reaches every worker within a poll (0.2 s) and
  outlives any of them;
* a request returns once this worker has read it back and applied it, so the
  caller sees its own effect;
* with ``control.enabled: false`` the table lives in this process only (one
  worker, nothing survives a restart) - for brokers where the topic cannot be
  created.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from etl.config import ETLSettings
from etl.control.log import ControlLog, Entry
from etl.control.state import (
    CONNECTOR,
    DESIRED,
    PIPELINE,
    RESTART,
    WORKER,
    ControlTable,
    DesiredState,
)

log = logging.getLogger("etl.control")

OnChange = Callable[[str, str], Awaitable[None]]


def control_topic(settings: ETLSettings) -> str:
    """The control topic: ``control.topic``, else ``<group_prefix>-control``."""
    return settings.control.topic or f"{settings.kafka.group_prefix}-control"


def requester() -> str:
    """Who asks, as recorded with a request: ``user@host:pid``."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "?")
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


class ControlPlane:
    """Reads and writes the control topic for one worker (or one CLI command)."""

    def __init__(
        self,
        settings: ETLSettings,
        *,
        worker_id: str | None = None,
        on_change: OnChange | None = None,
        heartbeat: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.table = ControlTable()
        self.on_change = on_change
        self.heartbeat = heartbeat
        self.enabled = settings.control.enabled
        self.log: ControlLog | None = (
            ControlLog(settings.kafka, control_topic(settings)) if self.enabled else None
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.started = False

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self, *, follow_changes: bool = True) -> None:
        """Read the table to its end; then follow it (and beat, for a worker)."""
        if self.log is not None:
            await self.log.ensure_topic()
            await self.log.start(self._on_entry)
        self.started = True
        # What the table held before this worker started is its starting point (the
        # supervisor reads it), not a change to apply: an old restart request must
        # not restart a pipeline that starts now.
        while not self._changes.empty():
            self._changes.get_nowait()
            self._changes.task_done()
        if follow_changes and self.on_change is not None:
            self._tasks.append(asyncio.ensure_future(self._apply_changes()))
        if self.heartbeat is not None and self.worker_id:
            self._tasks.append(asyncio.ensure_future(self._beat_forever()))

    async def stop(self) -> None:
        """Stop following; a worker deletes its heartbeat (it is not lost, it left)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self.log is not None:
            if self.heartbeat is not None and self.worker_id and self.started:
                try:
                    await asyncio.wait_for(self.log.put(WORKER + self.worker_id, None), 5)
                except Exception as exc:
                    log.warning("worker record not removed error=%r", str(exc))
            await self.log.stop()

    def _on_entry(self, entry: Entry) -> None:
        section, name = self.table.apply(entry)
        if section in (DESIRED, RESTART, CONNECTOR) and self.on_change is not None:
            self._changes.put_nowait((section, name))

    async def _apply_changes(self) -> None:
        assert self.on_change is not None
        while True:
            section, name = await self._changes.get()
            try:
                await self.on_change(section, name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control change not applied key=%s%s", section, name)
            finally:
                self._changes.task_done()

    async def settled(self) -> None:
        """Wait until every change read so far was applied by this worker."""
        await self._changes.join()

    # ---- requests ---------------------------------------------------------------------

    async def _put(self, key: str, value: dict[str, Any] | None) -> None:
        if self.log is not None:
            await self.log.put(key, value)
        else:
            self._on_entry(Entry(key, value, -1, time.time()))
        if self.on_change is not None and self._tasks:
            await self.settled()

    async def set_desired(self, key: str, state: DesiredState, by: str | None = None) -> None:
        """Ask every worker to run, pause or stop ``key``."""
        if state == "running":
            await self._put(DESIRED + key, None)
        else:
            await self._put(
                DESIRED + key, {"state": state, "by": by or requester(), "at": time.time()}
            )

    async def request_restart(self, key: str, *, broken_only: bool, by: str | None = None) -> str:
        """Ask every worker to restart its instance of ``key``; returns the request id."""
        request = uuid.uuid4().hex[:12]
        await self._put(
            RESTART + key,
            {"id": request, "at": time.time(), "by": by or requester(), "broken_only": broken_only},
        )
        return request

    async def publish_details(self, key: str, details: dict[str, Any]) -> None:
        """Record a pipeline's details (for ``etl show``) unless the table has them already."""
        current = {k: v for k, v in (self.table.details.get(key) or {}).items() if k != "_offset"}
        if current == details or self.log is None:
            self.table.details[key] = details
            return
        await self.log.put(PIPELINE + key, details, seen=False)

    async def put_connector(self, name: str, record: dict[str, Any] | None) -> None:
        """Create, replace or (None) delete an API connector; returns once applied here."""
        await self._put(CONNECTOR + name, record)

    async def forget_details(self, key: str) -> None:
        """Delete a pipeline's details (it runs nowhere any more)."""
        if self.log is None:
            self.table.details.pop(key, None)
            return
        await self.log.put(PIPELINE + key, None, seen=False)

    # ---- heartbeat -------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        interval = self.settings.control.heartbeat_seconds
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat not written error=%r", str(exc))
            await asyncio.sleep(interval)

    async def beat(self) -> None:
        """Write this worker's heartbeat now."""
        assert self.heartbeat is not None and self.worker_id
        record = {**self.heartbeat(), "interval": self.settings.control.heartbeat_seconds}
        record["at"] = time.time()
        if self.log is None:
            self._on_entry(Entry(WORKER + self.worker_id, record, -1, record["at"]))
            return
        await self.log.put(WORKER + self.worker_id, record, seen=False)


def migrate_pause_file(settings: ETLSettings) -> list[str]:
    """Pipelines paused in a ``data_dir/paused.json`` of an earlier version (then renamed)."""
    path = Path(settings.data_dir) / "paused.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    paused = data.get("paused") if isinstance(data, dict) else None
    keys = sorted(str(k) for k in paused) if isinstance(paused, dict) else []
    try:
        path.rename(path.with_suffix(".json.migrated"))
    except OSError:
        pass
    return keys
