"""Status, lag, pause/resume (surviving a restart), metrics: a real `etl worker` process."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner

from etl.cli import main
from etl.testing.kafka import read_all, wait_count
from etl.testing.worker import post_json

pytestmark = pytest.mark.kafka

OpsWorker = Any  # the ops_worker fixture (tests/ops/conftest.py)


def test_lag_rises_while_paused_survives_restart_and_drains_on_resume(
    ops_worker: OpsWorker, wait_until: Any
) -> None:
    worker = ops_worker
    wait_until(lambda: worker.pipeline().get("state") == "running", "HTTP status")
    worker.send(0, 20)
    wait_until(lambda: worker.settled(20, 0), "20 consumed, lag 0")

    # etl status --json over HTTP: per partition committed, end and lag.
    result = worker.cli("status", "--json")
    assert result.exit_code == 0, result.output
    item = next(p for p in json.loads(result.stdout)["pipelines"] if p["name"] == "suffix")
    assert item["state"] == "running" and item["key"] == "transform:suffix"
    assert sorted(item["partitions"]) == [f"{worker.source}/0", f"{worker.source}/1"]
    assert sum(p["end"] for p in item["partitions"].values()) == 20
    assert all(p["committed"] == p["end"] and p["lag"] == 0 for p in item["partitions"].values())

    # Pause from the CLI (HTTP); produce: lag goes up, nothing is written.
    paused = worker.cli("pause", "suffix")
    assert paused.exit_code == 0, paused.output
    assert "paused transform:suffix" in paused.stdout
    assert worker.pipeline()["state"] == "paused"
    worker.send(20, 30)
    wait_until(lambda: worker.settled(50, 30), "lag 30 while paused")
    assert worker.pipeline()["consumed"] == 20
    assert len(asyncio.run(read_all(worker.bootstrap, worker.target))) == 20

    # The metrics say the same.
    metrics = worker.get("/metrics")
    assert 'etl_messages_consumed_total{pipeline="suffix",kind="transform"} 20' in metrics
    assert 'etl_pipeline_state{pipeline="suffix",kind="transform",state="paused"} 1' in metrics
    lag_lines = [line for line in metrics.splitlines() if line.startswith("etl_consumer_lag{")]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lag_lines) == 30

    # A restart keeps it paused.
    worker.restart()
    wait_until(
        lambda: worker.pipeline().get("state") == "paused" and worker.settled(50, 30),
        "paused after restart with lag 30",
    )
    status_text = worker.cli("status")
    assert status_text.exit_code == 0
    assert "suffix" in status_text.stdout and "paused" in status_text.stdout
    assert f"{worker.source}/0" in status_text.stdout
    assert worker.pipeline()["consumed"] == 0

    # Resume: the lag drains to 0 and every message is written exactly once.
    resumed = worker.cli("resume", "transform:suffix")
    assert resumed.exit_code == 0 and "resumed transform:suffix" in resumed.stdout
    wait_until(lambda: worker.settled(50, 0), "lag back to 0")
    assert worker.pipeline()["consumed"] == 30
    records = asyncio.run(wait_count(worker.bootstrap, worker.target, 50))
    values = Counter(r.value.decode() for r in records)
    assert values == Counter(f"m{i}-out" for i in range(50))

    # After a resume, a restart starts it running.
    worker.restart()
    wait_until(lambda: worker.pipeline().get("state") == "running", "running after restart")


def test_http_api_list_detail_errors_and_watch(ops_worker: OpsWorker, wait_until: Any) -> None:
    worker = ops_worker
    worker.send(0, 10)
    wait_until(lambda: worker.pipeline().get("consumed") == 10, "10 consumed")

    listing = worker.get("/etl/pipelines/")["pipelines"]
    assert [p["key"] for p in listing] == ["transform:suffix"]
    detail = wait_until(
        lambda: (d := worker.get("/etl/pipelines/transform:suffix/"))["history"]["times"] and d,
        "a history sample",
    )
    assert detail["name"] == "suffix" and detail["target"] == worker.target
    assert set(detail["history"]["lag"]) <= {f"{worker.source}/0", f"{worker.source}/1"}
    assert detail["rate_in"] is None or detail["rate_in"] >= 0

    with pytest.raises(urllib.error.HTTPError) as caught:
        post_json(worker.url + "/etl/pipelines/nope/pause/")
    assert caught.value.code == 404
    unknown = worker.cli("pause", "nope")
    assert unknown.exit_code == 1 and "no pipeline 'nope' in this cluster" in unknown.stderr

    watch = worker.cli("status", "--watch", "--iterations", "2", "--interval", "0.2")
    assert watch.exit_code == 0 and "suffix" in watch.stdout
    lines = worker.cli("status", "--watch", "--json", "--iterations", "2", "--interval", "0.2")
    snapshots = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(snapshots) == 2 and snapshots[0]["pipelines"][0]["name"] == "suffix"

    # Another project whose configured port is this worker's: told it is not its own.
    other = worker.config.parent / "other"
    other.mkdir()
    port = worker.url.rsplit(":", 1)[1]
    (other / "etl.yaml").write_text(f"web: {{port: {port}}}\n")
    foreign = CliRunner().invoke(main, ["status", "-c", str(other / "etl.yaml")])
    assert foreign.exit_code == 0
    assert f"not this project's {other / 'transforms'}" in foreign.stderr

    # With the worker gone, `etl status` falls back to the worker's status.json.
    worker.process.stop()
    fallback = worker.cli("status", "--json")
    assert fallback.exit_code == 0
    item = json.loads(fallback.stdout)["pipelines"][0]
    assert item["name"] == "suffix" and item["consumed"] == 10
    text = worker.cli("status")
    assert "status.json" in text.stdout and "unreachable" in text.stdout
    gone = worker.cli("pause", "suffix")
    assert gone.exit_code == 1 and "unreachable" in gone.stderr


def test_lag_counts_every_waiting_message_of_batched_partitions(
    ops_worker: OpsWorker, wait_until: Any
) -> None:
    """Lag against counted messages, sent in large batches: the test broker reports a
    partition's end as the start of its last batch + 1, which would show 1,500
    waiting messages as a lag of about 1,200."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from etl.testing.kafka import produce

    worker = ops_worker
    paused = worker.cli("pause", "suffix")
    assert paused.exit_code == 0, paused.output
    for start in (0, 500, 1000):
        items = [(f"k{i % 7}", f"m{i}") for i in range(start, start + 500)]
        asyncio.run(produce(worker.bootstrap, worker.source, items))
    counted = Counter(r.partition for r in asyncio.run(read_all(worker.bootstrap, worker.source)))
    assert sum(counted.values()) == 1500

    async def reported_ends() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(worker.source, p) for p in (0, 1)]
            return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    # What the broker answers (shown, not asserted: a broker that answers right is fine).
    print("broker-reported ends", asyncio.run(reported_ends()), "counted", dict(counted))

    def lag_by_partition(item: dict[str, Any]) -> dict[int, int]:
        return {int(tp.rsplit("/", 1)[1]): p["lag"] for tp, p in item["partitions"].items()}

    wait_until(
        lambda: lag_by_partition(worker.pipeline()) == dict(counted), "lag = counted messages"
    )
    item = worker.pipeline()
    assert item["state"] == "paused" and item["lag"] == 1500
    assert sum(p["end"] for p in item["partitions"].values()) == 1500

    # Read from Kafka alone (no worker asked): the same figures.
    cluster = CliRunner().invoke(
        main, ["status", "-c", str(worker.config), "--bootstrap", worker.bootstrap, "--json"]
    )
    assert cluster.exit_code == 0, cluster.output
    alone = next(p for p in json.loads(cluster.stdout)["pipelines"] if p["name"] == "suffix")
    assert lag_by_partition(alone) == dict(counted) and alone["lag"] == 1500

    # Resume: it drains to 0, every message written once.
    resumed = worker.cli("resume", "suffix")
    assert resumed.exit_code == 0, resumed.output
    wait_until(lambda: worker.pipeline().get("lag") == 0, "lag 0 after resume", 90)
    records = asyncio.run(wait_count(worker.bootstrap, worker.target, 1500))
    assert Counter(r.value.decode() for r in records) == Counter(f"m{i}-out" for i in range(1500))
