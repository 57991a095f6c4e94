"""The ``object_store`` source in the test process: Parquet on S3, bounds, bad lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etl.sources.object_store.config import ObjectStoreSourceConfig
from etl.sources.object_store.source import ObjectStoreSource
from etl.testing.kafka import create_topic, read_all
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSinkPipeline
from tests.sinks_object_store.conftest import S3_KEY, S3_SECRET
from tests.sinks_object_store.harness import produce_records, running, sink_settings, wait_until

pytestmark = [pytest.mark.kafka]

HOUR = 3_600_000
BASE = 1_700_000_000_000


def source_config(uid: str, topic: str, **options: Any) -> ObjectStoreSourceConfig:
    return ObjectStoreSourceConfig.model_validate(
        {
            "name": f"replay-{uid}",
            "type": "object_store",
            "instance_id": "prod",
            "topics": [topic],
            "target_topic": "{topic}-restored",
            "settle_seconds": 0,
            **options,
        }
    )


async def archive(
    settings: Any, topic: str, count: int, partitions: int, **options: Any
) -> list[Any]:
    """``count`` records one hour apart archived by the sink; returns the originals."""
    items = [(b"k%d" % i, b"v%d" % i, i % partitions, BASE + i * HOUR) for i in range(count)]
    await produce_records(settings.kafka.bootstrap_servers, topic, items)
    config = ObjectStoreSinkConfig.model_validate(
        {
            "name": "archive",
            "type": "object_store",
            "topics": [topic],
            "start_offset": "earliest",
            "instance_id": "prod",
            "batch_window_minutes": 0.005,
            **options,
        }
    )
    async with running(ObjectStoreSinkPipeline, config, settings) as sink:
        await wait_until(lambda: sink.status.consumed >= count, pipeline=sink, what="archived")
    return await read_all(settings.kafka.bootstrap_servers, topic)


async def replay(config: ObjectStoreSourceConfig, settings: Any) -> ObjectStoreSource:
    async with running(ObjectStoreSource, config, settings) as source:
        await wait_until(
            lambda: source.status.state in ("finished", "halted", "failed"),
            timeout=60,
            what="replay done",
        )
    return source


def rows(records: list[Any]) -> list[tuple[Any, ...]]:
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    return [(r.partition, r.key, r.value, r.timestamp) for r in ordered]


@pytest.mark.s3
async def test_parquet_on_s3_between_two_times(
    tmp_path: Path, kafka_bootstrap: str, uid: str, s3_endpoint: str, s3_client: Any
) -> None:
    topic, bucket = f"pq-{uid}", f"bucket-{uid}"
    s3_client.create_bucket(Bucket=bucket)
    await create_topic(kafka_bootstrap, topic, 2)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    store = {
        "url": f"s3://{bucket}/archive",
        "endpoint_url": s3_endpoint,
        "access_key": S3_KEY,
        "secret_key": S3_SECRET,
        "region": "us-east-1",
        "format": "parquet",
        "path_layout": "YYYYMMdd",
    }
    originals = await archive(settings, topic, 200, 2, **store)
    start, end = BASE + 50 * HOUR, BASE + 150 * HOUR
    config = source_config(
        uid, topic, start_time=start / 1000, end_time=end / 1000, batch_size=30, **store
    )
    source = await replay(config, settings)
    assert source.status.state == "finished", source.status.error
    restored = await read_all(kafka_bootstrap, f"{topic}-restored")
    assert rows(restored) == rows([r for r in originals if start <= r.timestamp < end])


@pytest.mark.parametrize("policy", ["continue", "stop"])
async def test_a_bad_line_is_a_record_error(
    tmp_path: Path, kafka_bootstrap: str, uid: str, policy: str
) -> None:
    topic = f"bad-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    root = tmp_path / "archive"
    originals = await archive(settings, topic, 10, 1, url=str(root))
    # A line that is not an archived message, in an object of its own after the others.
    (root / "prod" / topic / "partition_0_offset_99_zzzzzzzz").write_bytes(b"{not json\n")
    config = source_config(uid, topic, url=str(root), on_error=policy)
    source = await replay(config, settings)
    restored = await read_all(kafka_bootstrap, f"{topic}-restored")
    assert rows(restored) == rows(originals)
    if policy == "continue":
        assert source.status.state == "finished"
        letters = await read_all(kafka_bootstrap, f"dlq-{uid}")
        assert [r.value for r in letters] == [b"{not json"]
    else:
        assert source.status.state == "halted"
        assert "not a JSON line" in (source.status.error or "")
