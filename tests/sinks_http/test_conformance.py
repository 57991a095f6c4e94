"""The shared sink conformance suite, run against a real local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from etl.testing.hostile import hostile_id
from etl.testing.sink_conformance import ConformanceHarness, SinkConformance
from sinks.http.config import HttpSinkConfig
from sinks.http.sink import HttpSink
from tests.sinks_http.conftest import ScriptedServer, serving


class HttpHarness(ConformanceHarness):
    sink_class = HttpSink
    bad_value = b'{"id": 3, "name": "\xff"}'  # not UTF-8: the documents send text only
    keyed_options = None  # an HTTP endpoint has no key to overwrite by
    holds_back = True
    must_route = frozenset({"non-utf8-value", "non-utf8-key"})

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server

    def config(self, **options: Any) -> HttpSinkConfig:
        base = self.server.url.rsplit("/", 1)[0]
        return HttpSinkConfig.model_validate(
            {"type": "http", "url": f"{base}/{options['name']}", **options}
        )

    async def landed(self, config: Any) -> list[int]:
        path = "/" + config.name
        with self.server.lock:
            requests = [r for r in self.server.requests if r.path == path and r.status == 200]
        found = [hostile_id(m.get("value"), m["offset"]) for r in requests for m in r.messages]
        return [n for n in found if n is not None]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ScriptedServer]:
    with serving() as server:
        yield server


@pytest.mark.kafka
class TestHttpSinkConformance(SinkConformance):
    @pytest.fixture
    def harness(self, shared_server: ScriptedServer) -> HttpHarness:
        return HttpHarness(shared_server)
