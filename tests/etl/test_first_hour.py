"""What a new user runs in the first hour, and what they see: taken ports, mistyped
options, an unreachable broker, a missing extra, headers, dead letters, hot reload."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl.testing.kafka import create_topic, produce
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, suffix_transform, write_config
from tests.etl.test_cli import etl


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_worker_on_a_taken_web_port_says_so_in_one_line(tmp_path: Path, taken_port: int) -> None:
    (tmp_path / "etl.yaml").write_text(f"web: {{port: {taken_port}}}\n")
    result = etl("worker", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"etl: web.port {taken_port} on 127.0.0.1 is in use")
    assert "ETL_WEB__PORT" in lines[0]


def test_a_mistyped_option_names_the_right_one(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text(
        "kafka: {bootstrap_server: 'x:1'}\nweb: {prot: 1}\n"
        "sinks: [{name: a, type: http, url: 'http://x', topics: [t], batch_sze: 3}]\n"
    )
    result = etl("worker", cwd=tmp_path)
    assert result.returncode == 2
    assert "kafka.bootstrap_server: unknown option; did you mean 'bootstrap_servers'?" in (
        result.stderr
    )
    assert "web.prot: unknown option; did you mean 'port'?" in result.stderr
    assert "sinks[0].batch_sze: unknown option; did you mean 'batch_size'?" in result.stderr


def test_an_unreachable_broker_is_one_line_with_the_fix(tmp_path: Path) -> None:
    env = {"ETL_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{reserve_port()}"}
    commands = [["send", "t", "--value", "x"], ["consume", "t"], ["query", "t"], ["search", "t"]]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "etl.cli", *args],
            cwd=tmp_path,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    for args, run in zip(commands, runs, strict=True):
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 1, (args, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("etl: ")]
        assert len(errors) == 1, (args, stderr)
        line = errors[0]
        assert line.startswith("etl: kafka broker unreachable at 127.0.0.1:"), line
        assert line.count("KafkaConnectionError") <= 1 and "AddressFamily" not in line, line
        assert "ETL_KAFKA__BOOTSTRAP_SERVERS" in line
        if args[0] == "consume":  # no --max or --timeout: it says how it stops
            assert stderr.startswith("reading t (new messages only) until Ctrl-C; --max N")


def test_a_missing_extra_names_the_pip_of_this_environment() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from etl.plugins import plugin_factory\n"
        "try:\n    plugin_factory('sink', 'postgres')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert f"{sys.executable} -m pip install 'faust-etl[postgres]'" in out


def test_log_level_warning_keeps_the_root_logger_off_debug(tmp_path: Path) -> None:
    """Faust's spinner would set the root logger to DEBUG (every aiokafka debug call
    then builds a record); the worker runs without it."""
    from etl.app import ETLWorker, create_app
    from etl.config import ETLSettings

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        for level, expected in (("warning", logging.WARNING), ("info", logging.INFO)):
            settings = ETLSettings(web={"enabled": False}, data_dir=tmp_path)
            worker = ETLWorker(create_app(settings), loglevel=level, quiet=True)
            worker._setup_logging()
            assert root.level == expected
            assert not logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
            assert worker.spinner is None
            assert all(type(h).__name__ != "SpinnerHandler" for h in root.handlers)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


@pytest.mark.kafka
def test_query_alone_shows_the_newest_messages(kafka_bootstrap: str, uid: str) -> None:
    topic = f"newest-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 1))
    asyncio.run(produce(kafka_bootstrap, topic, [(None, f"m{i}".encode()) for i in range(12)]))
    env = {"ETL_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "ETL_KAFKA__ENABLE_IDEMPOTENCE": "0"}
    result = etl("query", topic, "--limit", "3", env=env)
    assert result.returncode == 0, result.stderr
    values = [line.split()[-1] for line in result.stdout.splitlines() if "value:" in line]
    assert values == ["m9", "m10", "m11"]


@pytest.mark.kafka
def test_dead_letters_show_reason_source_and_headers(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target, dlq = f"dl-src-{uid}", f"dl-dst-{uid}", f"dl-dlq-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 1))
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"dl{uid}"},
        errors={"dead_letter_topic": dlq},
    )
    (tmp_path / "transforms" / "picky.py").write_text(
        f"SOURCE_TOPIC = {source!r}\nTARGET_TOPIC = {target!r}\nSTART_OFFSET = 'earliest'\n\n"
        "def deal_message(message):\n    return {'value': {}['missing']}\n"
    )
    env = {"ETL_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "ETL_KAFKA__ENABLE_IDEMPOTENCE": "0"}
    with WorkerProcess(config) as worker:
        worker.wait_running("picky")
        sent = etl("send", source, "--key", "k1", "--value", "v1", "--header", "trace=abc", env=env)
        assert sent.returncode == 0, sent.stderr
        worker.wait_for(lambda w: (w.pipeline("picky") or {}).get("dead_lettered") == 1)
    shown = etl("deadletters", "picky", "-c", str(config))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"picky  stage transform  from {source}/0@0" in out
    assert "  error: KeyError: 'missing'" in out
    assert "value: v1" in out
    assert "1 dead letter(s) of picky" in out
    if "etl.exception.location" in etl("query", dlq, "--headers", env=env).stdout:
        assert f"  at:    {tmp_path / 'transforms' / 'picky.py'}:6" in out
    assert "0 dead letter(s) of other" in etl("deadletters", "other", "-c", str(config)).stdout

    # The same headers through consume, query and search.
    consumed = etl("consume", dlq, "--from-beginning", "--max", "1", "--headers", env=env)
    headers = json.loads(consumed.stdout)["headers"]
    assert headers["trace"] == "abc" and headers["etl.stage"] == "transform"
    assert headers["etl.source.offset"] == "0" and headers["etl.pipeline"] == "picky"
    queried = etl("query", dlq, "--headers", env=env).stdout
    assert "  header etl.exception.class: KeyError" in queried
    found = etl("search", dlq, "--value", "v1", "--headers", env=env).stdout
    assert "  header trace: abc" in found
    assert "header" not in etl("search", dlq, "--value", "v1", env=env).stdout


@pytest.mark.serial  # saves 0.4 s apart inside a 1.5 s quiet period
@pytest.mark.kafka
def test_a_new_file_saved_three_times_joins_once(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source = f"new-src-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 1))
    config = write_config(tmp_path, kafka_bootstrap, kafka={"group_prefix": f"nf{uid}"})
    with WorkerProcess(config) as worker:
        worker.wait_for(lambda w: "watching transforms" in w.log(), what="watcher")
        path = tmp_path / "transforms" / "mine.py"
        for step in range(3):  # a user writing the file: each save changes the target
            path.write_text(suffix_transform(source, f"new-dst-{uid}-{step}", "-x"))
            time.sleep(0.4)
        saved = time.monotonic()
        worker.wait_running("mine", timeout=30)
        live_after = time.monotonic() - saved
        assert worker.pipeline("mine")["target"] == f"new-dst-{uid}-2"
        log = worker.log()
    assert log.count("transform added") == 1 and "transform restarting" not in log
    assert live_after < 10, f"{live_after:.1f}s from the last save to running"


def test_render_a_template_with_a_list_param(tmp_path: Path) -> None:
    out = tmp_path / "users.py"
    args = ["templates", "render", "mask_fields", "-s", "users", "-t", "users-masked"]
    result = etl(*args, "-p", "names=email,phone", "-o", str(out))
    assert result.returncode == 0, result.stderr
    run = etl("test-transform", str(out), "--value", '{"email": "a@b.c", "phone": "1", "x": 2}')
    assert json.loads(json.loads(run.stdout)["value"]) == {
        "email": "****",
        "phone": "****",
        "x": 2,
    }
    typo = etl(*args, "-p", "name=email")
    assert typo.returncode == 2
    assert "params.name: unknown option of template 'mask_fields'; did you mean 'names'?" in (
        typo.stderr
    )
    no_topics = etl("templates", "render", "mask_fields", "-p", "names=email")
    assert "e.g. etl templates render mask_fields -s orders -t orders-clean" in no_topics.stderr


def test_make_run_reinstalls_only_when_the_dependencies_change(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    stamp = venv / ".installed-run"
    stamp.touch()

    def planned() -> str:
        argv = ["make", "-n", "-C", str(root), "run", f"VENV={venv}"]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    assert "pip install" not in planned()
    os.utime(stamp, (0, 0))  # older than pyproject.toml: a dependency changed
    assert "pip install" in planned()
