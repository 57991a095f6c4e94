"""Dead letters of a batch: queued, awaited and judged in one place for every pipeline.

Transforms (:mod:`etl.runtime.transform`), sinks (:mod:`sinks.base`) and sources
(:mod:`etl.sources.base`) hand what they could not handle to a
:class:`DeadLetterRouter`. The rules, the same for all:

* every dead letter of a batch is queued at once (:meth:`DeadLetterRouter.send`),
  reduced to fit the producer's limit (:func:`etl.deadletter.fit_dead_letter`),
  and the batch waits for all of them once (:meth:`DeadLetterRouter.settle`);
* a letter the producer or broker refuses as a record (too large for the topic,
  invalid) is sent again alone, in its smallest form
  (:meth:`etl.deadletter.DeadLetterWriter.deliver`);
* a letter not acknowledged because the broker is unavailable (a time-out, the
  transport) is retried alone, with the pipeline's back-off
  (:func:`etl.runtime.policy.retry`), until it is written, the pipeline stops or
  the retries run out: never the batch, whose rows or outputs are written
  already, so nothing written is written again;
* a letter that cannot be written even so, or that is refused for any other
  reason (authorization, a deleted topic), is *refused*: :meth:`settle` reports
  it, and the pipeline halts that record's partition at it, under every policy
  (nothing at or past it is committed, so the record is not lost); the other
  partitions go on. Once a partition has a refused letter, its later failed
  letters are not retried: they are read again after the halt;
* inside a Kafka transaction (exactly-once) nothing is retried or sent again: a
  failed letter dooms the transaction. :meth:`settle` with ``retry=False`` only
  reports which letters failed, as unavailable or refused, and the caller aborts;
* each letter written is counted (``status.dead_lettered``), logged once with its
  coordinates, stage and reason, and its reason becomes the status's last error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from etl.deadletter import DeadLetterRefused, DeadLetterWriter, SourceRecord, refused_as_record
from etl.errors import RetriableError
from etl.kafka import describe_error
from etl.redact import Redactor
from etl.runtime.policy import Backoff, retry
from etl.runtime.status import PipelineStatus

log = logging.getLogger("etl.deadletter")


def unavailable(exc: BaseException) -> bool:
    """True when a produce failed because the broker is unavailable (worth a retry)."""
    if refused_as_record(exc):
        return False
    if isinstance(exc, KafkaError):  # aiokafka
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc, KafkaConnectionError | KafkaTimeoutError
        )
    # librdkafka's ProduceError without record_error: timed out, transport, leader moved.
    return isinstance(exc, RetriableError) or hasattr(exc, "record_error")


def coordinates(record: SourceRecord) -> str:
    """``topic/partition@offset`` of a record, for messages."""
    return f"{record.topic}/{record.partition}@{record.offset}"


@dataclass(slots=True)
class Letter:
    """One queued dead letter: the record, why it failed, and its acknowledgement."""

    record: SourceRecord
    stage: str
    error: BaseException
    extra: dict[str, str] | None
    future: asyncio.Future[Any]
    #: Whatever the caller needs to find its record again (an index).
    tag: Any = None

    @property
    def partition(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


@dataclass
class Settled:
    """What became of a batch's dead letters that were not written."""

    #: Letters that cannot be written, each with why (in partition and offset order).
    refused: list[tuple[Letter, BaseException]] = field(default_factory=list)
    #: Without retry: the first letter the unavailable broker did not acknowledge.
    unavailable: BaseException | None = None


