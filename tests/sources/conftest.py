"""Session servers for the source tests: MariaDB with the binlog on, and the broker.

``binlog_server`` is a throwaway MariaDB started with the flags the source needs
(ROW, FULL image, FULL row metadata) and an account ``cdc`` that has exactly the
documented grants (SELECT, REPLICATION SLAVE, REPLICATION CLIENT). Each test
works in its own database (``database`` fixture) and begins reading at the binlog
position taken when the test starts, so tests sharing the server never see each
other's changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etl.testing.servers import MariaDBServer
from tests.sinks_object_store.conftest import s3_client, s3_endpoint  # noqa: F401 - fixtures
from tests.sources.helpers import CDC_PASSWORD, CDC_USER, BinlogServer


@pytest.fixture(scope="session")
def binlog_server() -> Iterator[BinlogServer]:
    server = MariaDBServer().start()
    try:
        wrapper = BinlogServer(server, server.host, server.port)
        wrapper.execute(
            f"CREATE USER '{CDC_USER}'@'%' IDENTIFIED BY '{CDC_PASSWORD}'",
            f"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{CDC_USER}'@'%'",
        )
        yield wrapper
    finally:
        server.stop()


@pytest.fixture
def database(binlog_server: BinlogServer, uid: str) -> Iterator[str]:
    """A fresh database for one test."""
    name = f"db_{uid}"
    binlog_server.execute(f"CREATE DATABASE `{name}`")
    yield name
    binlog_server.execute(f"DROP DATABASE IF EXISTS `{name}`")
