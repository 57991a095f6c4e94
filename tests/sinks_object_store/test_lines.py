"""The exported-message lines and the cutting of records into objects (no servers)."""

from __future__ import annotations

import itertools
import json

import pytest
from aiokafka.structs import ConsumerRecord

from etl.errors import RecordError
from sinks.exported import encode_message, export_json, export_json_line, exported_message
from sinks.object_store.plan import plan_objects


def record(
    key: bytes | None, value: bytes | None, timestamp: int = 1700000000123
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord('or"ders', 2, 41, timestamp, 0, key, value, None, 0, 0, [])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"k", b"v"),
        (None, b"no key"),
        (b"tombstone", None),
        ("ü€😀".encode(), b'quote " backslash \\ tab \t nl \n nul \x00 del \x7f'),
        (b"", b""),
        (b"k", b'{"json": [1, 2.5, null]}'),
    ],
)
def test_fast_line_is_the_documented_json(key: bytes | None, value: bytes | None) -> None:
    item = record(key, value)
    assert export_json(item) == encode_message(exported_message(item))
    assert export_json_line(item) == encode_message(exported_message(item)) + b"\n"
    parsed = json.loads(export_json(item))
    assert list(parsed) == sorted(parsed), "keys in the documents' order"
    assert parsed["valueSize"] == (len(value) if value is not None else 0)


def test_invalid_utf8_names_the_field() -> None:
    with pytest.raises(RecordError, match=r"value of or\"ders/2@41 is not valid UTF-8") as caught:
        export_json(record(b"k", b"ok \xff"))
    assert caught.value.stage == "sink"


def test_overflow_message_has_no_value() -> None:
    message = exported_message(record(b"k", b"x" * 500), overflow=True)
    assert (
        message["overflowFlag"] is True and "value" not in message and message["valueSize"] == 500
    )


def test_plan_keeps_one_object_when_it_fits() -> None:
    assert plan_objects([10] * 5, None, limit=100, most=10) == [(0, 5)]
    assert plan_objects([], None, limit=100, most=10) == []


def test_plan_cuts_into_even_pieces_under_the_limit() -> None:
    ranges = plan_objects([10] * 25, None, limit=100, most=1000)
    sizes = [(end - start) * 10 for start, end in ranges]
    assert len(ranges) == 3 and all(size <= 100 for size in sizes) and min(sizes) >= 60
    assert ranges[0][0] == 0 and ranges[-1][1] == 25
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_plan_follows_time_directories_in_offset_order() -> None:
    dirs = ["10", "10", "11", "10", "10"]
    assert plan_objects([1] * 5, dirs, limit=100, most=100) == [(0, 2), (2, 3), (3, 5)]


def test_plan_limits_records_per_object_and_isolates_a_huge_record() -> None:
    assert plan_objects([1] * 7, None, limit=100, most=3) == [(0, 3), (3, 6), (6, 7)]
    assert plan_objects([5, 500, 5], None, limit=100, most=10) == [(0, 1), (1, 2), (2, 3)]
