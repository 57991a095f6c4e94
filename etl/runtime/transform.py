"""A transform pipeline: SOURCE_TOPIC -> ``deal_message`` -> TARGET_TOPIC.

Per batch: every record becomes the message dict, goes through the function,
and what comes back is queued on the producer without waiting; then the
pipeline waits once for all acknowledgements (and dead letters) of the batch and
only then returns the offsets to commit. Per-key order holds because records
of one source partition are handled in order and a key always maps to the same
target partition, where aiokafka keeps one batch in flight at a time.

The function can be swapped (hot reload) between batches: :meth:`swap` takes
effect at the next batch boundary, so no message is handled by both versions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

from etl.deadletter import DeadLetterWriter
from etl.errors import RecordError, RetriableError
from etl.kafka import ensure_topics, topic_partitions
from etl.message import normalize_result, record_to_message
from etl.runtime.consumer import Batch, Commit, ConsumerPipeline, PipelineHalted
from etl.transforms.loader import TransformSpec

log = logging.getLogger("etl.transform")

#: Producer errors that concern one record, not the connection: dead-letter it.
RECORD_PRODUCE_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
    InvalidTopicError,
    ValueError,
    TypeError,
)


class TransformPipeline(ConsumerPipeline):
    """Runs one transform file as its own consumer group."""

    kind = "transform"

    def __init__(self, spec: TransformSpec, **kwargs: Any) -> None:
        super().__init__(
            name=spec.name,
            topics=[spec.source_topic],
            start_offset=spec.start_offset,
            policy=spec.on_error,
            **kwargs,
        )
        self.spec = spec
        self._next_spec: TransformSpec | None = None
        self.dead_letters: DeadLetterWriter | None = None
        self.status.target = spec.target_topic
        self.status.version = spec.version
        self.status.path = str(spec.path)

    # ---- hot reload -------------------------------------------------------------

    def swap(self, spec: TransformSpec) -> None:
        """Use ``spec``'s function from the next batch on (same topics required)."""
        self._next_spec = spec

    def _take_swap(self) -> None:
        spec, self._next_spec = self._next_spec, None
        if spec is None:
            return
        old = self.spec.version
        self.spec = spec
        self.policy = spec.on_error or self.settings.errors.policy
        self.status.version = spec.version
        self.status.error = None
        log.info(
            "transform swapped pipeline=%s version=%s previous=%s", self.name, spec.version, old
        )

    # ---- setup --------------------------------------------------------------------

    async def setup(self) -> None:
        kafka = self.settings.kafka
        dead_letter_topic = self.spec.dead_letter_topic or self.settings.errors.dead_letter_topic
        self.dead_letters = DeadLetterWriter(self.producer, dead_letter_topic, self.redact)
        self.status.dead_letter_topic = dead_letter_topic
        existing = await topic_partitions(kafka, [self.spec.source_topic, self.spec.target_topic])
        wanted: dict[str, int] = {}
        source_parts = existing.get(self.spec.source_topic)
        if source_parts is None:
            source_parts = kafka.target_partitions or 1
            wanted[self.spec.source_topic] = source_parts
        if self.spec.target_topic not in existing:
            wanted[self.spec.target_topic] = (
                self.spec.target_partitions or kafka.target_partitions or source_parts
            )
        await ensure_topics(kafka, wanted)
        log.info(
            "transform loaded pipeline=%s file=%s version=%s source=%s target=%s",
            self.name,
            self.spec.path,
            self.spec.version,
            self.spec.source_topic,
            self.spec.target_topic,
        )

    # ---- the batch ------------------------------------------------------------------

    async def process(self, batch: Batch) -> Commit:
        self._take_swap()
        spec = self.spec
        fn = spec.deal_message
        target = spec.target_topic
        send = self.producer.send
        stop = self.policy == "stop"
        # (future, tp, source record, stage) for everything this batch queued.
        pending: list[tuple[asyncio.Future[Any], TopicPartition, Any, str]] = []
        commit: Commit = {}
        produced = filtered = 0
        halt: PipelineHalted | None = None

        for tp, records in batch.items():
            for record in records:
                try:
                    outs = normalize_result(fn(record_to_message(record)))
                except (Exception, SystemExit) as exc:
                    # SystemExit too (a transform calling sys.exit()/exit()): it must fail
                    # this record, not escape the event loop and end the whole worker.
                    stage = exc.stage if isinstance(exc, RecordError) else "transform"
                    if stop:
                        commit[tp] = record.offset
                        halt = self._halt_reason(record, stage, exc)
                        break
                    pending.append((await self._dead_letter(record, stage, exc), tp, record, "dlq"))
                    continue
                if not outs:
                    filtered += 1
                    continue
                for out in outs:
                    try:
                        future = await send(
                            target,
                            value=out.value,
                            key=out.key,
                            headers=out.headers,
                            timestamp_ms=out.timestamp_ms,
                        )
                    except RECORD_PRODUCE_ERRORS as exc:
                        if stop:
                            commit[tp] = record.offset
                            halt = self._halt_reason(record, "produce", exc)
                            break
                        future = await self._dead_letter(record, "produce", exc)
                        pending.append((future, tp, record, "dlq"))
                        continue
                    pending.append((future, tp, record, "out"))
                    produced += 1
                if halt is not None:
                    break
            else:
                commit[tp] = records[-1].offset + 1
            if halt is not None:
                break

        # Wait for every acknowledgement of the batch before anything is committed.
        for future, tp, record, what in pending:
            if not future.done():
                try:
                    await future
                except Exception:
                    pass
            error: BaseException | None = future.exception()
            if error is None:
                continue
            if what == "out" and isinstance(error, RECORD_PRODUCE_ERRORS) and not stop:
                retry = await self._dead_letter(record, "produce", error)
                try:
                    await retry
                    produced -= 1
                    continue
                except Exception as dlq_exc:
                    error = dlq_exc
            if what == "out" and not isinstance(error, RECORD_PRODUCE_ERRORS):
                # The broker or the connection failed: nothing of this batch is committed;
                # the runtime rewinds and retries it (at-least-once).
                raise RetriableError(f"produce to {target!r} failed: {error}") from error
            # Under stop (or when a dead letter itself cannot be written): halt before it.
            safe = commit.get(tp)
            if safe is None or safe > record.offset:
                commit[tp] = record.offset
            if halt is None:
                stage = "dead-letter" if what == "dlq" else "produce"
                halt = self._halt_reason(record, stage, error)

        self.status.produced += produced
        self.status.filtered += filtered
        if halt is not None:
            halt.commit = commit
            raise halt
        return commit

    def _halt_reason(self, record: Any, stage: str, exc: BaseException) -> PipelineHalted:
        reason = (
            f"{stage} failed at {record.topic}/{record.partition}@{record.offset}: "
            f"{type(exc).__name__}: {self.redact(str(exc))}"
        )
        return PipelineHalted(reason)

    async def _dead_letter(self, record: Any, stage: str, exc: BaseException) -> Any:
        assert self.dead_letters is not None
        self.status.dead_lettered += 1
        text = self.redact(f"{type(exc).__name__}: {exc}")
        self.status.error = f"{stage} {record.topic}/{record.partition}@{record.offset}: {text}"
        log.warning(
            "message dead-lettered pipeline=%s stage=%s topic=%s partition=%d offset=%d error=%r",
            self.name,
            stage,
            record.topic,
            record.partition,
            record.offset,
            text,
        )
        return await self.dead_letters.send(record, pipeline=self.name, stage=stage, exc=exc)


async def ensure_dead_letter_topic(settings: Any, topic: str | None = None) -> None:
    """Create the dead-letter topic (``topic``, else ``errors.dead_letter_topic``) if missing."""
    await ensure_topics(
        settings.kafka,
        {topic or settings.errors.dead_letter_topic: settings.errors.dead_letter_partitions},
    )
