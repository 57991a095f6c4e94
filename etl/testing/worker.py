"""Run ``etl worker`` as a real subprocess in tests: start, wait for state, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def suffix_transform(source: str, target: str, suffix: str, *, delay_s: float = 0.0) -> str:
    """Source text of a transform that appends ``suffix`` to every value.

    ``delay_s`` makes the function sleep per message, so that a test can act mid-stream.
    """
    sleep = f"    time.sleep({delay_s!r})\n" if delay_s else ""
    return (
        f"import time\n\nSOURCE_TOPIC = {source!r}\nTARGET_TOPIC = {target!r}\n"
        f'START_OFFSET = "earliest"\n\n\ndef deal_message(message):\n{sleep}'
        f'    message["value"] = message["value"] + {suffix!r}\n    return message\n'
    )


def post_json(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """POST a JSON body the way ``etl`` commands do (the worker refuses anything else)."""
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read().decode() or "null")


def write_config(directory: Path, bootstrap: str, **overrides: Any) -> Path:
    """An ``etl.yaml`` for tests: the test broker, idempotence off, web off.

    Its consumer groups and control topic carry a prefix of their own
    (``kafka.group_prefix`` unless given), so that tests sharing a broker never
    see each other's pause requests or workers.
    """
    import uuid

    config: dict[str, Any] = {
        "transforms_dir": str(directory / "transforms"),
        "data_dir": str(directory / "data"),
        "kafka": {
            "bootstrap_servers": bootstrap,
            "enable_idempotence": False,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
            "group_prefix": f"w{uuid.uuid4().hex[:8]}",
        },
        "web": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    (directory / "transforms").mkdir(parents=True, exist_ok=True)
    path = directory / "etl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class WorkerProcess:
    """``python -m etl.cli worker --config PATH`` with its log in a file."""

    def __init__(
        self,
        config: Path,
        name: str = "worker",
        env: dict[str, str] | None = None,
        faust_command: bool = False,
    ):
        self.config = config
        #: Start through ``faust -A etl.app worker`` (config from ETL_CONFIG) instead.
        self.faust_command = faust_command
        self.log_path = config.parent / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        data = yaml.safe_load(config.read_text())
        self.status_path = Path(data.get("data_dir", config.parent / ".etl-data")) / "status.json"

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, "ETL_CONFIG": str(self.config)} if self.faust_command else self.env,
            start_new_session=True,
        )
        log.close()
        return self

    def argv(self) -> list[str]:
        """The command line of the worker process."""
        if self.faust_command:
            return [sys.executable, "-m", "faust", "-A", "etl.app", "worker", "-l", "info"]
        return [sys.executable, "-m", "etl.cli", "worker", "--config", str(self.config)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def pipeline(self, name: str) -> dict[str, Any] | None:
        for item in self.status().get("pipelines", []):
            if item["name"] == name:
                return item
        return None

    def wait_for(
        self, predicate: Callable[[WorkerProcess], bool], timeout: float = 60, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log()}")
            if predicate(self):
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what or predicate}:\n{self.log()[-5000:]}")

    def wait_running(self, *names: str, timeout: float = 60) -> None:
        """Until every named pipeline is running and has partitions assigned."""

        def ready(worker: WorkerProcess) -> bool:
            for name in names:
                item = worker.pipeline(name)
                if not item or item["state"] != "running" or not item["partitions"]:
                    return False
            return True

        self.wait_for(ready, timeout, f"pipelines {names} running")

    def kill(self) -> None:
        """kill -9: no flush, no commit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (the worker commits its progress)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Stuck: its threads' stacks go to its log (faulthandler), then kill -9.
                os.kill(self.process.pid, signal.SIGUSR1)
                time.sleep(1.0)
                self.kill()
        return self.process.returncode

    def __enter__(self) -> WorkerProcess:
        # ``with WorkerProcess(...).start() as w`` must not start a second process.
        running = self.process is not None and self.process.poll() is None
        return self if running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class WebWorker:
    """A worker process with its web server on ``port``, and its HTTP API at hand."""

    config: Path
    port: int
    process: WorkerProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return post_json(self.url + path, body)

    def item(self, name: str, scope: str = "cluster") -> dict[str, Any]:
        """Pipeline ``name`` as this worker shows it: the cluster's view, or with
        ``scope="local"`` this worker's own (``{}`` while it is not listed)."""
        query = "?scope=local" if scope == "local" else ""
        for item in self.get(f"/etl/status/{query}")["pipelines"]:
            if item["name"] == name:
                return dict(item)
        return {}
