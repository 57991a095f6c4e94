"""Checks at start: is the server set up for a row-based binlog reader, may this account read it.

Every problem found is reported at once, each with the fix, e.g.::

    binlog_format is STATEMENT, must be ROW: SET GLOBAL binlog_format=ROW and set
    binlog_format=ROW in the server's config

Runs in a worker thread (blocking PyMySQL calls).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pymysql

from etl.errors import ETLError
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import error_code
from etl.sources.mysql_binlog.position import BinlogPosition

log = logging.getLogger("etl.source.mysql_binlog")

REQUIRED_PRIVILEGES = ("SELECT", "REPLICATION SLAVE", "REPLICATION CLIENT")
# What each required privilege may be called in SHOW GRANTS (MySQL 8, MariaDB 10.5+).
_ALIASES = {
    "SELECT": {"SELECT"},
    "REPLICATION SLAVE": {"REPLICATION SLAVE", "REPLICATION REPLICA"},
    "REPLICATION CLIENT": {"REPLICATION CLIENT", "BINLOG MONITOR"},
}
_GRANT = re.compile(r"^GRANT\s+(?P<privs>.+?)\s+ON\s+(?P<object>\S+)\s+TO\s", re.I | re.S)
_ROLE_GRANT = re.compile(r"^GRANT\s+[`'\w@%.-]+\s+TO\s", re.I)


class PreflightError(ETLError):
    """The server or the account is not set up for the source; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("preflight failed: " + "; ".join(problems))


@dataclass
class ServerInfo:
    """What the preflight learned about the server."""

    version: str
    is_mariadb: bool
    server_id: int
    row_metadata_full: bool
    #: Existing tables that the source publishes -> whether each has a primary key.
    tables: dict[str, bool] = field(default_factory=dict)
    #: ``SHOW BINARY LOGS``: (file, size) oldest first.
    binlogs: list[tuple[str, int]] = field(default_factory=list)
    #: The end of the binlog now.
    current: BinlogPosition | None = None
    warnings: list[str] = field(default_factory=list)


