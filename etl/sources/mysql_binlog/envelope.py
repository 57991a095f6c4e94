"""The change-event envelope, message keys and partitions.

Every message on ``<topic_prefix>_<table>`` is one JSON document::

    {"schema": {"dataColumn": [{"name": "id", "type": "LONG"}, ...],
                "primaryKey": ["id"],
                "source": {"dbType": "MySQL", "dbName": "shop", "tableName": "orders"}},
     "payload": {"before": null | {"dataColumn": {...}},
                 "after": null | {"dataColumn": {...}},
                 "sequenceId": "0000030000001234000000000",
                 "timestamp": {"eventTime": ..., "systemTime": ..., "checkpointTime": ...},
                 "op": "INSERT" | "UPDATE" | "DELETE" | "DDL",
                 "ddl": null | "ALTER TABLE ..."},
     "version": "0.0.1"}

The key is the JSON array of the primary-key values in key order, encoded like
the payload values (``[42]``, ``[7,"EU"]``); a table without a primary key gets
a null key. The partition is murmur2(key) like Kafka's Java client, so one row's
changes stay in order on one partition.

The schema part is the same for every row of a table version, so it is encoded
once per table-map (:class:`TableEncoder`) and the per-row work is one
``json`` call for the values plus string joins.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from etl.sources.mysql_binlog.types import ColumnSpec

VERSION = "0.0.1"
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
INSERT, UPDATE, DELETE, DDL = "INSERT", "UPDATE", "DELETE", "DDL"


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


# The C encoder made once: json.dumps builds a new one on every call.
_C_ENCODE = (
    c_make_encoder(None, _fallback, encode_basestring, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else None
)
_PY_ENCODE = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_fallback, allow_nan=False
).encode


def _dumps(value: Any) -> str:
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(value, 0))
    return _PY_ENCODE(value)  # pragma: no cover - CPython always has the C encoder


_WORDS = [struct.Struct(f"<{n}I") for n in range(17)]


def topic_for(prefix: str, table: str) -> str:
    """``<prefix>_<table>``; characters Kafka does not allow in a topic name become ``_``."""
    return _TOPIC_UNSAFE.sub("_", f"{prefix}_{table}")[:249]


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client (and aiokafka) picks for ``key``."""
    mask = 0xFFFFFFFF
    m = 0x5BD1E995
    length = len(key)
    h = (0x9747B28C ^ length) & mask
    words = length // 4
    if words:
        unpack = (
            _WORDS[words].unpack_from if words < 17 else struct.Struct(f"<{words}I").unpack_from
        )
        for k in unpack(key):
            k = (k * m) & mask
            k ^= k >> 24
            k = (k * m) & mask
            h = ((h * m) & mask) ^ k
    tail = length & 3
    base = words * 4
    if tail == 3:
        h ^= key[base + 2] << 16
    if tail >= 2:
        h ^= key[base + 1] << 8
    if tail >= 1:
        h ^= key[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def timestamp_part(event_ms: int, system_ms: int, checkpoint_ms: int) -> str:
    """The ``"timestamp":{...}`` member, shared by all rows of one event."""
    return (
        f'"timestamp":{{"eventTime":{event_ms},"systemTime":{system_ms},'
        f'"checkpointTime":{checkpoint_ms}}}'
    )


@dataclass(frozen=True, slots=True)
class TableShape:
    """A table as one binlog table-map (or the snapshot) describes it."""

    database: str
    table: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]


def schema_json(
    database: str, table: str, columns: Sequence[ColumnSpec], primary_key: Sequence[str]
) -> str:
    """The ``schema`` object as JSON text."""
    return _dumps(
        {
            "dataColumn": [{"name": c.name, "type": c.type} for c in columns],
            "primaryKey": list(primary_key),
            "source": {"dbType": "MySQL", "dbName": database, "tableName": table},
        }
    )


class TableEncoder:
    """Turns decoded rows of one table version into message keys and values."""

    __slots__ = (
        "_converters",
        "_head",
        "_single_key",
        "partitions",
        "primary_key",
        "shape",
        "topic",
    )

    def __init__(self, shape: TableShape, topic: str, partitions: int) -> None:
        self.shape = shape
        self.topic = topic
        self.partitions = partitions
        self.primary_key = shape.primary_key
        self._single_key = shape.primary_key[0] if len(shape.primary_key) == 1 else None
        self._converters = [(c.name, c.convert) for c in shape.columns if c.convert is not None]
        schema = schema_json(shape.database, shape.table, shape.columns, shape.primary_key)
        self._head = '{"schema":' + schema + ',"payload":{"before":'

    def convert(self, values: dict[str, Any]) -> dict[str, Any]:
        """Convert a decoded row's values in place (dates to epoch ms, ...)."""
        for name, convert in self._converters:
            value = values.get(name)
            if value is not None:
                try:
                    values[name] = convert(value)
                except Exception as exc:
                    raise ValueError(
                        f"table {self.shape.table!r} column {name!r}: cannot convert "
                        f"{type(value).__name__} value: {exc}"
                    ) from None
        return values

    def key(self, values: dict[str, Any]) -> bytes | None:
        """The message key: the JSON array of the primary-key values (None without a key)."""
        single = self._single_key
        if single is not None:
            value = values.get(single)
            if type(value) is int:  # the common case, without the JSON encoder
                return b"[%d]" % value
            return _dumps([value]).encode()
        if not self.primary_key:
            return None
        return _dumps([values.get(name) for name in self.primary_key]).encode()

    def partition(self, key: bytes | None) -> int:
        """Where a message with this key goes."""
        if key is None or self.partitions == 1:
            return 0
        return murmur2_partition(key, self.partitions)

    def value(
        self,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        sequence: str,
        stamp: str,
    ) -> bytes:
        """The envelope of one row change (``stamp`` from :func:`timestamp_part`)."""
        b = "null" if before is None else '{"dataColumn":' + _dumps(before) + "}"
        a = "null" if after is None else '{"dataColumn":' + _dumps(after) + "}"
        return (
            f'{self._head}{b},"after":{a},"sequenceId":"{sequence}",{stamp},'
            f'"op":"{op}","ddl":null}},"version":"{VERSION}"}}'
        ).encode()


def ddl_value(database: str, table: str, statement: str, sequence: str, stamp: str) -> bytes:
    """The envelope of a DDL statement: ``op`` DDL, the statement in ``ddl``, no rows.

    Its ``dataColumn`` and ``primaryKey`` are empty: the binlog does not say what
    the table looks like after the statement; the next row change carries that.
    """
    head = schema_json(database, table, (), ())
    return (
        f'{{"schema":{head},"payload":{{"before":null,"after":null,'
        f'"sequenceId":"{sequence}",{stamp},"op":"{DDL}","ddl":{_dumps(statement)}}},'
        f'"version":"{VERSION}"}}'
    ).encode()
