"""The sink contract and the batching pipeline that drives every sink.

A sink implements three coroutines and nothing about Kafka:

* ``open()``: connect (never in ``__init__``);
* ``write(batch)``: write the records (``batch.by_partition`` has them per
  topic-partition, in offset order); return the ones it rejected, each with
  the reason (:class:`RecordFailure`), after the good ones are written; raise
  :class:`~etl.errors.RetriableError` for a transient failure of the whole
  batch (it is retried with backoff, so a retried write must be harmless:
  upsert, document id, deterministic object name),
  :class:`~etl.errors.BackpressureError` to ask for a pause instead of
  sleeping, and :class:`~etl.errors.FatalError` for one that retrying cannot
  fix. A sink never sleeps or retries the whole batch itself: the runner
  decides (:mod:`etl.runtime.policy`);
* ``close()``.

And may override:

* ``on_revoke(partitions)``: the partitions are no longer this sink's (revoked
  in a rebalance, or rewound after a failed batch): forget what it caches
  about them;
* ``flush_bytes``: the buffered key+value bytes at which a partition flushes
  (default ``batch_bytes``);
* ``secret_values(config)``: secrets of its config that logs and dead letters
  must never show.

:class:`SinkPipeline` consumes the sink's topics in the group
``<prefix>-sink-<name>``, keeps one buffer per topic-partition, flushes a
partition's buffer when it reaches ``batch_size`` records or ``batch_bytes``
or when its oldest record is ``linger_ms`` old (an idle partition flushes on
time too), and commits a partition's offsets only after its records are
written or routed by the error rules. A sink with ``overlap_writes`` has one
write in flight while the next records are polled and buffered.

Under the stop rule (no error topic, no ``skip_error``, ``on_error: stop``) the
batch says ``halt_on_failure``: nothing after a partition's first rejected
record is written, and the pipeline halts with its offset before that record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from etl.config import ETLSettings, SinkConfigBase
from etl.deadletter import DeadLetterRefused, DeadLetterWriter, refused_as_record
from etl.errors import FatalError, PipelineHalted, PipelineStopping, RecordError, RetriableError
from etl.kafka import describe_error, ensure_topics
from etl.redact import Redactor
from etl.runtime.consumer import Batch, Commit, ConsumerPipeline
from etl.runtime.policy import Backoff, apply_halt_cut, retry

log = logging.getLogger("etl.sink")

ConfigT = TypeVar("ConfigT", bound=SinkConfigBase)


@dataclass(slots=True)
class RecordFailure:
    """A record the sink did not write, and why."""

    record: Any
    error: BaseException


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


def _tp_offset(record: Any) -> tuple[TopicPartition, int]:
    return TopicPartition(record.topic, record.partition), record.offset


def coordinates(record: Any) -> str:
    """``topic/partition@offset`` of a record, for messages."""
    return f"{record.topic}/{record.partition}@{record.offset}"


def record_failure(record: Any, exc: BaseException) -> RecordFailure:
    """``exc``, raised while building the row, document or line of one ``record``, as the
    failure that routes that record (error topic / skip / stop).

    Whatever one record's data makes the code raise (a year-10000 timestamp, a value a
    type cannot hold, an encoding error) concerns that record only, never the sink:
    it becomes a :class:`RecordError` naming the record and the exception. Errors about
    the destination (:class:`FatalError`, :class:`RetriableError`) are raised again.
    """
    if isinstance(exc, FatalError | RetriableError | PipelineStopping):
        raise exc
    if isinstance(exc, RecordError):
        return RecordFailure(record, exc)
    error = RecordError(f"{coordinates(record)} cannot be written: {describe_error(exc)}")
    error.__cause__ = exc
    return RecordFailure(record, error)


@dataclass
class SinkBatch:
    """Records to write, in partition order; ``records`` are aiokafka ConsumerRecords."""

    records: list[Any]
    partitions: set[TopicPartition] = field(default_factory=set)
    #: True when a rejected record stops the pipeline (no error topic, no ``skip_error``,
    #: ``on_error: stop``). A sink that can should then leave the records after a
    #: partition's first rejected one unwritten: the pipeline commits nothing past the
    #: rejected record, so they are read again after the restart. One that cannot may
    #: write them (a keyed sink overwrites them on the second delivery).
    halt_on_failure: bool = False

    def __len__(self) -> int:
        return len(self.records)

    @property
    def by_partition(self) -> dict[TopicPartition, list[Any]]:
        """The records per topic-partition, each list in offset order."""
        groups: dict[TopicPartition, list[Any]] = {}
        for record in self.records:
            tp = TopicPartition(record.topic, record.partition)
            group = groups.get(tp)
            if group is None:
                groups[tp] = [record]
            else:
                group.append(record)
        return groups


class Sink(Generic[ConfigT]):
    """Base class of a destination. Subclasses set ``config_model`` and implement the contract."""

    config_model: type[SinkConfigBase] = SinkConfigBase
    #: True lets the pipeline poll and buffer the next batch while ``write`` runs (one
    #: write in flight, offsets committed when it finishes); worth it when a write waits
    #: on a server. False: each write finishes before the next poll.
    overlap_writes: bool = False

    def __init__(self, config: ConfigT, *, settings: ETLSettings, redact: Redactor) -> None:
        self.config = config
        self.settings = settings
        self.redact = redact
        self.log = logging.getLogger(f"etl.sink.{config.type}")
        #: Set when the pipeline stops: a retry inside ``write`` (``stopping=``
        #: ``self.stopping.is_set``, see :func:`etl.runtime.policy.retry`) gives up.
        self.stopping = asyncio.Event()

    @classmethod
    def secret_values(cls, config: Any) -> list[str]:
        """Secrets of ``config`` (beyond the settings') that must never be shown."""
        return []

    @property
    def flush_bytes(self) -> int:
        """Buffered key+value bytes at which a partition flushes."""
        return self.config.batch_bytes

    def on_revoke(self, partitions: set[TopicPartition]) -> None:
        """These partitions are no longer this sink's: forget what is cached about them."""

    @property
    def records_per_write(self) -> int:
        """Most records handed to one ``write`` (the pipeline slices a flush by it)."""
        return self.config.batch_size

    async def open(self) -> None:
        """Connect; called once before the first write."""

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        """Write the batch; return the rejected records (the rest must be written)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


@dataclass
class _Buffer:
    records: list[Any] = field(default_factory=list)
    size: int = 0
    first_at: float = 0.0


def record_size(record: Any) -> int:
    """Bytes a record adds to a batch (key + value)."""
    return (len(record.key) if record.key else 0) + (len(record.value) if record.value else 0)


class SinkPipeline(ConsumerPipeline):
    """Consumes a sink's topics, batches per partition, writes, routes failures, commits."""

    kind = "sink"
    #: The Sink subclass this pipeline drives; set by :func:`sink_pipeline_factory`.
    sink_class: type[Sink[Any]] = Sink

    def __init__(
        self, config: SinkConfigBase, *, settings: ETLSettings, redact: Redactor, **kwargs: Any
    ) -> None:
        extra = self.sink_class.secret_values(config)
        if extra:
            redact = Redactor([*redact.secrets, *extra])
        super().__init__(
            name=config.name,
            topics=list(config.topics),
            settings=settings,
            start_offset=config.start_offset,
            policy=config.on_error,
            redact=redact,
            **kwargs,
        )
        self.config = config
        self.sink = self.sink_class(config, settings=settings, redact=redact)
        self.status.target = f"{config.type}:{config.name}"
        #: Where rejected records go: the error topic, else the dead-letter topic.
        self.status.dead_letter_topic = (
            config.runtime_error_topic
            or config.dead_letter_topic
            or settings.errors.dead_letter_topic
        )
        self.max_retries = config.max_retries
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self.dead_letters: DeadLetterWriter | None = None
        self.written = 0
        self.skipped = 0
        self._job: asyncio.Future[Commit] | None = None

    async def on_stop(self) -> None:
        self.sink.stopping.set()
        await super().on_stop()

    async def setup(self) -> None:
        errors = self.settings.errors
        dead_letter_topic = self.config.dead_letter_topic or errors.dead_letter_topic
        self.dead_letters = DeadLetterWriter(
            self.producer,
            self.status.dead_letter_topic,
            self.redact,
            max_request_size=self.settings.kafka.max_request_size,
        )
        wanted = {dead_letter_topic: errors.dead_letter_partitions}
        if self.config.runtime_error_topic:
            wanted[self.config.runtime_error_topic] = 1
        await ensure_topics(self.settings.kafka, wanted)
        await self._retrying(self.sink.open, "open")

    # ---- batching -------------------------------------------------------------------

    async def process(self, batch: Batch) -> Commit:
        now = time.monotonic()
        full: set[TopicPartition] = set()
        flush_bytes = self.sink.flush_bytes
        for tp, records in batch.items():
            buffer = self._buffers.get(tp)
            if buffer is None:
                buffer = self._buffers[tp] = _Buffer(first_at=now)
            elif not buffer.records:
                buffer.first_at = now
            buffer.records.extend(records)
            buffer.size += sum(record_size(r) for r in records)
            if len(buffer.records) >= self.config.batch_size or buffer.size >= flush_bytes:
                full.add(tp)
        return await self._dispatch(full) if full else self._finished()

    async def flush_due(self) -> Commit:
        linger = self.config.linger_ms / 1000
        now = time.monotonic()
        due = {tp for tp, b in self._buffers.items() if b.records and now - b.first_at >= linger}
        return await self._dispatch(due) if due else self._finished()

    async def flush_partitions(self, partitions: set[TopicPartition]) -> Commit:
        try:
            commit = await self._settle()
            commit.update(await self._flush({tp for tp in partitions if tp in self._buffers}))
            return commit
        finally:
            self.sink.on_revoke(partitions)

    def drop_partitions(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._buffers.pop(tp, None)
        self.sink.on_revoke(partitions)

    async def teardown(self) -> None:
        job, self._job = self._job, None
        if job is not None and not job.done():
            job.cancel()  # stopping without a drain (halt, crash): nothing is committed
        await self.sink.close()

    async def reconfigure(self, config: SinkConfigBase, *, reopen: bool) -> None:
        """Run with ``config`` from the next batch on, without leaving the group.

        ``reopen``: everything buffered is written and committed first, then the sink
        is closed and opened again with the new configuration (a new table, URL,
        format...); the consumer keeps its partitions and position, so nothing is
        read twice or skipped. Without it (batching and retry options) the new values
        simply apply.
        """
        async with self._lock:
            if reopen and self.consumer is not None:
                await self._commit(await self.flush_partitions(set(self._assigned)))
                replacement = self.sink_class(config, settings=self.settings, redact=self.redact)
                await self._retrying(replacement.open, "open")
                old, self.sink = self.sink, replacement
                try:
                    await old.close()
                except Exception as exc:
                    log.warning("sink close failed sink=%s error=%r", self.name, self._text(exc))
            self.config = config
            self.sink.config = config
            self.max_retries = config.max_retries

    # ---- writing ----------------------------------------------------------------------

    async def _dispatch(self, partitions: set[TopicPartition]) -> Commit:
        """Write these partitions' buffers: now, or (``overlap_writes``) in the background."""
        if not self.sink.overlap_writes:
            return await self._flush(partitions)
        # One write in flight: the previous one finishes first, which keeps the order
        # per partition and holds the poll loop back while the sink is slow.
        commit = await self._settle()
        taken = self._take(partitions)
        if taken is not None:
            self._job = asyncio.ensure_future(self._write(*taken))
        return commit

    def _finished(self) -> Commit:
        """Offsets of a background write that has finished (raising what it raised)."""
        job = self._job
        if job is None or not job.done():
            return {}
        self._job = None
        return job.result()

    async def _settle(self) -> Commit:
        """Wait for the background write, if any; its offsets."""
        job, self._job = self._job, None
        return await job if job is not None else {}

    async def _flush(self, partitions: set[TopicPartition]) -> Commit:
        taken = self._take(partitions)
        return await self._write(*taken) if taken is not None else {}

    def _take(self, partitions: set[TopicPartition]) -> tuple[list[Any], Commit] | None:
        """Empty these partitions' buffers: (their records in order, offsets to commit)."""
        records: list[Any] = []
        commit: Commit = {}
        for tp in sorted(partitions, key=lambda t: (t.topic, t.partition)):
            buffer = self._buffers.get(tp)
            if buffer is None or not buffer.records:
                continue
            records.extend(buffer.records)
            commit[tp] = buffer.records[-1].offset + 1
            self._buffers[tp] = _Buffer()
        return (records, commit) if records else None

    async def _write(self, records: list[Any], commit: Commit) -> Commit:
        """Write in ``batch_size`` slices, route the rejected records; the offsets to commit."""
        size = self.sink.records_per_write
        halt = self.halts_on_failure()
        flushed = set(commit)
        failures: list[RecordFailure] = []
        stopped: set[TopicPartition] = set()
        for start in range(0, len(records), size):
            part = records[start : start + size]
            if stopped:
                # Under the stop rule nothing after a partition's rejected record is written.
                part = [r for r in part if TopicPartition(r.topic, r.partition) not in stopped]
                if not part:
                    continue
            chunk = SinkBatch(part, flushed, halt_on_failure=halt)
            rejected = await self._retrying(lambda c=chunk: self.sink.write(c), "write")
            failures.extend(rejected)
            if halt:
                stopped |= {TopicPartition(f.record.topic, f.record.partition) for f in rejected}
        written = len(records) - len(failures)
        self.written += written
        self.status.produced += written
        if failures:
            await self._route_failures(failures, commit)
        return commit

    def halts_on_failure(self) -> bool:
        """True when a rejected record stops this sink (see :meth:`_route_failures`)."""
        config = self.config
        return (
            not config.runtime_error_topic and not config.skip_error and self.policy != "continue"
        )

    async def _retrying(self, call: Any, what: str) -> Any:
        """``call()`` under the sink's back-off (:func:`etl.runtime.policy.retry`)."""

        def note(attempt: int, exc: BaseException, delay: float) -> None:
            text = self.redact(describe_error(exc))
            self.status.error = f"{what} retrying: {text}"
            log.warning(
                "sink %s failed, retrying sink=%s attempt=%d error=%r retry_in=%.1fs",
                what,
                self.name,
                attempt,
                text,
                delay,
            )

        return await retry(
            call,
            what=f"sink {what}",
            backoff=Backoff.for_sink(self.config),
            stopping=lambda: self.should_stop,
            on_retry=note,
        )

    async def _route_failures(self, failures: list[RecordFailure], commit: Commit) -> None:
        config = self.config
        if config.runtime_error_topic or (not config.skip_error and self.policy == "continue"):
            await self._dead_letter(failures, commit)
            return
        if config.skip_error:
            for failure in failures:
                self.skipped += 1
                self.status.filtered += 1
                log.warning(
                    "record skipped (skip_error) sink=%s topic=%s partition=%d offset=%d error=%r",
                    self.name,
                    failure.record.topic,
                    failure.record.partition,
                    failure.record.offset,
                    self.redact(describe_error(failure.error)),
                )
            return
        # Neither an error topic nor skip_error: stop before the first bad record of
        # each partition. Records after it were not written (SinkBatch.halt_on_failure),
        # or, by a sink that cannot hold them back, are overwritten when read again.
        apply_halt_cut(commit, (_tp_offset(f.record) for f in failures))
        worst = failures[0]
        raise PipelineHalted(
            f"sink write rejected {worst.record.topic}/{worst.record.partition}"
            f"@{worst.record.offset}: {self.redact(describe_error(worst.error))}",
            commit,
        )

    async def _dead_letter(self, failures: list[RecordFailure], commit: Commit) -> None:
        """Send the failures to the error topic, in order.

        Only the dead letters are retried (never the batch, whose rows are written) while
        the broker is unavailable. A dead letter that cannot be written even in its
        reduced form halts the pipeline at that record: its partition is committed up to
        it, nothing past it, and nothing is written again.
        """
        sent = [(f, await self._send_dead_letter(f)) for f in failures]
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        refused: dict[TopicPartition, tuple[Any, BaseException]] = {}
        for (failure, _), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                self._dead_lettered(failure)
                continue
            tp = TopicPartition(failure.record.topic, failure.record.partition)
            if tp in refused:
                continue  # read again after the halt: not dead-lettered twice
            try:
                await self._retrying(lambda f=failure: self._deliver(f), "dead letter")
            except DeadLetterRefused as exc:
                refused[tp] = (failure.record, exc)
                continue
            self._dead_lettered(failure)
        if refused:
            apply_halt_cut(commit, (_tp_offset(record) for record, _ in refused.values()))
            first, reason = min(refused.values(), key=lambda item: item[0].offset)
            raise PipelineHalted(
                f"sink cannot dead-letter {coordinates(first)}: {self.redact(str(reason))}", commit
            )

    async def _send_dead_letter(self, failure: RecordFailure) -> Any:
        """The dead letter's future (an exception stands in for one that could not be queued)."""
        assert self.dead_letters is not None
        try:
            return await self.dead_letters.send(
                failure.record, pipeline=self.name, stage=self._stage(failure), exc=failure.error
            )
        except Exception as exc:  # looked at again, one by one, in _deliver
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future

    async def _deliver(self, failure: RecordFailure) -> None:
        """One dead letter, acknowledged; an unavailable broker is a RetriableError, a
        letter refused for any other reason a DeadLetterRefused."""
        assert self.dead_letters is not None
        try:
            await self.dead_letters.deliver(
                failure.record, pipeline=self.name, stage=self._stage(failure), exc=failure.error
            )
        except DeadLetterRefused:
            raise
        except Exception as exc:
            if unavailable(exc):
                raise RetriableError(describe_error(exc)) from exc
            raise DeadLetterRefused(
                f"dead letter of {coordinates(failure.record)} refused: {describe_error(exc)}"
            ) from exc

    @staticmethod
    def _stage(failure: RecordFailure) -> str:
        return failure.error.stage if isinstance(failure.error, RecordError) else "sink"

    def _dead_lettered(self, failure: RecordFailure) -> None:
        text = self.redact(describe_error(failure.error))
        self.status.dead_lettered += 1
        self.status.error = text
        log.warning(
            "record sent to error topic sink=%s topic=%s partition=%d offset=%d error=%r",
            self.name,
            failure.record.topic,
            failure.record.partition,
            failure.record.offset,
            text,
        )


def sink_pipeline_factory(sink_class: type[Sink[Any]]) -> type[SinkPipeline]:
    """The pipeline class the plugin registry starts for a sink class."""
    return type(f"{sink_class.__name__}Pipeline", (SinkPipeline,), {"sink_class": sink_class})
