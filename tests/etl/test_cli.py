"""The console-like commands: test-transform, send, consume, and `etl dev` end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.testing.ports import reserve_port

ROOT = Path(__file__).resolve().parents[2]


def etl(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_test_transform_runs_the_console_example() -> None:
    result = etl(
        "test-transform",
        str(ROOT / "transforms" / "add_suffix.py"),
        "--key",
        "demo",
        "--value",
        '{"key": "test"}',
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["key"] == "demo"
    assert out["value"] == '{"key": "test"}ValueSuffix'


def test_test_transform_reports_errors_with_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        "SOURCE_TOPIC='a'\nTARGET_TOPIC='b'\ndef deal_message(m):\n    return m['value'] + 1\n"
    )
    result = etl("test-transform", str(path), "--value", "x")
    assert result.returncode == 1
    assert f"{path}:4" in result.stderr
    assert "TypeError" in result.stderr
    filtered = tmp_path / "drop.py"
    filtered.write_text("SOURCE_TOPIC='a'\nTARGET_TOPIC='b'\ndef deal_message(m):\n  return None\n")
    result = etl("test-transform", str(filtered), "--value", "x")
    assert result.returncode == 0 and "filtered out" in result.stdout


@pytest.mark.kafka
def test_send_and_consume(kafka_bootstrap: str, uid: str) -> None:
    env = {
        "ETL_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ETL_KAFKA__ENABLE_IDEMPOTENCE": "false",
    }
    topic = f"cli-{uid}"
    sent = etl(
        "send", topic, "--key", "K", "--value", "V", "--partition", "0", "--header", "h=1", env=env
    )
    assert sent.returncode == 0, sent.stderr
    assert f"sent to {topic} partition 0 offset 0" in sent.stdout
    got = etl("consume", topic, "--from-beginning", "--max", "1", env=env)
    assert got.returncode == 0, got.stderr
    line = json.loads(got.stdout)
    assert (line["key"], line["value"], line["partition"]) == ("K", "V", 0)


@pytest.mark.kafka
def test_dev_starts_an_embedded_broker_and_runs_the_examples(tmp_path: Path) -> None:
    """An etl.yaml without a broker address still gets the embedded broker; a taken web
    port moves to a free one; `etl status`/`pause` find this worker, not the port's owner."""
    shutil.copytree(ROOT / "transforms", tmp_path / "transforms")
    port = reserve_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    web_port = taken.getsockname()[1]
    (tmp_path / "etl.yaml").write_text(f"web: {{port: {web_port}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "etl.cli", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client_env = {
            "ETL_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "ETL_KAFKA__ENABLE_IDEMPOTENCE": "false",
        }
        deadline = time.monotonic() + 90
        status_path = tmp_path / ".etl-data" / "status.json"
        while time.monotonic() < deadline:
            try:
                status = json.loads(status_path.read_text())
                if (
                    all(p["state"] == "running" and p["partitions"] for p in status["pipelines"])
                    and len(status["pipelines"]) == 3
                ):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        else:
            raise AssertionError((tmp_path / "dev.log").read_text())
        sent = etl(
            "send",
            "orders",
            "--key",
            "demo",
            "--value",
            '{"key": "test"}',
            env=client_env,
            cwd=tmp_path,
        )
        assert sent.returncode == 0, sent.stderr
        got = etl(
            "consume",
            "orders-suffixed",
            "--from-beginning",
            "--max",
            "1",
            "--timeout",
            "30",
            env=client_env,
            cwd=tmp_path,
        )
        assert json.loads(got.stdout)["value"] == '{"key": "test"}ValueSuffix'
        worker = f"worker pid {dev.pid} of {tmp_path / '.etl-data'}"
        shown = etl("status", cwd=tmp_path, env={"ETL_WORKER_URL": ""})
        assert shown.returncode == 0, shown.stderr
        # The status table wraps its long header line (the data dir's path) at a space.
        assert worker in " ".join(shown.stdout.split()) and "add_suffix" in shown.stdout
        paused = etl("pause", "add_suffix", cwd=tmp_path, env={"ETL_WORKER_URL": ""})
        assert paused.returncode == 0, paused.stderr
        assert f"paused transform:add_suffix on every worker ({worker} at http" in paused.stdout
        resumed = etl("resume", "add_suffix", cwd=tmp_path, env={"ETL_WORKER_URL": ""})
        assert f"resumed transform:add_suffix on every worker ({worker} at http" in resumed.stdout
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(timeout=30)
        log.close()
        taken.close()
    text = (tmp_path / "dev.log").read_text()
    assert f"embedded broker (tansu, in memory) on 127.0.0.1:{port}" in text
    assert f"web port {web_port} is in use; this worker's web server is on port" in text
    assert "etl send orders --key demo" in text
    assert "etl consume orders-suffixed" in text
    assert not (tmp_path / ".etl-data" / "worker.json").exists(), "removed on stop"
