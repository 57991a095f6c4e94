"""The worker's status page in headless Chromium: table, lag chart, resume button."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from etl.testing.browser import chromium
from etl.testing.worker import post_json

pytestmark = pytest.mark.kafka

OpsWorker = Any  # the ops_worker fixture (tests/ops/conftest.py)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_status_page_shows_states_and_lag_chart(ops_worker: OpsWorker, wait_until: Any) -> None:
    worker = ops_worker
    answer = post_json(worker.url + "/etl/pipelines/suffix/pause/")
    assert answer["pipeline"] == "transform:suffix"

    def consumers_paused() -> bool:
        # What the worker itself reports per partition: the request was applied there.
        partitions = worker.pipeline().get("partitions", {}).values()
        return bool(partitions) and all(p["state"] == "paused" for p in partitions)

    wait_until(consumers_paused, "the worker's consumers paused")
    worker.send(0, 12)
    wait_until(lambda: worker.settled(12, 12), "lag 12 while paused")

    def lag_samples() -> int:
        history = worker.get("/etl/history/")
        series = history["pipelines"].get("transform:suffix", {})
        samples = zip(*series.values(), strict=True)
        return sum(1 for lags in samples if None not in lags and sum(lags) == 12)

    wait_until(lambda: lag_samples() >= 3, "three history samples at lag 12")

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 700})
        page.goto(worker.url + "/etl/")
        page.wait_for_selector("body[data-loaded=true]")
        row = page.locator('tr[data-pipeline="transform:suffix"]')
        assert row.locator("td.state").inner_text() == "paused"
        assert row.locator("td.lag").inner_text() == "12"
        chart = page.locator('[data-chart="transform:suffix"]')
        lines = chart.locator("polyline")
        assert lines.count() == 2
        partitions = sorted(lines.nth(i).get_attribute("data-partition") for i in range(2))
        assert partitions == [f"{worker.source}/0", f"{worker.source}/1"]
        assert all(len((lines.nth(i).get_attribute("points") or "").split()) >= 2 for i in range(2))
        page.screenshot(path=str(ARTIFACTS / "ops-status-page-paused.png"), full_page=True)

        # The page's resume button reaches the worker; the lag drains to 0.
        row.locator("button[data-action=resume]").click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page.wait_for_timeout(500)
            state = row.locator("td.state").inner_text()
            if state == "running" and row.locator("td.lag").inner_text() == "0":
                break
        else:
            raise AssertionError(f"page still shows {state}: {worker.pipeline()}")
        page.screenshot(path=str(ARTIFACTS / "ops-status-page-resumed.png"), full_page=True)
    assert worker.pipeline()["state"] == "running"
    wait_until(lambda: worker.settled(12, 0), "lag 0 after resume")
