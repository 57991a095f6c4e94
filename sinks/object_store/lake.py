"""The data-lake layout of the object-store sink (``lake:``): a table per topic.

Objects go to ``<url>/[<database>/]<table>/dt=YYYY-MM-DD/hr=HH/partition_...parquet``
(Hive-style partitions a query engine reads as columns); each record's JSON
object becomes one row of the table's schema, declared in the config or
inferred from the table's first record and kept in ``<table>/_meta/schema.json``
so that every file of a table has the same columns. The meta objects of the
exactly-once protocol live in ``<table>/_meta/<topic>/``: engines skip
directories whose name starts with ``_``.

This module is light to import: pyarrow is loaded when a file is encoded.
"""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from etl.errors import FatalError, RecordError
from sinks.jsonvalue import loads
from sinks.object_store.formats import ParquetFormat
from sinks.object_store.layout import PathLayout
from sinks.paths import confined, path_segment

log = logging.getLogger("etl.sink.object_store")

ColumnType = Literal["string", "int32", "int64", "float64", "bool", "timestamp", "date", "json"]
TABLE_PATTERN = r"^[A-Za-z0-9_]{1,128}$"
#: strftime patterns of the Hive-style time partitions.
PARTITION_PATTERNS = {"hour": "dt=%Y-%m-%d/hr=%H", "day": "dt=%Y-%m-%d", "none": ""}
PARTITION_COLUMNS = {"hour": ("dt", "hr"), "day": ("dt",), "none": ()}
#: Columns with where each row came from (``kafka_columns: true``).
KAFKA_COLUMNS = (
    "_kafka_topic",
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
    "_kafka_key",
)
META_DIR = "_meta"
SCHEMA_OBJECT = "schema.json"
# Epoch milliseconds of 0001-01-01 and of the last millisecond of 9999-12-31.
_MIN_MS = -62_135_596_800_000
_MAX_MS = 253_402_300_799_999
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LakeOptions(BaseModel):
    """``lake:`` of an object-store sink: table-per-topic Parquet with time partitions."""

    model_config = ConfigDict(extra="forbid")

    #: First path level (the documents' database name); unset: tables at the top.
    database: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
    #: Table of a topic, when not its name with non-alphanumerics replaced by ``_``.
    tables: dict[str, str] = Field(default_factory=dict)
    #: Hive-style time partitions: ``dt=YYYY-MM-DD/hr=HH`` (hour), ``dt=...`` (day), none.
    partition_by: Literal["hour", "day", "none"] = "hour"
    #: Declared columns per table (name: type); other tables infer theirs.
    schemas: dict[str, dict[str, ColumnType]] = Field(default_factory=dict)
    #: A field that is not in the schema: dropped with a warning, or added as a column.
    new_fields: Literal["ignore", "add"] = "ignore"
    #: Add the ``_kafka_*`` columns (topic, partition, offset, timestamp, key).
    kafka_columns: bool = True

    @field_validator("tables")
    @classmethod
    def _check_tables(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value.values() if not re.match(TABLE_PATTERN, name)]
        if bad:
            raise ValueError(f"table names must be letters, digits and _: {bad}")
        return value

    @model_validator(mode="after")
    def _check_schemas(self) -> LakeOptions:
        reserved = set(self.reserved())
        for table, columns in self.schemas.items():
            if not re.match(TABLE_PATTERN, table):
                raise ValueError(f"schemas: table name {table!r} must be letters, digits and _")
            if not columns:
                raise ValueError(f"schemas.{table}: declares no column")
            clash = sorted(reserved.intersection(columns))
            if clash:
                raise ValueError(
                    f"schemas.{table}: {clash} are the sink's own columns "
                    "(partition or _kafka_* columns); rename them"
                )
        return self

    def reserved(self) -> tuple[str, ...]:
        """Column names the sink fills itself."""
        own = KAFKA_COLUMNS if self.kafka_columns else ()
        return own + PARTITION_COLUMNS[self.partition_by]

    def table_of(self, topic: str) -> str:
        """The table a topic is written to."""
        return self.tables.get(topic) or _NOT_ALNUM.sub("_", topic)


