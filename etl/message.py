"""The message dict handed to ``deal_message`` and the records it may return.

Keys and values are UTF-8 text, as the console documents. A key or value that
is not valid UTF-8 cannot become a ``str`` without loss, so that message is not
given to the transform: it is dead-lettered (stage ``decode``) with its original
bytes under the ``continue`` policy, and stops the pipeline under ``stop``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from etl.errors import RecordError

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class OutRecord:
    """One record to produce: encoded key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None


def _decode(data: bytes | None, what: str) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"{what} is not valid UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 4]!r})",
            stage="decode",
        ) from None


def decode_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str | bytes | None]:
    """Headers as a dict; values are text when they are UTF-8, else bytes; last name wins."""
    out: dict[str, str | bytes | None] = {}
    for name, raw in headers or ():
        if raw is None:
            out[name] = None
            continue
        try:
            out[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            out[name] = raw
    return out


def record_to_message(record: Any) -> dict[str, Any]:
    """The documented message dict for one consumed record (raises RecordError on bad UTF-8)."""
    return {
        "key": _decode(record.key, "key"),
        "value": _decode(record.value, "value"),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "headers": decode_headers(record.headers),
    }


def native_to_message(message: Any) -> dict[str, Any]:
    """The message dict for one librdkafka message (raises RecordError on bad UTF-8)."""
    key = message.key()
    value = message.value()
    headers = message.headers()
    try:
        # Inlined (this runs for every record): str.decode's default is UTF-8.
        text_key = None if key is None else key.decode()
        text_value = None if value is None else value.decode()
    except UnicodeDecodeError:
        text_key = _decode(key, "key")
        text_value = _decode(value, "value")
    return {
        "key": text_key,
        "value": text_value,
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": message.timestamp()[1],
        "headers": decode_headers(headers) if headers else {},
    }


def make_message(
    key: str | None,
    value: str | None,
    *,
    topic: str = "test",
    partition: int = 0,
    offset: int = 0,
    timestamp: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A message dict built by hand (``etl test-transform`` and tests)."""
    return {
        "key": key,
        "value": value,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
        "headers": dict(headers or {}),
    }


def encode_field(value: Any, field: str) -> bytes | None:
    """str -> UTF-8, bytes as is, None stays None, dict/list -> compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise RecordError(
                f"message[{field!r}] is not JSON-serialisable: {exc}", "transform"
            ) from None
    raise RecordError(
        f"message[{field!r}] is {type(value).__name__}; expected str, bytes, dict, list or None",
        stage="transform",
    )


def encode_headers(headers: Any) -> Headers:
    """A dict or a list of (name, value) pairs -> Kafka headers."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: Headers = []
    try:
        for name, value in items:
            if not isinstance(name, str):
                raise RecordError(f"header name {name!r} is not a str", "transform")
            encoded = encode_field(value, f"headers.{name}")
            out.append((name, encoded if encoded is not None else b""))
    except (TypeError, ValueError):
        raise RecordError(
            "message['headers'] must be a dict or a list of (name, value) pairs", "transform"
        ) from None
    return out


def _one(result: Any) -> OutRecord:
    if not isinstance(result, dict):
        raise RecordError(
            f"deal_message returned a list item of type {type(result).__name__}; expected dict",
            stage="transform",
        )
    timestamp = result.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, int):
        raise RecordError(
            f"message['timestamp'] is {type(timestamp).__name__}; expected int (ms) or None",
            stage="transform",
        )
    key = result.get("key")
    value = result.get("value")
    headers = result.get("headers")
    # The common case (text key and value, no headers) without the general encoder.
    return OutRecord(
        key.encode() if type(key) is str else encode_field(key, "key"),
        value.encode() if type(value) is str else encode_field(value, "value"),
        encode_headers(headers) if headers else [],
        # Kafka's "no timestamp" is -1; a negative one cannot be produced: let the broker stamp it.
        timestamp if timestamp is None or timestamp >= 0 else None,
    )


def normalize_result(result: Any) -> list[OutRecord]:
    """What ``deal_message`` returned -> records: None filters, dict is one, list fans out."""
    if result is None:
        return []
    if isinstance(result, dict):
        return [_one(result)]
    if isinstance(result, list | tuple):
        return [_one(item) for item in result if item is not None]
    raise RecordError(
        f"deal_message returned {type(result).__name__}; expected dict, list of dicts or None",
        stage="transform",
    )