def quote_ident(name: str) -> str:
    """A MySQL identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"


def _fetchall(cursor: Any, sql: str, args: Any = None) -> list[Any]:
    cursor.execute(sql, args)
    return list(cursor.fetchall())


def binary_logs(cursor: Any) -> list[tuple[str, int]]:
    """``SHOW BINARY LOGS`` as (file, size), oldest first."""
    return [(str(row[0]), int(row[1])) for row in _fetchall(cursor, "SHOW BINARY LOGS")]


def binlog_end(cursor: Any) -> BinlogPosition | None:
    """``SHOW MASTER STATUS`` (``SHOW BINARY LOG STATUS`` on MySQL 8.4+)."""
    try:
        rows = _fetchall(cursor, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError as exc:
        if error_code(exc) != 1064:
            raise
        rows = _fetchall(cursor, "SHOW BINARY LOG STATUS")
    if not rows or not rows[0][0]:
        return None
    return BinlogPosition(str(rows[0][0]), int(rows[0][1]))


def granted_privileges(grant_lines: list[str], database: str) -> tuple[set[str], set[str], bool]:
    """(global privileges, privileges on ``database``, some granted through roles)."""
    global_privs: set[str] = set()
    db_privs: set[str] = set()
    roles = False
    for line in grant_lines:
        match = _GRANT.match(line)
        if match is None:
            roles = roles or bool(_ROLE_GRANT.match(line))
            continue
        # Column lists ("SELECT (a, b)") would split wrongly on commas.
        privs = {p.strip().upper() for p in re.sub(r"\([^)]*\)", "", match["privs"]).split(",")}
        if "ALL" in privs or "ALL PRIVILEGES" in privs:
            privs |= {alias for names in _ALIASES.values() for alias in names}
        target = match["object"].replace("`", "")
        if target == "*.*":
            global_privs |= privs
        elif target.split(".", 1)[0] == database:
            db_privs |= privs
    return global_privs, db_privs, roles


def missing_privileges(grant_lines: list[str], database: str) -> tuple[list[str], bool]:
    """The required privileges the account lacks, and whether roles were seen."""
    global_privs, db_privs, roles = granted_privileges(grant_lines, database)
    missing = []
    for name in REQUIRED_PRIVILEGES:
        names = _ALIASES[name]
        scope = global_privs | db_privs if name == "SELECT" else global_privs
        if not names & scope:
            missing.append(name)
    return missing, roles


def _variables(cursor: Any) -> dict[str, str]:
    rows = _fetchall(
        cursor,
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
        "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', "
        "'server_id', 'version', 'log_bin_compress', 'binlog_transaction_compression')",
    )
    return {str(name).lower(): str(value) for name, value in rows}


def _tables_with_keys(cursor: Any, database: str) -> dict[str, bool]:
    # KEY_COLUMN_USAGE, not TABLE_CONSTRAINTS: MariaDB hides the latter from an
    # account that has only SELECT.
    rows = _fetchall(
        cursor,
        "SELECT t.TABLE_NAME, EXISTS(SELECT 1 FROM information_schema.KEY_COLUMN_USAGE k "
        "WHERE k.TABLE_SCHEMA = t.TABLE_SCHEMA AND k.TABLE_NAME = t.TABLE_NAME "
        "AND k.CONSTRAINT_NAME = 'PRIMARY') "
        "FROM information_schema.TABLES t "
        "WHERE t.TABLE_SCHEMA = %s AND t.TABLE_TYPE = 'BASE TABLE'",
        (database,),
    )
    return {str(name): bool(has_pk) for name, has_pk in rows}


def run_preflight(connection: Any, config: MySQLBinlogSourceConfig) -> ServerInfo:
    """Check everything; raise :class:`PreflightError` listing each problem."""
    problems: list[str] = []
    cursor = connection.cursor()
    variables = _variables(cursor)
    version = variables.get("version", "")
    info = ServerInfo(
        version=version,
        is_mariadb="mariadb" in version.lower(),
        server_id=int(variables.get("server_id", "0") or 0),
        row_metadata_full=variables.get("binlog_row_metadata", "").upper() == "FULL",
    )

    log_bin = variables.get("log_bin", "OFF").upper()
    if log_bin not in ("ON", "1"):
        problems.append(
            "the binlog is off (log_bin=OFF): start the server with --log-bin "
            "(and --server-id), as the source reads the binlog"
        )
    binlog_format = variables.get("binlog_format", "").upper()
    if binlog_format != "ROW":
        problems.append(
            f"binlog_format is {binlog_format or 'unknown'}, must be ROW: "
            "SET GLOBAL binlog_format=ROW and set binlog_format=ROW in the server's config"
        )
    row_image = variables.get("binlog_row_image", "").upper()
    if row_image != "FULL":
        problems.append(
            f"binlog_row_image is {row_image or 'unknown'}, must be FULL (whole rows before "
            "and after a change): SET GLOBAL binlog_row_image=FULL and in the server's config"
        )
    if "binlog_row_metadata" in variables and not info.row_metadata_full:
        problems.append(
            f"binlog_row_metadata is {variables['binlog_row_metadata'].upper()}, must be FULL "
            "(column names and primary keys travel in the binlog): "
            "SET GLOBAL binlog_row_metadata=FULL and in the server's config"
        )
    elif "binlog_row_metadata" not in variables:
        info.warnings.append(
            "this server has no binlog_row_metadata (MySQL < 8.0.1, MariaDB < 10.5): column "
            "names are read from information_schema, so rows written before an ALTER TABLE "
            "may be decoded with the new column names"
        )

    for name in ("log_bin_compress", "binlog_transaction_compression"):
        if variables.get(name, "OFF").upper() in ("ON", "1"):
            problems.append(
                f"{name} is ON: the binlog reader cannot read compressed events and would "
                f"miss those changes: SET GLOBAL {name}=OFF and in the server's config"
            )

    try:
        grants = [str(row[0]) for row in _fetchall(cursor, "SHOW GRANTS FOR CURRENT_USER()")]
    except pymysql.err.MySQLError as exc:
        grants = []
        info.warnings.append(f"could not read the account's grants: {exc.args[-1]}")
    if grants:
        missing, roles = missing_privileges(grants, config.database)
        if missing:
            hint = " (privileges granted through roles are not counted)" if roles else ""
            problems.append(
                f"user {config.user!r} lacks {', '.join(missing)}{hint}: "
                f"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO "
                f"'{config.user}'@'%'"
            )

    try:
        info.binlogs = binary_logs(cursor)
        info.current = binlog_end(cursor)
    except pymysql.err.MySQLError as exc:
        if not any("REPLICATION CLIENT" in p for p in problems):
            problems.append(
                f"cannot list the binlog (SHOW BINARY LOGS: {exc.args[-1]}): grant "
                "REPLICATION CLIENT (BINLOG MONITOR on MariaDB)"
            )

    schemas = _fetchall(
        cursor,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (config.database,),
    )
    if not schemas:
        problems.append(
            f"database {config.database!r} does not exist (or user {config.user!r} cannot see it)"
        )
    else:
        existing = _tables_with_keys(cursor, config.database)
        absent = [name for name in config.tables if name not in existing]
        if absent:
            listing = ", ".join(sorted(existing)[:20]) or "none"
            problems.append(
                f"tables not found in database {config.database!r}: {', '.join(absent)} "
                f"(existing tables: {listing})"
            )
        selector = config.selector()
        info.tables = {name: pk for name, pk in existing.items() if selector(name)}
        if not info.tables and not absent:
            info.warnings.append(
                f"no table of {config.database!r} matches yet; tables created later that "
                "match table_regex are picked up"
            )
    cursor.close()
    if problems:
        raise PreflightError(problems)
    return info
