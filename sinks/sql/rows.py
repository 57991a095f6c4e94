"""From a Kafka record to a table row, by the documents' formats and modes.

=========  ==================================================================
format     what is written
=========  ==================================================================
TEXT       key and/or value as UTF-8 text in the ``key``/``value`` columns
BINARY     key and/or value bytes in the ``key``/``value`` columns
JSON       key or value, checked to be JSON, in the ``key``/``value`` column
CSV        key or value split on ``csv_delimiter``, fields to the data columns
           in table order (or the declared ``columns`` order)
FLATTEN    key or value, a JSON object: each field to the column of that
           name; nested objects and arrays as JSON text
=========  ==================================================================

``mode`` picks the part: KEY, VALUE or (TEXT/BINARY only) DEFAULT = both; the
other column is left NULL, as in the documents' tables. The fixed columns
``topic``, ``partition``, ``offset`` and ``pt`` are added unless left out of
``fixed_columns``. Anything a record cannot become is a
:class:`~etl.errors.RecordError` naming the record and the reason.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from etl.errors import RecordError
from sinks.jsonvalue import loads as _loads
from sinks.sql.config import FIXED_COLUMNS, SqlSinkConfig
from sinks.sql.table import TableInfo, payload_columns, pk_columns

PT_FORMATS = {"DAY": "%m-%d-%Y", "HOUR": "%m-%d-%Y %H", "MINUTE": "%m-%d-%Y %H:%M"}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(slots=True)
class RowOp:
    """One write (or delete) of one record into one table."""

    record: Any
    table: str
    #: column -> value; for a delete only the primary-key columns.
    values: dict[str, Any]
    #: Primary-key values (empty without a primary key).
    key: tuple[Any, ...]
    delete: bool = False


def where(record: Any) -> str:
    """``topic/partition@offset`` for messages."""
    return f"{record.topic}/{record.partition}@{record.offset}"


class RowBuilder:
    """Builds :class:`RowOp` s for one sink's config.

    ``native_scalars``: pass JSON numbers and booleans as Python values (MySQL);
    otherwise as text that the database casts to the column's type (PostgreSQL).
    """

    def __init__(
        self,
        config: SqlSinkConfig,
        *,
        native_scalars: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.native_scalars = native_scalars
        self.clock = clock
        self.fixed = [c for c in FIXED_COLUMNS if c in config.fixed_columns]
        self.payload = payload_columns(config)
        self.pk_fields = pk_columns(config)
        self.zone = ZoneInfo(config.timezone)
        self.pt_format = PT_FORMATS[config.partition_window_type]
        self.side = config.data_side().lower()
        self.attrs = [c for c in self.fixed if c != "pt"]
        self.with_pt = "pt" in self.fixed
        self.record_time = config.partition_time == "record"
        self.ignore_nulls = config.ignores_nulls
        self._pt_cache: tuple[int, str] = (-1, "")
        self._plans: dict[str, _TablePlan] = {}

    # ---- pt --------------------------------------------------------------------------

    def pt(self, record: Any) -> str:
        """The ``pt`` window of the record (system time or its timestamp)."""
        if self.record_time and record.timestamp and record.timestamp > 0:
            seconds = record.timestamp / 1000
        else:
            seconds = self.clock()
        minute = int(seconds // 60)
        cached = self._pt_cache
        if cached[0] != minute:
            stamp = datetime.fromtimestamp(minute * 60, self.zone).strftime(self.pt_format)
            cached = self._pt_cache = (minute, stamp)
        return cached[1]

    # ---- decoding ---------------------------------------------------------------------

    def _text(self, data: bytes, what: str, record: Any) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(
                f"{what} of {where(record)} is not valid UTF-8 (byte {exc.start}); "
                f"use format BINARY for bytes"
            ) from None

    def _json(self, data: bytes, what: str, record: Any) -> tuple[str, Any]:
        text = self._text(data, what, record)
        try:
            return text, _loads(text)
        except ValueError as exc:
            raise RecordError(f"{what} of {where(record)} is not valid JSON: {exc}") from None

    def _object(self, data: bytes | None, what: str, record: Any) -> dict[str, Any]:
        if data is not None:
            try:
                parsed = _loads(data.decode())
            except ValueError:  # UnicodeDecodeError too; explained below
                parsed = None
            if parsed.__class__ is dict:
                return parsed  # type: ignore[no-any-return]
        if data is None:
            raise RecordError(
                f"{what} of {where(record)} is null; format {self.config.format} "
                f"needs a JSON object"
            )
        _, parsed = self._json(data, what, record)
        if not isinstance(parsed, dict):
            raise RecordError(
                f"{what} of {where(record)} is JSON {type(parsed).__name__}, not an object"
            )
        return parsed

    def scalar(self, value: Any) -> Any:
        """A JSON value as a column value: objects/arrays as JSON text."""
        if value is None:
            return None
        if isinstance(value, dict | list):
            return _dumps(value)
        if self.native_scalars or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return repr(value) if isinstance(value, float) else str(value)

    def _payload(self, data: bytes | None, what: str, record: Any) -> Any:
        if data is None:
            return None
        fmt = self.config.format
        if fmt == "BINARY":
            return data
        if fmt == "JSON":
            return self._json(data, what, record)[0]
        return self._text(data, what, record)

    # ---- rows -------------------------------------------------------------------------

    def _plan(self, table: TableInfo) -> _TablePlan:
        config = self.config
        fill = data_columns(config, table) if config.write_mode == "put" else []
        plan = self._plans[table.name] = _TablePlan(
            table=table,
            fields={},
            template=dict.fromkeys(fill),
            csv=csv_columns(config, table),
            pk=tuple(table.resolve(c) or c for c in self.pk_fields),
        )
        plan.kept = frozenset(self.fixed) | frozenset(plan.pk)
        return plan

    def build(self, record: Any, table: TableInfo) -> RowOp:
        """The row (or delete) for ``record`` in ``table``; raises RecordError."""
        config = self.config
        plan = self._plans.get(table.name)
        if plan is None or plan.table is not table:
            plan = self._plan(table)
        if record.value is None and config.deletes_rows:
            pk = self._key_fields(record, table, {})
            return RowOp(record, table.name, pk, tuple(pk.values()), delete=True)
        fmt = config.format
        values: dict[str, Any] = plan.template.copy() if fmt == "FLATTEN" else {}
        for name in self.attrs:
            values[name] = getattr(record, name)
        if self.with_pt:
            values["pt"] = self.pt(record)
        if fmt == "FLATTEN":
            data = record.key if self.side == "key" else record.value
            self._flatten(self._object(data, self.side, record), record, plan, values)
        elif fmt == "CSV":
            data = record.key if self.side == "key" else record.value
            self._csv(data, self.side, record, plan, values)
        else:
            if "key" in self.payload:
                values["key"] = self._payload(record.key, "key", record)
            if "value" in self.payload:
                values["value"] = self._payload(record.value, "value", record)
        if config.pk_mode == "record_key" and config.pk_fields:
            values.update(self._key_fields(record, table, values))
        elif config.pk_mode == "record_value" and config.pk_fields:
            self._value_fields(record, table, values)
        if self.ignore_nulls:
            self._drop_nulls(values, plan, record)
        key: tuple[Any, ...] = ()
        if plan.pk:
            key = tuple(values.get(c) for c in plan.pk)
            if None in key:
                missing = self.pk_fields[key.index(None)]
                raise RecordError(f"primary-key column {missing!r} of {where(record)} is null")
        return RowOp(record, table.name, values, key)

    def _drop_nulls(self, values: dict[str, Any], plan: _TablePlan, record: Any) -> None:
        """``write_mode: update`` without column deletes: a null field is left out, so its
        column keeps what it holds; a record whose fields are all null is rejected."""
        kept = plan.kept
        nulls = [c for c, v in values.items() if v is None and c not in kept]
        if not nulls:
            return
        if len(nulls) == sum(1 for c in values if c not in kept):
            raise RecordError(
                f"every field of {where(record)} is null; write_mode update ignores null "
                f"fields under delete_mode {self.config.delete_mode} (delete_mode column "
                "sets them NULL)"
            )
        for column in nulls:
            del values[column]

    def _csv(
        self, data: bytes | None, what: str, record: Any, plan: _TablePlan, values: dict[str, Any]
    ) -> None:
        if data is None:
            raise RecordError(f"{what} of {where(record)} is null; format CSV needs text")
        text = self._text(data, what, record)
        try:
            rows = list(csv.reader([text], delimiter=self.config.csv_delimiter, strict=True))
        except csv.Error as exc:
            raise RecordError(f"{what} of {where(record)} is not valid CSV: {exc}") from None
        fields = rows[0] if rows else []
        columns = plan.csv
        if len(fields) != len(columns):
            raise RecordError(
                f"{what} of {where(record)} has {len(fields)} CSV fields; table "
                f"{plan.table.name} takes {len(columns)} ({', '.join(columns)})"
            )
        for column, text_value in zip(columns, fields, strict=True):
            values[column] = text_value if text_value != "" else None

    def _flatten(
        self, obj: dict[str, Any], record: Any, plan: _TablePlan, values: dict[str, Any]
    ) -> None:
        fields = plan.fields
        scalar = self.scalar
        ints_as_text = not self.native_scalars
        for name, value in obj.items():
            column = fields.get(name)
            if column is None:
                column = self._field_column(plan, name)
            if column.__class__ is _Rejected:
                raise RecordError(f"field {name!r} of {where(record)} {column}")
            # put: the template set every data column to NULL first (the whole row).
            kind = value.__class__
            if kind is str:
                values[column] = value
            elif kind is int and ints_as_text:
                values[column] = str(value)
            else:
                values[column] = scalar(value)

    def _field_column(self, plan: _TablePlan, name: str) -> str | _Rejected:
        """The column of a JSON field, or why it has none; remembered per table."""
        column = plan.table.resolve(name)
        found: str | _Rejected
        if column is None:
            found = _Rejected(f"has no column in table {plan.table.name}")
        elif column in self.fixed:
            found = _Rejected(
                f"collides with the fixed column {column!r}; "
                "leave it out of fixed_columns to write the field"
            )
        else:
            found = column
        if len(plan.fields) < 10000:  # data with endless field names must not grow memory
            plan.fields[name] = found
        return found

    def _key_fields(self, record: Any, table: TableInfo, values: dict[str, Any]) -> dict[str, Any]:
        """Primary-key columns from the record's key (``pk_mode: record_key``)."""
        if record.key is None:
            raise RecordError(f"key of {where(record)} is null; pk_mode record_key needs a key")
        if not self.config.pk_fields:
            return {"key": self._payload(record.key, "key", record)}
        text = self._text(record.key, "key", record)
        try:
            parsed: Any = _loads(text)
        except ValueError:
            parsed = text
        out: dict[str, Any] = {}
        if not isinstance(parsed, dict):
            if len(self.config.pk_fields) != 1:
                raise RecordError(
                    f"key of {where(record)} is not a JSON object with fields "
                    f"{', '.join(self.config.pk_fields)}"
                )
            # A plain key is the value of the only primary-key field.
            out[self._column(self.config.pk_fields[0], table)] = text
            return out
        for name in self.config.pk_fields:
            if parsed.get(name) is None:
                raise RecordError(f"key of {where(record)} lacks primary-key field {name!r}")
            out[self._column(name, table)] = self.scalar(parsed[name])
        return out

    def _value_fields(self, record: Any, table: TableInfo, values: dict[str, Any]) -> None:
        """Primary-key columns from the value (``pk_mode: record_value``)."""
        parsed: dict[str, Any] | None = None
        for name in self.config.pk_fields:
            column = self._column(name, table)
            if values.get(column) is not None:
                continue
            if self.config.format in ("TEXT", "JSON") and record.value is not None:
                parsed = parsed or self._object(record.value, "value", record)
                if parsed.get(name) is not None:
                    values[column] = self.scalar(parsed[name])
                    continue
            raise RecordError(f"value of {where(record)} lacks primary-key field {name!r}")

    def _column(self, name: str, table: TableInfo) -> str:
        column = table.resolve(name)
        if column is None:  # checked when the table is opened; kept for safety
            raise RecordError(f"table {table.name} has no column {name!r}")
        return column


class _Rejected(str):
    """Why a JSON field has no column (the end of the error message)."""

    __slots__ = ()


@dataclass(slots=True)
class _TablePlan:
    """What :meth:`RowBuilder.build` needs of one table, worked out once."""

    table: TableInfo
    #: JSON field -> column, or why not (filled as fields are seen).
    fields: dict[str, str | _Rejected]
    #: put mode: every data column set to NULL, overwritten by the record's fields.
    template: dict[str, None]
    csv: list[str]
    pk: tuple[str, ...]
    #: Columns that are not the record's fields: fixed and primary-key columns.
    kept: frozenset[str] = frozenset()


def data_columns(config: SqlSinkConfig, table: TableInfo) -> list[str]:
    """Columns CSV and FLATTEN fill: declared ``columns``, else every non-fixed column
    without a default (identity, generated and defaulted columns are left to the database)."""
    if config.columns:
        return [table.resolve(c.name) or c.name for c in config.columns]
    fixed = set(config.fixed_columns)
    return [c.name for c in table.columns if c.name not in fixed and not c.auto]


csv_columns = data_columns
