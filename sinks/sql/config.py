"""Options shared by the PostgreSQL and MySQL sinks (pydantic only; no driver imports).

The option names and values follow the documents: ``format`` TEXT/BINARY/CSV/JSON/FLATTEN,
``mode`` KEY/VALUE/DEFAULT, ``partition_window_type`` DAY/HOUR/MINUTE for the ``pt``
column, the primary-key modes ``none``/``kafka``/``record_key``/``record_value`` with
``pk_fields``, ``write_mode`` put/update and the Tablestore ``delete_mode``
none/row/column/row_and_column.
"""

from __future__ import annotations

import re
import string
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from etl.config import ErrorPolicy, SinkConfigBase

Format = Literal["TEXT", "BINARY", "CSV", "JSON", "FLATTEN"]
Mode = Literal["KEY", "VALUE", "DEFAULT"]
Window = Literal["DAY", "HOUR", "MINUTE"]
InsertMode = Literal["insert", "upsert", "update"]
PkMode = Literal["none", "kafka", "record_key", "record_value"]
WriteMode = Literal["put", "update"]
DeleteMode = Literal["none", "row", "column", "row_and_column"]
FixedColumn = Literal["topic", "partition", "offset", "pt"]

#: The fixed columns, in the order the documents' tables show them.
FIXED_COLUMNS: tuple[FixedColumn, ...] = ("topic", "partition", "offset", "pt")
KAFKA_PK: tuple[str, ...] = ("topic", "partition", "offset")
#: A column type as written in CREATE TABLE: words, an optional (n[, m]) and [].
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?( ?[A-Za-z ]*)(\[\])?$")


def check_identifier(name: str, what: str = "name") -> str:
    """A column or table name we can quote: not empty, no NUL, no trailing space."""
    if not name:
        raise ValueError(f"{what} must not be empty")
    if "\x00" in name:
        raise ValueError(f"{what} {name!r} contains a NUL character")
    if name != name.rstrip():
        raise ValueError(f"{what} {name!r} ends with a space")
    return name


