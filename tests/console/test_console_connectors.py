"""Connectors in the console: a form from the config model; validate, create, edit, delete."""

from __future__ import annotations

import pytest

from etl.config import KafkaSettings
from etl.ops.offsets import KafkaOffsets
from tests.console.conftest import Console, ConsoleWorker, wait_until

pytestmark = pytest.mark.kafka
expect = pytest.importorskip("playwright.sync_api").expect


def groups(bootstrap: str) -> list[str]:
    reader = KafkaOffsets(KafkaSettings(bootstrap_servers=bootstrap))
    try:
        return reader.groups()
    finally:
        reader.close()


def test_connector_form_validates_creates_edits_and_deletes_with_purge(
    console: Console, console_worker: ConsoleWorker
) -> None:
    w = console_worker
    topic = w.topic("exp-src")
    out_dir = w.archive.parent / "exports-out"
    page = console.open("#/connectors/new")
    page.select_option("#c-type", "sink:object_store")
    # The form is the object_store sink's config model.
    for name in ("topics", "url", "path_layout", "batch_size_mb", "secret_key"):
        assert page.locator(f"#cfg-{name}").count() == 1, name
    assert page.locator("#cfg-secret_key").get_attribute("type") == "password"
    page.fill("#c-name", "exports")
    page.fill("#cfg-topics", topic)
    page.fill("#cfg-url", out_dir.as_uri())
    page.select_option("#cfg-start_offset", label="earliest")
    page.fill("#cfg-batch_window_minutes", "0.02")
    page.fill("#cfg-batch_size_mb", "500")

    page.click("#c-validate")
    expect(page.locator("#c-validated")).to_contain_text("Not valid: 1 problem")
    error = page.locator("[data-field-name=batch_size_mb] .field-error")
    expect(error).to_contain_text("128")
    assert page.locator("#cfg-batch_size_mb").get_attribute("aria-invalid") == "true"
    console.shot("connector-form")

    page.fill("#cfg-batch_size_mb", "1")
    page.click("#c-validate")
    expect(page.locator("#c-validated")).to_have_text("Valid: every option checks out.")
    page.click("#c-save")
    console.notice("Created connector exports")
    expect(page.locator("#c-live")).to_contain_text("Running on", timeout=60_000)

    # What it does: the sink writes the topic's messages into the directory.
    w.produce(topic, [("e1", "exported-1"), ("e2", "exported-2")])

    def exported() -> bool:
        texts = [p.read_text() for p in out_dir.rglob("*") if p.is_file()]
        return any("exported-2" in text for text in texts)

    wait_until(exported, "the connector wrote its objects")
    group = w.pipeline("sink:exports")["group_id"]
    # Listed once the sink has committed after its write (a moment after the objects).
    wait_until(lambda: group in groups(w.bootstrap), "the connector's consumer group listed")

    # Edit: the form opens with the stored values; a change is saved through the API.
    page.get_by_role("link", name="Open it").click()
    page.wait_for_selector("h1[data-pipeline='sink:exports']")
    page.locator("[data-action=edit]").click()
    page.wait_for_selector("#cfg-topics")
    assert page.input_value("#cfg-topics") == topic
    page.fill("#cfg-batch_window_minutes", "0.03")
    page.click("#c-save")
    console.notice("Updated connector exports")
    assert w.get("/connectors/exports/config")["batch_window_minutes"] == 0.03

    # Delete with purge: the dry run lists the group; afterwards it is gone from Kafka.
    console.go("#/pipelines/sink:exports")
    page.locator("[aria-label=Actions] [data-action=delete]").click()
    expect(page.locator("ul.purge-list")).to_contain_text(f"group {group}")
    page.locator("[data-dialog-action=ok]").click()
    console.notice("Deleted connector exports; purged")
    wait_until(lambda: not w.pipeline("sink:exports"), "the connector left the status")
    wait_until(lambda: group not in groups(w.bootstrap), "its consumer group was purged")
    assert w.get("/connectors") == ["archive"]


def test_a_connector_of_etl_yaml_is_changed_there(
    console: Console, console_worker: ConsoleWorker
) -> None:
    page = console.open("#/pipelines/sink:archive")
    page.locator("[aria-label=Actions] [data-action=delete]").click()
    expect(page.locator("#alerts")).to_contain_text("defined in etl.yaml")
