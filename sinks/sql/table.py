"""A target table as the sinks see it: its columns, and the columns a config needs.

Column types here are *logical* (``text``, ``short_text``, ``int``, ``bigint``,
``binary``, ``json``) for the fixed columns, or the declared SQL type for the
user's columns; each database maps the logical ones to its own type names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sinks.sql.config import KAFKA_PK, SqlSinkConfig

#: Logical type of each fixed column.
FIXED_TYPES = {"topic": "short_text", "partition": "int", "offset": "bigint", "pt": "short_text"}
#: Logical type of the key/value columns per format.
PAYLOAD_TYPES = {"TEXT": "text", "BINARY": "binary", "JSON": "json"}


@dataclass(slots=True)
class Column:
    """A column of an existing table."""

    name: str
    #: The type as the database names it (for messages).
    type: str = ""
    #: Has a default, identity or generated value: never filled with NULL by the sink.
    auto: bool = False


@dataclass
class TableInfo:
    """The columns of one table, with case-insensitive lookup of record fields."""

    name: str
    columns: list[Column]
    _exact: dict[str, str] = field(init=False, default_factory=dict)
    _folded: dict[str, str | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for column in self.columns:
            self._exact[column.name] = column.name
            folded = column.name.lower()
            # Two columns differing only in case: a field must then match exactly.
            self._folded[folded] = None if folded in self._folded else column.name

    def resolve(self, field_name: str) -> str | None:
        """The column a record field maps to: the same name, else the same name ignoring case."""
        found = self._exact.get(field_name)
        if found is not None:
            return found
        return self._folded.get(field_name.lower())

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True, slots=True)
class PlannedColumn:
    """A column ``auto_create`` makes: a logical type or a declared SQL type."""

    name: str
    logical: str | None
    sql_type: str | None
    nullable: bool


def payload_columns(config: SqlSinkConfig) -> list[str]:
    """The key/value columns the format and mode write (TEXT, BINARY, JSON only)."""
    if config.format not in PAYLOAD_TYPES:
        return []
    return {"KEY": ["key"], "VALUE": ["value"], "DEFAULT": ["key", "value"]}[config.mode]


def pk_columns(config: SqlSinkConfig) -> list[str]:
    """The primary-key columns by ``pk_mode`` (record fields are matched to columns later)."""
    if config.pk_mode == "kafka":
        return list(KAFKA_PK)
    if config.pk_mode == "record_key":
        return list(config.pk_fields) or ["key"]
    if config.pk_mode == "record_value":
        return list(config.pk_fields) or ["value"]
    return []


def required_columns(config: SqlSinkConfig) -> list[str]:
    """Columns the table must have for this config (fixed, key/value, primary key)."""
    out = [c for c in config.fixed_columns if c != "pt"] + payload_columns(config)
    out += [c.name for c in config.columns]
    if "pt" in config.fixed_columns:
        out.append("pt")
    for name in pk_columns(config):
        if name not in out:
            out.append(name)
    return out


def planned_columns(config: SqlSinkConfig) -> list[PlannedColumn]:
    """What ``auto_create`` creates, in the documents' order (fixed, data, ``pt``)."""
    pk = set(pk_columns(config))
    columns: list[PlannedColumn] = []
    for fixed in [c for c in config.fixed_columns if c != "pt"]:
        columns.append(PlannedColumn(fixed, FIXED_TYPES[fixed], None, fixed not in pk))
    for name in payload_columns(config):
        columns.append(PlannedColumn(name, PAYLOAD_TYPES[config.format], None, name not in pk))
    for spec in config.columns:
        columns.append(
            PlannedColumn(spec.name, None, spec.type, spec.nullable and spec.name not in pk)
        )
    if "pt" in config.fixed_columns:
        columns.append(PlannedColumn("pt", FIXED_TYPES["pt"], None, "pt" not in pk))
    return columns