class LakeLayout(PathLayout):
    """``<root>/[<database>/]<table>/dt=.../hr=.../<object>``, meta in ``<table>/_meta/``."""

    def __init__(self, root: str, options: LakeOptions, *, time_source: str, timezone: str):
        super().__init__(root, "", "none", time_source=time_source, timezone=timezone)
        self.options = options
        self.pattern = PARTITION_PATTERNS[options.partition_by]
        self.base = f"{self.root}/{options.database}" if options.database else self.root

    def table_dir(self, topic: str) -> str:
        """Where a topic's table lives."""
        return f"{self.base}/{self.options.table_of(topic)}"

    def topic_dir(self, topic: str) -> str:
        """The topic's meta objects (hidden from query engines by the ``_`` prefix)."""
        return f"{self.table_dir(topic)}/{META_DIR}/{path_segment(topic)}"

    def schema_path(self, topic: str) -> str:
        """The schema object of a topic's table."""
        return confined(self.root, f"{self.table_dir(topic)}/{META_DIR}/{SCHEMA_OBJECT}")

    def object_path(self, topic: str, time_dir: str, name: str) -> str:
        base = self.table_dir(topic)
        return confined(self.root, f"{base}/{time_dir}/{name}" if time_dir else f"{base}/{name}")


class LakeTable:
    """The columns of one table (in order) and what changed since they were saved."""

    def __init__(self, name: str, columns: dict[str, str] | None, declared: bool) -> None:
        self.name = name
        #: None until the first record (or the schema object) says.
        self.columns = columns
        self.declared = declared
        self.dirty = declared
        self.dropped: set[str] = set()

    def to_bytes(self) -> bytes:
        columns = [{"name": n, "type": t} for n, t in (self.columns or {}).items()]
        doc = {"table": self.name, "columns": columns, "version": 1}
        return json.dumps(doc, indent=1).encode("utf-8")


