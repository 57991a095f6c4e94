"""Options of the ``postgres`` sink (light: importable without psycopg)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from sinks.sql.config import SqlSinkConfig, check_identifier

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresSinkConfig(SqlSinkConfig):
    """A PostgreSQL (or compatible) table sink; see docs/sinks-sql.md."""

    type: Literal["postgres"] = "postgres"
    #: Schema of the table; unset = the first schema of the connection's search_path.
    table_schema: str | None = None
    #: libpq sslmode; unset = the DSN's, else ``verify-full`` (TLS with a verified server).
    sslmode: SslMode | None = None
    #: CA bundle for verify-ca/verify-full; unset = the system's trusted CAs.
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    sslpassword: SecretStr | None = None
    application_name: str = Field(default="faust-etl", max_length=63)

    @field_validator("table_schema")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "table_schema")

    @field_validator("sslrootcert", "sslcert", "sslkey")
    @classmethod
    def _file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value
