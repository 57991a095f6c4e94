"""Kafka record -> one bulk operation (action line + document line).

Document shapes (``document``):

* ``envelope``: ``{"msg_body": {"key", "offset", "overflowFlag", "partition",
  "timestamp", "topic", "value", "valueSize"}}``, the documents' exported message
  (:mod:`sinks.exported`, the same bytes the HTTP and object-store sinks send): key
  and value are UTF-8 text, a null key is left out, ``valueSize`` is the value's
  length in bytes, and ``overflowFlag`` is always false (the value is never cut);
* ``value``: the record value, which must be a JSON object;
* ``flatten``: the JSON object's fields plus ``topic``, ``partition``,
  ``offset``, ``key`` and ``timestamp`` (a value field with one of those names is
  an error for that record, so nothing is silently overwritten).

Ids (``id``): ``key`` (the record key as text), ``coordinates``
(``topic+partition+offset``) or ``auto``: an id derived from the coordinates and a
random number drawn when the sink starts, so a retried write overwrites what an
earlier attempt wrote, while a redelivery after a restart adds a new document.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from etl.errors import RecordError
from sinks.exported import export_json
from sinks.jsonvalue import loads
from sinks.opensearch.config import OpenSearchSinkConfig

MAX_ID_BYTES = 512
FLATTEN_FIELDS = ("topic", "partition", "offset", "key", "timestamp")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(slots=True)
class BulkOp:
    """One bulk operation and the record it came from."""

    record: Any
    action: str  # index | update | delete
    index: str
    doc_id: str
    body: bytes  # newline-terminated NDJSON: the action line and, except for delete, the source

    @property
    def size(self) -> int:
        return len(self.body)


def _text(data: bytes | None, what: str) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{what} is not valid UTF-8 (byte {exc.start})") from None


def _json_object(value: bytes) -> dict[str, Any]:
    text = _text(value, "value")
    assert text is not None
    try:
        parsed = loads(text)
    except ValueError as exc:
        raise RecordError(f"value is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise RecordError(
            f"value is a JSON {type(parsed).__name__}; this document shape needs a JSON object"
        )
    return parsed


class DocumentBuilder:
    """Builds the bulk operation of each record as the sink's options say."""

    def __init__(self, config: OpenSearchSinkConfig) -> None:
        self.config = config
        self.template = config.index_template()
        # Drawn once per sink start: ``auto`` ids are stable across retries of a write.
        self._nonce = os.urandom(16)
        self._upsert = config.write_method == "upsert"
        self._verb = "update" if self._upsert else "index"
        # An upsert may race another writer of the same id: let the server retry it.
        self._extra_meta = ',"retry_on_conflict":3' if self._upsert else ""

    def build(self, record: Any) -> BulkOp | None:
        """The operation for one record; None when a null value is ignored."""
        index = self.template.render(record.topic, record.partition, record.timestamp)
        doc_id = self.document_id(record)
        if record.value is None:
            null_value = self.config.null_value
            if null_value == "ignore":
                return None
            if null_value == "fail":
                raise RecordError("value is null (null_value: fail)")
            meta = _dumps({"delete": {"_index": index, "_id": doc_id}})
            return BulkOp(record, "delete", index, doc_id, meta.encode() + b"\n")
        source = self.source(record)
        meta = (
            f'{{"{self._verb}":{{"_index":{_dumps(index)},"_id":{_dumps(doc_id)}'
            f"{self._extra_meta}}}}}\n"
        )
        if self._upsert:
            source = b'{"doc":' + source + b',"doc_as_upsert":true}'
        return BulkOp(record, self._verb, index, doc_id, meta.encode() + source + b"\n")

    def document_id(self, record: Any) -> str:
        """The ``_id`` of a record's document."""
        mode = self.config.id
        if mode == "coordinates":
            return f"{record.topic}+{record.partition}+{record.offset}"
        if mode == "key":
            key = _text(record.key, "key")
            if key is None or key == "":
                raise RecordError("record has no key; id: key needs one")
            if len(record.key) > MAX_ID_BYTES:
                raise RecordError(f"key is {len(record.key)} bytes; an id holds {MAX_ID_BYTES}")
            return key
        digest = hashlib.blake2b(
            f"{record.topic}\0{record.partition}\0{record.offset}".encode(),
            key=self._nonce,
            digest_size=15,
        ).digest()
        return base64.urlsafe_b64encode(digest).decode()

    def source(self, record: Any) -> bytes:
        """The document (JSON, one line) of a record with a value."""
        shape = self.config.document
        value: bytes = record.value
        if shape == "envelope":
            # The exported message itself: a null key is left out, as in the HTTP and
            # object-store sinks (the documents: "the request does not contain key").
            return b'{"msg_body":' + export_json(record) + b"}"
        document = _json_object(value)
        if shape == "value":
            if b"\n" not in value and b"\r" not in value:
                return value  # already one line of valid JSON: no need to re-encode
            return _dumps(document).encode()
        clashes = [name for name in FLATTEN_FIELDS if name in document]
        if clashes:
            raise RecordError(
                f"value field(s) {', '.join(clashes)} clash with the fields document: flatten "
                "adds; use document: value or envelope for such records"
            )
        document.update(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_text(record.key, "key"),
            timestamp=record.timestamp,
        )
        return _dumps(document).encode()
