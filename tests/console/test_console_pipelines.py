"""The console's pipeline pages in Chromium: list, detail, dead letters, and every action."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import (
    SECRET,
    SUFFIX_RAISE_LINE,
    TOKEN,
    Console,
    ConsoleWorker,
    open_console,
    wait_until,
)

pytestmark = pytest.mark.kafka
expect = pytest.importorskip("playwright.sync_api").expect

KEY = "transform:suffix"


def page_lag(page: Any) -> int:
    """The lag the detail page shows, summed over its partition rows."""
    cells = page.locator("#progress table.partitions td.lag").all_inner_texts()
    return sum(int(text.replace(",", "")) for text in cells if text.strip() not in ("", "-"))


def consumers_paused(w: ConsoleWorker) -> bool:
    """The worker itself reports every partition paused (the request was applied there)."""
    partitions = w.pipeline(KEY).get("partitions", {}).values()
    return bool(partitions) and all(p["state"] == "paused" for p in partitions)


def test_list_and_detail_show_state_config_dead_letters_and_logs(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    w.produce(w.topics["src"], [("k1", "m1"), ("k2", "m2"), ("k3", "bad-1"), ("k4", "m4")])
    wait_until(
        lambda: w.lag(KEY) == 0 and w.pipeline(KEY)["dead_lettered"] >= 1, "suffix caught up"
    )
    wait_until(lambda: w.lag("sink:archive") == 0, "the sink caught up")
    worker_id = w.get("/etl/status/")["worker"]["id"]

    page = console.open()
    row = page.locator(f'tr[data-pipeline="{KEY}"]')
    assert row.locator("td.kind").inner_text() == "transform"
    assert row.locator("td.state").inner_text() == "running"
    assert worker_id in row.locator("td.workers").inner_text()
    expect(row.locator("td.lag")).to_have_text("0")
    sink = page.locator('tr[data-pipeline="sink:archive"]')
    assert sink.locator("td.kind").inner_text() == "sink"
    assert sink.locator("td.state").inner_text() == "running"
    assert page.locator(f'[data-chart="{KEY}"] polyline').count() == 2
    console.shot("pipelines")

    # The name is a link to the pipeline's page.
    row.get_by_role("link", name="suffix").click()
    page.wait_for_selector("h1[data-pipeline='transform:suffix']")
    page.wait_for_selector("body[data-loaded=true]")
    overview = page.locator("#overview").inner_text()
    assert f"c{w.uid}-transform-suffix" in overview  # the consumer group
    assert worker_id in overview
    partitions = page.locator("#progress tr[data-partition]")
    assert sorted(partitions.evaluate_all("rows => rows.map(r => r.dataset.partition)")) == [
        f"{w.topics['src']}/0",
        f"{w.topics['src']}/1",
    ]
    assert f'"source_topic": "{w.topics["src"]}"' in page.locator("#config-json").inner_text()

    # A dead letter: open it for its headers and the original value.
    letter = page.locator("tr.letter", has_text="refused: bad-1").first
    letter.get_by_role("button", name="Open").click()
    detail = page.locator("tr.letter-detail:visible").first
    headers = detail.locator("table.headers").inner_text()
    assert "etl.exception.class\tValueError" in headers
    assert f"suffix.py:{SUFFIX_RAISE_LINE}" in headers  # etl.exception.location
    assert detail.locator("pre.original").inner_text() == "bad-1"
    assert "dead-lettered" in page.locator("#logs ol.log-lines").inner_text()
    console.shot("pipeline-detail")

    # A sink's configuration has its secret redacted.
    console.go("#/pipelines/sink:archive")
    page.wait_for_selector("#config-json")
    config = page.locator("#config-json").inner_text()
    assert '"secret_key": "***"' in config and SECRET not in config

    # What the pipelines did in Kafka: the target holds the transformed values.
    assert {"m1-out", "m2-out", "m4-out"} <= set(w.values(w.topics["dst"]))


def test_actions_ask_the_token_once_and_move_kafka(
    browser: Any, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    context, console = open_console(browser, w.url)  # no token yet in this tab
    try:
        page = console.open(f"#/pipelines/{KEY}")
        toolbar = page.locator("[aria-label=Actions]")

        # Pause: the worker answers 401, the page asks for the token once.
        toolbar.locator("[data-action=pause]").click()
        page.locator("#token-dialog").wait_for()
        page.fill("#token-input", TOKEN)
        page.get_by_role("button", name="Use token").click()
        console.notice("Pause sent for transform:suffix")
        assert page.evaluate("sessionStorage.getItem('etl-token')") == TOKEN
        page.wait_for_selector("#detail-state .state-paused")
        assert w.pipeline(KEY)["desired"] == "paused"
        wait_until(lambda: consumers_paused(w), "the worker's consumers paused")

        w.produce(w.topics["src"], [(f"p{i}", f"paused-{i}") for i in range(6)])
        wait_until(lambda: w.lag(KEY) == 6, "lag 6 while paused (Kafka)")
        expect(page.locator("#detail-lag")).to_have_text("6")

        # Resume: the token is kept, no second prompt; the lag drains.
        toolbar.locator("[data-action=resume]").click()
        console.notice("Resume sent for transform:suffix")
        assert page.locator("#token-dialog").count() == 0
        wait_until(lambda: w.lag(KEY) == 0, "lag 0 after resume (Kafka)")
        wait_until(lambda: page_lag(page) == 0, "the page shows lag 0")

        # Reset to earliest: the preview shows before/after and moves nothing.
        before = w.committed(KEY)
        assert sum(v or 0 for v in before.values()) >= 10
        dst_before = len(w.values(w.topics["dst"]))
        toolbar.locator("[data-action=reset]").click()
        page.locator("#reset-preview").click()
        preview = page.locator("table.reset-table[data-dry-run=true]")
        preview.wait_for()
        for tp, committed in before.items():
            cells = preview.locator(f'tr[data-partition="{tp}"]')
            assert cells.locator("td.before").inner_text() == f"{committed:,}"
            assert cells.locator("td.after").inner_text() == "0"
        console.shot("reset-preview", full_page=False)
        assert w.committed(KEY) == before  # a dry run
        page.locator("#reset-apply").click()
        console.notice("Offsets of transform:suffix reset to earliest")
        assert set(w.committed(KEY).values()) == {0}
        page.wait_for_selector("#detail-state .state-stopped")

        # Resume replays from the start: the target gets the messages again.
        toolbar.locator("[data-action=resume]").click()
        console.notice("Resume sent")
        wait_until(lambda: w.lag(KEY) == 0, "replayed after the reset")
        wait_until(
            lambda: len(w.values(w.topics["dst"])) >= 2 * dst_before, "target got the replay"
        )

        # Restart and stop ask first.
        toolbar.locator("[data-action=restart]").click()
        page.locator("[data-dialog-action=ok]").click()
        console.notice("Restart sent for transform:suffix")
        wait_until(lambda: w.pipeline(KEY)["state"] == "running", "running after restart")
        toolbar.locator("[data-action=stop]").click()
        page.locator("[data-dialog-action=ok]").click()
        console.notice("Stop sent for transform:suffix")
        page.wait_for_selector("#detail-state .state-stopped")
        assert w.pipeline(KEY)["desired"] == "stopped"
        toolbar.locator("[data-action=resume]").click()
        console.notice("Resume sent")
        wait_until(lambda: w.pipeline(KEY)["state"] == "running", "running again")
        assert not console.errors
    finally:
        context.close()