class ColumnSpec(BaseModel):
    """A declared data column: used by ``auto_create`` and as the CSV field order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    #: The SQL type, e.g. ``BIGINT``, ``VARCHAR(64)``, ``NUMERIC(10,2)``, ``JSONB``.
    type: str
    nullable: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_identifier(value, "column name")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not _TYPE.match(value.strip()):
            raise ValueError(f"{value!r} is not a column type (e.g. BIGINT, VARCHAR(64), JSONB)")
        return value.strip()


class SqlSinkConfig(SinkConfigBase):
    """Options of a SQL table sink. See docs/sinks-sql.md for each one."""

    #: A rejected row stops the sink before it (rows are not lost silently); set
    #: ``continue`` to dead-letter it, or unset (null) to follow ``errors.policy``.
    on_error: ErrorPolicy | None = "stop"
    #: ``postgresql://user:pass@host:port/db?...`` or ``mysql://...``; or the parts below.
    dsn: SecretStr | None = None
    host: str | None = Field(default=None, validate_default=True)
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    password: SecretStr | None = None
    database: str | None = None
    #: Target table; ``{topic}`` is replaced by the record's topic.
    table: str
    format: Format = "TEXT"
    #: Unset: DEFAULT for TEXT/BINARY (the documents' default), VALUE for the others.
    mode: Mode = Field(default=None, validate_default=True)  # type: ignore[assignment]
    #: Window of the ``pt`` column: ``MM-dd-yyyy``, ``MM-dd-yyyy HH``, ``MM-dd-yyyy HH:mm``.
    partition_window_type: Window = "HOUR"
    #: ``system``: the time of writing (as the documents); ``record``: the record's timestamp.
    partition_time: Literal["system", "record"] = "system"
    #: Time zone of ``pt`` (an IANA name).
    timezone: str = "UTC"
    #: Which fixed columns are written; ``[]`` writes only the record's fields.
    fixed_columns: list[FixedColumn] = Field(default_factory=lambda: list(FIXED_COLUMNS))
    insert_mode: InsertMode = "insert"
    pk_mode: PkMode = Field(default="none", validate_default=True)
    pk_fields: list[str] = Field(default_factory=list, validate_default=True)
    #: ``put`` writes the whole row; ``update`` only the columns the record carries.
    write_mode: WriteMode = "put"
    #: The older name of ``delete_mode: row``: a tombstone deletes the row of its key.
    delete_enabled: bool = Field(default=False, validate_default=True)
    #: The documents' Tablestore delete modes: ``row`` (a tombstone deletes the row),
    #: ``column`` (under ``write_mode: update`` a null field sets its column NULL instead
    #: of being ignored), ``row_and_column`` (both), ``none``. Unset: ``row`` when
    #: ``delete_enabled``, else ``none``.
    delete_mode: DeleteMode = Field(default=None, validate_default=True)  # type: ignore[assignment]
    #: Create a missing table (and add missing declared columns); never drops or alters.
    auto_create: bool = False
    columns: list[ColumnSpec] = Field(default_factory=list, validate_default=True)
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: A write that takes longer is abandoned and retried on a new connection.
    statement_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("format", "partition_window_type", mode="before")
    @classmethod
    def _upper_names(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "insert_mode", "pk_mode", "write_mode", "delete_mode", "partition_time", mode="before"
    )
    @classmethod
    def _lower_names(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad table template {value!r}: {exc}") from None
        unknown = [name for name in fields if name != "topic"]
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; only {{topic}} is known")
        return check_identifier(value, "table")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _default_mode(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return "DEFAULT" if info.data.get("format") in (None, "TEXT", "BINARY") else "VALUE"
        return value.upper() if isinstance(value, str) else value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str, info: ValidationInfo) -> str:
        fmt = info.data.get("format")
        if value == "DEFAULT" and fmt not in (None, "TEXT", "BINARY"):
            raise ValueError(f"mode DEFAULT supports format TEXT or BINARY only, not {fmt}")
        return value

    @field_validator("pk_mode")
    @classmethod
    def _pk_mode(cls, value: str, info: ValidationInfo) -> str:
        insert_mode = info.data.get("insert_mode")
        if value == "none" and insert_mode in ("upsert", "update"):
            raise ValueError(f"insert_mode {insert_mode} needs a primary key: set pk_mode")
        if value == "kafka":
            missing = [c for c in KAFKA_PK if c not in info.data.get("fixed_columns", KAFKA_PK)]
            if missing:
                raise ValueError(f"pk_mode kafka needs the fixed columns {', '.join(missing)}")
        return value

    @field_validator("pk_fields")
    @classmethod
    def _pk_fields(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for name in value:
            check_identifier(name, "pk field")
        if len(set(value)) != len(value):
            raise ValueError("pk_fields has duplicates")
        pk_mode, fmt, mode = (
            info.data.get("pk_mode"),
            info.data.get("format"),
            info.data.get("mode"),
        )
        if value or pk_mode not in ("record_key", "record_value"):
            return value
        # Without pk_fields the whole key (value) column is the primary key.
        side = "KEY" if pk_mode == "record_key" else "VALUE"
        if fmt in ("CSV", "FLATTEN") or mode not in (side, "DEFAULT"):
            raise ValueError(f"pk_mode {pk_mode} with format {fmt} and mode {mode} needs pk_fields")
        return value

    @field_validator("delete_enabled")
    @classmethod
    def _delete(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("pk_mode") != "record_key":
            raise ValueError("delete_enabled needs pk_mode record_key (the key names the row)")
        return value

    @field_validator("delete_mode", mode="before")
    @classmethod
    def _default_delete_mode(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return "row" if info.data.get("delete_enabled") else "none"
        return value

    @field_validator("delete_mode")
    @classmethod
    def _delete_mode(cls, value: str, info: ValidationInfo) -> str:
        enabled = info.data.get("delete_enabled", False)
        if enabled and value not in ("row", "row_and_column"):
            raise ValueError(
                f"delete_enabled: true means delete_mode: row, not {value}; set only delete_mode"
            )
        if value != "none" and info.data.get("pk_mode") != "record_key":
            raise ValueError(
                f"delete_mode {value} needs pk_mode record_key (the key names the row), "
                "as the documents' Tablestore sink"
            )
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: list[ColumnSpec], info: ValidationInfo) -> list[ColumnSpec]:
        names = [c.name for c in value]
        if len({n.lower() for n in names}) != len(names):
            raise ValueError("columns has duplicate names")
        fixed = set(info.data.get("fixed_columns", ()))
        clash = [n for n in names if n in fixed]
        if clash:
            raise ValueError(f"{clash[0]!r} is a fixed column; leave it out of columns")
        if info.data.get("auto_create"):
            if info.data.get("format") in ("CSV", "FLATTEN") and not value:
                raise ValueError("auto_create with format CSV or FLATTEN needs columns")
            missing = [p for p in info.data.get("pk_fields", ()) if p not in names]
            if missing:
                raise ValueError(f"pk field {missing[0]!r} must be declared in columns")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.data.get("dsn") is None:
            raise ValueError("set dsn, or host (with port, user, password, database)")
        return value

    # ---- derived --------------------------------------------------------------------

    @property
    def deletes_rows(self) -> bool:
        """A tombstone deletes the row of its key."""
        return self.delete_mode in ("row", "row_and_column")

    @property
    def ignores_nulls(self) -> bool:
        """``write_mode: update`` leaves the column of a null field as it is (Tablestore)."""
        return self.write_mode == "update" and self.delete_mode in ("none", "row")

    def data_side(self) -> Literal["KEY", "VALUE"]:
        """Which part of the record CSV/FLATTEN/JSON read (DEFAULT is TEXT/BINARY only)."""
        return "KEY" if self.mode == "KEY" else "VALUE"

    def table_for(self, topic: str) -> str:
        """The table a record of ``topic`` goes to."""
        return self.table.format(topic=topic)
