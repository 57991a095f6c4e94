"""A third-party package adds a sink and a source by entry points: the example of
docs/write-your-own.md is installed and run by a real worker.

pip installs it into a directory of its own that the worker's ``PYTHONPATH``
names, not into the venv: test processes running at the same time share the venv,
and one's uninstall would pull the package from under another's worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from etl.testing.kafka import create_topic
from etl.testing.worker import WorkerProcess, write_config

pytestmark = [pytest.mark.kafka]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "write-your-own.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)


def page_files() -> dict[str, str]:
    """The files the docs page shows, by their path in the package."""
    return dict(FILE_BLOCK.findall(PAGE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def ticker_package(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process that has the package installed."""
    root = tmp_path_factory.mktemp("etl-ticker")
    for name, text in page_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    site = tmp_path_factory.mktemp("etl-ticker-site")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(root)], check=True)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def test_the_page_shows_the_whole_package() -> None:
    assert {"pyproject.toml", "etl_ticker/sink.py", "etl_ticker/source.py"} <= set(page_files())


def test_installed_sink_and_source_run_in_a_worker(
    ticker_package: dict[str, str], tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic, out = f"ticks-{uid}", tmp_path / "ticks.txt"
    asyncio.run(create_topic(kafka_bootstrap, topic, 1))
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"t{uid}"},
        sources=[{"name": "ticks", "type": "ticker", "topic": topic, "count": 250}],
        sinks=[
            {
                "name": "ticks-file",
                "type": "lines_file",
                "topics": [topic],
                "start_offset": "earliest",
                "path": str(out),
                "linger_ms": 50,
            }
        ],
    )
    with WorkerProcess(config, env=ticker_package) as worker:
        worker.wait_for(
            lambda _w: out.exists() and out.read_text().count("\n") >= 250, 60, "ticks in file"
        )
        assert (worker.pipeline("ticks") or {}).get("state") == "finished"
    assert out.read_text().splitlines() == [f"tick {i}" for i in range(250)]


def test_an_unknown_type_lists_the_installed_ones(ticker_package: dict[str, str]) -> None:
    script = (
        "from etl.plugins import get_plugin\n"
        "try:\n    get_plugin('source', 'tickr')\nexcept KeyError as e:\n    print(e)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **ticker_package},
    ).stdout
    assert "unknown source type 'tickr'; known types: mysql_binlog, object_store, ticker" in shown
