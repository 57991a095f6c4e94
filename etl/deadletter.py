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
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from etl.redact import Redactor

MAX_MESSAGE_CHARS = 1000


class SourceRecord(Protocol):
    """What a dead letter needs of a consumed record (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    timestamp: int


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
    """Produces failed records to the dead-letter (or error) topic."""

    def __init__(self, producer: Any, topic: str, redact: Redactor) -> None:
        self.producer = producer
        self.topic = topic
        self.redact = redact

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
        """Queue the dead letter; await the returned future for the broker's ack."""
        headers = dead_letter_headers(
            record, pipeline=pipeline, stage=stage, exc=exc, redact=self.redact, extra=extra
        )
        future: asyncio.Future[Any] = await self.producer.send(
            topic or self.topic,
            value=record.value,
            key=record.key,
            headers=headers,
            timestamp_ms=record.timestamp if record.timestamp and record.timestamp > 0 else None,
        )
        return future
