"""A real `etl worker` with its web server on, running one transform, for the ops tests."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etl.embedded import free_port
from etl.testing.kafka import create_topic
from etl.testing.worker import WorkerProcess, write_config

SUFFIX = """
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"

def deal_message(message):
    message["value"] = message["value"] + "-out"
    return message
"""


@dataclass
class OpsWorker:
    """The worker under test, its topics and its HTTP address."""

    config: Path
    source: str
    target: str
    url: str
    process: WorkerProcess

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            body = response.read().decode()
        return json.loads(body) if path != "/metrics" else body

    def pipeline(self, name: str = "suffix") -> dict[str, Any]:
        for item in self.get("/etl/status/")["pipelines"]:
            if item["name"] == name:
                return dict(item)
        return {}

    def restart(self) -> None:
        self.process.stop()
        self.process = WorkerProcess(self.config, name="worker-2").start()


@pytest.fixture
def ops_worker(tmp_path: Path, kafka_bootstrap: str, uid: str) -> Iterator[OpsWorker]:
    """A worker with web on (free port) running transform ``suffix``: source (2 partitions)
    -> target; stopped at the end."""
    source, target = f"ops-src-{uid}", f"ops-dst-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 2))
    transforms = tmp_path / "transforms"
    transforms.mkdir(parents=True, exist_ok=True)
    (transforms / "suffix.py").write_text(SUFFIX.format(source=source, target=target))
    port = free_port()
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"ops{uid}"},
        errors={"dead_letter_topic": f"ops-dlq-{uid}"},
        web={"enabled": True, "host": "127.0.0.1", "port": port},
    )
    worker = OpsWorker(
        config, source, target, f"http://127.0.0.1:{port}", WorkerProcess(config).start()
    )
    try:
        yield worker
    finally:
        worker.process.stop()
