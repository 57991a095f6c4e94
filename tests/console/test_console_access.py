"""The console for people: read-only mode, phone width, keyboard, nothing loaded from outside."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import (
    TOKEN,
    Console,
    ConsoleWorker,
    open_console,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.kafka
expect = pytest.importorskip("playwright.sync_api").expect

PAGES = [
    "#/pipelines",
    "#/pipelines/transform:suffix",
    "#/transforms/new",
    "#/connectors/new",
    "#/messages",
    "#/search",
]


@pytest.fixture(scope="module")
def read_only_worker(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[ConsoleWorker]:
    """A second worker with ``web.read_only: true``."""
    uid = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("console-ro")
    worker = start_worker(base, kafka_bootstrap, uid, token=None, read_only=True)
    try:
        yield worker
    finally:
        worker.process.stop()


def test_read_only_mode_shows_no_action(browser: Any, read_only_worker: ConsoleWorker) -> None:
    w = read_only_worker
    w.produce(w.topics["src"], [("k", "seen")])
    wait_until(lambda: w.lag("transform:suffix") == 0, "caught up")
    context, console = open_console(browser, w.url)
    try:
        page = console.open()
        expect(page.locator("#mode")).to_have_text("read-only (web.read_only)")
        expect(page.locator('tr[data-pipeline="transform:suffix"] td.state')).to_have_text(
            "running"
        )
        assert page.locator("main button").count() == 0
        assert not page.get_by_role("link", name="New transform").is_visible()
        console.shot("read-only")

        console.go("#/pipelines/transform:suffix")
        assert not page.locator("[aria-label=Actions]").is_visible()
        assert page.locator("[data-action]").count() == 0
        expect(page.locator("#config-json")).to_contain_text("source_topic")

        console.go(f"#/messages?topic={w.topics['src']}")
        expect(page.locator("#q-table tbody tr")).to_have_count(1)
        assert page.locator("#h-send").count() == 0
        console.go("#/transforms/new")
        expect(page.locator("main")).to_contain_text("This worker is read-only")
        assert not console.errors
    finally:
        context.close()
    with pytest.raises(urllib.error.HTTPError) as refused:
        w.request("POST", "/etl/pipelines/suffix/pause/", {})
    assert refused.value.code == 403
    # A search only reads: it runs on a read-only worker too.
    job = w.request("POST", "/etl/searches/", {"topic": w.topics["src"], "values": ["seen"]})
    done = wait_until(
        lambda: (j := w.get(f"/etl/searches/{job['id']}/"))["state"] == "done" and j, "search"
    )
    assert [m["value"] for m in done["messages"]] == ["seen"]


def no_page_scroll(page: Any) -> bool:
    width = page.evaluate("document.documentElement.scrollWidth")
    return bool(width <= page.viewport_size["width"])


def test_phone_width_is_readable(browser: Any, console_worker: ConsoleWorker) -> None:
    context, console = open_console(browser, console_worker.url, token=TOKEN, width=390, height=844)
    try:
        page = console.open()
        assert page.locator('tr[data-pipeline="transform:suffix"]').is_visible()
        assert no_page_scroll(page), "the list scrolls sideways on a phone"
        console.shot("phone-pipelines")
        for route in PAGES[1:]:
            console.go(route)
            assert no_page_scroll(page), f"{route} scrolls sideways on a phone"
            if route == "#/pipelines/transform:suffix":
                console.shot("phone-detail")
        assert not console.errors
    finally:
        context.close()


def test_keyboard_reaches_and_runs_the_actions(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    page = console.open()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    for _ in range(40):
        page.keyboard.press("Tab")
        label = page.evaluate("document.activeElement.getAttribute('aria-label')")
        if label == "pause transform:suffix":
            break
    else:
        raise AssertionError("Tab never reached the pause button")
    focused = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.tagName, s.outlineStyle, s.outlineWidth]; })()"
    )
    assert focused[0] == "BUTTON" and focused[1] != "none" and focused[2] != "0px"
    page.keyboard.press("Enter")
    console.notice("Pause sent for transform:suffix")
    wait_until(lambda: w.pipeline("transform:suffix")["state"] == "paused", "paused")
    # The row's button turns into resume and keeps the focus.
    page.wait_for_selector('tr[data-pipeline="transform:suffix"] button[data-action=resume]:focus')
    page.keyboard.press("Enter")
    console.notice("Resume sent for transform:suffix")
    wait_until(lambda: w.pipeline("transform:suffix")["state"] == "running", "running again")

    # Every control is a button or a link; a dialog closes with Escape and does nothing.
    console.go("#/pipelines/transform:suffix")
    tags = page.eval_on_selector_all(
        "main [data-action]", "nodes => nodes.map(n => n.tagName + (n.href ? ':href' : ''))"
    )
    assert tags and all(tag in ("BUTTON", "A:href") for tag in tags), tags
    page.locator("[aria-label=Actions] [data-action=stop]").focus()
    page.keyboard.press("Enter")
    page.locator("dialog.modal").wait_for()
    page.keyboard.press("Escape")
    expect(page.locator("dialog.modal")).to_have_count(0)
    assert w.pipeline("transform:suffix")["desired"] == "running"


def test_nothing_is_loaded_from_outside(browser: Any, console_worker: ConsoleWorker) -> None:
    w = console_worker
    with urllib.request.urlopen(w.url + "/etl/", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    context, console = open_console(browser, w.url, token=TOKEN)
    try:
        console.open()
        for route in PAGES:
            console.go(route)
        outside = [url for url in console.requests if not url.startswith(w.url + "/")]
        assert not outside, f"requests to other places: {outside}"
        assert not console.errors
    finally:
        context.close()
