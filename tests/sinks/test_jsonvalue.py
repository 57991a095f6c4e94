"""Strict JSON for record values: what no destination can hold is a ValueError."""

from __future__ import annotations

import pytest

from sinks.jsonvalue import loads


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b'{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}),
        (b'"\\u00e9"', "\u00e9"),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one character
        ('{"k": "v"}', {"k": "v"}),
    ],
)
def test_json_is_parsed(text: bytes | str, value: object) -> None:
    assert loads(text) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b"[-Infinity]", "-Infinity is not a JSON value"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
        (b'{"a": "\\ude00\\ud83d"}', "lone UTF-16 surrogate"),
        (b"\xff", "can't decode"),
    ],
)
def test_what_no_destination_holds_is_rejected(text: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        loads(text)
