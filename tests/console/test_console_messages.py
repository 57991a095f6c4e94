"""Messages in the console: send, query by offset and by time (1 KB cut, download), search."""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.console.conftest import Console, ConsoleWorker

pytestmark = pytest.mark.kafka
expect = pytest.importorskip("playwright.sync_api").expect

BIG = "\u00e9" * 3000 + "END"  # 6003 bytes of UTF-8: the 1 KB cut falls inside a character


def test_send_query_by_offset_and_time_cut_and_download(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    topic = w.topic("msgs", 2)
    w.produce(topic, [(f"k{i}", f"value-{i}") for i in range(15)], partition=1)
    page = console.open("#/messages")

    # Send a test message (the documents' "test" panel).
    page.fill("#send-topic", topic)
    page.fill("#send-key", "demo")
    page.fill("#send-value", BIG)
    page.fill("#send-partition", "0")
    page.click("#send-button")
    expect(page.locator("#send-result")).to_have_text(f"Sent to {topic} partition 0 at offset 0.")
    sent = [r for r in w.read(topic) if r.partition == 0]
    assert [(r.key, r.value) for r in sent] == [(b"demo", BIG.encode())]

    # By offset: at most 10, from the offset on.
    page.fill("#q-topic", topic)
    page.select_option("#q-mode", "offset")
    page.fill("#q-partition", "1")
    page.fill("#q-offset", "2")
    page.click("#q-run")
    rows = page.locator("#q-table tbody tr")
    expect(rows).to_have_count(10)
    offsets = rows.evaluate_all("rows => rows.map(r => Number(r.dataset.offset))")
    assert offsets == list(range(2, 12))

    # The newest of partition 0: the big value cut at 1 KB, not inside a character.
    page.select_option("#q-mode", "newest")
    page.fill("#q-partition", "0")
    page.click("#q-run")
    expect(rows).to_have_count(1)
    value = rows.locator("td.cut").nth(1)
    assert value.locator(".text").inner_text() == "\u00e9" * 512
    assert "first 1 KB of 5.9 KB" in value.locator(".cut-note").inner_text()
    console.shot("messages")
    with page.expect_download() as download:
        rows.locator("a.download-value").click()
    assert Path(download.value.path()).read_bytes() == BIG.encode()

    # By time: the first messages created at or after a point in time.
    boundary = math.ceil(time.time()) + 1
    time.sleep(max(0.0, boundary - time.time()) + 0.05)
    w.produce(topic, [(f"late{i}", f"late-{i}") for i in range(3)], partition=1)
    page.select_option("#q-mode", "time")
    page.fill("#q-partition", "1")
    page.fill("#q-time", datetime.fromtimestamp(boundary).strftime("%Y-%m-%dT%H:%M:%S"))
    page.click("#q-run")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rows => rows.map(r => Number(r.dataset.offset))") == [15, 16, 17]


def test_search_with_wildcards_shows_progress_and_can_be_cancelled(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    topic = w.topic("search", 2)
    items: list[tuple[str | None, str | None]] = [(f"user-{i}", f"order {i} ok") for i in range(30)]
    items[17] = ("user-17", "order id=407: disk full on /var")
    items[12] = ("user-12", "order id=407 fine")  # the value's second keyword is missing
    w.produce(topic, items, partition=0)
    w.produce(topic, [("user-1", "id=407 disk full")], partition=1)  # another partition

    page = console.open("#/search")
    page.fill("#s-topic", topic)
    page.fill("#s-partition", "0")
    page.fill("#s-offsets", "5-25")
    page.fill("#s-keys", "user-1*")
    page.fill("#s-values", "id=4?7\nDisk Full")
    page.click("#s-start")
    status = page.locator("#s-status")
    expect(status).to_have_attribute("data-state", "done")
    rows = page.locator("#s-table tbody tr")
    expect(rows).to_have_count(1)
    assert rows.get_attribute("data-partition") == "0"
    assert rows.get_attribute("data-offset") == "17"
    assert "scanned 21 of 21 messages (100%), 1 found" in status.inner_text()
    bar = page.locator("#s-progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "21"
    console.shot("search")

    # A long scan: cancel it while it runs; what it scanned stays below the total.
    big = w.topic("search-big", 2)
    count = 500_000
    produce_many(w.bootstrap, big, count)
    page.fill("#s-topic", big)
    page.fill("#s-partition", "")
    page.fill("#s-offsets", "")
    page.fill("#s-keys", "")
    page.fill("#s-values", "never-there")
    page.click("#s-start")
    page.locator("#s-cancel:enabled").click()
    expect(status).to_have_attribute("data-state", "cancelled")
    scanned = int(status.get_attribute("data-scanned") or 0)
    assert scanned < count
    assert "Cancelled" in status.inner_text()


def produce_many(bootstrap: str, topic: str, count: int) -> None:
    """Many small messages fast (librdkafka, batched), across both partitions."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": False,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for i in range(count):
        producer.produce(topic, value=b"x" * 90 + str(i).encode(), partition=i % 2)
        if i % 50_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
