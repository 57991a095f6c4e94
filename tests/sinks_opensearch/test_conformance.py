"""The shared sink conformance suite, run against the Elasticsearch-compatible server."""

from __future__ import annotations

from typing import Any

import pytest
from opensearchpy import AsyncOpenSearch

from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.sink import OpenSearchSink
from tests.sinks.conformance import ConformanceHarness, SinkConformance
from tests.sinks_opensearch.harness import all_docs


class OpenSearchHarness(ConformanceHarness):
    sink_class = OpenSearchSink
    # Valid JSON but not an object: document "value" needs an object.
    bad_value = b"[1, 2, 3]"
    keyed_options = {"id": "key"}
    holds_back = True

    def __init__(self, url: str) -> None:
        self.url = url

    def config(self, **options: Any) -> OpenSearchSinkConfig:
        values = {
            "type": "opensearch",
            "hosts": [self.url],
            "index": f"conf-{options['name']}".lower(),
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
        try:
            if not await client.indices.exists(index=config.index):
                return []
            docs = await all_docs(client, config.index)
        finally:
            await client.close()
        return [int(doc["id"]) for doc in docs.values()]


@pytest.mark.opensearch
class TestOpenSearchSinkConformance(SinkConformance):
    @pytest.fixture
    def harness(self, search_url: str) -> OpenSearchHarness:
        return OpenSearchHarness(search_url)
