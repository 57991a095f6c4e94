"""The HTTP sink against a real local HTTP server that answers 200, 429, 500 and 400 on cue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from etl.testing.kafka import create_topic, read_all
from etl.testing.ports import reserve_port
from sinks.http.config import HttpSinkConfig
from sinks.http.sink import HttpSinkPipeline
from tests.sinks_http.conftest import ScriptedServer
from tests.sinks_object_store.harness import (
    produce_records,
    running,
    sink_config,
    sink_settings,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.kafka

TOKEN = "Bearer s3cr3t-t0ken-value"  # noqa: S105 - a test credential


def http_config(uid: str, topic: str, url: str | None, **options: Any) -> HttpSinkConfig:
    """A config of the sink under test: ``url``, or a ``callable`` among ``options``."""
    options = {
        **({"url": url} if url else {}),
        "linger_ms": 100,
        "retry_backoff_ms": 20,
        "on_error": "continue",
        **options,
    }
    return sink_config(HttpSinkConfig, "http", f"http-{uid}", topic, **options)


async def produce_values(
    bootstrap: str, topic: str, values: list[bytes], partitions: int = 1
) -> None:
    await create_topic(bootstrap, topic, partitions)
    await produce_records(
        bootstrap, topic, ((b"k%d" % i, v, i % partitions, 1000 + i) for i, v in enumerate(values))
    )


async def test_batches_of_exported_messages_with_headers(
    tmp_path: Path, kafka_bootstrap: str, uid: str, http_server: ScriptedServer
) -> None:
    topic = f"fn-{uid}"
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(45)])
    config = http_config(uid, topic, http_server.url, auth_token=TOKEN, headers={"X-Source": "etl"})
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: len(http_server.delivered()) == 45, pipeline=pipeline, what="45")
    messages = http_server.delivered()
    assert [m["offset"] for m in messages] == list(range(45)), "in order, once each"
    assert all(len(r.messages) <= 20 for r in http_server.requests), "batch_size 20 by default"
    assert messages[3] == {
        "key": "k3",
        "offset": 3,
        "overflowFlag": False,
        "partition": 0,
        "timestamp": 1003,
        "topic": topic,
        "value": "v3",
        "valueSize": 2,
    }
    headers = {k.lower(): v for k, v in http_server.requests[0].headers.items()}
    assert headers["authorization"] == TOKEN
    assert headers["x-source"] == "etl"
    assert headers["content-type"] == "application/json"
    assert http_server.requests[0].path == "/ingest"


async def test_429_and_5xx_are_retried_with_backoff(
    tmp_path: Path, kafka_bootstrap: str, uid: str, http_server: ScriptedServer
) -> None:
    topic = f"retry-{uid}"
    http_server.script = [(429, {"Retry-After": "0"}, "slow down"), 503]
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(5)])
    config = http_config(uid, topic, http_server.url, retries=2)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: len(http_server.delivered()) == 5, pipeline=pipeline, what="5")
        assert pipeline.status.dead_lettered == 0
    assert [r.status for r in http_server.requests] == [429, 503, 200]
    assert [m["offset"] for m in http_server.delivered()] == list(range(5))


@pytest.mark.parametrize(
    ("delay", "failure"),
    [
        (0.0, "answered 503"),
        # The documents (003_660b7a57af9440c3.txt, line 2150): retries, then the dead-letter
        # topic, for a request that never gets an answer too: it must not block the sink.
        (2.0, "ReadTimeout"),
    ],
)
async def test_failures_after_the_retries_go_to_the_dead_letter_topic(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    http_server: ScriptedServer,
    delay: float,
    failure: str,
) -> None:
    topic = f"dead-{uid}"
    http_server.script = [500, 502, 503]  # the first request and both retries fail
    http_server.delays = [delay] * 3  # (or time out: the client waits 0.3 s)
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(8)])
    config = http_config(uid, topic, http_server.url, retries=2, batch_size=4, timeout_seconds=0.3)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: len(http_server.delivered()) == 4, pipeline=pipeline, what="rest")
        await wait_until(lambda: pipeline.status.dead_lettered == 4, what="dead letters")
    assert [m["offset"] for m in http_server.delivered()] == [4, 5, 6, 7]
    dead = await read_all(kafka_bootstrap, f"dlq-{uid}")
    assert [(r.key, r.value) for r in dead] == [(b"k%d" % i, b"v%d" % i) for i in range(4)]
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["etl.stage"] == "sink"
    assert failure in headers["etl.exception.message"]
    assert "after 2 retries" in headers["etl.exception.message"]


async def test_400_is_not_retried_and_the_token_stays_secret(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    http_server: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"bad-{uid}"
    http_server.script = [(400, {}, f"rejected, you sent {TOKEN}")]
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(6)])
    config = http_config(uid, topic, http_server.url, batch_size=3, auth_token=TOKEN)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    caplog.set_level(logging.DEBUG)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: len(http_server.delivered()) == 3, pipeline=pipeline, what="rest")
        await wait_until(lambda: pipeline.status.dead_lettered == 3, what="dead letters")
    assert [r.status for r in http_server.requests] == [400, 200], "no retry of a 400"
    dead = await read_all(kafka_bootstrap, f"dlq-{uid}")
    message = dict(dead[0].headers)["etl.exception.message"].decode()
    assert "answered 400" in message and "***" in message
    assert TOKEN not in message and TOKEN not in caplog.text


async def test_stop_policy_halts_before_the_rejected_batch(
    tmp_path: Path, kafka_bootstrap: str, uid: str, http_server: ScriptedServer
) -> None:
    topic = f"stop-{uid}"
    http_server.script = [200, 400]
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(6)])
    config = http_config(uid, topic, http_server.url, batch_size=2, on_error="stop")
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: pipeline.status.state == "halted", what="halted")
        committed = pipeline.status.partitions[f"{topic}/0"].committed
    assert committed == 2
    assert [m["offset"] for m in http_server.delivered()] == [0, 1]
    assert len(http_server.requests) == 2, "nothing sent after the rejected request"


async def test_oversize_messages(
    tmp_path: Path, kafka_bootstrap: str, uid: str, http_server: ScriptedServer
) -> None:
    topic = f"big-{uid}"
    big = b"B" * (200 * 1024)
    values = [b"s" * 10_000 for _ in range(15)] + [big] + [b"t%d" % i for i in range(3)]
    await produce_values(kafka_bootstrap, topic, values)
    config = http_config(uid, topic, http_server.url)  # async: 128 KB per request
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: len(http_server.delivered()) == 19, pipeline=pipeline, what="19")
    assert all(len(r.body) <= 128 * 1024 for r in http_server.requests)
    sizes = [len(r.messages) for r in http_server.requests]
    assert sizes == [12, 3, 1, 3], "aggregated up to the limit; the big one alone"
    overflow = http_server.requests[2].messages[0]
    assert overflow["offset"] == 15 and overflow["overflowFlag"] is True
    assert "value" not in overflow and overflow["valueSize"] == len(big)
    assert [m["offset"] for m in http_server.delivered()] == list(range(19))

    # sync mode: 6 MB per request, so the big message goes with its value.
    http_server.requests.clear()
    sync = http_config(uid + "s", topic, http_server.url, send_mode="sync")
    async with running(
        HttpSinkPipeline, sync, sink_settings(tmp_path, kafka_bootstrap, uid + "s")
    ) as p:
        await wait_until(lambda: len(http_server.delivered()) == 19, pipeline=p, what="19 sync")
    delivered = http_server.delivered()
    assert delivered[15]["value"] == big.decode() and delivered[15]["overflowFlag"] is False


async def test_endpoint_down_with_on_unreachable_retry_waits_without_loss(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"down-{uid}"
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(10)])
    server = ScriptedServer(reserve_port())
    config = http_config(uid, topic, server.url, retry_backoff_max_ms=200, on_unreachable="retry")
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(
            lambda: "retrying" in (pipeline.status.error or ""), what="connection refused"
        )
        assert pipeline.status.partitions[f"{topic}/0"].committed in (None, 0)
        server.start()
        try:
            await wait_until(lambda: len(server.delivered()) == 10, pipeline=pipeline, what="10")
        finally:
            server.stop()
    assert [m["offset"] for m in server.delivered()] == list(range(10))
    assert pipeline.status.dead_lettered == 0


async def test_refused_connections_are_failed_attempts_then_dead_letters(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    topic = f"refused-{uid}"
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(3)])
    config = http_config(uid, topic, f"http://127.0.0.1:{reserve_port()}/x", retries=1)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: pipeline.status.dead_lettered == 3, what="dead letters")
        await wait_until(
            lambda: pipeline.status.partitions[f"{topic}/0"].committed == 3, what="committed"
        )
    dead = await read_all(kafka_bootstrap, f"dlq-{uid}")
    assert [r.value for r in dead] == [b"v0", b"v1", b"v2"]
    assert "ConnectError" in dict(dead[0].headers)["etl.exception.message"].decode()


async def test_async_mode_keeps_requests_open_and_commits_in_order(
    tmp_path: Path, kafka_bootstrap: str, uid: str, http_server: ScriptedServer
) -> None:
    topic = f"inflight-{uid}"
    http_server.default_delay = 0.3
    http_server.script = [200, 503]  # one request of the first flush is retried
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(120)])
    config = http_config(uid, topic, http_server.url, batch_size=10, max_in_flight=4)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    seen: list[int] = []

    def committed_only_what_was_answered() -> bool:
        committed = pipeline.status.partitions.get(f"{topic}/0")
        mark = (committed.committed if committed else None) or 0
        answered = {m["offset"] for m in http_server.delivered()}
        assert set(range(mark)) <= answered, f"offset {mark} committed before its answers"
        assert not seen or mark >= seen[-1], "commits go forward"
        seen.append(mark)
        return mark == 120

    async with running(HttpSinkPipeline, config, settings) as pipeline:
        await wait_until(committed_only_what_was_answered, pipeline=pipeline, what="120 committed")
    offsets = [m["offset"] for m in http_server.delivered()]
    assert sorted(offsets) == list(range(120)), "every record exactly once"
    assert http_server.most_open >= 3, f"at most {http_server.most_open} request(s) open at once"
    assert pipeline.status.dead_lettered == 0


async def test_tls_is_verified(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    https_server: tuple[ScriptedServer, Path],
) -> None:
    server, cert = https_server
    topic = f"tls-{uid}"
    await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(3)])
    untrusted = http_config(uid, topic, server.url, max_retries=1)
    async with running(
        HttpSinkPipeline, untrusted, sink_settings(tmp_path, kafka_bootstrap, uid)
    ) as p:
        await wait_until(lambda: p.status.state == "failed", what="gave up")
        assert "CERTIFICATE_VERIFY_FAILED" in (p.status.error or "")
        assert p.status.partitions[f"{topic}/0"].committed in (None, 0)
    assert server.delivered() == []
    trusted = http_config(uid, topic, server.url, ca_bundle=str(cert))
    again = sink_settings(tmp_path, kafka_bootstrap, uid + "t")
    async with running(HttpSinkPipeline, trusted, again) as p:
        await wait_until(lambda: len(server.delivered()) == 3, pipeline=p, what="3 over TLS")


def test_worker_posts_what_kcat_produced(
    tmp_path: Path, kafka_bootstrap: str, uid: str, http_server: ScriptedServer
) -> None:
    """The sink configured in etl.yaml, in a real ``etl worker``, fed by kcat."""
    import asyncio

    from etl.testing.kcat import kcat_produce
    from etl.testing.worker import WorkerProcess

    topic = f"kcat-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 2))
    http_server.script = [500]
    name = f"fn-{uid}"
    sink = {
        "name": name,
        "type": "http",
        "topics": [topic],
        "url": http_server.url,
        "auth_token": "${FN_TOKEN}",
        "retry_backoff_ms": 20,
        "on_error": "continue",
    }
    config = worker_config(tmp_path, kafka_bootstrap, uid, [sink])
    with WorkerProcess(config, env={"FN_TOKEN": TOKEN}) as worker:
        worker.wait_running(name)
        kcat_produce(kafka_bootstrap, topic, [f"k{i % 5}\tv{i}" for i in range(60)])
        worker.wait_for(lambda _w: len(http_server.delivered()) == 60, 60, "60 delivered")
    messages = http_server.delivered()
    assert sorted(int(m["value"][1:]) for m in messages) == list(range(60))
    for key in {m["key"] for m in messages}:
        values = [int(m["value"][1:]) for m in messages if m["key"] == key]
        assert values == sorted(values), "per-key order kept"
    assert all(r.headers.get("Authorization") == TOKEN for r in http_server.requests)
    assert TOKEN not in worker.log()
