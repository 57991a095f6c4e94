"""The shared sink conformance suite, run against a local directory and S3 (moto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from etl.testing.hostile import hostile_id
from etl.testing.sink_conformance import (
    ConformanceHarness,
    SinkConformance,
    _name,
    _write,
    batch_of,
)
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.sink import ObjectStoreSink
from tests.sinks_object_store.conftest import S3_KEY, S3_SECRET, lines_of, local_objects


class ObjectStoreHarness(ConformanceHarness):
    sink_class = ObjectStoreSink
    bad_value = b'{"id": 3, "name": "\xff"}'  # not UTF-8: the documents export text only
    # The meta objects make a redelivered batch a no-op without any option.
    keyed_options: dict[str, Any] = {}
    holds_back = True
    # Time directories from the record's timestamp: a year-10000 one has none.
    hostile_options: ClassVar[dict[str, Any]] = {"path_layout": "YYYY/MM/dd/HH"}
    must_route = frozenset({"year-10000", "non-utf8-value", "non-utf8-key"})

    def __init__(self, root: Path, s3: tuple[str, Any] | None = None) -> None:
        self.root = root
        self.s3 = s3

    def config(self, **options: Any) -> ObjectStoreSinkConfig:
        name = options["name"]
        linger_ms = options.pop("linger_ms", None)
        values: dict[str, Any] = {"type": "object_store", "url": str(self.root / name), **options}
        if linger_ms is not None:
            values["batch_window_minutes"] = linger_ms / 60_000
        if self.s3 is not None:
            endpoint, client = self.s3
            client.create_bucket(Bucket=name)
            values.update(
                url=f"s3://{name}/objects",
                endpoint_url=endpoint,
                access_key=S3_KEY,
                secret_key=S3_SECRET,
                region="us-east-1",
            )
        return ObjectStoreSinkConfig.model_validate(values)

    async def landed(self, config: Any) -> list[int]:
        if self.s3 is not None:
            _endpoint, client = self.s3
            listed = client.list_objects_v2(Bucket=config.name).get("Contents", [])
            objects = {
                item["Key"]: client.get_object(Bucket=config.name, Key=item["Key"])["Body"].read()
                for item in listed
            }
        else:
            objects = local_objects(self.root / config.name)
        found = [hostile_id(line.get("value"), line["offset"]) for line in lines_of(objects)]
        return [n for n in found if n is not None]


class ObjectStoreConformance(SinkConformance):
    async def test_conformance_close_and_reopen(self, harness: ConformanceHarness) -> None:
        # As the shared test, but with the offsets Kafka would give: for this sink an
        # offset *is* the record's identity, so a second "offset 0" is a redelivery.
        config = harness.config(name=_name("reopen"), topics=["t"])
        sink = harness.make_sink(config)
        await sink.open()
        assert await _write(sink, batch_of("t", [1, 2])) == []
        await sink.close()
        await sink.open()
        assert await _write(sink, shifted(batch_of("t", [3, 4]), 2)) == []
        await sink.close()
        other = harness.make_sink(config)
        await other.open()
        try:
            assert await _write(other, shifted(batch_of("t", [5]), 4)) == []
        finally:
            await other.close()
        assert sorted(await harness.landed(config)) == [1, 2, 3, 4, 5]


def shifted(batch: Any, by: int) -> Any:
    for record in batch.records:
        record.offset += by
    return batch


class LakeHarness(ObjectStoreHarness):
    """The lake layout: a Parquet table per topic, Hive time partitions by record time."""

    bad_value = b'{"id": "three", "name": "x"}'  # id is an int64 column (the first record)
    hostile_options: ClassVar[dict[str, Any]] = {}
    must_route = frozenset(
        {"year-10000", "non-utf8-value", "lone-surrogate", "not-a-number", "empty-value"}
    )

    def config(self, **options: Any) -> ObjectStoreSinkConfig:
        config = super().config(**options, format="parquet", lake={})
        return config

    async def landed(self, config: Any) -> list[int]:
        import pyarrow.parquet as pq

        found = []
        for path in sorted((self.root / config.name).rglob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                found.append(row.get("id") or row["_kafka_offset"] + 1)
        return found


@pytest.mark.kafka
class TestLakeObjectStoreConformance(ObjectStoreConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> ObjectStoreHarness:
        return LakeHarness(tmp_path)


@pytest.mark.kafka
class TestLocalObjectStoreConformance(ObjectStoreConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> ObjectStoreHarness:
        return ObjectStoreHarness(tmp_path)


@pytest.mark.kafka
@pytest.mark.s3
class TestS3ObjectStoreConformance(ObjectStoreConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path, s3_endpoint: str, s3_client: Any) -> ObjectStoreHarness:
        return ObjectStoreHarness(tmp_path, (s3_endpoint, s3_client))
