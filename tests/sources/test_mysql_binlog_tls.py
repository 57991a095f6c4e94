"""TLS to the server, verified by default: a MariaDB serving a throwaway CA's certificate.

The source's account there requires TLS (``REQUIRE SSL``), so a change that arrives
in Kafka was read over a verified TLS connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.testing.servers import MariaDBServer
from tests.sources.helpers import (
    CDC_PASSWORD,
    CDC_USER,
    BinlogServer,
    events,
    running_source,
    source_options,
)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[BinlogServer, Path]]:
    """A MariaDB with TLS on, and the CA file that signed its certificate."""
    server = MariaDBServer(tls=True).start()
    try:
        wrapper = BinlogServer(server, server.host, server.port)
        wrapper.execute(
            f"CREATE USER '{CDC_USER}'@'%' IDENTIFIED BY '{CDC_PASSWORD}' REQUIRE SSL",
            f"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{CDC_USER}'@'%'",
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(20))",
        )
        assert server.tls_files is not None
        yield wrapper, server.tls_files.ca
    finally:
        server.stop()


def tls_options(server: BinlogServer, uid: str, **overrides: object) -> dict[str, object]:
    options = source_options(server, "shop", uid, tables="orders", start=server.position())
    del options["ssl"]  # the default: TLS, verified
    return {**options, **overrides}


@pytest.mark.kafka
@pytest.mark.mysql
async def test_verified_tls_with_the_ca_delivers_changes(
    kafka_bootstrap: str, tls_server: tuple[BinlogServer, Path], uid: str
) -> None:
    server, ca = tls_server
    async with running_source(kafka_bootstrap, tls_options(server, uid, ssl_ca=str(ca))) as source:
        assert str(source.status.state) == "running", source.status.error
        server.execute(f"INSERT INTO shop.orders VALUES ({int(uid[:6], 16)}, 'over tls')")
        [event] = await events(kafka_bootstrap, f"t{uid}_orders", 1)
    assert event.after == {"id": int(uid[:6], 16), "item": "over tls"}


@pytest.mark.kafka
@pytest.mark.mysql
async def test_without_the_ca_the_server_is_refused_naming_the_fix(
    kafka_bootstrap: str, tls_server: tuple[BinlogServer, Path], uid: str
) -> None:
    server, _ca = tls_server
    async with running_source(kafka_bootstrap, tls_options(server, uid)) as source:
        assert str(source.status.state) == "failed"
        error = source.status.error or ""
    assert "\n" not in error
    assert error.startswith(f"TLS to {server.host}:{server.port} failed: ")
    assert "self-signed certificate" in error
    assert "set ssl_ca to the CA file" in error


@pytest.mark.kafka
@pytest.mark.mysql
async def test_a_server_without_tls_is_refused_by_default(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    options = source_options(binlog_server, database, uid, tables="t")
    del options["ssl"]
    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "failed"
        error = source.status.error or ""
    assert "the server does not offer TLS" in error and "ssl: false" in error


def test_ssl_files_with_tls_off_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    base = {"name": "s", "user": "u", "database": "d", "tables": "t", "topic_prefix": "p"}
    assert MySQLBinlogSourceConfig.model_validate(base).ssl is True
    with pytest.raises(ValidationError, match="ssl_ca: set, but ssl is false"):
        MySQLBinlogSourceConfig.model_validate({**base, "ssl": False, "ssl_ca": str(ca)})
