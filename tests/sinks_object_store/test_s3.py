"""The object-store sink through a real S3 API server (moto), over HTTP."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from etl.testing.kafka import create_topic
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSinkPipeline
from tests.sinks_object_store.conftest import NAME, S3_KEY, S3_SECRET, data_objects, lines_of
from tests.sinks_object_store.harness import produce_records, running, sink_settings, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


def s3_config(
    uid: str, topic: str, endpoint: str, bucket: str, **options: Any
) -> ObjectStoreSinkConfig:
    return ObjectStoreSinkConfig.model_validate(
        {
            "name": f"s3-{uid}",
            "type": "object_store",
            "topics": [topic],
            "start_offset": "earliest",
            "url": f"s3://{bucket}/archive",
            "endpoint_url": endpoint,
            "access_key": S3_KEY,
            "secret_key": S3_SECRET,
            "region": "us-east-1",
            "batch_window_minutes": 0.02,
            **options,
        }
    )


def bucket_objects(client: Any, bucket: str) -> dict[str, bytes]:
    """Every object of the bucket by key."""
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    ]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def meta_offsets(objects: dict[str, bytes]) -> dict[int, int]:
    return {
        meta["partition"]: meta["last_offset"]
        for key, data in objects.items()
        if "oss_meta_file_partition_" in key
        for meta in [json.loads(data)]
    }


async def test_objects_and_meta_in_s3(
    tmp_path: Path,
    kafka_bootstrap: str,
    uid: str,
    s3_endpoint: str,
    s3_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket = f"lake-{uid}"
    s3_client.create_bucket(Bucket=bucket)
    topic = f"s3-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce_records(
        kafka_bootstrap,
        topic,
        ((b"k%d" % i, b"v%d" % i, i % 2, 1_700_000_000_000) for i in range(100)),
    )
    config = s3_config(uid, topic, s3_endpoint, bucket, path_layout="YYYYMMdd")
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    caplog.set_level(logging.DEBUG)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await wait_until(
            lambda: meta_offsets(bucket_objects(s3_client, bucket)) == {0: 49, 1: 49},
            pipeline=pipeline,
            what="both partitions in S3",
        )
    objects = bucket_objects(s3_client, bucket)
    data = data_objects(objects)
    assert {key.rsplit("/", 1)[0] for key in data} == {f"archive/s3-{uid}/{topic}/20231114"}
    assert {key for key in objects if "meta" in key} == {
        f"archive/s3-{uid}/{topic}/oss_meta_file_partition_{p}" for p in (0, 1)
    }
    for key in data:
        assert NAME.match(key.rsplit("/", 1)[-1])
    lines = lines_of(objects)
    assert sorted((line["partition"], line["offset"]) for line in lines) == sorted(
        (p, o) for p in (0, 1) for o in range(50)
    )
    assert S3_SECRET not in caplog.text

    # Read again by a new consumer group: the meta objects keep S3 free of duplicates.
    again = sink_settings(tmp_path, kafka_bootstrap, uid + "x")
    async with running(ObjectStoreSinkPipeline, config, again) as pipeline:
        await wait_until(lambda: pipeline.status.consumed == 100, pipeline=pipeline, what="re-read")
    assert data_objects(bucket_objects(s3_client, bucket)) == data


async def test_missing_bucket_fails_at_start_naming_it(
    tmp_path: Path, kafka_bootstrap: str, uid: str, s3_endpoint: str
) -> None:
    topic = f"nob-{uid}"
    await create_topic(kafka_bootstrap, topic, 1)
    config = s3_config(uid, topic, s3_endpoint, f"missing-{uid}")
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:
        await wait_until(lambda: pipeline.status.state == "failed", what="start failure")
        error = pipeline.status.error
    assert f"missing-{uid}" in error and "does not exist" in error
    assert S3_SECRET not in error
