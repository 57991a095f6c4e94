"""Unit tests of the ops building blocks (no servers)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from etl.ops.history import StatusHistory
from etl.ops.messages import FoundMessage, display_text, parse_time, write_whole
from etl.ops.metrics import render_metrics
from etl.ops.pause_store import PauseStore
from etl.ops.search import SearchQuery, keyword_matcher, parse_offset_range
from etl.ops.search_index import build_query, index_pattern


def record(key: str | None, value: str | None, ts: int = 1000) -> SimpleNamespace:
    return SimpleNamespace(
        key=None if key is None else key.encode(),
        value=None if value is None else value.encode(),
        timestamp=ts,
    )


@pytest.mark.parametrize(
    ("keyword", "text", "hit"),
    [
        ("分布式", "消息队列Kafka版是阿里云提供的分布式、高吞吐的消息队列服务。", True),
        ("AliKafkaTe*", "AliKafkaTest001qaz", True),
        ("alikafkate*", "AliKafkaTest001qaz", True),
        ("Test00?qaz", "AliKafkaTest001qaz", True),
        ("Test0?qaz", "AliKafkaTest001qaz", False),
        ("disk full", '{"msg": "DISK FULL on /var"}', True),
        ("a.c", "abc", False),  # regex characters are literal
        ("err*disk", "error: no space on disk", True),
    ],
)
def test_keyword_phrase_and_wildcards(keyword: str, text: str, hit: bool) -> None:
    assert keyword_matcher(keyword)(text) is hit


def test_conditions_combine_with_and() -> None:
    query = SearchQuery(keys=["user-*"], values=["error", "disk"], since_ms=100, until_ms=200)
    assert query.matches(record("user-7", "error: disk full", 150))
    assert not query.matches(record("user-7", "error: cpu", 150))
    assert not query.matches(record("admin", "error: disk full", 150))
    assert not query.matches(record(None, "error: disk full", 150))
    assert not query.matches(record("user-7", "error: disk full", 201))
    assert not query.matches(record("user-7", "error: disk full", 99))


def test_bad_search_input_is_named() -> None:
    with pytest.raises(ValueError, match="not an offset range"):
        parse_offset_range("5..9")
    with pytest.raises(ValueError, match="9 is after 5"):
        parse_offset_range("9-5")
    assert parse_offset_range("3-") == (3, None)
    assert parse_offset_range("-7") == (None, 7)
    with pytest.raises(ValueError, match="since"):
        SearchQuery(since_ms=5, until_ms=1)
    with pytest.raises(ValueError, match="empty"):
        SearchQuery(values=[""])


def test_parse_time_forms() -> None:
    local = datetime(2024, 3, 1, 12, 30, 5)
    assert parse_time("2024-03-01 12:30:05") == int(local.timestamp() * 1000)
    utc = datetime(2024, 3, 1, 12, 30, 5, tzinfo=UTC)
    assert parse_time("2024-03-01T12:30:05Z") == int(utc.timestamp() * 1000)
    plus8 = utc - timedelta(hours=8)
    assert parse_time("2024-03-01T12:30:05+08:00") == int(plus8.timestamp() * 1000)
    assert parse_time("1700000000123") == 1700000000123
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM:SS"):
        parse_time("yesterday")


def test_display_cut_at_one_kilobyte_never_mid_character() -> None:
    text, cut = display_text(("é" * 600).encode())  # 1200 bytes
    assert cut and text == "é" * 512
    text, cut = display_text(b"x" * 1024)
    assert not cut and text == "x" * 1024
    text, cut = display_text(b"a" + "é".encode() * 600)
    assert cut and len(text.encode()) == 1023


def test_write_whole_keeps_every_byte(tmp_path: Path) -> None:
    big = bytes(range(256)) * 40
    msg = FoundMessage("t/x", 1, 42, 0, b"k", big)
    paths = write_whole([msg], tmp_path / "out")
    assert sorted(p.name for p in paths) == ["t_x-1-42.key", "t_x-1-42.value"]
    assert (tmp_path / "out" / "t_x-1-42.value").read_bytes() == big


def test_pause_store_persists(tmp_path: Path) -> None:
    path = tmp_path / "data" / "paused.json"
    store = PauseStore(path)
    store.add("transform:a")
    store.add("sink:b")
    store.discard("sink:b")
    again = PauseStore(path)
    assert "transform:a" in again and "sink:b" not in again
    assert again.keys() == ["transform:a"]
    path.write_text("{not json")
    assert PauseStore(path).keys() == []  # unreadable: starts unpaused, logs an error


SNAPSHOT = {
    "pipelines": [
        {
            "name": "orders",
            "kind": "transform",
            "state": "paused",
            "consumed": 10,
            "produced": 9,
            "filtered": 1,
            "dead_lettered": 0,
            "batches": 2,
            "last_batch_ms": 12.5,
            "partitions": {
                "orders/0": {"committed": 5, "end": 8, "lag": 3},
                "orders/1": {"committed": 5, "end": 5, "lag": 0},
            },
        },
        {
            "name": 'we"ird',
            "kind": "sink",
            "state": "load_error",
            "consumed": 0,
            "produced": 0,
            "filtered": 0,
            "dead_lettered": 0,
            "batches": 0,
            "last_batch_ms": 0.0,
            "partitions": {},
        },
    ]
}


def test_metrics_text_format() -> None:
    text = render_metrics(SNAPSHOT)
    lines = text.splitlines()
    assert "# TYPE etl_messages_consumed_total counter" in lines
    assert 'etl_messages_consumed_total{pipeline="orders",kind="transform"} 10' in lines
    assert 'etl_messages_filtered_total{pipeline="orders",kind="transform"} 1' in lines
    assert (
        'etl_consumer_lag{pipeline="orders",kind="transform",topic="orders",partition="0"} 3'
        in lines
    )
    assert 'etl_pipeline_up{pipeline="orders",kind="transform"} 1' in lines
    assert 'etl_pipeline_up{pipeline="we\\"ird",kind="sink"} 0' in lines
    assert 'etl_pipeline_state{pipeline="orders",kind="transform",state="paused"} 1' in lines
    assert 'etl_last_batch_duration_seconds{pipeline="orders",kind="transform"} 0.0125' in lines
    # Every sample line belongs to a declared family.
    declared = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    for line in lines:
        if not line.startswith("#"):
            assert line.split("{", 1)[0] in declared


def test_history_rates_and_series() -> None:
    history = StatusHistory(max_samples=5)
    now = time.time()
    for i in range(7):
        snap = json.loads(json.dumps(SNAPSHOT))
        snap["pipelines"][0]["consumed"] = 100 * i
        snap["pipelines"][0]["produced"] = 50 * i
        snap["pipelines"][0]["partitions"]["orders/0"]["lag"] = i
        history.add(snap, now=now + 2 * i)
    assert len(history.samples) == 5
    rate_in, rate_out = history.rates("transform:orders")
    assert rate_in == pytest.approx(50.0) and rate_out == pytest.approx(25.0)
    enriched = history.enrich(SNAPSHOT)["pipelines"][0]
    assert enriched["key"] == "transform:orders" and enriched["lag"] == 3
    series = history.series()
    assert series["pipelines"]["transform:orders"]["orders/0"] == [2, 3, 4, 5, 6]
    assert history.rates("sink:nothing") == (None, None)


def test_index_query_holds_every_condition() -> None:
    assert index_pattern("logs-{topic}-{yyyy.MM.dd}", "Orders") == "logs-orders-*"
    assert index_pattern("{topic}-{partition}", "t", 3) == "t-3"
    query = SearchQuery(
        partition=1,
        first_offset=5,
        last_offset=9,
        keys=["k*"],
        values=["disk full"],
        since_ms=10,
        until_ms=20,
        limit=3,
    )
    body = build_query("orders", query)
    clauses = body["query"]["bool"]["filter"]
    assert {"term": {"msg_body.partition": 1}} in clauses
    assert {"range": {"msg_body.offset": {"gte": 5, "lte": 9}}} in clauses
    assert {"range": {"msg_body.timestamp": {"gte": 10, "lte": 20}}} in clauses
    assert {"wildcard": {"msg_body.key": {"value": "k*", "case_insensitive": True}}} in clauses
    assert {"match_phrase": {"msg_body.value": "disk full"}} in clauses