def infer_type(value: Any) -> str:
    """The column type a JSON value suggests (null and nested values: ``json``)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "json"


def convert(value: Any, kind: str) -> Any:
    """``value`` as a column of type ``kind``; ValueError says why it does not fit."""
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "float64":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind in _INT_RANGE:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = _INT_RANGE[kind]
            if low <= value <= high:
                return value
            raise ValueError(f"{value} is out of the {kind} range")
    elif kind == "timestamp":
        return _timestamp_ms(value)
    elif kind == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{_show(value)} is not a date (YYYY-MM-DD)") from None
    raise ValueError(f"{_show(value)} is not {kind}")


def _timestamp_ms(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        stamp = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{_show(value)} is not an ISO-8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        stamp = (moment - _EPOCH) // timedelta(milliseconds=1)
    else:
        raise ValueError(f"{_show(value)} is not a timestamp (epoch ms or ISO-8601)")
    if not _MIN_MS <= stamp <= _MAX_MS:
        raise ValueError(f"{value} is outside years 1-9999")
    return stamp


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "json": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
        "date": pa.date32(),
    }[kind]


class LakeFormat:
    """Each record's JSON object as a row of its table's schema (Parquet)."""

    def __init__(self, options: LakeOptions, compression: str = "snappy", sink: str = "") -> None:
        self.compression = None if compression == "none" else compression
        self.options = options
        self.sink = sink
        self.reserved = frozenset(options.reserved())
        self.tables: dict[str, LakeTable] = {}

    # ---- schema objects -----------------------------------------------------------------

    async def load(self, store: Any, layout: LakeLayout, topic: str) -> None:
        """Know the topic's table: the declared schema, else the saved one (read once)."""
        name = self.options.table_of(topic)
        if name in self.tables:
            return
        declared = self.options.schemas.get(name)
        path = layout.schema_path(topic)
        raw = await store.get(path)
        saved = _parse_schema(raw, path) if raw is not None else None
        if declared is not None:
            table = LakeTable(name, dict(declared), declared=True)
            table.dirty = saved != table.columns
            if saved is not None and table.dirty:
                log.warning(
                    "lake schema changed by the config sink=%s table=%s saved=%s declared=%s",
                    self.sink,
                    name,
                    saved,
                    declared,
                )
        else:
            table = LakeTable(name, saved, declared=False)
        self.tables[name] = table

    async def save(self, store: Any, layout: LakeLayout, topic: str) -> None:
        """Write the table's schema object when it changed (before its data objects)."""
        table = self.tables[self.options.table_of(topic)]
        if table.dirty and table.columns is not None:
            await store.put(layout.schema_path(topic), table.to_bytes())
            table.dirty = False

    # ---- records ------------------------------------------------------------------------

    def prepare(self, record: Any) -> tuple[LakeTable, dict[str, Any]]:
        where = f"{record.topic}/{record.partition}@{record.offset}"
        if record.value is None:
            raise RecordError(f"{where}: a null value has no row", stage="sink")
        try:
            doc = loads(record.value)
        except ValueError as exc:
            raise RecordError(f"{where}: value is not JSON ({exc})", stage="sink") from None
        if not isinstance(doc, dict):
            raise RecordError(f"{where}: value is not a JSON object", stage="sink")
        clash = self.reserved.intersection(doc)
        if clash:
            raise RecordError(
                f"{where}: field {sorted(clash)[0]!r} has the name of a partition or _kafka_* "
                "column; rename it in a transform",
                stage="sink",
            )
        table = self.tables[self.options.table_of(record.topic)]
        if table.columns is None:
            self._infer(table, doc)
        columns = table.columns
        assert columns is not None
        row: dict[str, Any] = {}
        for field, value in doc.items():
            kind = columns.get(field)
            if kind is None:
                kind = self._new_field(table, field, value)
                if kind is None:
                    continue
            try:
                row[field] = convert(value, kind)
            except ValueError as exc:
                raise RecordError(
                    f"{where}: field {field!r} does not fit column {field} {kind} of table "
                    f"{table.name}: {exc}",
                    stage="sink",
                ) from None
        if self.options.kafka_columns:
            row["_kafka_topic"] = record.topic
            row["_kafka_partition"] = record.partition
            row["_kafka_offset"] = record.offset
            row["_kafka_timestamp"] = record.timestamp
            if record.key is not None:
                try:
                    row["_kafka_key"] = record.key.decode("utf-8")
                except UnicodeDecodeError:
                    raise RecordError(f"{where}: key is not UTF-8", stage="sink") from None
        return table, row

    def _infer(self, table: LakeTable, doc: dict[str, Any]) -> None:
        table.columns = {field: infer_type(value) for field, value in doc.items()}
        table.dirty = True
        untyped = sorted(f for f, v in doc.items() if v is None)
        log.info(
            "lake schema inferred from the first record sink=%s table=%s columns=%s",
            self.sink,
            table.name,
            table.columns,
        )
        if untyped:
            log.warning(
                "lake fields null in the first record are typed json sink=%s table=%s "
                "fields=%s (declare their types in lake.schemas)",
                self.sink,
                table.name,
                untyped,
            )

    def _new_field(self, table: LakeTable, field: str, value: Any) -> str | None:
        """The type of a field not in the schema yet, or None when it is dropped."""
        assert table.columns is not None
        if self.options.new_fields == "add":
            if value is None:
                return None  # a null adds nothing yet: a missing column reads as null
            kind = table.columns[field] = infer_type(value)
            table.dirty = True
            log.info(
                "lake column added sink=%s table=%s column=%s type=%s",
                self.sink,
                table.name,
                field,
                kind,
            )
            return kind
        if field not in table.dropped:
            table.dropped.add(field)
            log.warning(
                "lake field not in the table's schema is dropped sink=%s table=%s field=%s "
                "(declare it in lake.schemas, or lake.new_fields: add)",
                self.sink,
                table.name,
                field,
            )
        return None

    def sizes(self, records: list[Any], payloads: list[Any]) -> list[int]:
        return [ParquetFormat.ROW_OVERHEAD + len(r.value or b"") for r in records]

    def encode(self, payloads: list[tuple[LakeTable, dict[str, Any]]]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = payloads[0][0]
        fields = [pa.field(n, _arrow_type(t)) for n, t in (table.columns or {}).items()]
        if self.options.kafka_columns:
            fields += [
                pa.field("_kafka_topic", pa.string(), nullable=False),
                pa.field("_kafka_partition", pa.int32(), nullable=False),
                pa.field("_kafka_offset", pa.int64(), nullable=False),
                pa.field("_kafka_timestamp", pa.timestamp("ms", tz="UTC")),
                pa.field("_kafka_key", pa.string()),
            ]
        schema = pa.schema(fields)
        rows = [row for _, row in payloads]
        columns = {
            name: pa.array([row.get(name) for row in rows], type=schema.field(name).type)
            for name in schema.names
        }
        out = io.BytesIO()
        pq.write_table(
            pa.Table.from_pydict(columns, schema=schema), out, compression=self.compression
        )
        return out.getvalue()


def _parse_schema(raw: bytes, where: str) -> dict[str, str]:
    try:
        doc = json.loads(raw)
        columns = {str(c["name"]): str(c["type"]) for c in doc["columns"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise FatalError(
            f"schema object {where} is not readable ({exc}); fix or move it away"
        ) from None
    unknown = sorted(t for t in columns.values() if t not in _KNOWN_TYPES)
    if unknown:
        raise FatalError(f"schema object {where} names unknown column types {unknown}")
    return columns


_KNOWN_TYPES = frozenset(ColumnType.__args__)  # type: ignore[attr-defined]
