"""Object formats: JSON lines (the documents' exported message per line), raw value
lines, and Parquet (the data-lake case) with the exported message's fields as columns.

A format prepares each record once (validating it: a bad record is rejected
before any object is written) and then encodes a run of prepared records into
one object. ``sizes`` says what each prepared record adds to an object
(uncompressed for Parquet), which is what ``batch_size_mb`` counts.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

from etl.errors import RecordError
from sinks.exported import export_json_line, exported_message


class ObjectFormat(Protocol):
    """How records become one object's bytes."""

    def prepare(self, record: Any) -> Any:
        """The record's payload; raises RecordError for a record this format cannot hold."""
        ...

    def sizes(self, records: list[Any], payloads: list[Any]) -> list[int]:
        """Bytes each prepared record adds to an object."""
        ...

    def encode(self, payloads: list[Any]) -> bytes:
        """One object from prepared payloads, in order."""
        ...


class JsonLinesFormat:
    """One exported-message JSON object per line."""

    #: One exported-message JSON line per record.
    prepare = staticmethod(export_json_line)

    def sizes(self, records: list[Any], payloads: list[bytes]) -> list[int]:
        return list(map(len, payloads))

    def encode(self, payloads: list[bytes]) -> bytes:
        return b"".join(payloads)


class RawValueFormat:
    """The record's value bytes, one per line (a null value is an empty line)."""

    def prepare(self, record: Any) -> bytes:
        value = record.value or b""
        if b"\n" in value:
            raise RecordError(
                f"value of {record.topic}/{record.partition}@{record.offset} contains a line "
                "break, which raw format cannot hold (use jsonl)",
                stage="sink",
            )
        return value + b"\n"

    def sizes(self, records: list[Any], payloads: list[bytes]) -> list[int]:
        return list(map(len, payloads))

    def encode(self, payloads: list[bytes]) -> bytes:
        return b"".join(payloads)


class ParquetFormat:
    """A Parquet file with the exported message's fields as columns."""

    # Per-row bytes of the fixed columns, for the uncompressed size estimate.
    ROW_OVERHEAD = 40

    def __init__(self, compression: str = "snappy") -> None:
        import pyarrow as pa

        self.compression = None if compression == "none" else compression
        self.schema = pa.schema(
            [
                pa.field("key", pa.string()),
                pa.field("offset", pa.int64(), nullable=False),
                pa.field("overflowFlag", pa.bool_(), nullable=False),
                pa.field("partition", pa.int32(), nullable=False),
                pa.field("timestamp", pa.int64()),
                pa.field("topic", pa.string(), nullable=False),
                pa.field("value", pa.string()),
                pa.field("valueSize", pa.int64(), nullable=False),
            ]
        )

    def prepare(self, record: Any) -> dict[str, Any]:
        return exported_message(record)

    def sizes(self, records: list[Any], payloads: list[dict[str, Any]]) -> list[int]:
        return [
            self.ROW_OVERHEAD + len(r.topic) + len(r.key or b"") + len(r.value or b"")
            for r in records
        ]

    def encode(self, payloads: list[dict[str, Any]]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [m.get(name) for m in payloads] for name in self.schema.names}
        table = pa.Table.from_pydict(columns, schema=self.schema)
        out = io.BytesIO()
        pq.write_table(table, out, compression=self.compression)
        return out.getvalue()


def make_format(name: str, *, parquet_compression: str = "snappy") -> ObjectFormat:
    """The format named by the ``format`` option."""
    if name == "parquet":
        return ParquetFormat(parquet_compression)
    if name == "raw":
        return RawValueFormat()
    return JsonLinesFormat()
