"""The dead-letter topic: original key/value bytes plus headers that say what failed.

Headers added to the original ones (all values UTF-8 text):

========================  ===============================================
``etl.pipeline``          name of the transform, sink or source
``etl.source.topic``      topic of the failed message
``etl.source.partition``  its partition
``etl.source.offset``     its offset
``etl.stage``             decode | transform | produce | sink
``etl.exception.class``   the exception class
``etl.exception.message`` the message (secrets redacted, at most 1000 chars)
``etl.timestamp``         when it was dead-lettered (epoch ms)
========================  ===============================================

A dead letter larger than the producer's ``max_request_size`` is written in a
reduced form (:func:`fit_dead_letter`) instead of failing: the value is cut to
fit and the headers below say so, so that the original can be read from the
source topic by the coordinates above. When even the key and headers do not
fit, the original headers are left out, then the key is cut too.

=============================  ==========================================
``etl.truncated``              ``true``
``etl.original.size``          bytes of the original value (``null``: none)
``etl.original.sha256``        hex SHA-256 of the original value
``etl.original.key.size``      bytes of the original key, when it was cut
``etl.original.key.sha256``    its hex SHA-256, when it was cut
``etl.original.headers``       ``dropped`` when the original headers were
=============================  ==========================================

A record with neither key nor value (a keyless tombstone) is dead-lettered with
an empty value and ``etl.original.value: null`` (Kafka needs one of the two).
When the producer or broker refuses a dead letter as a record (too large: the
topic's ``max.message.bytes`` is below the producer's ``max_request_size``; an
invalid record), :meth:`DeadLetterWriter.deliver` sends it again in its
smallest form (no value, key and original headers); when that is refused too, it
raises :class:`DeadLetterRefused` and the caller halts at that record: nothing
is committed past it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from etl.errors import ETLError
from etl.redact import Redactor

MAX_MESSAGE_CHARS = 1000
#: aiokafka's limit when the producer does not say (its default ``max_request_size``).
DEFAULT_MAX_REQUEST_SIZE = 1048576
#: Bytes of a record batch around one record: batch header (61), record overhead (21),
#: and room for the varints of key, value and headers.
RECORD_OVERHEAD = 128
#: aiokafka's errors that say a record is too large for the producer or the broker.
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)

Headers = list[tuple[str, bytes]]


class SourceRecord(Protocol):
    """What a dead letter needs of a consumed record (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    timestamp: int


class DeadLetterRefused(ETLError):
    """A dead letter could not be written even in its smallest form."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The key, value and headers of one dead letter as it is produced."""

    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def truncated(self) -> bool:
        return any(k == "etl.truncated" for k, _ in self.headers)


def refused_as_record(exc: BaseException) -> bool:
    """True when the producer or broker refused the record itself (too large, invalid),
    not the connection: aiokafka's size errors, or any error with ``record_error`` set
    (the librdkafka producer's :class:`~etl.runtime.native.ProduceError`)."""
    return isinstance(exc, TOO_LARGE) or getattr(exc, "record_error", False) is True


def record_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, Any]]) -> int:
    """Bytes one record takes in a request (an upper bound, as the producer counts)."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, data in headers:
        size += len(name.encode("utf-8")) + len(data or b"") + 10
    return size


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> DeadLetter:
    """The dead letter as is when it fits in ``limit`` bytes, else its reduced form.

    ``headers`` are the original headers followed by the ``etl.*`` ones (the ``etl.*``
    headers are always kept). Cut in this order until it fits: the value, the original
    headers, the key. Pure: no I/O.
    """
    if key is None and value is None:
        value, headers = b"", [*headers, ("etl.original.value", b"null")]
    if record_bytes(key, value, headers) <= limit:
        return DeadLetter(key, value, headers)
    original = [(k, v) for k, v in headers if not k.startswith("etl.")]
    context = [(k, v) for k, v in headers if k.startswith("etl.")]
    marks: Headers = [
        ("etl.truncated", b"true"),
        ("etl.original.size", str(len(value)).encode() if value is not None else b"null"),
        ("etl.original.sha256", _sha256(value) if value is not None else b""),
    ]
    kept = original + context + marks
    room = limit - record_bytes(key, b"", kept)
    if room >= 0:
        return DeadLetter(key, value[:room] if value is not None else None, kept)
    kept = context + marks + [("etl.original.headers", b"dropped")]
    room = limit - record_bytes(key, b"", kept)
    if room >= 0:
        return DeadLetter(key, b"" if value is not None else None, kept)
    if key is not None:
        kept += [
            ("etl.original.key.size", str(len(key)).encode()),
            ("etl.original.key.sha256", _sha256(key)),
        ]
    # The etl.* headers alone are far below the smallest limit Kafka settings allow (1024).
    room = max(0, limit - record_bytes(b"", b"", kept))
    return DeadLetter(
        key[:room] if key is not None else None, b"" if value is not None else None, kept
    )


def smallest_dead_letter(key: bytes | None, value: bytes | None, headers: Headers) -> DeadLetter:
    """The smallest form: only the ``etl.*`` headers (for a broker that refused the fit)."""
    reduced = fit_dead_letter(key, value, headers, 0)
    return DeadLetter(b"", b"", reduced.headers)


def dead_letter_headers(
    record: SourceRecord,
    *,
    pipeline: str,
    stage: str,
    exc: BaseException,
    redact: Redactor,
    extra: dict[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """The original headers plus the ``etl.*`` context headers."""
    message = redact(str(exc))[:MAX_MESSAGE_CHARS]
    context = {
        "etl.pipeline": pipeline,
        "etl.source.topic": record.topic,
        "etl.source.partition": str(record.partition),
        "etl.source.offset": str(record.offset),
        "etl.stage": stage,
        "etl.exception.class": type(exc).__name__,
        "etl.exception.message": message,
        "etl.timestamp": str(int(time.time() * 1000)),
        **(extra or {}),
    }
    original = [(k, v) for k, v in (record.headers or ()) if not k.startswith("etl.")]
    return original + [(k, v.encode("utf-8")) for k, v in context.items()]


class DeadLetterWriter:
    """Produces failed records to the dead-letter (or error) topic.

    ``max_request_size``: the producer's limit, which a dead letter is fitted to; by
    default the producer's own ``max_request_size`` (aiokafka's ``_max_request_size``).
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        redact: Redactor,
        *,
        max_request_size: int | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.redact = redact
        self.max_request_size = max_request_size

    @property
    def limit(self) -> int:
        """Bytes one dead letter may take."""
        size = (
            self.max_request_size
            or getattr(self.producer, "max_request_size", None)
            or getattr(self.producer, "_max_request_size", None)
        )
        return size if isinstance(size, int) and size > 0 else DEFAULT_MAX_REQUEST_SIZE

    async def send(
        self,
        record: SourceRecord,
        *,
        pipeline: str,
        stage: str,
        exc: BaseException,
        topic: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue the dead letter (reduced to fit); await the returned future for the ack."""
        headers = dead_letter_headers(
            record, pipeline=pipeline, stage=stage, exc=exc, redact=self.redact, extra=extra
        )
        letter = fit_dead_letter(record.key, record.value, headers, self.limit)
        return await self._produce(record, letter, topic)

    async def deliver(
        self, record: SourceRecord, *, topic: str | None = None, **context: Any
    ) -> None:
        """As :meth:`send` (the same arguments), and wait for the ack; a dead letter the
        producer or broker refuses as a record (too large, invalid) is sent again in its
        smallest form. Raises :class:`DeadLetterRefused` when that is refused too; other
        errors (broker unavailable) propagate."""
        try:
            await (await self.send(record, topic=topic, **context))
            return
        except Exception as first:
            if not refused_as_record(first):
                raise
            refused: BaseException = first
        headers = dead_letter_headers(record, redact=self.redact, **context)
        smallest = smallest_dead_letter(record.key, record.value, headers)
        try:
            await (await self._produce(record, smallest, topic))
            return
        except Exception as second:
            if not refused_as_record(second):
                raise
            refused = second
        raise DeadLetterRefused(
            f"dead letter of {record.topic}/{record.partition}@{record.offset} refused by "
            f"{topic or self.topic} even without its key and value: {refused}"
        ) from refused

    async def _produce(
        self, record: SourceRecord, letter: DeadLetter, topic: str | None
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.producer.send(
            topic or self.topic,
            value=letter.value,
            key=letter.key,
            headers=letter.headers,
            timestamp_ms=record.timestamp if record.timestamp and record.timestamp > 0 else None,
        )
        return future
