"""Connectors as files in `connectors/`, applied by a real worker while it runs.

A new file starts the sink; a batching edit is applied in place (same instance,
same partitions); another edit restarts it on the new configuration with nothing
lost or doubled; a broken edit keeps the running version and names file, line and
field; a deleted file stops it after committing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl.testing import waits
from etl.testing.kafka import create_topic, produce
from etl.testing.worker import WorkerProcess, write_config

pytestmark = pytest.mark.kafka


def lines_under(root: Path) -> Counter[tuple[str, int, int]]:
    """(topic, partition, offset) of every exported line below ``root`` (repeats counted)."""
    seen: Counter[tuple[str, int, int]] = Counter()
    for path in root.rglob("partition_*"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            seen[(record["topic"], record["partition"], record["offset"])] += 1
    return seen


def archive(topic: str, store: Path, **extra: Any) -> dict[str, Any]:
    """An object-store sink of ``topic`` into the directory ``store``, flushing fast."""
    return {
        "type": "object_store",
        "kind": "sink",
        "topics": [topic],
        "url": f"file://{store}",
        "start_offset": "earliest",
        "batch_window_minutes": 0.01,
        **extra,
    }


def wait_until(predicate: Any, worker: WorkerProcess, what: str, timeout: float = 60) -> Any:
    return waits.wait_until(predicate, what, timeout, worker=worker)


def test_files_start_reconfigure_restart_report_and_stop(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"cf-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    store = tmp_path / "store"
    config = write_config(tmp_path, kafka_bootstrap, connectors_dir=str(tmp_path / "connectors"))
    connectors = tmp_path / "connectors"
    connectors.mkdir()
    sink = archive(topic, store, batch_size=1000)
    path = connectors / "arch.yaml"
    with WorkerProcess(config) as worker:
        asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(100)]))
        path.write_text(yaml.safe_dump(sink))
        worker.wait_running("arch")
        wait_until(lambda: sum(lines_under(store).values()) == 100, worker, "100 lines")
        first = worker.pipeline("arch") or {}

        # Batching only: in place, the same instance keeps its partitions.
        path.write_text(yaml.safe_dump({**sink, "batch_size": 50}))
        wait_until(lambda: "reconfigured in place" in worker.log(), worker, "in-place edit")
        again = worker.pipeline("arch") or {}
        assert again["started_at"] == first["started_at"]
        assert sorted(again["partitions"]) == sorted(first["partitions"])

        # Another sink option: the destination is reopened, the group kept.
        sink = {**sink, "batch_size": 50, "batch_window_minutes": 0.02}
        path.write_text(yaml.safe_dump(sink))
        wait_until(lambda: "destination reopened" in worker.log(), worker, "reopened")
        assert (worker.pipeline("arch") or {})["started_at"] == first["started_at"]
        asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(100, 150)]))
        wait_until(lambda: sum(lines_under(store).values()) == 150, worker, "150 lines")
        assert set(lines_under(store).values()) == {1}

        # Its topics: a restart on the new configuration; nothing lost or doubled.
        second = f"cf2-{uid}"
        asyncio.run(create_topic(kafka_bootstrap, second, 1))
        sink = {**sink, "topics": [topic, second]}
        path.write_text(yaml.safe_dump(sink))

        def restarted() -> bool:
            item = worker.pipeline("arch") or {}
            return (
                item.get("started_at", 0) > first["started_at"]
                and len(item.get("partitions") or {}) == 3
            )

        wait_until(restarted, worker, "restarted on both topics")
        asyncio.run(produce(kafka_bootstrap, second, [(f"k{i}", f"w{i}") for i in range(5)]))
        wait_until(lambda: sum(lines_under(store).values()) == 155, worker, "155 lines")
        assert set(lines_under(store).values()) == {1}

        # A broken edit: reported with file, line and field; the running version stays.
        broken = yaml.safe_dump(sink)
        path.write_text(broken + "bogus_option: 1\n")
        line = len(broken.splitlines()) + 1
        item = wait_until(
            lambda: (i := worker.pipeline("arch") or {}).get("error") and i, worker, "the error"
        )
        assert f"arch.yaml:{line}" in item["error"] and "bogus_option" in item["error"]
        assert item["state"] == "running"
        asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(150, 160)]))
        wait_until(lambda: sum(lines_under(store).values()) == 165, worker, "165 lines")

        # Deleted: stopped after committing.
        path.unlink()
        wait_until(lambda: worker.pipeline("arch") is None, worker, "the sink gone")
    assert set(lines_under(store).values()) == {1} and sum(lines_under(store).values()) == 165
    assert "connector removed, stopping connector=arch" in worker.log()
