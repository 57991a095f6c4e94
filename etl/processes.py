"""``etl worker --processes N``: N worker processes in the same consumer groups, supervised.

Python runs one thread of Python at a time, so one worker process uses about one
core whatever the machine has. N processes started from the same configuration
join the same consumer groups, and Kafka spreads every pipeline's partitions
over them: the documents' "consumer concurrency" (docs/transforms.md).

Rules kept here:

* each child is a plain ``etl worker`` (it watches ``transforms/`` itself, so hot
  reload works in every process), with web port ``web.port + i`` and its own
  ``<data_dir>/process-<i>`` for status files;
* a child that exits while the supervisor is not stopping is logged and started
  again, with a back-off that grows while it keeps failing quickly;
* SIGTERM or Ctrl-C stops every child (each commits what it finished) and waits
  for them; one that has not stopped after ``STOP_TIMEOUT_S`` is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from etl.config import ETLSettings

log = logging.getLogger("etl.processes")

STOP_TIMEOUT_S = 30.0
#: A child that ran at least this long before exiting starts again at once.
HEALTHY_AFTER_S = 30.0


class ProcessSupervisor:
    """Starts, restarts and stops the worker processes of one configuration."""

    def __init__(self, settings: ETLSettings, count: int, loglevel: str | None = None) -> None:
        self.settings = settings
        self.count = count
        self.loglevel = loglevel
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.stopping = False

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "etl.cli", "worker"]
        if self.settings.config_path is not None:
            argv += ["--config", str(self.settings.config_path)]
        if self.loglevel:
            argv += ["--loglevel", self.loglevel]
        return argv

    def env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env["ETL_PROCESSES"] = "1"
        env["ETL_PROCESS_INDEX"] = str(index)
        env["ETL_DATA_DIR"] = str(Path(self.settings.data_dir) / f"process-{index}")
        if self.settings.web.enabled:
            port = self.settings.web.port
            env["ETL_WEB__PORT"] = str(port + index if port else 0)
        return env

    def start(self, index: int) -> None:
        child = subprocess.Popen(self.argv(), env=self.env(index))
        self.children[index] = child
        self.started_at[index] = time.monotonic()
        log.info("worker process started index=%d pid=%d", index, child.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for index in range(self.count):
            self.start(index)
        due: dict[int, float] = {}
        while not self.stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for index, child in list(self.children.items()):
                code = child.poll()
                if code is None or index in due:
                    continue
                ran = now - self.started_at[index]
                delay = (
                    0.0 if ran >= HEALTHY_AFTER_S else min(30.0, self.backoff.get(index, 0.5) * 2)
                )
                self.backoff[index] = delay or 0.5
                log.error(
                    "worker process exited, restarting index=%d pid=%d code=%d ran=%.1fs "
                    "restart_in=%.1fs",
                    index,
                    child.pid,
                    code,
                    ran,
                    delay,
                )
                due[index] = now + delay
            for index, when in list(due.items()):
                if now >= when and not self.stopping:
                    del due[index]
                    self.start(index)
        return self.stop()

    def stop(self) -> int:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for index, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process did not stop, killing index=%d pid=%d", index, child.pid)
                child.kill()
                child.wait()
        log.info("worker processes stopped count=%d", len(self.children))
        return 0
