"""A transform pipeline: SOURCE_TOPIC -> ``deal_message`` -> TARGET_TOPIC.

Per batch: every record becomes the message dict, goes through the function,
and what comes back is queued on librdkafka's producer without waiting; then
the pipeline waits once for every acknowledgement (and dead letter) of the
batch and only then returns the offsets to commit. Per-key order holds because
records of one source partition are handled in order, a key always maps to the
same target partition, and the producer never reorders a partition (idempotent,
or one request in flight).

A retry never repeats output that was acknowledged: when a batch fails for a
reason that is worth retrying (the broker is unavailable), the source records
whose outputs were all acknowledged are remembered and skipped when the batch
is read again. A record-sized problem (an output or a dead letter too large) is
never retried: it is dead-lettered, or halts the pipeline under ``stop``.

The function can be swapped (hot reload) between batches: :meth:`swap` takes
effect at the next batch boundary, so no message is handled by both versions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from confluent_kafka import KafkaError

from etl.deadletter import DeadLetterWriter
from etl.errors import RecordError, RetriableError
from etl.kafka import ensure_topics, topic_partitions
from etl.message import OutRecord, native_to_message, normalize_result
from etl.runtime.consumer import Batch, Commit, ConsumerPipeline, PipelineHalted
from etl.runtime.native import (
    ProduceError,
    is_record_error,
    produce_error,
    to_record,
)
from etl.runtime.policy import resolve_policy
from etl.runtime.usercode import (
    ABANDON_GRACE_S,
    CallClock,
    CallTimes,
    TransformTimeout,
    UserCodeThread,
    _Interrupt,
    watch,
)
from etl.transforms.loader import TransformSpec

log = logging.getLogger("etl.transform")

#: Errors of building or handing one output to the client: that record's fault.
RECORD_PRODUCE_ERRORS: tuple[type[BaseException], ...] = (ProduceError, ValueError, TypeError)


class TransformPipeline(ConsumerPipeline):
    """Runs one transform file as its own consumer group."""

    kind = "transform"
    record_objects = False

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
        #: Source offsets whose outputs were all acknowledged in a batch that is
        #: being retried: skipped when it is read again (no repeated output).
        self._acked: dict[TopicPartition, set[int]] = {}
        self._thread: UserCodeThread | None = None
        self.call_times = CallTimes()
        self._p99_at = 0.0
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
        self.policy = resolve_policy(spec.on_error, self.settings)
        self.status.version = spec.version
        self.status.error = None
        log.info(
            "transform swapped pipeline=%s version=%s previous=%s", self.name, spec.version, old
        )

    async def teardown(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()

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
        producer = self.producer
        job = _Job(self, self.policy == "stop", self._acked, self._timeout(), self._batch_budget())
        producer.take_failures()
        thread = self._user_thread()
        if spec.is_async:
            future = thread.submit(self._run_async(job, batch))
            complete = await watch(
                future,
                job.clock,
                thread,
                timeout=float("inf"),
                stopping=lambda: self.should_stop,
                on_abandon=lambda _index: None,
            )
        else:
            future = thread.call(self._run_sync, job, batch)
            complete = await watch(
                future,
                job.clock,
                thread,
                timeout=job.timeout,
                stopping=lambda: self.should_stop,
                on_abandon=lambda index: job.abandon(index),
            )
            if not complete:
                # The stuck call keeps its thread; the next batch gets a new one.
                self._thread = None
                thread.stop()
        self.call_times.add_many(job.call_times)
        now = time.monotonic()
        if now - self._p99_at >= 1.0:
            self._p99_at = now
            self.status.call_p99_ms = self.call_times.p99_ms()
        self._seeks.update(job.seeks(batch, complete))
        return await self._settle(job)

    async def _settle(self, job: _Job) -> Commit:
        """Dead letters, one wait for every acknowledgement, then what may be committed."""
        target = self.spec.target_topic
        producer = self.producer
        sources, outputs, commit = job.sources, job.outputs, job.commit
        halt = job.halt
        letters: list[tuple[int, asyncio.Future[Any] | None]] = []
        for index, stage, failure in job.failed:
            letters.append((index, await self._dead_letter(sources[index][1], stage, failure)))

        await producer.wait_all(stopping=lambda: self.should_stop)

        # Every queued output is now acknowledged or failed; only failures are reported.
        bad: dict[int, BaseException] = {}
        retry: BaseException | None = None
        lost: set[int] = set()
        for kafka_error, msg in producer.take_failures():
            index = _source_of(msg, outputs, lost)
            lost.add(index)
            if is_record_error(kafka_error):
                bad.setdefault(index, produce_error(kafka_error, record_error=True))
            else:
                retry = retry or produce_error(kafka_error, record_error=False)
        if retry is not None:
            # The broker or the connection failed: nothing is committed; the batch is
            # read again, skipping the records whose outputs are already acknowledged.
            self._remember_acked(sources, lost | {i for i, _ in letters})
            raise RetriableError(f"produce to {target!r} failed: {retry}") from retry
        for index, failure in sorted(bad.items()):
            if job.stop:
                tp, message = sources[index]
                self._cut(commit, tp, message.offset())
                halt = halt or self._halt_reason(message, "produce", failure)
                continue
            letters.append((index, await self._dead_letter(sources[index][1], "produce", failure)))
        for index, letter in letters:
            outcome = await _outcome(letter)
            if outcome is None:
                continue
            if isinstance(outcome, ProduceError) and not outcome.record_error:
                self._remember_acked(sources, lost | {i for i, _ in letters})
                raise RetriableError(f"dead letter failed: {outcome}") from outcome
            # A dead letter that cannot be written at all: halt before its record.
            tp, message = sources[index]
            self._cut(commit, tp, message.offset())
            halt = halt or self._halt_reason(message, "dead-letter", outcome)

        self._acked = {}
        self.status.produced += len(outputs) - len(lost)
        self.status.filtered += job.filtered
        if halt is not None:
            halt.commit = commit
            raise halt
        return commit

    def _timeout(self) -> float:
        return float(self.spec.timeout or self.settings.transform_timeout)

    def _batch_budget(self) -> float:
        # Stop taking records of a batch well before the group's poll deadline.
        return self.settings.kafka.max_poll_interval_ms / 1000 / 2

    def _user_thread(self) -> UserCodeThread:
        if self._thread is None:
            self._thread = UserCodeThread(self.name)
        return self._thread

    def _run_sync(self, job: _Job, batch: Batch) -> None:
        """The batch on the user-code thread: message dict, ``deal_message``, produce."""
        fn = self.spec.deal_message
        clock = job.clock
        claim = clock.claim
        times = job.call_times
        monotonic = time.monotonic
        deadline = monotonic() + job.budget
        for tp, messages in batch.items():
            skip = job.acked.get(tp)
            for message in messages:
                if job.abandoned:
                    return
                if skip and message.offset() in skip:
                    continue
                index = len(job.sources)
                job.sources.append((tp, message))
                try:
                    try:
                        data = native_to_message(message)
                        clock.index = index
                        clock.started = started = monotonic()
                        result = fn(data)
                        clock.started = 0.0
                        times.append(monotonic() - started)
                    except _Interrupt:
                        raise
                    except (Exception, SystemExit) as exc:
                        # SystemExit too (a transform calling sys.exit()/exit()): it must
                        # fail this record, not end the worker.
                        clock.started = 0.0
                        if not claim(index, "done"):
                            raise _Interrupt() from None
                        if job.fail(tp, message, index, exc):
                            return
                        continue
                    if not claim(index, "done"):
                        raise _Interrupt()
                except _Interrupt:
                    # The watchdog timed this call out (and owns its fate): absorb the
                    # interrupt wherever it lands, then fail the record with stage timeout.
                    clock.started = 0.0
                    _absorb(clock, index)
                    if job.abandoned:
                        return
                    if job.fail(tp, message, index, TransformTimeout(job.timeout)):
                        return
                    continue
                if not self._queue(job, tp, message, index, result):
                    return
                if monotonic() > deadline:
                    job.cut(tp, message.offset() + 1)
                    return
            else:
                if messages:
                    job.commit[tp] = messages[-1].offset() + 1

    async def _run_async(self, job: _Job, batch: Batch) -> None:
        """An ``async def deal_message`` batch: calls run concurrently, outputs in order."""
        fn = self.spec.deal_message
        limit = asyncio.Semaphore(self.spec.concurrency or self.settings.transform_concurrency)
        timeout = job.timeout
        times = job.call_times

        async def call(message: Any) -> Any:
            async with limit:
                data = native_to_message(message)
                started = time.monotonic()
                try:
                    # asyncio.timeout, not wait_for: no extra task per call.
                    async with asyncio.timeout(timeout):
                        return await fn(data)
                except TimeoutError:
                    raise TransformTimeout(timeout) from None
                finally:
                    times.append(time.monotonic() - started)

        plan: list[tuple[TopicPartition, list[tuple[Any, int, asyncio.Future[Any]]]]] = []
        for tp, messages in batch.items():
            skip = job.acked.get(tp)
            entries: list[tuple[Any, int, asyncio.Future[Any]]] = []
            for message in messages:
                if skip and message.offset() in skip:
                    continue
                index = len(job.sources)
                job.sources.append((tp, message))
                entries.append((message, index, asyncio.ensure_future(call(message))))
            plan.append((tp, entries))
        try:
            for tp, entries in plan:
                for message, index, task in entries:
                    try:
                        result = await task
                    except (Exception, SystemExit) as exc:
                        if job.fail(tp, message, index, exc):
                            return
                        continue
                    if not self._queue(job, tp, message, index, result):
                        return
                if batch[tp]:
                    job.commit[tp] = batch[tp][-1].offset() + 1
        finally:
            for _tp, entries in plan:
                for _message, _index, task in entries:
                    task.cancel()

    def _queue(self, job: _Job, tp: TopicPartition, message: Any, index: int, result: Any) -> bool:
        """Produce ``result``'s outputs; False when the batch must end (halt)."""
        try:
            # The common case inline (one dict, text key and value, no headers);
            # everything else through the general normalizer.
            if type(result) is dict and not result.get("headers"):
                key = result.get("key")
                value = result.get("value")
                stamp = result.get("timestamp")
                if (
                    type(value) is str
                    and (key is None or type(key) is str)
                    and (stamp is None or type(stamp) is int)
                ):
                    outs = [
                        OutRecord(
                            None if key is None else key.encode(),
                            value.encode(),
                            [],
                            stamp if stamp is None or stamp >= 0 else None,
                        )
                    ]
                else:
                    outs = normalize_result(result)
            else:
                outs = normalize_result(result)
        except Exception as exc:
            return not job.fail(tp, message, index, exc)
        if not outs:
            job.filtered += 1
            return True
        produce = self.producer.client.produce
        target = self.spec.target_topic
        for out in outs:
            try:
                while True:
                    try:
                        if out.timestamp_ms is None:
                            produce(target, out.value, out.key, headers=out.headers or None)
                        else:
                            produce(
                                target,
                                out.value,
                                out.key,
                                headers=out.headers or None,
                                timestamp=out.timestamp_ms,
                            )
                        break
                    except BufferError:
                        # The client's queue is full: let it send and report, then go on.
                        self.producer.serve_from_thread(0.1)
            except Exception as exc:
                return not job.fail(tp, message, index, _produce_error(exc, target), "produce")
            job.outputs.append((index, out))
        return True

    @staticmethod
    def _cut(commit: Commit, tp: TopicPartition, offset: int) -> None:
        safe = commit.get(tp)
        if safe is None or safe > offset:
            commit[tp] = offset

    def _remember_acked(
        self, sources: list[tuple[TopicPartition, Any]], not_done: set[int]
    ) -> None:
        """Before a retry: the records whose every output (or dead letter) is acknowledged."""
        for index, (tp, message) in enumerate(sources):
            if index not in not_done:
                self._acked.setdefault(tp, set()).add(message.offset())

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # A rewind keeps ``_acked`` (that is its point); a partition given up forgets it.
        for tp in revoked:
            self._acked.pop(tp, None)
        await super()._on_revoked(revoked)

    def _halt_reason(self, message: Any, stage: str, exc: BaseException) -> PipelineHalted:
        record = to_record(message)
        reason = (
            f"{stage} failed at {record.topic}/{record.partition}@{record.offset}: "
            f"{type(exc).__name__}: {self.redact(str(exc))}"
        )
        return PipelineHalted(reason)

    async def _dead_letter(
        self, message: Any, stage: str, exc: BaseException
    ) -> asyncio.Future[Any] | None:
        """Queue the dead letter of ``message``; None if it could not even be queued."""
        assert self.dead_letters is not None
        record = to_record(message)
        self.status.dead_lettered += 1
        text = self.redact(f"{type(exc).__name__}: {exc}")
        where = user_code_location(exc, str(self.spec.path)) if stage == "transform" else None
        extra = {"etl.exception.location": where} if where else None
        self.status.error = f"{stage} {record.topic}/{record.partition}@{record.offset}: {text}"
        log.warning(
            "message dead-lettered pipeline=%s stage=%s topic=%s partition=%d offset=%d error=%r%s",
            self.name,
            stage,
            record.topic,
            record.partition,
            record.offset,
            text,
            f" at={where}" if where else "",
        )
        try:
            return await self.dead_letters.send(
                record, pipeline=self.name, stage=stage, exc=exc, extra=extra
            )
        except Exception as error:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed


