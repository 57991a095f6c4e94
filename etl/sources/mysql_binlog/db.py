"""Connections to the MySQL/MariaDB server (PyMySQL), with TLS verified by default."""

from __future__ import annotations

import ssl
from typing import Any

import pymysql

from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig

# Client error codes that mean "try again later" rather than "fix the config".
TRANSIENT_CODES = {
    2002,  # can't connect (socket)
    2003,  # can't connect (TCP)
    2006,  # server has gone away
    2013,  # lost connection
    1040,  # too many connections
    1053,  # server shutdown in progress
    1205,  # lock wait timeout
    1213,  # deadlock
}
ACCESS_DENIED_CODES = {1044, 1045, 1142, 1227, 1370}
#: The binlog position asked for is no longer on the server (purged) or never was.
BINLOG_GONE_CODE = 1236


def error_code(exc: BaseException) -> int | None:
    """The server/client error number of a PyMySQL error, if it has one."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def ssl_context(config: MySQLBinlogSourceConfig) -> ssl.SSLContext | None:
    """A verifying TLS context when the config asks for TLS, else None."""
    if not config.uses_tls:
        return None
    context = ssl.create_default_context(cafile=str(config.ssl_ca) if config.ssl_ca else None)
    context.check_hostname = config.ssl_verify_hostname
    if config.ssl_cert:
        context.load_cert_chain(
            str(config.ssl_cert), str(config.ssl_key) if config.ssl_key else None
        )
    return context


def connection_settings(config: MySQLBinlogSourceConfig) -> dict[str, Any]:
    """Keyword arguments of ``pymysql.connect`` (also what the binlog reader takes)."""
    settings: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "user": config.user,
        "passwd": config.password.get_secret_value() if config.password else "",
        "connect_timeout": config.connect_timeout_s,
        "charset": "utf8mb4",
    }
    context = ssl_context(config)
    if context is not None:
        settings["ssl"] = context
    return settings


def connect(config: MySQLBinlogSourceConfig, **extra: Any) -> pymysql.Connection[Any]:
    """A new autocommit connection."""
    return pymysql.connect(**{**connection_settings(config), "autocommit": True, **extra})


def server_label(config: MySQLBinlogSourceConfig) -> str:
    """``host:port`` for logs and status (never the credentials)."""
    return f"{config.host}:{config.port}"


def close_quietly(connection: Any) -> None:
    """Close a connection that may already be broken."""
    if connection is not None:
        try:
            connection.close()
        except Exception:  # a broken connection cannot be closed more
            pass
