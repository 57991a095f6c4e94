"""Connectors as files in `connectors/`, applied by a real worker while it runs.

A new file starts the sink; a batching edit is applied in place (same instance,
same partitions); another edit restarts it on the new configuration with nothing
lost or doubled; a broken edit keeps the running version and names file, line and
field; a deleted file stops it after committing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl.testing.kafka import create_topic, produce
from etl.testing.worker import WorkerProcess, write_config

pytestmark = pytest.mark.kafka


def lines_under(root: Path) -> Counter[tuple[int, int]]:
    """(partition, offset) of every exported line below ``root`` (repeats counted)."""
    seen: Counter[tuple[int, int]] = Counter()
    for path in root.rglob("partition_*"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            seen[(record["partition"], record["offset"])] += 1
    return seen


def wait_until(predicate: Any, worker: WorkerProcess, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker.process is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.log()[-4000:]}")


def test_files_start_reconfigure_restart_report_and_stop(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"cf-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    store = tmp_path / "store"
    config = write_config(tmp_path, kafka_bootstrap, connectors_dir=str(tmp_path / "connectors"))
    connectors = tmp_path / "connectors"
    connectors.mkdir()
    sink = {
        "type": "object_store",
        "kind": "sink",
        "topics": [topic],
        "url": f"file://{store}",
        "start_offset": "earliest",
        "batch_window_minutes": 0.01,
        "batch_size": 1000,
    }
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

        # Another option: a restart on the new configuration; nothing lost or doubled.
        path.write_text(yaml.safe_dump({**sink, "batch_size": 50, "batch_window_minutes": 0.02}))
        wait_until(
            lambda: (
                (worker.pipeline("arch") or {}).get("started_at", 0) > first["started_at"]
                and (worker.pipeline("arch") or {}).get("state") == "running"
            ),
            worker,
            "restarted",
        )
        asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(100, 150)]))
        wait_until(lambda: sum(lines_under(store).values()) == 150, worker, "150 lines")
        assert set(lines_under(store).values()) == {1}

        # A broken edit: reported with file, line and field; the running version stays.
        broken = yaml.safe_dump({**sink, "batch_size": 50, "batch_window_minutes": 0.02})
        path.write_text(broken + "bogus_option: 1\n")
        line = len(broken.splitlines()) + 1
        item = wait_until(
            lambda: (i := worker.pipeline("arch") or {}).get("error") and i, worker, "the error"
        )
        assert f"arch.yaml:{line}" in item["error"] and "bogus_option" in item["error"]
        assert item["state"] == "running"
        asyncio.run(produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(150, 160)]))
        wait_until(lambda: sum(lines_under(store).values()) == 160, worker, "160 lines")

        # Deleted: stopped after committing.
        path.unlink()
        wait_until(lambda: worker.pipeline("arch") is None, worker, "the sink gone")
    assert set(lines_under(store).values()) == {1} and len(lines_under(store)) == 160
    assert "connector removed, stopping connector=arch" in worker.log()