class _Job:
    """One batch's state, filled on the user-code thread and read on the event loop after."""

    def __init__(
        self,
        pipeline: TransformPipeline,
        stop: bool,
        acked: dict[TopicPartition, set[int]],
        timeout: float,
        budget: float,
    ) -> None:
        self.pipeline = pipeline
        self.stop = stop
        self.acked = acked
        self.timeout = timeout
        self.budget = budget
        self.clock = CallClock()
        #: index -> (tp, source message); failed deliveries are matched back to it.
        self.sources: list[tuple[TopicPartition, Any]] = []
        #: (source index, output) for every output queued.
        self.outputs: list[tuple[int, OutRecord]] = []
        self.failed: list[tuple[int, str, BaseException]] = []
        self.commit: Commit = {}
        self.filtered = 0
        self.halt: PipelineHalted | None = None
        self.call_times: list[float] = []
        self.ended_early = False
        self.abandoned = False

    def fail(
        self,
        tp: TopicPartition,
        message: Any,
        index: int,
        exc: BaseException,
        stage: str | None = None,
    ) -> bool:
        """Route a failed record; True when the batch must end here (``stop``)."""
        if stage is None:
            stage = exc.stage if isinstance(exc, RecordError | TransformTimeout) else "transform"
        if self.stop:
            self.commit[tp] = message.offset()
            self.halt = self.pipeline._halt_reason(message, stage, exc)
            return True
        self.failed.append((index, stage, exc))
        return False

    def cut(self, tp: TopicPartition, next_offset: int) -> None:
        """End the batch early: ``tp`` is done up to ``next_offset``; the rest is read again."""
        self.commit[tp] = next_offset
        self.ended_early = True

    def abandon(self, index: int) -> None:
        """The call of record ``index`` was left behind: it timed out; the batch ends."""
        self.abandoned = True
        tp, message = self.sources[index]
        if not self.fail(tp, message, index, TransformTimeout(self.timeout)):
            self.cut(tp, message.offset() + 1)

    def seeks(self, batch: Batch, complete: bool) -> dict[TopicPartition, int]:
        """Where to read again after a batch that ended early (not for a halt)."""
        if self.halt is not None or (complete and not self.ended_early):
            return {}
        out = {}
        for tp, messages in batch.items():
            if not messages:
                continue
            resume = self.commit.get(tp, messages[0].offset())
            if resume <= messages[-1].offset():
                out[tp] = resume
        return out


