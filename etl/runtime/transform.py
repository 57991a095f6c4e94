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
never retried: it is dead-lettered, or halts its partition under ``stop``
(:mod:`etl.runtime.halts`: the batch goes on with the other partitions).

The function can be swapped (hot reload) between batches: :meth:`swap` takes
effect at the next batch boundary, so no message is handled by both versions.

Exactly-once (``processing_guarantee: exactly_once``, docs/transforms.md, "Exactly-once") is
a separate branch taken only when configured, so the at-least-once path stays as
it is: each batch is one Kafka transaction (begin, produce outputs and dead
letters, add the consumed offsets with the consumer's group metadata, commit).
Any failure aborts it, so nothing of the batch is visible to ``read_committed``
readers, and the loop rewinds to the committed offsets. A record the broker
refuses poisons the whole transaction: it is aborted, the record remembered, and
the batch run again from memory with that record dead-lettered (or halting its
partition under ``stop``) in its place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition

from etl.deadletter import DeadLetterWriter
from etl.errors import RetriableError
from etl.kafka import ensure_topics, topic_partitions
from etl.message import OutRecord, native_to_message, normalize_result
from etl.runtime.batch import (
    Job,
    KnownBad,
    absorb,
    produce_failure,
    source_of,
    user_code_location,
)
from etl.runtime.consumer import (
    Batch,
    Commit,
    ConsumerPipeline,
    worker_identity,
)
from etl.runtime.dead_letters import DeadLetterRouter, Letter
from etl.runtime.native import (
    NativeProducer,
    is_record_error,
    produce_error,
    to_record,
)
from etl.runtime.policy import Backoff, resolve_policy
from etl.runtime.usercode import (
    CallTimes,
    TransformTimeout,
    UserCodeThread,
    _Interrupt,
    watch,
)
from etl.transforms.loader import TransformSpec

log = logging.getLogger("etl.transform")

#: Longest transaction the broker keeps open (Kafka's transaction.max.timeout.ms default).
MAX_TRANSACTION_TIMEOUT_MS = 900_000


class _Redo(Exception):
    """The batch's transaction was aborted for a record error: run the batch again."""


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
        self.dead_letters: DeadLetterRouter | None = None
        #: Source offsets whose outputs were all acknowledged in a batch that is
        #: being retried: skipped when it is read again (no repeated output).
        self._acked: dict[TopicPartition, set[int]] = {}
        guarantee = spec.processing_guarantee or self.settings.kafka.processing_guarantee
        self.exactly_once = guarantee == "exactly_once"
        #: Exactly-once only: records that failed in an aborted transaction, by offset.
        self._known_bad: dict[TopicPartition, dict[int, KnownBad]] = {}
        self._thread: UserCodeThread | None = None
        self.call_times = CallTimes()
        self._p99_at = 0.0
        self.status.target = spec.target_topic
        self.status.version = spec.version
        self.status.path = str(spec.path)

    # ---- hot reload -------------------------------------------------------------

    def swap(self, spec: TransformSpec) -> None:
        """Use ``spec``'s function from the next batch on (same topics required).

        Halted partitions are read again from their bad record, by the new version:
        saving a fixed file resumes them (a record still bad halts them again).
        """
        self._next_spec = spec
        if self.halts:
            self.clear_halts()

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

    # ---- exactly-once: identity ---------------------------------------------------

    def transactional_id(self) -> str:
        """``<group>-<worker id>``: stable across restarts, so a restart fences its zombie."""
        return f"{self.group_id}-{worker_identity(self.settings)}"

    def instance_id(self) -> str | None:
        # Static membership only under exactly-once (the at-least-once group is unchanged).
        return self.transactional_id() if self.exactly_once else None

    def make_producer(self) -> NativeProducer:
        if not self.exactly_once:
            return super().make_producer()  # type: ignore[no-any-return]
        kafka = self.settings.kafka
        # A batch may take up to half the poll interval: the transaction must outlive it.
        timeout = min(max(60_000, kafka.max_poll_interval_ms), MAX_TRANSACTION_TIMEOUT_MS)
        overrides = {
            "transactional.id": self.transactional_id(),
            "enable.idempotence": True,
            "transaction.timeout.ms": timeout,
        }
        return NativeProducer(kafka, name=self.name, **overrides)

    # ---- setup --------------------------------------------------------------------

    async def setup(self) -> None:
        kafka = self.settings.kafka
        dead_letter_topic = self.spec.dead_letter_topic or self.settings.errors.dead_letter_topic
        self.dead_letters = DeadLetterRouter(
            DeadLetterWriter(self.producer, dead_letter_topic, self.redact),
            pipeline=self.name,
            status=self.status,
            redact=self.redact,
            backoff=lambda: Backoff(max_retries=self.max_retries),
            stopping=lambda: self.should_stop,
        )
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
        if self.exactly_once:
            return await self._process_transaction(batch)
        return await self._settle(await self._run_batch(batch))

    async def _run_batch(self, batch: Batch) -> Job:
        """Run ``deal_message`` over the batch on the user-code thread, queueing outputs."""
        self._take_swap()
        spec = self.spec
        producer = self.producer
        # Under exactly-once nothing of an aborted attempt is kept: the records to
        # treat apart are the ones that failed in it (routed in place, not skipped).
        skip = self._known_bad if self.exactly_once else self._acked
        job = Job(self, self.policy == "stop", skip, self._timeout(), self._batch_budget())
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
        return job

    async def _settle(self, job: Job) -> Commit:
        """Dead letters, one wait for every acknowledgement, then what may be committed."""
        target = self.spec.target_topic
        producer = self.producer
        sources, outputs, commit = job.sources, job.outputs, job.commit
        letters = [await self._dead_letter(job, i, stage, exc) for i, stage, exc in job.failed]

        await producer.wait_all(stopping=lambda: self.should_stop)

        # Every queued output is now acknowledged or failed; only failures are reported.
        bad: dict[int, BaseException] = {}
        retry: BaseException | None = None
        lost: set[int] = set()
        for kafka_error, msg in producer.take_failures():
            index = source_of(msg, outputs, lost)
            lost.add(index)
            if is_record_error(kafka_error):
                bad.setdefault(index, produce_error(kafka_error, record_error=True))
            else:
                retry = retry or produce_error(kafka_error, record_error=False)
        if retry is not None:
            # The broker or the connection failed: nothing is committed; the batch is
            # read again, skipping the records whose outputs are already acknowledged.
            self._remember_acked(sources, lost | {letter.tag for letter in letters})
            raise RetriableError(f"produce to {target!r} failed: {retry}") from retry
        for index, failure in sorted(bad.items()):
            if job.stop:
                tp, message = sources[index]
                job.halt_at(tp, message, "produce", failure)
                continue
            letters.append(await self._dead_letter(job, index, "produce", failure))
        # The outputs are written: a dead letter the broker did not take is retried alone.
        assert self.dead_letters is not None
        for letter, why in (await self.dead_letters.settle(letters)).refused:
            # A dead letter that cannot be written at all: its partition halts before it.
            tp, message = sources[letter.tag]
            job.halt_at(tp, message, "dead-letter", why, self.dead_letters.halt_reason(letter, why))

        self._acked = {}
        self.status.produced += len(outputs) - len(lost)
        self.status.filtered += job.filtered
        halt = job.halted(commit)
        if halt is not None:
            raise halt
        return commit

    # ---- exactly-once: the batch as one transaction --------------------------------

    async def _process_transaction(self, batch: Batch) -> Commit:
        """Begin, run the batch, settle it in its transaction; returns nothing to commit.

        Returns ``{}``: the offsets are committed inside the transaction, never by
        the loop. A record error aborts the transaction and runs the batch again
        from memory (the consumer has not moved), each attempt knowing one more
        failed record, so this ends within as many attempts as the batch has records.
        """
        producer = self.producer
        while True:
            self._seeks = {}
            producer.begin_transaction()
            try:
                job = await self._run_batch(batch)
                return await self._settle_transaction(job)
            except _Redo:
                continue
            except BaseException:
                # Whatever went wrong, nothing of this batch becomes visible; the
                # loop rewinds to the committed offsets (or the pipeline stops).
                await self._abort_quietly()
                raise

    async def _abort_quietly(self) -> None:
        try:
            await self.producer.abort_transaction()
        except Exception as exc:
            log.warning("transaction abort failed pipeline=%s error=%r", self.name, self._text(exc))

    async def _settle_transaction(self, job: Job) -> Commit:
        """Dead letters, one wait, then commit the transaction with the batch's offsets."""
        target = self.spec.target_topic
        producer = self.producer
        sources, outputs, commit = job.sources, job.outputs, job.commit
        letters = [await self._dead_letter(job, i, stage, exc) for i, stage, exc in job.failed]

        await producer.wait_all(stopping=lambda: self.should_stop)

        retry: BaseException | None = None
        bad: dict[int, KnownBad] = {}
        lost: set[int] = set()
        for kafka_error, msg in producer.take_failures():
            index = source_of(msg, outputs, lost)
            lost.add(index)
            if index >= 0 and is_record_error(kafka_error):
                error = produce_error(kafka_error, record_error=True)
                bad.setdefault(index, KnownBad("produce", error, False))
            else:
                retry = retry or produce_error(kafka_error, record_error=False)
        # In a transaction nothing is sent again: a failed dead letter dooms it.
        assert self.dead_letters is not None
        settled = await self.dead_letters.settle(letters, retry_alone=False)
        retry = retry or settled.unavailable
        for letter, why in settled.refused:
            # The dead letter cannot be written at all: its partition halts before it.
            bad[letter.tag] = KnownBad("dead-letter", why, True)
        if retry is not None:
            raise RetriableError(f"produce to {target!r} failed: {retry}") from retry
        if bad:
            # The broker refused records: the transaction cannot commit. Abort it and
            # run the batch again with those records routed in place.
            await producer.abort_transaction()
            learned = False
            for index, known in bad.items():
                tp, message = sources[index]
                seen = self._known_bad.setdefault(tp, {})
                learned = learned or message.offset() not in seen
                seen[message.offset()] = known
            if not learned:
                raise RetriableError(f"produce to {target!r} failed again for the same records")
            raise _Redo()

        owned = {tp: off for tp, off in commit.items() if tp in self._assigned}
        await producer.commit_transaction(owned, await self.consumer.group_metadata())
        for tp, offset in owned.items():
            self._progress(tp).committed = offset
            failed = self._known_bad.get(tp)
            if failed:
                for old in [off for off in failed if off < offset]:
                    del failed[old]
        self.status.produced += len(outputs)
        self.status.filtered += job.filtered
        halt = job.halted({})
        if halt is not None:
            # Under ``stop`` a halted partition ended at its bad record: what came before
            # it is committed with the transaction, nothing past it (the halt commits
            # nothing more).
            raise halt
        return {}

    def _timeout(self) -> float:
        return float(self.spec.timeout or self.settings.transform_timeout)

    def _batch_budget(self) -> float:
        # Stop taking records of a batch well before the group's poll deadline.
        return self.settings.kafka.max_poll_interval_ms / 1000 / 2

    def _user_thread(self) -> UserCodeThread:
        if self._thread is None:
            self._thread = UserCodeThread(self.name)
        return self._thread

    def _run_sync(self, job: Job, batch: Batch) -> None:
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
                    known = job.known(tp, message)
                    if known is None:
                        continue
                    index = len(job.sources)
                    job.sources.append((tp, message))
                    if job.fail(tp, message, index, known.exc, known.stage, halt=known.halt):
                        break
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
                            break
                        continue
                    if not claim(index, "done"):
                        raise _Interrupt()
                except _Interrupt:
                    # The watchdog timed this call out (and owns its fate): absorb the
                    # interrupt wherever it lands, then fail the record with stage timeout.
                    clock.started = 0.0
                    absorb(clock, index)
                    if job.abandoned:
                        return
                    if job.fail(tp, message, index, TransformTimeout(job.timeout)):
                        break
                    continue
                if not self._queue(job, tp, message, index, result):
                    break  # this partition halts here; the others go on
                if monotonic() > deadline:
                    job.cut(tp, message.offset() + 1)
                    return
            else:
                if messages:
                    job.commit[tp] = messages[-1].offset() + 1

    async def _run_async(self, job: Job, batch: Batch) -> None:
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

        plan: list[tuple[TopicPartition, list[tuple[Any, int, asyncio.Future[Any] | None]]]] = []
        for tp, messages in batch.items():
            skip = job.acked.get(tp)
            entries: list[tuple[Any, int, asyncio.Future[Any] | None]] = []
            for message in messages:
                if skip and message.offset() in skip:
                    if job.known(tp, message) is not None:
                        # Failed in an aborted transaction: routed in its place below.
                        entries.append((message, len(job.sources), None))
                        job.sources.append((tp, message))
                    continue
                index = len(job.sources)
                job.sources.append((tp, message))
                entries.append((message, index, asyncio.ensure_future(call(message))))
            plan.append((tp, entries))
        try:
            for tp, entries in plan:
                for message, index, task in entries:
                    if task is None:
                        known = job.known(tp, message)
                        assert known is not None
                        if job.fail(tp, message, index, known.exc, known.stage, halt=known.halt):
                            break
                        continue
                    try:
                        result = await task
                    except (Exception, SystemExit) as exc:
                        if job.fail(tp, message, index, exc):
                            break
                        continue
                    if not self._queue(job, tp, message, index, result):
                        break  # this partition halts here; the others go on
                else:
                    if batch[tp]:
                        job.commit[tp] = batch[tp][-1].offset() + 1
        finally:
            for _tp, entries in plan:
                for _message, _index, task in entries:
                    if task is not None:
                        task.cancel()

    def _queue(self, job: Job, tp: TopicPartition, message: Any, index: int, result: Any) -> bool:
        """Produce ``result``'s outputs; False when its partition halts here."""
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
                return not job.fail(tp, message, index, produce_failure(exc, target), "produce")
            job.outputs.append((index, out))
        return True

    def _remember_acked(
        self, sources: list[tuple[TopicPartition, Any]], not_done: set[int]
    ) -> None:
        """Before a retry: the records whose every output (or dead letter) is acknowledged."""
        for index, (tp, message) in enumerate(sources):
            if index not in not_done:
                self._acked.setdefault(tp, set()).add(message.offset())

    def _forget_retry_state(self, partitions: set[TopicPartition]) -> None:
        # A rewind keeps ``_acked`` (that is its point); a partition given up or halted
        # forgets it, and what failed in aborted transactions (read again, maybe by a
        # fixed version).
        for tp in partitions:
            self._acked.pop(tp, None)
            self._known_bad.pop(tp, None)

    def forget_partitions(self, partitions: set[TopicPartition]) -> None:
        self._forget_retry_state(partitions)
        super().forget_partitions(partitions)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._forget_retry_state(revoked)
        await super()._on_revoked(revoked)

    def _halt_reason(self, message: Any, stage: str, exc: BaseException) -> str:
        record = to_record(message)
        return (
            f"{stage} failed at {record.topic}/{record.partition}@{record.offset}: "
            f"{type(exc).__name__}: {self.redact(str(exc))}"
        )

    async def _dead_letter(self, job: Job, index: int, stage: str, exc: BaseException) -> Letter:
        """Queue the dead letter of the batch's record ``index`` (with the user code's line)."""
        assert self.dead_letters is not None
        record = to_record(job.sources[index][1])
        where = user_code_location(exc, str(self.spec.path)) if stage == "transform" else None
        extra = {"etl.exception.location": where} if where else None
        return await self.dead_letters.send(record, stage, exc, extra=extra, tag=index)


async def ensure_dead_letter_topic(settings: Any, topic: str | None = None) -> None:
    """Create the dead-letter topic (``topic``, else ``errors.dead_letter_topic``) if missing."""
    await ensure_topics(
        settings.kafka,
        {topic or settings.errors.dead_letter_topic: settings.errors.dead_letter_partitions},
    )
