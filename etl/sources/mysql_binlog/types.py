"""MySQL column types -> change-event types and JSON values.

==================================================  ==========  ==========================
MySQL type                                          event type  JSON value
==================================================  ==========  ==========================
TINYINT .. BIGINT (signed or not), YEAR, BIT(2-64)  LONG        number
BIT(1)                                              BOOLEAN     true / false
FLOAT, DOUBLE                                       DOUBLE      number (FLOAT: 7 digits)
DECIMAL, NUMERIC                                    DECIMAL     exact text (``"12.50"``)
DATE, DATETIME, TIMESTAMP                           DATE        epoch milliseconds
TIME                                                STRING      ``"-838:59:59.000000"``
CHAR, VARCHAR, TEXT types, ENUM, SET, JSON          STRING      text (SET: ``"a,c"``)
BINARY, VARBINARY, BLOB types, GEOMETRY types       BYTES       base64 text
==================================================  ==========  ==========================

DATE and DATETIME carry no time zone: they are read in the source's ``timezone``
(midnight of a DATE). TIMESTAMP is stored in UTC and converted exactly. Sub-
millisecond digits are cut off. A zero date (``0000-00-00``) becomes null.

Values come from two readers: the binlog (``column_from_binlog``: a column of a
table-map event) and the snapshot's ``SELECT`` (``column_from_schema``: a row of
``information_schema.COLUMNS``). Both give the same type and value for a column.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

LONG = "LONG"
DOUBLE = "DOUBLE"
DECIMAL = "DECIMAL"
STRING = "STRING"
DATE = "DATE"
BOOLEAN = "BOOLEAN"
BYTES = "BYTES"

Converter = Callable[[Any], Any]


class UnsupportedColumnType(ValueError):
    """A column whose MySQL type this source cannot publish."""


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column as published: its name, event type and value converter (None: as is)."""

    name: str
    type: str
    convert: Converter | None = None


# Binlog column type codes (MySQL's enum_field_types).
_T_DECIMAL, _T_TINY, _T_SHORT, _T_LONG, _T_FLOAT, _T_DOUBLE = 0, 1, 2, 3, 4, 5
_T_TIMESTAMP, _T_LONGLONG, _T_INT24, _T_DATE, _T_TIME, _T_DATETIME = 7, 8, 9, 10, 11, 12
_T_YEAR, _T_NEWDATE, _T_VARCHAR, _T_BIT = 13, 14, 15, 16
_T_TIMESTAMP2, _T_DATETIME2, _T_TIME2 = 17, 18, 19
_T_JSON, _T_NEWDECIMAL, _T_ENUM, _T_SET = 245, 246, 247, 248
_T_TINY_BLOB, _T_MEDIUM_BLOB, _T_LONG_BLOB, _T_BLOB = 249, 250, 251, 252
_T_VAR_STRING, _T_STRING, _T_GEOMETRY = 253, 254, 255

_INTEGER_CODES = {_T_TINY, _T_SHORT, _T_LONG, _T_LONGLONG, _T_INT24, _T_YEAR}
_TEXT_CODES = {
    _T_VARCHAR,
    _T_VAR_STRING,
    _T_STRING,
    _T_TINY_BLOB,
    _T_MEDIUM_BLOB,
    _T_LONG_BLOB,
    _T_BLOB,
}

_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MS = dt.timedelta(milliseconds=1)
_US = dt.timedelta(microseconds=1)
_DAY_MS = 86_400_000


class ValueConverters:
    """The value converters of one time zone."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.zone = ZoneInfo(timezone)
        self.utc = timezone in ("UTC", "Etc/UTC", "Zulu", "Etc/Zulu")

    def date_ms(self, value: Any) -> int:
        """A DATE at midnight in the source's time zone, as epoch ms."""
        if isinstance(value, dt.datetime):
            return self.datetime_ms(value)
        if self.utc:
            return (value.toordinal() - _EPOCH_ORDINAL) * _DAY_MS
        return self.datetime_ms(dt.datetime(value.year, value.month, value.day))

    def datetime_ms(self, value: dt.datetime) -> int:
        """A DATETIME (no zone: the source's time zone) as epoch ms."""
        if self.utc:
            return (value - _EPOCH_NAIVE) // _MS
        aware = value.replace(tzinfo=self.zone)
        return (aware - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // _MS

    @staticmethod
    def timestamp_ms(value: dt.datetime) -> int:
        """A TIMESTAMP (read as naive UTC) as epoch ms."""
        return (value - _EPOCH_NAIVE) // _MS


def decimal_text(value: Any) -> str:
    """Exact decimal text, never in exponent form."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def float32(value: float) -> float:
    """A FLOAT as the 7 significant digits MySQL shows, not its binary expansion."""
    return float(format(value, ".7g"))


def bit_value(value: Any) -> int:
    """BIT as an integer: the binlog gives ``"101"``, a SELECT gives big-endian bytes."""
    if isinstance(value, str):
        return int(value, 2) if value else 0
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big")
    return int(value)


def bit_bool(value: Any) -> bool:
    """BIT(1) as a boolean."""
    return bit_value(value) != 0


def base64_text(value: Any) -> str:
    """Binary data as base64 text."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return base64.b64encode(value).decode("ascii")


def text(value: Any) -> str:
    """Text that the reader could not decode with the column's character set."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.time | dt.datetime):
        return value.isoformat()
    return value


def json_text(value: Any) -> str:
    """MySQL's binary JSON (decoded by the reader) as JSON text; text stays text."""
    if isinstance(value, str):
        return value
    return json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))


