"""ETL tasks in the console: a transform from a template or from code, tested, saved, live."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from etl.transforms.loader import load_any
from tests.console.conftest import TOKEN, Console, ConsoleWorker, wait_until

pytestmark = pytest.mark.kafka
expect = pytest.importorskip("playwright.sync_api").expect


def status_version(w: ConsoleWorker, key: str) -> str | None:
    item = w.pipeline(key)
    return item.get("version") if item.get("state") == "running" else None


def test_template_transform_is_tested_saved_and_goes_live(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    src, dst = w.topic("tpl-src"), w.topic("tpl-dst")
    page = console.open("#/transforms/new")
    page.fill("#t-name", "tpl_suffix")
    page.fill("#t-source", src)
    page.fill("#t-target", dst)
    page.select_option("#t-template", "add_prefix_suffix")
    # The params form comes from the template's pydantic model.
    for name in ("key_prefix", "key_suffix", "value_prefix", "value_suffix"):
        assert page.locator(f"#param-{name}").is_visible()

    # Nothing set: the model's own rule, said on the page.
    page.fill("#t-value", "hello")
    page.click("#t-test")
    expect(page.locator("#t-test-problem")).to_contain_text("set at least one of key_prefix")

    page.fill("#param-value_suffix", "-T")
    page.fill("#t-key", "k1")
    page.click("#t-test")
    expect(page.locator("#t-test-summary")).to_contain_text(f"1 record to {dst}")
    assert page.locator(".out-value").inner_text() == "hello-T"
    assert page.locator(".out-key").inner_text() == "k1"
    console.shot("transform-template")

    page.click("#t-save")
    expect(page.locator("#t-saved")).to_contain_text("tpl_suffix.yaml")
    path = w.transforms / "tpl_suffix.yaml"
    written = yaml.safe_load(path.read_text())
    assert written["template"] == "add_prefix_suffix"
    assert written["params"] == {"value_suffix": "-T"}
    assert (written["source_topic"], written["target_topic"]) == (src, dst)
    version = load_any(path).version
    expect(page.locator("#t-live")).to_contain_text(f"Live: version {version}", timeout=60_000)
    assert status_version(w, "transform:tpl_suffix") == version

    w.produce(src, [("k2", "world")])
    wait_until(lambda: "world-T" in w.values(dst), "the saved transform wrote to its target")
    w.request("DELETE", "/etl/transforms/files/tpl_suffix.yaml")


BROKEN = """\
SOURCE_TOPIC = {src!r}
TARGET_TOPIC = {dst!r}
START_OFFSET = "earliest"


def deal_message(message):
    words = message["value"].split()
    message["value"] = words[5].upper()
    return message
"""
FIXED = """\
import asyncio

SOURCE_TOPIC = {src!r}
TARGET_TOPIC = {dst!r}
START_OFFSET = "earliest"


async def deal_message(message):
    await asyncio.sleep(0)
    message["value"] = message["value"].upper()
    return message
"""


def test_code_transform_shows_the_error_line_then_saves_and_deletes(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    src, dst = w.topic("code-src"), w.topic("code-dst")
    w.produce(src, [("u1", "hello world")])
    page = console.open("#/transforms/new")
    page.check("#t-mode-code")
    page.fill("#t-name", "code_upper")
    page.fill("#t-code", BROKEN.format(src=src, dst=dst))

    # A sample picked from the source topic.
    page.click("#t-pick")
    page.locator("table.samples button.use-sample").first.click()
    assert page.input_value("#t-value") == "hello world"
    assert page.input_value("#t-key") == "u1"

    page.click("#t-test")
    expect(page.locator("#t-test-error")).to_contain_text("code_upper.py:8: IndexError")
    assert "\u25b68" in page.locator(".gutter").inner_text()  # line 8 marked
    console.shot("transform-code-error")

    # Fixed, as async def (run as `etl test-transform` runs it).
    page.fill("#t-code", FIXED.format(src=src, dst=dst))
    page.click("#t-test")
    expect(page.locator("#t-test-summary")).to_contain_text("async")
    assert page.locator(".out-value").inner_text() == "HELLO WORLD"

    page.click("#t-save")
    path = w.transforms / "code_upper.py"
    expect(page.locator("#t-saved")).to_contain_text(str(path))
    assert path.read_text() == FIXED.format(src=src, dst=dst)
    version = load_any(path).version
    expect(page.locator("#t-live")).to_contain_text(f"Live: version {version}", timeout=60_000)
    wait_until(lambda: "HELLO WORLD" in w.values(dst), "the saved transform wrote to its target")
    console.shot("transform-code")

    # Edit from its page: the editor opens the file; the new version is live from the
    # next batch of messages (a swap, no restart).
    page.get_by_role("link", name="Open the pipeline").click()
    page.wait_for_selector("h1[data-pipeline='transform:code_upper']")
    page.locator("[data-action=edit]").click()
    page.wait_for_selector("#t-code")
    assert page.input_value("#t-code") == FIXED.format(src=src, dst=dst)
    edited = FIXED.format(src=src, dst=dst).replace(".upper()", ".upper() + '!'")
    page.fill("#t-code", edited)
    page.click("#t-save")
    expect(page.locator("#t-saved")).to_contain_text("version")
    new_version = load_any(path).version
    assert new_version != version
    expect(page.locator("#t-live")).to_contain_text(
        f"The worker has loaded version {new_version}", timeout=60_000
    )
    w.produce(src, [("u2", "again")])
    expect(page.locator("#t-live")).to_contain_text(f"Live: version {new_version}", timeout=60_000)
    wait_until(lambda: "AGAIN!" in w.values(dst), "the edited version wrote to its target")

    # Delete from its page: the dialog names the file; the file goes, then the pipeline.
    page.get_by_role("link", name="Open the pipeline").click()
    page.wait_for_selector("h1[data-pipeline='transform:code_upper']")
    page.locator("[aria-label=Actions] [data-action=delete]").click()
    expect(page.locator("ul.purge-list")).to_contain_text(str(path))
    page.locator("[data-dialog-action=ok]").click()
    console.notice("Deleted")
    assert not path.exists()
    page.wait_for_url("**/etl/#/pipelines", timeout=60_000)
    assert not w.pipeline("transform:code_upper")


def _status_of(w: ConsoleWorker, method: str, path: str, body: object, **headers: str) -> int:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        w.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_transform_files_stay_in_the_directory_and_need_the_token(
    console_worker: ConsoleWorker,
) -> None:
    w = console_worker
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"text": "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\ndef deal_message(m):\n    return m\n"}
    outside = Path(w.transforms).parent / "evil.py"
    for name in ("..%2Fevil.py", ".hidden.py", "evil.txt", "%2Ftmp%2Fevil.py"):
        assert _status_of(w, "PUT", f"/etl/transforms/files/{name}", body, **auth) in (400, 404)
    assert not outside.exists()
    assert _status_of(w, "PUT", "/etl/transforms/files/ok.py", body) == 401  # no token
    cross = {**auth, "Origin": "https://evil.example"}
    assert _status_of(w, "PUT", "/etl/transforms/files/ok.py", body, **cross) == 403
    assert _status_of(w, "POST", "/etl/transforms/test/", body) == 401  # a test runs code
    assert not (w.transforms / "ok.py").exists()
