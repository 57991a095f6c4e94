"""Session fixtures: real servers started for the test run.

Kafka: the embedded tansu broker on a free port, or the broker named by
``ETL_TEST_KAFKA`` (host:port). Kafka with transactions (exactly-once tests):
noida-db's Kafka side, or the broker named by ``ETL_TEST_KAFKA_TRANSACTIONS``.

Under pytest-xdist every worker process starts its own servers (ports from
:mod:`etl.testing.ports`, files in its own temp directories). ``--phase`` picks the
tests of one phase of ``scripts/test.sh``: ``parallel`` (all but those marked
``serial``) or ``serial`` (only those).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl.embedded import EmbeddedBroker
from etl.testing.ports import reserve_port


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--phase",
        choices=("all", "parallel", "serial"),
        default="all",
        help="run only the tests not marked serial (parallel) or only those (serial)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    phase = config.getoption("--phase")
    if phase == "all":
        return
    keep, drop = [], []
    for item in items:
        serial = item.get_closest_marker("serial") is not None
        (keep if serial == (phase == "serial") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for this test session."""
    external = os.environ.get("ETL_TEST_KAFKA")
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = EmbeddedBroker(reserve_port(), log_path=log_path).start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def noida_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka broker with transactions (noida-db), or skip with why."""
    external = os.environ.get("ETL_TEST_KAFKA_TRANSACTIONS")
    if external:
        yield external
        return
    from etl.testing.noida_kafka import NoidaKafka
    from etl.testing.search_server import SearchServerUnavailable

    try:
        broker = NoidaKafka(base=tmp_path_factory.mktemp("noida-kafka")).start()
    except SearchServerUnavailable as exc:
        pytest.skip(f"no Kafka broker with transactions: {exc}")
    try:
        yield broker.bootstrap_servers
    finally:
        broker.remove()


@pytest.fixture
def uid() -> str:
    """A short unique id to keep topics and groups of tests apart."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
