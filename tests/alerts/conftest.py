"""A real HTTP server that records the notifications it receives (webhook and Slack)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    """One request: its path, headers and JSON body."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class WebhookReceiver:
    """``url(path)`` to send to; ``received`` in arrival order; ``fail(path, n)`` answers
    HTTP 500 to the next ``n`` requests on ``path``."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    failures: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def fail(self, path: str, times: int, status: int = 500) -> None:
        with self.lock:
            self.failures[path] = [status] * times

    def bodies(self, path: str = "/hook") -> list[Any]:
        with self.lock:
            return [r.body for r in self.received if r.path == path]

    def wait_for(
        self, predicate: Callable[[WebhookReceiver], Any], what: str, timeout: float = 60
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; received: {self.bodies_all()}")

    def bodies_all(self) -> list[tuple[str, Any]]:
        with self.lock:
            return [(r.path, r.body) for r in self.received]


def make_handler(receiver: list[WebhookReceiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            owner = receiver[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with owner.lock:
                queued = owner.failures.get(self.path) or []
                status = queued.pop(0) if queued else 200
                owner.received.append(
                    Received(self.path, dict(self.headers.items()), body, time.time())
                )
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"nope")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port, for one test."""
    holder: list[WebhookReceiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(holder))
    found = WebhookReceiver(server)
    holder.append(found)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
