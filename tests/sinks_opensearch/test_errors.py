"""Rejected documents, busy servers, credentials, TLS and an unreachable server."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from opensearchpy import AsyncOpenSearch

from etl.runtime.status import State
from etl.testing.kafka import create_topic, produce, read_all, wait_count
from etl.testing.ports import reserve_port
from tests.sinks_opensearch.harness import (
    all_docs,
    count,
    running_sink,
    settings_for,
    sink_config,
    wait_until,
)
from tests.sinks_opensearch.proxy import SearchProxy

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch]


def _headers(record: object) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}  # type: ignore[attr-defined]


async def test_mapping_conflict_goes_to_dead_letter_while_batch_mates_land(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic, index = f"pay-{uid}", f"pay-{uid}"
    await search.indices.create(
        index=index, body={"mappings": {"properties": {"amount": {"type": "integer"}}}}
    )
    await create_topic(kafka_bootstrap, topic, 1)
    values = [json.dumps({"amount": i}) for i in range(10)]
    values[4] = json.dumps({"amount": "lots"})
    values[7] = "not json"
    await produce(kafka_bootstrap, topic, [(f"p{i}", v) for i, v in enumerate(values)])
    config = sink_config(
        f"os-{uid}", [topic], [search_url], index=index, document="value", id="key"
    )
    async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
        dead = await wait_count(kafka_bootstrap, f"dlq-{uid}", 2)
        await wait_until(lambda: _committed(pipeline, f"{topic}/0", 10), what="commit past all")
    docs = await all_docs(search, index)
    assert sorted(docs) == sorted(f"p{i}" for i in range(10) if i not in (4, 7))
    by_key = {record.key: record for record in dead}
    conflict = by_key[b"p4"]
    assert conflict.value == values[4].encode()
    headers = _headers(conflict)
    assert headers["etl.stage"] == "sink"
    assert headers["etl.source.offset"] == "4"
    message = headers["etl.exception.message"]
    assert "status 400" in message and "amount" in message and f"index={index}" in message
    assert "id=p4" in message
    assert "not JSON" in _headers(by_key[b"p7"])["etl.exception.message"]


async def _committed(pipeline: object, key: str, offset: int) -> bool:
    progress = pipeline.status.partitions.get(key)  # type: ignore[attr-defined]
    return bool(progress and progress.committed == offset)


async def test_stop_policy_halts_before_the_rejected_document(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic, index = f"strict-{uid}", f"strict-{uid}"
    await search.indices.create(
        index=index, body={"mappings": {"properties": {"n": {"type": "integer"}}}}
    )
    await create_topic(kafka_bootstrap, topic, 1)
    values = [json.dumps({"n": i}) for i in range(6)]
    values[3] = json.dumps({"n": "three"})
    await produce(kafka_bootstrap, topic, [(None, v) for v in values])
    config = sink_config(
        f"os-{uid}", [topic], [search_url], index=index, document="value", on_error="stop"
    )
    async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
        await wait_until(
            lambda: _state_is(pipeline, State.HALTED), what="pipeline halted by policy"
        )
        assert pipeline.status.partitions[f"{topic}/0"].committed == 3
        assert "status 400" in (pipeline.status.error or "")
    assert await read_all(kafka_bootstrap, f"dlq-{uid}", timeout=2) == []


async def _state_is(pipeline: object, state: State) -> bool:
    return pipeline.status.state == state  # type: ignore[attr-defined]


async def test_throttled_items_and_busy_requests_are_retried_without_duplicates(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic, index = f"busy-{uid}", f"busy-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(400)])
    async with SearchProxy(search_url, throttle_requests=4, busy_requests=1) as proxy:
        config = sink_config(
            f"os-{uid}", [topic], [proxy.url], index=index, bulk_actions=50, batch_size=200
        )
        async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
            await wait_until(lambda: _written(pipeline, 400), what="400 written")
    assert proxy.throttled_items > 0
    assert await count(search, index) == 400
    docs = await all_docs(search, index)
    assert sorted(doc["msg_body"]["value"] for doc in docs.values()) == sorted(
        f"v{i}" for i in range(400)
    )
    assert await read_all(kafka_bootstrap, f"dlq-{uid}", timeout=2) == []


async def test_a_busy_server_is_a_pause_that_never_runs_out_of_retries(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    """429s (whole requests and items) are backpressure: with max_retries 0, where one
    counted retry would fail the sink, every document lands once and the status never
    says retrying."""
    topic, index = f"429-{uid}", f"busy-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(400)])
    async with SearchProxy(search_url, throttle_requests=6, busy_requests=3) as proxy:
        config = sink_config(
            f"os-{uid}",
            [topic],
            [proxy.url],
            index=index,
            bulk_actions=50,
            batch_size=200,
            max_retries=0,
            on_error="stop",
        )
        async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
            await wait_until(lambda: _written(pipeline, 400), what="400 written")
            assert pipeline.status.state == State.RUNNING
            assert pipeline.status.error is None
    assert proxy.bulk_requests > 6 and proxy.throttled_items > 0
    docs = await all_docs(search, index)
    assert sorted(doc["msg_body"]["value"] for doc in docs.values()) == sorted(
        f"v{i}" for i in range(400)
    )
    assert await read_all(kafka_bootstrap, f"dlq-{uid}", timeout=2) == []


async def _written(pipeline: object, expected: int) -> bool:
    return getattr(pipeline, "written", 0) >= expected


async def test_wrong_password_gives_one_clear_error_without_the_secret(
    kafka_bootstrap: str, search_url: str, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"auth-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    async with SearchProxy(search_url, basic_auth=("etl", "right-secret")) as proxy:
        config = sink_config(
            f"os-{uid}", [topic], [proxy.url], username="etl", password="wrong-secret-xyz"
        )
        async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
            await wait_until(lambda: _state_is(pipeline, State.FAILED), what="start failed")
            error = pipeline.status.error or ""
    assert "refused the credentials" in error and "'etl'" in error
    assert "security_exception" in error
    assert "wrong-secret-xyz" not in error and "wrong-secret-xyz" not in caplog.text


async def test_basic_auth_and_api_key_are_sent(
    kafka_bootstrap: str, search_url: str, search: AsyncOpenSearch, uid: str
) -> None:
    topic = f"keys-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(kafka_bootstrap, topic, [(None, "hello")])
    settings = settings_for(kafka_bootstrap, uid)
    async with SearchProxy(search_url, basic_auth=("etl", "s3cret")) as proxy:
        config = sink_config(
            f"b-{uid}", [topic], [proxy.url], username="etl", password="s3cret", index=f"b-{uid}"
        )
        async with running_sink(config, settings) as pipeline:
            await wait_until(lambda: _written(pipeline, 1), what="written with basic auth")
    async with SearchProxy(search_url, api_key="aWQ6a2V5") as proxy:
        config = sink_config(f"k-{uid}", [topic], [proxy.url], api_key="id:key", index=f"k-{uid}")
        async with running_sink(config, settings) as pipeline:
            await wait_until(lambda: _written(pipeline, 1), what="written with api key")
    assert await count(search, f"b-{uid}") == 1
    assert await count(search, f"k-{uid}") == 1


async def test_unreachable_server_is_one_clear_retried_error(
    kafka_bootstrap: str, uid: str
) -> None:
    topic = f"nowhere-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    url = f"http://127.0.0.1:{reserve_port()}"
    config = sink_config(f"os-{uid}", [topic], [url])
    async with running_sink(config, settings_for(kafka_bootstrap, uid)) as pipeline:
        error = await wait_until(lambda: _error(pipeline), what="an error in the status")
    assert error.startswith(f"open retrying: RetriableError: cannot reach OpenSearch at {url}")


async def _error(pipeline: object) -> str | None:
    return pipeline.status.error  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (Debian's openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified_by_default_and_ca_certs_trusts_a_private_ca(
    kafka_bootstrap: str,
    search_url: str,
    search: AsyncOpenSearch,
    uid: str,
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    topic = f"tls-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(kafka_bootstrap, topic, [(None, "secure")])
    settings = settings_for(kafka_bootstrap, uid)
    async with SearchProxy(search_url, ssl_context=context) as proxy:
        untrusted = sink_config(f"u-{uid}", [topic], [proxy.url], index=f"tls-{uid}")
        async with running_sink(untrusted, settings) as pipeline:
            await wait_until(lambda: _state_is(pipeline, State.FAILED), what="TLS refused")
            error = pipeline.status.error or ""
        assert "TLS failed" in error and "CERTIFICATE_VERIFY_FAILED" in error
        assert "ca_certs" in error
        trusted = sink_config(
            f"t-{uid}", [topic], [proxy.url], index=f"tls-{uid}", ca_certs=str(cert)
        )
        async with running_sink(trusted, settings) as pipeline:
            await wait_until(lambda: _written(pipeline, 1), what="written over TLS")
    assert await count(search, f"tls-{uid}") == 1
