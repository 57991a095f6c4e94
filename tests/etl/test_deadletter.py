"""Dead letters that do not fit: the reduced form (pure function) and the writer's fallbacks."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from etl.deadletter import (
    DeadLetterRefused,
    DeadLetterWriter,
    dead_letter_headers,
    fit_dead_letter,
    record_bytes,
)
from etl.redact import Redactor
from etl.testing.sink_conformance import make_record

LIMIT = 1024 * 1024


def headers_of(record: Any) -> list[tuple[str, bytes]]:
    return dead_letter_headers(
        record, pipeline="p", stage="sink", exc=ValueError("bad"), redact=Redactor()
    )


def as_dict(headers: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return dict(headers)


def test_a_dead_letter_that_fits_is_unchanged() -> None:
    record = make_record("t", 0, 7, b"k", b"v" * 1000, headers=[("h", b"1")])
    letter = fit_dead_letter(record.key, record.value, headers_of(record), LIMIT)
    assert (letter.key, letter.value) == (b"k", b"v" * 1000)
    assert not letter.truncated
    assert ("h", b"1") in letter.headers


def test_a_5_mib_value_is_cut_to_fit_with_size_hash_and_coordinates() -> None:
    value = bytes(range(256)) * (5 * 4096)
    record = make_record("src", 2, 41, b"key", value, headers=[("trace", b"\x00\xff")])
    letter = fit_dead_letter(record.key, record.value, headers_of(record), LIMIT)
    assert record_bytes(letter.key, letter.value, letter.headers) <= LIMIT
    assert letter.value is not None and value.startswith(letter.value)
    assert len(letter.value) > LIMIT - 4096  # cut to fit, not emptied
    found = as_dict(letter.headers)
    assert found["etl.truncated"] == b"true"
    assert found["etl.original.size"] == str(len(value)).encode()
    assert found["etl.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert found["etl.source.topic"] == b"src"
    assert found["etl.source.partition"] == b"2"
    assert found["etl.source.offset"] == b"41"
    assert found["trace"] == b"\x00\xff"  # original headers kept while they fit
    assert letter.key == b"key"


def test_huge_headers_are_dropped_then_a_huge_key_is_cut() -> None:
    headers = [("h", b"x" * 600)] * 3
    record = make_record("t", 0, 1, b"k" * 5000, b"v" * 100, headers=headers)
    letter = fit_dead_letter(record.key, record.value, headers_of(record), 2048)
    assert record_bytes(letter.key, letter.value, letter.headers) <= 2048
    found = as_dict(letter.headers)
    assert found["etl.original.headers"] == b"dropped"
    assert found["etl.original.key.size"] == b"5000"
    assert "h" not in found
    assert letter.value == b""
    assert letter.key is not None and len(letter.key) < 5000


def test_a_keyless_tombstone_gets_an_empty_value() -> None:
    record = make_record("t", 0, 1, None, None)
    letter = fit_dead_letter(record.key, record.value, headers_of(record), LIMIT)
    assert (letter.key, letter.value) == (None, b"")
    assert as_dict(letter.headers)["etl.original.value"] == b"null"


class Producer:
    """Refuses records over ``broker_limit`` bytes as a broker does (in the future)."""

    def __init__(self, broker_limit: int) -> None:
        self.broker_limit = broker_limit
        self.sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self._max_request_size = LIMIT

    async def send(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if record_bytes(key, value, kw["headers"]) > self.broker_limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((key, value, kw["headers"]))
            future.set_result(None)
        return future


async def test_send_fits_to_the_producers_max_request_size() -> None:
    producer = Producer(broker_limit=10 * LIMIT)
    writer = DeadLetterWriter(producer, "dlq", Redactor())
    record = make_record("t", 0, 3, b"k", b"v" * (5 * LIMIT))
    await (await writer.send(record, pipeline="p", stage="sink", exc=ValueError("x")))
    [(_key, value, headers)] = producer.sent
    assert value is not None and len(value) < LIMIT
    assert as_dict(headers)["etl.truncated"] == b"true"


async def test_deliver_falls_back_to_the_smallest_form_when_the_broker_refuses() -> None:
    producer = Producer(broker_limit=4096)
    writer = DeadLetterWriter(producer, "dlq", Redactor())
    record = make_record("t", 0, 3, b"k", b"v" * 100_000)
    await writer.deliver(record, pipeline="p", stage="sink", exc=ValueError("x"))
    [(key, value, headers)] = producer.sent
    assert (key, value) == (b"", b"")
    assert as_dict(headers)["etl.source.offset"] == b"3"


async def test_deliver_raises_when_even_the_smallest_form_is_refused() -> None:
    writer = DeadLetterWriter(Producer(broker_limit=10), "dlq", Redactor())
    record = make_record("t", 0, 3, b"k", b"v")
    with pytest.raises(DeadLetterRefused, match="t/0@3"):
        await writer.deliver(record, pipeline="p", stage="sink", exc=ValueError("x"))
