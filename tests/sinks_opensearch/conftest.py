"""Session fixtures of the OpenSearch sink tests.

The Elasticsearch-compatible server is the one named by ``ETL_TEST_OPENSEARCH``
(``http://host:port``) or else ``noida-db`` from its wheel on a free port. When
neither can run, every test that needs it is skipped and says why.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from opensearchpy import AsyncOpenSearch

from etl.testing.search_server import SearchServer, SearchServerUnavailable, search_server_url


@pytest.fixture(scope="session")
def search_url() -> Iterator[str]:
    """URL of an Elasticsearch-compatible server for this test session."""
    servers = search_server_url()
    try:
        url = servers.__enter__()
    except SearchServerUnavailable as exc:
        pytest.skip(f"no Elasticsearch-compatible server: {exc}")
    try:
        yield url
    finally:
        servers.__exit__(None, None, None)


@pytest.fixture
def own_search_server() -> Iterator[SearchServer]:
    """A server of this test's own, which the test may stop and start."""
    if os.environ.get("ETL_TEST_OPENSEARCH"):
        pytest.skip("stops the server: needs the noida-db launcher, not ETL_TEST_OPENSEARCH")
    try:
        server = SearchServer().start()
    except SearchServerUnavailable as exc:
        pytest.skip(f"no Elasticsearch-compatible server: {exc}")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
async def search(search_url: str) -> AsyncIterator[AsyncOpenSearch]:
    """An opensearch-py client of the session server, to check what landed."""
    client = AsyncOpenSearch(hosts=[search_url], timeout=30)
    try:
        yield client
    finally:
        await client.close()
