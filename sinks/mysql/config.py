"""Options of the ``mysql`` sink (light: importable without PyMySQL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import field_validator, model_validator

from sinks.sql.config import SqlSinkConfig

SslMode = Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"]
_DSN_OPTIONS = {"ssl_mode", "charset"}


@dataclass(frozen=True)
class MySQLAddress:
    """Where to connect, from ``dsn`` and/or host/port/user/password/database."""

    host: str
    port: int
    user: str | None
    password: str | None
    database: str | None
    options: dict[str, str]


def parse_dsn(dsn: str) -> MySQLAddress:
    """``mysql://user:password@host:port/database?ssl_mode=...&charset=...``."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mysql+pymysql", "mariadb"):
        raise ValueError("dsn must start with mysql:// (mysql://user:password@host:port/db)")
    if not parts.hostname:
        raise ValueError("dsn has no host")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError("dsn has an invalid port") from None
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(options) - _DSN_OPTIONS)
    if unknown:
        raise ValueError(f"dsn option {unknown[0]!r} is not known; known: ssl_mode, charset")
    return MySQLAddress(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=unquote(parts.path.lstrip("/")) or None,
        options=options,
    )


class MySQLSinkConfig(SqlSinkConfig):
    """A MySQL / MariaDB table sink; see docs/sinks-sql.md."""

    type: Literal["mysql"] = "mysql"
    #: Unset = the DSN's ``ssl_mode``, else ``verify_identity`` (TLS with a verified server).
    ssl_mode: SslMode | None = None
    #: CA bundle for verify_ca/verify_identity; unset = the system's trusted CAs.
    ssl_ca: Path | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    charset: str = "utf8mb4"

    @field_validator("ssl_ca", "ssl_cert", "ssl_key")
    @classmethod
    def _file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @model_validator(mode="after")
    def _address(self) -> MySQLSinkConfig:
        address = self.address()  # raises ValueError for a bad dsn
        if not address.database:
            raise ValueError("set database (or put it in the dsn: mysql://host/database)")
        mode = address.options.get("ssl_mode")
        if mode is not None and mode not in SslMode.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"dsn ssl_mode {mode!r} is not one of {', '.join(SslMode.__args__)}")  # type: ignore[attr-defined]
        return self

    def address(self) -> MySQLAddress:
        """The DSN's parts, overridden by host/port/user/password/database where set."""
        base = (
            parse_dsn(self.dsn.get_secret_value())
            if self.dsn is not None
            else MySQLAddress(self.host or "localhost", 3306, None, None, None, {})
        )
        return MySQLAddress(
            host=self.host or base.host,
            port=self.port or base.port,
            user=self.user or base.user,
            password=self.password.get_secret_value() if self.password else base.password,
            database=self.database or base.database,
            options=base.options,
        )