class DeadLetterRouter:
    """Sends one pipeline's dead letters by the rules of this module."""

    def __init__(
        self,
        writer: DeadLetterWriter,
        *,
        pipeline: str,
        status: PipelineStatus,
        redact: Redactor,
        backoff: Callable[[], Backoff],
        stopping: Callable[[], bool],
    ) -> None:
        self.writer = writer
        self.pipeline = pipeline
        self.status = status
        self.redact = redact
        self.backoff = backoff
        self.stopping = stopping

    async def send(
        self,
        record: SourceRecord,
        stage: str,
        error: BaseException,
        *,
        extra: dict[str, str] | None = None,
        tag: Any = None,
    ) -> Letter:
        """Queue the dead letter of ``record`` (one that cannot even be queued fails its
        future, to be judged in :meth:`settle` like any other)."""
        try:
            future = await self.writer.send(
                record, pipeline=self.pipeline, stage=stage, exc=error, extra=extra
            )
        except Exception as exc:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        return Letter(record, stage, error, extra, future, tag)

    async def settle(self, letters: Sequence[Letter], *, retry_alone: bool = True) -> Settled:
        """Wait for every letter; retry the ones the broker did not take (``retry_alone``),
        and report the ones that cannot be written.

        Raises :class:`~etl.errors.PipelineStopping` when the pipeline stops during a
        retry and :class:`~etl.errors.GaveUp` past the back-off's ``max_retries``.
        """
        settled = Settled()
        if not letters:
            return settled
        results = await asyncio.gather(
            *(letter.future for letter in letters), return_exceptions=True
        )
        halted: set[TopicPartition] = set()
        done = sorted(
            zip(letters, results, strict=True),
            key=lambda pair: (
                pair[0].record.topic,
                pair[0].record.partition,
                pair[0].record.offset,
            ),
        )
        for letter, result in done:
            if not isinstance(result, BaseException):
                self._written(letter)
                continue
            if not retry_alone:
                if unavailable(result):
                    settled.unavailable = settled.unavailable or result
                else:
                    settled.refused.append((letter, result))
                continue
            if letter.partition in halted:
                continue  # read again after its partition's halt: not dead-lettered twice
            try:
                await retry(
                    lambda letter=letter: self._deliver(letter),  # type: ignore[misc]
                    what="dead letter",
                    backoff=self.backoff(),
                    stopping=self.stopping,
                    on_retry=self._note_retry,
                )
            except DeadLetterRefused as exc:
                settled.refused.append((letter, exc))
                halted.add(letter.partition)
                continue
            self._written(letter)
        return settled

    def halt_reason(self, letter: Letter, why: BaseException) -> str:
        """Why a refused letter halts its partition (for the status and the log)."""
        return (
            f"cannot dead-letter {coordinates(letter.record)}: {self.redact(describe_error(why))}"
        )

    async def _deliver(self, letter: Letter) -> None:
        """One letter alone, acknowledged; an unavailable broker is a RetriableError, a
        letter refused for any other reason a DeadLetterRefused."""
        try:
            await self.writer.deliver(
                letter.record,
                pipeline=self.pipeline,
                stage=letter.stage,
                exc=letter.error,
                extra=letter.extra,
            )
        except DeadLetterRefused:
            raise
        except Exception as exc:
            if unavailable(exc):
                raise RetriableError(describe_error(exc)) from exc
            raise DeadLetterRefused(
                f"dead letter of {coordinates(letter.record)} refused: {describe_error(exc)}"
            ) from exc

    def _note_retry(self, attempt: int, exc: BaseException, delay: float) -> None:
        text = self.redact(describe_error(exc))
        self.status.error = f"dead letter retrying: {text}"
        log.warning(
            "dead letter failed, retrying pipeline=%s attempt=%d error=%r retry_in=%.1fs",
            self.pipeline,
            attempt,
            text,
            delay,
        )

    def _written(self, letter: Letter) -> None:
        record = letter.record
        text = self.redact(describe_error(letter.error))
        where = (letter.extra or {}).get("etl.exception.location")
        self.status.dead_lettered += 1
        self.status.error = f"{letter.stage} {coordinates(record)}: {text}"
        log.warning(
            "record dead-lettered pipeline=%s stage=%s topic=%s partition=%d offset=%d error=%r%s",
            self.pipeline,
            letter.stage,
            record.topic,
            record.partition,
            record.offset,
            text,
            f" at={where}" if where else "",
        )
