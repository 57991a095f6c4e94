"""Session fixtures: real servers started for the test run.

Kafka: the embedded tansu broker on a free port, or the broker named by
``ETL_TEST_KAFKA`` (host:port).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for this test session."""
    external = os.environ.get("ETL_TEST_KAFKA")
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = EmbeddedBroker(log_path=log_path).start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def uid() -> str:
    """A short unique id to keep topics and groups of tests apart."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