def time_text_converter(fsp: int) -> Converter:
    """TIME as ``[-]HH:MM:SS[.fraction]`` with the column's fractional digits."""
    fsp = max(0, min(6, fsp))

    def convert(value: Any) -> str:
        if isinstance(value, str):
            return value
        micros = value // _US
        sign = "-" if micros < 0 else ""
        micros = abs(micros)
        seconds, fraction = divmod(micros, 1_000_000)
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        out = f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"
        if fsp:
            out += "." + f"{fraction:06d}"[:fsp]
        return out

    return convert


def set_text_converter(members: list[str] | None) -> Converter:
    """SET as MySQL's own text: members in definition order, comma-separated."""

    def convert(value: Any) -> str:
        if isinstance(value, str):
            return value
        chosen = set(value)
        if members:
            return ",".join(m for m in members if m in chosen)
        return ",".join(sorted(chosen))

    return convert


def column_from_binlog(column: Any, converters: ValueConverters) -> ColumnSpec:
    """The spec of a column of a binlog table-map event (``pymysqlreplication`` Column)."""
    code = column.type
    name = column.name
    if code in _INTEGER_CODES:
        return ColumnSpec(name, LONG)
    if code == _T_FLOAT:
        return ColumnSpec(name, DOUBLE, float32)
    if code == _T_DOUBLE:
        return ColumnSpec(name, DOUBLE)
    if code in (_T_NEWDECIMAL, _T_DECIMAL):
        return ColumnSpec(name, DECIMAL, decimal_text)
    if code in (_T_DATE, _T_NEWDATE):
        return ColumnSpec(name, DATE, converters.date_ms)
    if code in (_T_DATETIME, _T_DATETIME2):
        return ColumnSpec(name, DATE, converters.datetime_ms)
    if code in (_T_TIMESTAMP, _T_TIMESTAMP2):
        return ColumnSpec(name, DATE, converters.timestamp_ms)
    if code in (_T_TIME, _T_TIME2):
        return ColumnSpec(name, STRING, time_text_converter(getattr(column, "fsp", 0) or 0))
    if code == _T_BIT:
        bits = getattr(column, "bits", 0) or 0
        if bits == 1:
            return ColumnSpec(name, BOOLEAN, bit_bool)
        return ColumnSpec(name, LONG, bit_value)
    if code == _T_ENUM:
        return ColumnSpec(name, STRING)
    if code == _T_SET:
        return ColumnSpec(name, STRING, set_text_converter(getattr(column, "set_values", None)))
    if code == _T_JSON:
        return ColumnSpec(name, STRING, json_text)
    if code == _T_GEOMETRY:
        return ColumnSpec(name, BYTES, base64_text)
    if code in _TEXT_CODES:
        if getattr(column, "character_set_name", None) == "binary":
            return ColumnSpec(name, BYTES, base64_text)
        return ColumnSpec(name, STRING, text)
    raise UnsupportedColumnType(f"column {name!r}: MySQL type code {code} is not supported")


_SCHEMA_INTEGER = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"}
_SCHEMA_BINARY = {
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
}


def column_from_schema(
    name: str,
    data_type: str,
    column_type: str,
    charset: str | None,
    fraction_digits: int | None,
    converters: ValueConverters,
) -> ColumnSpec:
    """The spec of a column from ``information_schema.COLUMNS`` (used by the snapshot).

    The snapshot reads with ``time_zone='+00:00'``, so TIMESTAMP values arrive in UTC.
    """
    kind = data_type.lower()
    if kind in _SCHEMA_INTEGER:
        return ColumnSpec(name, LONG)
    if kind == "float":
        return ColumnSpec(name, DOUBLE, float32)
    if kind in ("double", "real", "double precision"):
        return ColumnSpec(name, DOUBLE)
    if kind in ("decimal", "numeric", "fixed"):
        return ColumnSpec(name, DECIMAL, decimal_text)
    if kind == "date":
        return ColumnSpec(name, DATE, converters.date_ms)
    if kind == "datetime":
        return ColumnSpec(name, DATE, converters.datetime_ms)
    if kind == "timestamp":
        return ColumnSpec(name, DATE, converters.timestamp_ms)
    if kind == "time":
        return ColumnSpec(name, STRING, time_text_converter(fraction_digits or 0))
    if kind == "bit":
        if column_type.lower().replace(" ", "") in ("bit(1)", "bit"):
            return ColumnSpec(name, BOOLEAN, bit_bool)
        return ColumnSpec(name, LONG, bit_value)
    if kind == "json":
        return ColumnSpec(name, STRING, json_text)
    if kind in _SCHEMA_BINARY or (charset is None and kind not in ("enum", "set")):
        return ColumnSpec(name, BYTES, base64_text)
    return ColumnSpec(name, STRING, text)
