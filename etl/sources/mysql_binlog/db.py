"""Connections to the MySQL/MariaDB server (PyMySQL), with TLS verified by default."""

from __future__ import annotations

import ssl
from typing import Any

import pymysql

from etl.errors import FatalError
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
#: TLS required but the server does not offer it.
CR_SSL_CONNECTION_ERROR = 2026


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
        # A server that does not offer TLS is refused (no silent fallback to plain text).
        settings["ssl"] = context
    else:
        settings["ssl_disabled"] = True
    return settings


def connect(config: MySQLBinlogSourceConfig, **extra: Any) -> pymysql.Connection[Any]:
    """A new autocommit connection."""
    return open_connection(config, {**connection_settings(config), "autocommit": True, **extra})


def open_connection(
    config: MySQLBinlogSourceConfig, settings: dict[str, Any]
) -> pymysql.Connection[Any]:
    """``pymysql.connect(**settings)``; a TLS failure is a FatalError that names the fix."""
    try:
        return pymysql.connect(**settings)
    except pymysql.err.OperationalError as exc:
        problem = tls_problem(exc, config)
        if problem is None:
            raise
        raise FatalError(f"TLS to {server_label(config)} failed: {problem}") from None


def tls_problem(exc: BaseException, config: MySQLBinlogSourceConfig) -> str | None:
    """What went wrong with TLS and how to fix it, or None when it is not a TLS error."""
    if error_code(exc) == CR_SSL_CONNECTION_ERROR:
        return (
            "the server does not offer TLS; enable it on the server (its ssl_cert and ssl_key) "
            "or set ssl: false in this source (trusted networks only)"
        )
    cause = getattr(exc, "original_exception", None)
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or str(cause)
        if "mismatch" in reason.lower():
            return (
                f"{reason}; connect by a host name the certificate holds, "
                "or set ssl_verify_hostname: false"
            )
        if config.ssl_ca:
            return f"{reason}; the server's certificate is not signed by ssl_ca {config.ssl_ca}"
        return (
            f"{reason}; set ssl_ca to the CA file that signed the server's certificate "
            "(or ssl: false for a server without TLS)"
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({cause.reason or cause}); check ssl_ca, ssl_cert, ssl_key"
    return None


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
