"""The message dict and what deal_message may return."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from etl.errors import RecordError
from etl.message import normalize_result, record_to_message


def record(key: bytes | None, value: bytes | None, headers: list | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        key=key,
        value=value,
        topic="t",
        partition=2,
        offset=7,
        timestamp=1000,
        headers=headers or [],
    )


def test_record_to_message() -> None:
    message = record_to_message(record(b"k", "värde".encode(), [("h", b"1"), ("b", b"\xff")]))
    assert message == {
        "key": "k",
        "value": "värde",
        "topic": "t",
        "partition": 2,
        "offset": 7,
        "timestamp": 1000,
        "headers": {"h": "1", "b": b"\xff"},
    }


@pytest.mark.parametrize("field", ["key", "value"])
def test_invalid_utf8_is_a_decode_error(field: str) -> None:
    args = {"key": b"k", "value": b"v", field: b"ok\xc3\x28"}
    with pytest.raises(RecordError) as info:
        record_to_message(record(args["key"], args["value"]))
    assert info.value.stage == "decode"
    assert f"{field} is not valid UTF-8" in str(info.value)


def test_results() -> None:
    assert normalize_result(None) == []
    [one] = normalize_result({"key": "k", "value": "v", "headers": {"a": "b"}, "timestamp": 5})
    assert (one.key, one.value, one.headers, one.timestamp_ms) == (b"k", b"v", [("a", b"b")], 5)
    many = normalize_result([{"value": "a"}, None, {"value": {"x": 1}}])
    assert [r.value for r in many] == [b"a", b'{"x":1}']
    [tombstone] = normalize_result({"key": "k", "value": None})
    assert tombstone.value is None


@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        ("text", "deal_message returned str"),
        (42, "deal_message returned int"),
        ([1], "list item of type int"),
        ({"value": 3.5}, "message['value'] is float"),
        ({"value": "v", "timestamp": "now"}, "message['timestamp'] is str"),
        ({"value": "v", "headers": 5}, "headers"),
    ],
)
def test_wrong_types_are_transform_errors(result: object, fragment: str) -> None:
    with pytest.raises(RecordError) as info:
        normalize_result(result)
    assert info.value.stage == "transform"
    assert fragment in str(info.value)
