"""Session servers for the sink tests: a real PostgreSQL and a real MariaDB.

``postgres_server`` and ``mariadb_server`` are throwaway servers from
:mod:`etl.testing.servers` (about a second each). ``ETL_TEST_POSTGRES_DSN`` /
``ETL_TEST_MYSQL_DSN`` point the tests at servers of your own instead (the outage
tests, which stop the server, are skipped then).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from etl.testing.servers import MariaDBServer, PostgresServer
from tests.sinks.sqlharness import SqlTarget


class ExternalServer:
    """A server named by the environment: connection details, no pause/resume."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.dsn = dsn
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.user = parts.username or "root"
        self.password = parts.password or ""

    def pause(self) -> None:
        pytest.skip("cannot stop an external server")

    def resume(self) -> None:  # pragma: no cover - pause() skipped the test
        pass


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL server for the session (``.dsn``, ``.pause()``, ``.resume()``)."""
    external = os.environ.get("ETL_TEST_POSTGRES_DSN")
    if external:
        yield ExternalServer(external)
        return
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[Any]:
    """A MariaDB server with the binlog on (``.host``, ``.port``, ``.user``, ``.password``)."""
    external = os.environ.get("ETL_TEST_MYSQL_DSN")
    if external:
        yield ExternalServer(external)
        return
    server = MariaDBServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_target(postgres_server: Any) -> SqlTarget:
    return SqlTarget.postgres(postgres_server)


@pytest.fixture(scope="session")
def mysql_target(mariadb_server: Any) -> SqlTarget:
    return SqlTarget.mysql(mariadb_server)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def sql_target(request: pytest.FixtureRequest) -> SqlTarget:
    """Each SQL sink in turn (the test runs once per database)."""
    name = "pg_target" if request.param == "postgres" else "mysql_target"
    target: SqlTarget = request.getfixturevalue(name)
    return target
