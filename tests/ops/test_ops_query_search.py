"""`etl query` and `etl search` against a real broker, on a topic with known timestamps."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from etl.cli import main
from etl.testing.kafka import create_topic, produce
from etl.testing.worker import write_config

pytestmark = pytest.mark.kafka

#: 2024-03-01 12:00:00 local time; message i is created i minutes later.
BASE_MS = int(datetime(2024, 3, 1, 12, 0, 0).timestamp() * 1000)
COUNT = 30
BIG = "B" * 3000


def value_of(i: int) -> str:
    status = "ERROR disk full" if i % 3 == 0 else "ok"
    return f"order {i} status {status} user-{i % 4}"


def local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


async def fill(bootstrap: str, topic: str) -> None:
    await create_topic(bootstrap, topic, 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(COUNT):
            await producer.send_and_wait(
                topic,
                value_of(i).encode(),
                key=f"k{i}".encode(),
                partition=i % 2,
                timestamp_ms=BASE_MS + i * 60_000,
            )
        # Offset 15 of partition 0: a value bigger than the 1 KB display cut.
        await producer.send_and_wait(
            topic, BIG.encode(), key=b"big", partition=0, timestamp_ms=BASE_MS + 3_600_000
        )
    finally:
        await producer.stop()


class Topic:
    def __init__(self, name: str, config: Path) -> None:
        self.name = name
        self.config = config

    def run(self, *args: str) -> Any:
        result = CliRunner().invoke(main, [*args, "-c", str(self.config)], catch_exceptions=False)
        return result

    def json(self, *args: str) -> dict[str, Any]:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def topic(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topic]:
    name = f"ops-q-{uuid.uuid4().hex[:8]}"
    asyncio.run(fill(kafka_bootstrap, name))
    config = write_config(tmp_path_factory.mktemp("query"), kafka_bootstrap)
    yield Topic(name, config)


def coords(data: dict[str, Any]) -> list[tuple[int, int]]:
    return [(m["partition"], m["offset"]) for m in data["messages"]]


def test_query_by_offset_shows_ten_from_that_offset(topic: Topic) -> None:
    data = topic.json("query", topic.name, "--partition", "1", "--offset", "3")
    assert coords(data) == [(1, o) for o in range(3, 13)]
    first = data["messages"][0]
    assert first["key"] == "k7" and first["value"] == value_of(7)
    assert first["timestamp"] == BASE_MS + 7 * 60_000
    assert first["time"].startswith(local(BASE_MS + 7 * 60_000))

    text = topic.run("query", topic.name, "-p", "1", "-o", "13")
    assert text.exit_code == 0
    assert "partition 1  offset 13" in text.stdout and "k27" in text.stdout
    assert "2 message(s)" in text.stdout

    past = topic.run("query", topic.name, "-p", "1", "-o", "99")
    assert past.exit_code == 0 and "0 message(s)" in past.stdout
    assert "offsets 0-14; none at 99" in past.stderr


def test_query_by_time_all_partitions_and_one(topic: Topic) -> None:
    at = local(BASE_MS + 10 * 60_000)
    data = topic.json("query", topic.name, "--time", at)
    keys = [m["key"] for m in data["messages"]]
    assert keys == [f"k{i}" for i in range(10, 20)], "merged by time over both partitions"

    one = topic.json("query", topic.name, "--time", at, "--partition", "1")
    assert [m["key"] for m in one["messages"]] == [f"k{i}" for i in range(11, 30, 2)]

    # Between two messages: starts at the next one.
    between = topic.json("query", topic.name, "-t", local(BASE_MS + 25 * 60_000 + 30_000))
    assert [m["key"] for m in between["messages"]] == ["k26", "k27", "k28", "k29", "big"]

    late = topic.json("query", topic.name, "--time", local(BASE_MS + 7_200_000))
    assert late["messages"] == [] and "no message at or after that time" in late["notes"]


def test_query_cuts_display_at_1kb_and_out_writes_whole(topic: Topic, tmp_path: Path) -> None:
    out = tmp_path / "download"
    data = topic.json("query", topic.name, "-p", "0", "-o", "15", "--out", str(out))
    big = data["messages"][0]
    assert big["key"] == "big" and big["truncated"] is True
    assert big["value"] == "B" * 1024 and big["value_size"] == 3000
    assert (out / f"{topic.name}-0-15.value").read_text() == BIG
    assert (out / f"{topic.name}-0-15.key").read_text() == "big"

    text = topic.run("query", topic.name, "-p", "0", "-o", "15")
    assert "cut at 1 KB of 3000 bytes" in text.stdout
    assert "B" * 1025 not in text.stdout


def test_query_usage_errors(topic: Topic) -> None:
    assert topic.run("query", topic.name, "--offset", "1").exit_code == 2
    assert topic.run("query", topic.name, "-o", "1", "-t", "2026-01-01").exit_code == 2
    bad_time = topic.run("query", topic.name, "--time", "noon")
    assert bad_time.exit_code == 2 and "YYYY-MM-DD HH:MM:SS" in bad_time.output
    missing = topic.run("query", "no-such-topic-x", "-p", "0", "-o", "0")
    assert missing.exit_code == 1 and "topic 'no-such-topic-x' does not exist" in missing.stderr
    bad_partition = topic.run("query", topic.name, "-p", "7", "-o", "0")
    assert bad_partition.exit_code == 1 and "partitions 0-1, not 7" in bad_partition.stderr


def test_search_keywords_with_wildcards_and_case(topic: Topic) -> None:
    errors = topic.json("search", topic.name, "--value", "error DISK", "--limit", "100")
    assert sorted(int(m["key"][1:]) for m in errors["messages"]) == list(range(0, 30, 3))
    assert errors["scanned"] == COUNT + 1 and errors["limit_reached"] is False

    wild = topic.json("search", topic.name, "--key", "k1?", "--limit", "100")
    assert sorted(m["key"] for m in wild["messages"]) == [f"k{i}" for i in range(10, 20)]

    star = topic.json("search", topic.name, "--value", "order 2*user-3", "--limit", "100")
    assert sorted(m["key"] for m in star["messages"]) == ["k23", "k27"]


def test_search_bounds_combine_with_and(topic: Topic) -> None:
    ranged = topic.json(
        "search", topic.name, "--partition", "0", "--offsets", "2-4", "--value", "ok"
    )
    assert coords(ranged) == [(0, 2), (0, 4)]  # i=4 and i=8; i=6 is an error
    assert ranged["to_scan"] == 3

    timed = topic.json(
        "search",
        topic.name,
        "--since",
        local(BASE_MS + 5 * 60_000),
        "--until",
        local(BASE_MS + 9 * 60_000),
        "--limit",
        "100",
    )
    assert sorted(m["key"] for m in timed["messages"]) == ["k5", "k6", "k7", "k8", "k9"]

    both = topic.json(
        "search",
        topic.name,
        "--since",
        local(BASE_MS + 5 * 60_000),
        "--key",
        "k2*",
        "--value",
        "user-1",
        "--limit",
        "100",
    )
    assert sorted(m["key"] for m in both["messages"]) == ["k21", "k25", "k29"]


def test_search_stops_at_the_limit(topic: Topic) -> None:
    data = topic.json("search", topic.name, "--value", "order", "--limit", "4")
    assert len(data["messages"]) == 4 and data["limit_reached"] is True
    assert data["scanned"] < COUNT
    text = topic.run("search", topic.name, "--value", "order", "--limit", "4")
    assert "stopped at --limit 4" in text.stdout


def test_search_usage_errors(topic: Topic) -> None:
    bad = topic.run("search", topic.name, "--offsets", "9-2")
    assert bad.exit_code == 2 and "9 is after 2" in bad.output
    no_sink = topic.run("search", topic.name, "--index", "nope")
    assert no_sink.exit_code == 1 and "no opensearch sink of that name" in no_sink.stderr


def test_reads_to_the_true_end_of_batched_partitions(
    kafka_bootstrap: str, topic: Topic, uid: str
) -> None:
    # Records sent in batches: some brokers report a partition's end as the start
    # of its last batch + 1; query and search must still see every record.
    name = f"ops-batched-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, name, 1))
    asyncio.run(produce(kafka_bootstrap, name, [(None, f"a{i}") for i in range(20)]))
    asyncio.run(produce(kafka_bootstrap, name, [(None, f"b{i}") for i in range(5)]))
    tail = topic.json("query", name, "-p", "0", "-o", "18")
    assert [m["value"] for m in tail["messages"]] == ["a18", "a19", "b0", "b1", "b2", "b3", "b4"]
    found = topic.json("search", name, "--value", "b?", "--limit", "100")
    assert [m["value"] for m in found["messages"]] == [f"b{i}" for i in range(5)]
    assert found["to_scan"] == 25
