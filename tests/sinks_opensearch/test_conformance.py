"""The shared sink conformance suite, run against the Elasticsearch-compatible server."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from opensearchpy import AsyncOpenSearch

from etl.testing.sink_conformance import ConformanceHarness, SinkConformance
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.sink import OpenSearchSink
from tests.sinks_opensearch.harness import all_docs


class OpenSearchHarness(ConformanceHarness):
    sink_class = OpenSearchSink
    # Valid JSON but not an object: document "value" needs an object.
    bad_value = b"[1, 2, 3]"
    keyed_options = {"id": "key"}
    holds_back = True
    # A dated index: a year-10000 timestamp has no index name.
    hostile_options: ClassVar[dict[str, Any]] = {"index_date": True}
    must_route = frozenset({"year-10000", "rejected-by-destination", "non-utf8-key", "key-200kb"})

    def __init__(self, url: str) -> None:
        self.url = url

    def config(self, **options: Any) -> OpenSearchSinkConfig:
        dated = "-{yyyy}" if options.pop("index_date", False) else ""
        values = {
            "type": "opensearch",
            "hosts": [self.url],
            "index": f"conf-{options['name']}{dated}".lower(),
            "document": "value",
            # The suite reuses offsets for different records in one target (batches
            # start at offset 0), so coordinates would collide where keys do not.
            "id": "key",
            "request_timeout_s": 10,
            **options,
        }
        return OpenSearchSinkConfig.model_validate(values)

    async def landed(self, config: Any) -> list[int]:
        client = AsyncOpenSearch(hosts=[self.url], timeout=30)
        index = config.index_template().render("t", 0, None)  # a dated one: this year's
        try:
            if not await client.indices.exists(index=index):
                return []
            docs = await all_docs(client, index)
        finally:
            await client.close()
        return [int(doc["id"]) for doc in docs.values()]


@pytest.mark.opensearch
class TestOpenSearchSinkConformance(SinkConformance):
    @pytest.fixture
    def harness(self, search_url: str) -> OpenSearchHarness:
        return OpenSearchHarness(search_url)
