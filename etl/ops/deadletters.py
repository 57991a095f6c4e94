"""``etl deadletters``: read the dead-letter topic back with the reasons its headers carry.

Each dead letter keeps the failed message's key and value and adds the ``etl.*``
headers of :mod:`etl.deadletter`; a dead letter of a transform also names the
line of the user's file that raised (``etl.exception.location``). Reading joins
no group, so nothing is consumed or committed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from etl.config import KafkaSettings
from etl.ops.messages import FoundMessage, TopicReader

#: Header a transform's dead letter carries: ``<file>:<line>`` in the user's transform.
LOCATION_HEADER = "etl.exception.location"


@dataclass
class DeadLetter:
    """One dead letter: where it came from, why it failed, and the message itself."""

    message: FoundMessage
    headers: dict[str, str | None]

    def get(self, name: str) -> str:
        return self.headers.get(name) or ""

    @property
    def pipeline(self) -> str:
        return self.get("etl.pipeline")

    @property
    def source(self) -> str:
        """``topic/partition@offset`` of the failed message."""
        topic = self.get("etl.source.topic") or "?"
        return f"{topic}/{self.get('etl.source.partition') or '?'}@{self.get('etl.source.offset')}"

    @property
    def reason(self) -> str:
        return f"{self.get('etl.exception.class')}: {self.get('etl.exception.message')}"

    @property
    def location(self) -> str | None:
        return self.headers.get(LOCATION_HEADER)

    def to_dict(self, limit: int | None) -> dict[str, Any]:
        out = self.message.to_dict(limit)
        out.update(
            pipeline=self.pipeline,
            stage=self.get("etl.stage"),
            source_topic=self.get("etl.source.topic"),
            source_partition=self.get("etl.source.partition"),
            source_offset=self.get("etl.source.offset"),
            exception_class=self.get("etl.exception.class"),
            exception_message=self.get("etl.exception.message"),
            location=self.location,
        )
        return out


def matches(letter: DeadLetter, pipeline: str | None) -> bool:
    """A dead letter of ``pipeline`` (its name, or ``KIND:NAME`` matched on the name)."""
    if pipeline is None:
        return True
    return letter.pipeline in (pipeline, pipeline.partition(":")[2])


async def read_dead_letters(
    settings: KafkaSettings, topic: str, pipeline: str | None, limit: int
) -> tuple[list[DeadLetter], int]:
    """The newest ``limit`` dead letters of ``pipeline`` (all when None), oldest first;
    and how many matched in all."""
    kept: dict[int, deque[DeadLetter]] = {}
    matched = 0
    async with TopicReader(settings, topic) as reader:
        await reader.open()

        def take(record: Any) -> bool:
            nonlocal matched
            message = FoundMessage.from_record(record)
            letter = DeadLetter(message, message.header_texts())
            if matches(letter, pipeline):
                matched += 1
                kept.setdefault(message.partition, deque(maxlen=limit)).append(letter)
            return False

        await reader.read(dict(reader.begin), dict(reader.end), take)
    letters = sorted(
        (letter for partition in kept.values() for letter in partition),
        key=lambda d: (d.message.timestamp, d.message.partition, d.message.offset),
    )
    return letters[-limit:], matched
