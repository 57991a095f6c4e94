"""Path confinement: topic names that try to leave the root stay below it, escaped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from etl.errors import FatalError
from etl.testing.hostile import HOSTILE_TOPICS
from etl.testing.kafka import create_topic, produce
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.layout import PathLayout
from sinks.object_store.sink import ObjectStoreSinkPipeline
from sinks.paths import MAX_SEGMENT_BYTES, confined, path_segment
from tests.sinks_object_store.conftest import lines_of, local_objects
from tests.sinks_object_store.harness import running, sink_settings, wait_until


@pytest.mark.parametrize(
    ("text", "segment"),
    [
        ("orders.v1_x-y", "orders.v1_x-y"),  # every Apache Kafka topic name is unchanged
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("../escape", "..%2Fescape"),
        ("/abs", "%2Fabs"),
        ("a\0b", "a%00b"),
        ("100%", "100%25"),
        ("é", "%C3%A9"),
    ],
)
def test_path_segment_escapes(text: str, segment: str) -> None:
    assert path_segment(text) == segment
    assert "/" not in segment and segment not in (".", "..")


def test_an_over_long_name_is_cut_with_a_hash() -> None:
    long_a, long_b = "a" * 300 + "1", "a" * 300 + "2"
    assert len(path_segment(long_a)) == MAX_SEGMENT_BYTES
    assert path_segment(long_a) != path_segment(long_b)
    assert path_segment(long_a) == path_segment(long_a)


def test_an_empty_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        path_segment("")


def test_confined_rejects_a_path_that_leaves_the_root() -> None:
    assert confined("/r/s", "/r/s/a/b") == "/r/s/a/b"
    for path in ("/r/s/../t/x", "/r/sx/y", "/etc/passwd", "/r/s/a\0b"):
        with pytest.raises(FatalError, match="leaves the sink's root"):
            confined("/r/s", path)


@pytest.mark.parametrize("topic", HOSTILE_TOPICS)
def test_layout_paths_stay_below_the_root(topic: str) -> None:
    layout = PathLayout("/data/root", "inst", "YYYYMMdd", time_source="record", timezone="UTC")
    for path in (layout.meta_path(topic, 0), layout.object_path(topic, "20260101", "o")):
        assert os.path.normpath(path).startswith("/data/root/inst/"), path
        assert path.count("/") == layout.meta_path("t", 0).count("/") + (
            1 if path.endswith("/o") else 0
        )


def files_outside(base: Path, *places: Path) -> list[str]:
    """Files below ``base`` that are in none of ``places``."""
    return [
        str(path.relative_to(base))
        for path in base.rglob("*")
        if path.is_file() and not any(place in path.parents for place in places)
    ]


@pytest.mark.kafka
async def test_hostile_topic_names_on_the_broker_write_below_the_root(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    # The embedded broker accepts "/" and ".." in topic names; Apache Kafka does not.
    topics = [f"../{uid}-escape", f"{uid}/../../{uid}-up", f"{uid}-q'\"`;%s%%"]
    for topic in topics:
        await create_topic(kafka_bootstrap, topic, 1)
        await produce(kafka_bootstrap, topic, [(b"k", json.dumps({"t": topic}).encode())])
    store = tmp_path / "store"
    root = store / "root"
    config = ObjectStoreSinkConfig.model_validate(
        {
            "name": f"paths-{uid}",
            "type": "object_store",
            "topics": topics,
            "start_offset": "earliest",
            "url": str(root),
            "batch_window_minutes": 0.002,
        }
    )
    settings = sink_settings(tmp_path, kafka_bootstrap, uid)
    async with running(ObjectStoreSinkPipeline, config, settings) as pipeline:

        def landed() -> list[str]:
            if not root.exists():
                return []
            found = [json.loads(m["value"])["t"] for m in lines_of(local_objects(root))]
            return found if len(found) >= len(topics) else []

        found = await wait_until(landed, pipeline=pipeline, what="one line per topic")
    assert sorted(found) == sorted(topics)
    assert files_outside(tmp_path, root, tmp_path / "data") == []
    # Each topic is one directory of the instance, named by its escaped form.
    assert sorted(p.name for p in (root / f"paths-{uid}").iterdir()) == sorted(
        path_segment(t) for t in topics
    )
