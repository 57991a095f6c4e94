"""The function sink calling a Python callable named by import path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from etl.config import validate_plugin
from etl.testing.kafka import create_topic, read_all
from sinks.http.sink import HttpSinkPipeline
from tests.sinks_http.test_http import http_config
from tests.sinks_object_store.harness import (
    produce_records,
    running,
    sink_settings,
    wait_until,
)

HANDLERS = """
import asyncio

received = []
calls = 0


def collect(messages):
    received.extend(messages)


async def collect_async(messages):
    await asyncio.sleep(0)
    received.extend(messages)


def flaky(messages):
    global calls
    calls += 1
    if calls <= 2:
        raise ConnectionError("function not reachable yet")
    received.extend(messages)


def refuse_odd(messages):
    if any(m["offset"] % 2 for m in messages):
        raise ValueError("odd offsets are not welcome")
    received.extend(messages)
"""


def handlers(tmp_path: Path, uid: str) -> str:
    """Write the handler module next to the (would-be) etl.yaml; return its module name."""
    name = f"handlers_{uid}"
    (tmp_path / f"{name}.py").write_text(HANDLERS)
    return name


async def run(
    tmp_path: Path, bootstrap: str, uid: str, function: str, count: int, **options: Any
) -> tuple[Any, Any]:
    topic = f"fn-{uid}"
    await create_topic(bootstrap, topic, 1)
    await produce_records(
        bootstrap, topic, ((b"k%d" % i, b"v%d" % i, 0, None) for i in range(count))
    )
    module = handlers(tmp_path, uid)
    settings = sink_settings(tmp_path, bootstrap, uid)
    settings.config_path = tmp_path / "etl.yaml"
    config = http_config(uid, topic, None, callable=f"{module}:{function}", **options)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(
            lambda: pipeline.status.produced + pipeline.status.dead_lettered == count,
            pipeline=pipeline,
            what="all handled",
        )
    return sys.modules[module], pipeline


@pytest.mark.kafka
@pytest.mark.parametrize("function", ["collect", "collect_async"])
async def test_callable_gets_batches_of_messages(
    tmp_path: Path, kafka_bootstrap: str, uid: str, function: str
) -> None:
    module, _ = await run(tmp_path, kafka_bootstrap, uid, function, 30, batch_size=7)
    assert [m["offset"] for m in module.received] == list(range(30))
    assert module.received[0]["value"] == "v0" and module.received[0]["key"] == "k0"


@pytest.mark.kafka
@pytest.mark.parametrize(
    "options",
    [
        {"retries": 2},  # two failed attempts, then delivered within the retries
        {"retries": 1, "on_unreachable": "retry"},  # the batch waits beyond the retries
    ],
)
async def test_callable_connection_errors_are_retried(
    tmp_path: Path, kafka_bootstrap: str, uid: str, options: dict[str, Any]
) -> None:
    module, pipeline = await run(tmp_path, kafka_bootstrap, uid, "flaky", 5, **options)
    assert module.calls == 3 and [m["offset"] for m in module.received] == list(range(5))
    assert pipeline.status.dead_lettered == 0


@pytest.mark.kafka
async def test_callable_errors_dead_letter_the_batch(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    module, _ = await run(tmp_path, kafka_bootstrap, uid, "refuse_odd", 4, batch_size=1)
    assert [m["offset"] for m in module.received] == [0, 2]
    dead = await read_all(kafka_bootstrap, f"dlq-{uid}")
    assert [r.value for r in dead] == [b"v1", b"v3"]
    headers = dict(dead[0].headers)
    assert headers["etl.exception.class"] == b"ValueError"


@pytest.mark.kafka
async def test_unimportable_callable_fails_the_start_naming_it(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"fn-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    config = http_config(uid, topic, None, callable="no_such_module_xyz:handle")
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: pipeline.status.state == "failed", what="start failure")
    assert "callable 'no_such_module_xyz:handle' cannot be imported" in (
        pipeline.status.error or ""
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "set exactly one of url and callable"),
        ({"url": "http://x", "callable": "m:f"}, "set exactly one of url and callable"),
        ({"url": "ftp://x"}, "sinks[0].url: Value error, must be an http"),
        (
            {"callable": "module.function"},
            "sinks[0].callable: Value error, must be 'package.module:function'",
        ),
        (
            {"url": "http://x", "batch_size": 5001},
            "sinks[0].batch_size: Input should be less than or equal to 5000",
        ),
        (
            {"url": "http://x", "retries": 0},
            "sinks[0].retries: Input should be greater than or equal to 1",
        ),
        (
            {"url": "http://x", "retries": 4},
            "sinks[0].retries: Input should be less than or equal to 3",
        ),
        (
            {"url": "http://x", "send_mode": "fire"},
            "sinks[0].send_mode: Input should be 'async' or 'sync'",
        ),
        ({"url": "http://x", "headers": {"Bad Name": "x"}}, "invalid header name(s): 'Bad Name'"),
        (
            {"url": "http://x", "send_mode": "sync", "max_in_flight": 2},
            "max_in_flight above 1 needs send_mode async",
        ),
        (
            {"url": "http://x", "on_unreachable": "wait"},
            "sinks[0].on_unreachable: Input should be 'dead_letter' or 'retry'",
        ),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], problem: str) -> None:
    raw = {"name": "fn", "type": "http", "topics": ["t"], **options}
    model, problems = validate_plugin("sink", raw, "sinks[0]")
    assert model is None
    assert any(problem.replace("Value error, ", "") in line for line in problems), problems
