"""A PostgreSQL server without TLS: the sink's error names the switch (``sslmode: disable``)."""

from __future__ import annotations

from typing import Any

import pytest

from etl.config import ETLSettings
from etl.errors import FatalError
from etl.redact import Redactor
from sinks.postgres.config import PostgresSinkConfig
from sinks.postgres.sink import PostgresSink

pytestmark = pytest.mark.postgres


async def test_a_server_without_tls_says_to_set_sslmode_disable(postgres_server: Any) -> None:
    config = PostgresSinkConfig.model_validate(
        {
            "name": "pg",
            "type": "postgres",
            "topics": ["t"],
            "dsn": postgres_server.dsn,
            "table": "t",
        }
    )
    if "sslmode" in postgres_server.dsn:
        pytest.skip("the test server's DSN chooses its own sslmode")
    sink = PostgresSink(config, settings=ETLSettings(), redact=Redactor([]))
    with pytest.raises(FatalError) as caught:
        await sink.connect()
    message = str(caught.value)
    assert "server does not support SSL" in message
    assert "set sslmode: disable on the sink" in message
    assert "\n" not in message