def _absorb(clock: CallClock, index: int) -> None:
    """Wait for the watchdog's interrupt of ``index`` (it claimed the record) and swallow it."""
    for _ in range(int(ABANDON_GRACE_S / 0.001) * 2):
        try:
            time.sleep(0.001)
        except _Interrupt:
            return


def _source_of(msg: Any, outputs: list[tuple[int, OutRecord]], taken: set[int]) -> int:
    """The source index of a failed output, matched by its bytes (failures are rare).

    Byte-identical outputs (same key, value and headers) are interchangeable: which
    one is marked failed changes nothing in the target topic.
    """
    key, value, headers = msg.key(), msg.value(), msg.headers() or []
    fallback = -1
    for index, out in outputs:
        if out.key == key and out.value == value and (out.headers or []) == headers:
            if index not in taken:
                return index
            fallback = index
    return fallback


def _produce_error(exc: BaseException, topic: str) -> BaseException:
    """What a refused ``produce`` call means: a record error, or raise to retry."""
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and not is_record_error(error):
            raise RetriableError(f"produce to {topic!r} failed: {error.str()}") from None
        reason = error if isinstance(error, KafkaError) else str(exc)
        return produce_error(reason, record_error=True)
    if isinstance(exc, RECORD_PRODUCE_ERRORS | OverflowError):
        return exc
    raise exc


async def _outcome(letter: asyncio.Future[Any] | None) -> BaseException | None:
    """None when the dead letter was acknowledged, else why not."""
    if letter is None:
        return RuntimeError("dead letter could not be queued")
    try:
        await letter
    except Exception as exc:
        return exc
    return None


def user_code_location(exc: BaseException, path: str) -> str | None:
    """``file:line`` of the innermost frame of the transform file in ``exc``'s traceback."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            where = f"{path}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


async def ensure_dead_letter_topic(settings: Any, topic: str | None = None) -> None:
    """Create the dead-letter topic (``topic``, else ``errors.dead_letter_topic``) if missing."""
    await ensure_topics(
        settings.kafka,
        {topic or settings.errors.dead_letter_topic: settings.errors.dead_letter_partitions},
    )
