"""Options of the ``mysql_binlog`` source (validated without importing the binlog reader)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from etl.config import SourceConfigBase, TimeZoneName

SnapshotMode = Literal["never", "initial", "when_needed"]
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
_FILE_POS = re.compile(r"^(?P<file>[^:\s]+):(?P<pos>\d+)$")


class MySQLBinlogSourceConfig(SourceConfigBase):
    """Reads a MySQL/MariaDB binlog and publishes each row change to ``<topic_prefix>_<table>``.

    The tables are those named in ``tables`` plus those whose name matches
    ``table_regex`` (also tables created later). ``start`` and ``snapshot`` apply
    only when no position was saved yet; afterwards the source resumes from its
    saved position.
    """

    type: Literal["mysql_binlog"] = "mysql_binlog"
    host: str = "localhost"
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = Field(min_length=1)
    password: SecretStr | None = None
    #: The database (schema) whose tables are published.
    database: str = Field(min_length=1, max_length=64)
    #: Table names, a list or a comma-separated string (``a,b,c``).
    tables: list[str] = Field(default_factory=list)
    #: Tables whose whole name matches this regular expression are published too,
    #: including tables created while the source runs (``.*``: every table).
    table_regex: str | None = None
    #: Topic of table ``t`` is ``<topic_prefix>_t``.
    topic_prefix: str = Field(pattern=TOPIC_PREFIX_PATTERN)
    #: Replica id this source registers with; unique among the server's replicas.
    #: Unset: derived from the source name (a number from 100000 to 4294867295).
    server_id: int | None = Field(default=None, ge=1, le=4294967295)
    #: Where to begin when no position is saved: ``earliest`` (oldest binlog kept),
    #: ``latest`` (now), ``<file>:<position>`` or ``gtid:<GTID set>``.
    start: str = "latest"
    #: never: only changes; initial: publish the existing rows first (when no position is
    #: saved); when_needed: like initial, and again when the saved position was purged.
    snapshot: SnapshotMode = "never"
    #: Time zone in which DATE and DATETIME values (which carry none) are read.
    timezone: TimeZoneName = "UTC"
    #: Partitions of a created topic for a table with a primary key, and without one.
    partitions_with_primary_key: int = Field(default=6, ge=1)
    partitions_without_primary_key: int = Field(default=1, ge=1)
    #: TLS to the server, its certificate verified (``false``: no TLS, a trusted network only).
    ssl: bool = True
    #: CA bundle (PEM) that signed the server's certificate; default: the system's CAs.
    ssl_ca: Path | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    #: Check the server's host name against its certificate.
    ssl_verify_hostname: bool = True
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: The server sends a heartbeat after this many idle seconds (bounds stop latency).
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    #: The position is saved at most this often (and always on a clean stop).
    position_interval_ms: int = Field(default=1000, ge=0)
    #: Most bytes read ahead of Kafka's acknowledgements before reading pauses.
    max_pending_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tables")
    @classmethod
    def _check_tables(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not name.strip() or len(name) > 64]
        if bad:
            raise ValueError(f"invalid table names: {bad}")
        return value

    @field_validator("table_regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("snapshot", mode="before")
    @classmethod
    def _snapshot_bool(cls, value: Any) -> Any:
        if value is True:
            return "initial"
        if value is False or value is None:
            return "never"
        return value

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str) -> str:
        value = value.strip()
        if value in ("earliest", "latest"):
            return value
        if value.startswith("gtid:"):
            if not value[5:].strip():
                raise ValueError("gtid: needs a GTID set, e.g. gtid:0-1-42")
            return value
        if _FILE_POS.match(value):
            return value
        raise ValueError(
            "must be earliest, latest, <binlog file>:<position> (binlog.000003:4) "
            "or gtid:<GTID set>"
        )

    @model_validator(mode="after")
    def _check_selection(self) -> MySQLBinlogSourceConfig:
        if not self.tables and not self.table_regex:
            raise ValueError("set tables, table_regex or both: no table would be published")
        files = [name for name in ("ssl_ca", "ssl_cert", "ssl_key") if getattr(self, name)]
        if files and not self.ssl:
            raise ValueError(f"{', '.join(files)}: set, but ssl is false (TLS off)")
        for name in files:
            path = getattr(self, name)
            if not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        return self

    # ---- derived values -----------------------------------------------------------

    @property
    def effective_server_id(self) -> int:
        """``server_id``, or a stable number derived from the source name."""
        if self.server_id is not None:
            return self.server_id
        return 100000 + zlib.crc32(self.name.encode()) % 4294767295

    @property
    def uses_tls(self) -> bool:
        """True when the connection to the server is encrypted (and verified)."""
        return self.ssl

    def start_file_position(self) -> tuple[str, int] | None:
        """``(file, position)`` when ``start`` is ``<file>:<position>``."""
        match = _FILE_POS.match(self.start)
        if match is None or self.start.startswith("gtid:"):
            return None
        return match["file"], int(match["pos"])

    def start_gtid(self) -> str | None:
        """The GTID set when ``start`` is ``gtid:<set>``."""
        return self.start[5:].strip() if self.start.startswith("gtid:") else None

    def selector(self) -> TableSelector:
        """Decides which table names are published."""
        return TableSelector(self.tables, self.table_regex)


class TableSelector:
    """``tables`` (exact names) plus ``table_regex`` (whole-name match).

    Also usable as the binlog reader's ``only_tables`` (it asks ``name in selector``).
    """

    def __init__(self, tables: list[str], regex: str | None) -> None:
        self.tables = frozenset(tables)
        self.regex = re.compile(regex) if regex else None

    def __call__(self, table: str) -> bool:
        if table in self.tables:
            return True
        return self.regex is not None and self.regex.fullmatch(table) is not None

    def __contains__(self, table: object) -> bool:
        return isinstance(table, str) and self(table)
