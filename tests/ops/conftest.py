"""A real `etl worker` with its web server on, running one transform, for the ops tests."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner, Result

from etl.testing import waits
from etl.testing.kafka import create_topic
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, suffix_transform, write_config


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what``."""
    return waits.wait_until(predicate, what, timeout, retry_on=(OSError, KeyError))


def total_lag(item: dict[str, Any]) -> int | None:
    lags = [p["lag"] for p in item.get("partitions", {}).values()]
    return None if not lags or None in lags else sum(lags)


@dataclass
class OpsWorker:
    """The worker under test, its topics and its HTTP address."""

    config: Path
    bootstrap: str
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

    def settled(self, end: int, lag: int) -> bool:
        """The status caught up: the partitions end at ``end`` in all, ``lag`` behind."""
        item = self.pipeline()
        ends = sum(p["end"] or 0 for p in item.get("partitions", {}).values())
        return ends == end and total_lag(item) == lag

    def send(self, start: int, count: int) -> None:
        """Messages ``m<start>`` ... to the source, one record per request: the test
        broker (tansu) reports a partition's end as the start of its last batch + 1."""

        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                for i in range(start, start + count):
                    await producer.send_and_wait(
                        self.source, f"m{i}".encode(), f"k{i % 5}".encode()
                    )
            finally:
                await producer.stop()

        asyncio.run(go())

    def cli(self, *args: str) -> Result:
        from etl.cli import main

        return CliRunner().invoke(
            main, [*args, "-c", str(self.config), "--url", self.url], catch_exceptions=False
        )

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
    (transforms / "suffix.py").write_text(suffix_transform(source, target, "-out"))
    port = reserve_port()
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"ops{uid}"},
        errors={"dead_letter_topic": f"ops-dlq-{uid}"},
        web={"enabled": True, "host": "127.0.0.1", "port": port},
    )
    worker = OpsWorker(
        config,
        kafka_bootstrap,
        source,
        target,
        f"http://127.0.0.1:{port}",
        WorkerProcess(config).start(),
    )
    try:
        worker.process.wait_running("suffix")
        yield worker
    finally:
        worker.process.stop()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """:func:`wait_until` for tests."""
    return wait_until
