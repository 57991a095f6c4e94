"""The shared sink rules: what one record's exception becomes."""

from __future__ import annotations

import pytest

from etl.errors import FatalError, RecordError, RetriableError
from etl.testing.sink_conformance import make_record
from sinks.base import record_failure


def test_any_exception_of_one_record_is_a_record_error_naming_it() -> None:
    record = make_record("orders", 2, 41, b"k", b"v", timestamp=253_402_300_800_000)
    try:
        raise ValueError("year 10000 is out of range")
    except ValueError as exc:
        failure = record_failure(record, exc)
    assert failure.record is record
    assert isinstance(failure.error, RecordError)
    assert str(failure.error) == (
        "orders/2@41 cannot be written: ValueError: year 10000 is out of range"
    )
    assert isinstance(failure.error.__cause__, ValueError)


def test_a_record_error_is_kept_as_it_is() -> None:
    record = make_record("t", 0, 1, b"k", b"v")
    error = RecordError("value of t/0@1 is not valid UTF-8", stage="sink")
    assert record_failure(record, error).error is error


@pytest.mark.parametrize("error", [FatalError("no table"), RetriableError("connection lost")])
def test_errors_about_the_destination_are_raised_again(error: Exception) -> None:
    with pytest.raises(type(error)):
        record_failure(make_record("t", 0, 1, b"k", b"v"), error)
