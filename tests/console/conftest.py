"""One real `etl worker` (web on, a token) and one headless Chromium for the console tests.

The worker runs a transform ``suffix`` (source with 2 partitions -> target; a value
starting with ``bad`` raises, so it is dead-lettered) and an object-store sink
``archive`` on the target (with a secret option, to see it redacted). The tests of
the package share both, each in a fresh browser context.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from etl.testing import waits
from etl.testing.browser import chromium
from etl.testing.kafka import create_topic
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, write_config

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "console-test-token"
SECRET = "s3cr3t-archive-key"

SUFFIX_SOURCE = """\
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
ON_ERROR = "continue"


def deal_message(message):
    if message["value"].startswith("bad"):
        raise ValueError("refused: " + message["value"])
    message["value"] = message["value"] + "-out"
    return message
"""
#: The line of SUFFIX_SOURCE that raises.
SUFFIX_RAISE_LINE = 9


def run_async(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on a thread of its own (Playwright's sync API owns this thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until ``predicate`` returns something true; fail naming ``what``."""
    return waits.wait_until(predicate, what, timeout, retry_on=(OSError, KeyError))


@dataclass
class ConsoleWorker:
    """The worker under test: its address, token, broker, directories and topics."""

    url: str
    token: str | None
    bootstrap: str
    config: Path
    transforms: Path
    archive: Path
    process: WorkerProcess
    uid: str
    topics: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: Any = None, token: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if method == "GET" else json.dumps(body or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def pipeline(self, key: str) -> dict[str, Any]:
        for item in self.get("/etl/status/")["pipelines"]:
            if item["key"] == key:
                return dict(item)
        return {}

    def lag(self, key: str) -> int | None:
        item = self.pipeline(key)
        return item.get("lag") if item else None

    def committed(self, key: str) -> dict[str, int | None]:
        """Committed offset per partition, as Kafka has it (GET .../offsets/)."""
        answer = self.get(f"/etl/pipelines/{key}/offsets/")
        return {tp: row["committed"] for tp, row in answer["partitions"].items()}

    def topic(self, name: str, partitions: int = 1) -> str:
        """A topic of this module's own (created once)."""
        if name not in self.topics:
            topic = f"c{self.uid}-{name}"
            run_async(lambda: create_topic(self.bootstrap, topic, partitions))
            self.topics[name] = topic
        return self.topics[name]

    def produce(
        self,
        topic: str,
        items: list[tuple[str | None, str | None]],
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """One record per request (the test broker reports a batch's start as its end)."""
        from aiokafka import AIOKafkaProducer

        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                for key, value in items:
                    await producer.send_and_wait(
                        topic,
                        None if value is None else value.encode(),
                        None if key is None else key.encode(),
                        partition=partition,
                        headers=headers,
                    )
            finally:
                await producer.stop()

        run_async(go)

    def read(self, topic: str) -> list[Any]:
        """Every record of the topic now (read without a group, true ends confirmed)."""
        from etl.config import KafkaSettings
        from etl.ops.messages import TopicReader

        async def go() -> list[Any]:
            found: list[Any] = []
            async with TopicReader(KafkaSettings(bootstrap_servers=self.bootstrap), topic) as r:
                await r.open()
                await r.read(dict(r.begin), dict(r.end), lambda rec: found.append(rec) and False)
            return found

        return list(run_async(go))

    def values(self, topic: str) -> list[str]:
        return [r.value.decode() for r in self.read(topic) if r.value is not None]


def start_worker(
    base: Path, bootstrap: str, uid: str, *, token: str | None, read_only: bool = False
) -> ConsoleWorker:
    source, target = f"c{uid}-src", f"c{uid}-dst"
    run_async(lambda: create_topic(bootstrap, source, 2))
    run_async(lambda: create_topic(bootstrap, target, 1))
    transforms = base / "transforms"
    transforms.mkdir(parents=True, exist_ok=True)
    (transforms / "suffix.py").write_text(SUFFIX_SOURCE.format(source=source, target=target))
    archive = base / "archive"
    port = reserve_port()
    web: dict[str, Any] = {"enabled": True, "host": "127.0.0.1", "port": port}
    if token:
        web["token"] = token
    if read_only:
        web["read_only"] = True
    config = write_config(
        base,
        bootstrap,
        kafka={"group_prefix": f"c{uid}"},
        errors={"dead_letter_topic": f"c{uid}-dlq"},
        web=web,
        sinks=[
            {
                "name": "archive",
                "type": "object_store",
                "topics": [target],
                "url": archive.as_uri(),
                "secret_key": SECRET,
                "start_offset": "earliest",
                "batch_window_minutes": 0.02,
            }
        ],
    )
    worker = ConsoleWorker(
        f"http://127.0.0.1:{port}",
        token,
        bootstrap,
        config,
        transforms,
        archive,
        WorkerProcess(config).start(),
        uid,
        {"src": source, "dst": target},
    )
    worker.process.wait_running("suffix", "archive")
    return worker


@pytest.fixture(scope="package")
def console_worker(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[ConsoleWorker]:
    """The package's worker (token on): transform ``suffix`` and sink ``archive``."""
    uid = uuid.uuid4().hex[:8]
    worker = start_worker(tmp_path_factory.mktemp("console"), kafka_bootstrap, uid, token=TOKEN)
    try:
        yield worker
    finally:
        worker.process.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (no browser download)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as launched:
        yield launched


@dataclass
class Console:
    """A browser page on the console, with what went wrong in it."""

    page: Any
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> Any:
        self.page.goto(f"{self.url}/etl/{route}")
        self.page.wait_for_selector("body[data-loaded=true]")
        return self.page

    def go(self, route: str) -> Any:
        """Follow an in-page route (as a link does) and wait for the page to load."""
        self.page.evaluate("delete document.body.dataset.loaded")
        self.page.evaluate(f"location.hash = {route!r}")
        self.page.wait_for_selector("body[data-loaded=true]")
        return self.page

    def notice(self, text: str) -> str:
        """The confirmation an action showed (waits for it)."""
        item = self.page.locator("#notices .notice", has_text=text).last
        item.wait_for()
        return str(item.inner_text())

    def shot(self, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"console-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def open_console(
    browser: Any, url: str, *, token: str | None = None, width: int = 1280, height: int = 800
) -> tuple[Any, Console]:
    """A fresh browser context (own sessionStorage) on the console; the token pre-set."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True
    )
    context.set_default_timeout(20_000)
    if token:
        context.add_init_script(f"sessionStorage.setItem('etl-token', {json.dumps(token)})")
    page = context.new_page()
    console = Console(page, url)
    page.on("pageerror", lambda exc: console.errors.append(str(exc)))
    page.on("request", lambda request: console.requests.append(request.url))
    return context, console


@pytest.fixture
def console(browser: Any, console_worker: ConsoleWorker) -> Iterator[Console]:
    """The console in a fresh context with the token in sessionStorage (as after one prompt)."""
    context, page = open_console(browser, console_worker.url, token=TOKEN)
    try:
        yield page
        assert not page.errors, f"script errors on the page: {page.errors}"
    finally:
        context.close()
