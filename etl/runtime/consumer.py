"""The batch consumer loop every pipeline (transform or sink) runs on.

A pipeline is a Faust/mode service that drives its own librdkafka consumer
(:mod:`etl.runtime.native`) in its own consumer group: poll a batch, hand it to
:meth:`ConsumerPipeline.process`, which returns the offsets that are now safe
(their output acknowledged or written), commit those. Moving whole batches
instead of one event at a time is what lets a pipeline keep up with a bare
librdkafka loop.

Delivery rules kept here:

* an offset is committed only after ``process``/``flush_*`` says it is safe;
* on a rebalance, the batch in hand finishes and its offsets are committed
  before the partitions are given up (the batch lock);
* a :class:`PipelineHalted` (the ``stop`` policy) commits what is safe, keeps
  the offset before the bad message, and halts only the partitions it names
  (:mod:`etl.runtime.halts`): the others are consumed and committed on; one
  without partitions halts this pipeline only;
* a :class:`~etl.errors.RetriableError` rewinds to the uncommitted batch and
  retries with exponential backoff (:class:`~etl.runtime.policy.Backoff`);
  past ``max_retries`` (:class:`~etl.errors.GaveUp`) or on a
  :class:`~etl.errors.FatalError` the pipeline stops as failed, nothing past
  the last commit committed;
* a :class:`~etl.errors.BackpressureError` pauses fetching for its
  ``retry_after``, then reads the uncommitted batch again; not a failure.

Each branch of :mod:`etl.errors` is handled here once (:meth:`ConsumerPipeline._run`);
what a pipeline retries inside one batch goes through :func:`etl.runtime.policy.retry`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from confluent_kafka import KafkaException
from mode import Service

from etl.config import ETLSettings
from etl.errors import (
    BackpressureError,
    FatalError,
    GaveUp,
    PipelineHalted,
    PipelineStopping,
    RetriableError,
)
from etl.kafka import describe_error
from etl.redact import Redactor
from etl.runtime.halts import PartitionHalts, tp_key
from etl.runtime.native import (
    CommitFailed,
    ConsumerFenced,
    NativeConsumer,
    NativeProducer,
    ProduceError,
    ProducerFenced,
    tune_garbage_collector,
)
from etl.runtime.policy import Backoff, resolve_policy, wait_unless_stopping
from etl.runtime.status import PartitionProgress, PipelineStatus, State

log = logging.getLogger("etl.runtime")

Batch = Mapping[TopicPartition, list[Any]]
Commit = dict[TopicPartition, int]

__all__ = ["Batch", "Commit", "ConsumerPipeline", "PipelineHalted", "record_offset", "tp_key"]


def record_offset(record: Any) -> int:
    """The offset of a :class:`~etl.runtime.native.Record` or a raw librdkafka message."""
    offset = record.offset
    return offset() if callable(offset) else offset  # type: ignore[no-any-return]


def worker_identity(settings: ETLSettings) -> str:
    """``kafka.worker_id``, else an id made once and kept in ``<data_dir>/worker-id``.

    Stable across restarts of a worker on the same data directory (so a restarted
    worker fences the one it replaces), distinct between workers with their own
    data directories (``--processes`` children have one each).
    """
    if settings.kafka.worker_id:
        return settings.kafka.worker_id
    path = Path(settings.data_dir) / "worker-id"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    text = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"worker-id.{os.getpid()}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    try:
        # The first of two workers starting at once wins; both read its id.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


class ConsumerPipeline(Service):
    """Base of transform and sink pipelines: poll, process, commit."""

    kind = "pipeline"
    #: Hand ``process`` :class:`~etl.runtime.native.Record` objects (False: raw
    #: librdkafka messages, the transform's fast path).
    record_objects = True
    #: Retries of a RetriableError before the pipeline is marked failed (None: forever).
    max_retries: int | None = None

    def __init__(
        self,
        *,
        name: str,
        topics: list[str],
        settings: ETLSettings,
        start_offset: str = "latest",
        policy: str | None = None,
        redact: Redactor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.topics = topics
        self.settings = settings
        self.start_offset = start_offset
        self.policy = resolve_policy(policy, settings)
        self.redact = redact or Redactor(settings.secret_values())
        self.group_id = f"{settings.kafka.group_prefix}-{self.kind}-{name}"
        self.status = PipelineStatus(
            name=name, kind=self.kind, source=",".join(topics), group_id=self.group_id
        )
        self.consumer: Any = None
        self.producer: Any = None
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._batch_start: Commit = {}
        #: The loop ended for good (halted as a whole, failed): nothing more to flush.
        self._ended = False
        self._paused = False
        #: Partitions to read again from an offset after the batch's commit (a batch
        #: that ended early to keep the poll deadline, or whose call was abandoned).
        self._seeks: Commit = {}
        #: Partitions halted by the ``stop`` policy (:mod:`etl.runtime.halts`).
        self.halts = PartitionHalts(self.status)
        #: Halts cleared by :meth:`clear_halts`, each with its bad record's offset: the
        #: loop seeks them to their committed offset and resumes them before its next poll.
        self._releasing: Commit = {}

    # ---- hooks for subclasses -------------------------------------------------

    async def setup(self) -> None:
        """Open connections, create topics. Called once before polling starts."""

    async def teardown(self) -> None:
        """Close what ``setup`` opened."""

    async def process(self, batch: Batch) -> Commit:
        """Handle one polled batch; return ``{tp: next offset}`` that is now safe to commit."""
        raise NotImplementedError

    async def flush_due(self) -> Commit:
        """Called after every poll (also empty ones): flush what is due by time."""
        return {}

    async def flush_partitions(self, partitions: set[TopicPartition]) -> Commit:
        """Flush everything buffered for these partitions (revoke, shutdown)."""
        return {}

    def drop_partitions(self, partitions: set[TopicPartition]) -> None:
        """Forget buffered state of partitions after a rewind (nothing was committed)."""

    def forget_partitions(self, partitions: set[TopicPartition]) -> None:
        """These partitions halted (or left): drop everything kept about them; they are
        read again from their committed offset."""
        self.drop_partitions(partitions)

    # ---- lifecycle --------------------------------------------------------------

    def make_producer(self) -> Any:
        """The producer of this pipeline (outputs and dead letters)."""
        return NativeProducer(self.settings.kafka, name=self.name)

    def instance_id(self) -> str | None:
        """The consumer's static ``group.instance.id`` (None: a dynamic member)."""
        return None

    async def on_start(self) -> None:
        self.status.state = State.STARTING
        self.add_future(self._main())

    async def _main(self) -> None:
        try:
            await self._open()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = self._text(exc)
            self.status.fail(State.FAILED, f"start failed: {text}")
            log.error("pipeline start failed pipeline=%s error=%r", self.name, text)
            await self._close_clients()
            return
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Raised by an error handler of the loop itself (e.g. the rewind after a
            # failed batch could not read the committed offsets): nothing past the last
            # commit was committed, so stop this pipeline visibly instead of leaving a
            # loop-less pipeline that reports "retrying" forever.
            text = self._text(exc)
            log.error("pipeline loop failed pipeline=%s error=%r", self.name, text)
            self._ended = True
            self.status.fail(State.FAILED, f"crashed: {text}")
            await self._close_clients()

    async def _open(self) -> None:
        tune_garbage_collector()
        self.producer = self.make_producer()
        await self.producer.start()
        await self.setup()
        consumer = NativeConsumer(
            self.settings.kafka,
            group_id=self.group_id,
            start_offset=self.start_offset,
            name=self.name,
            records=self.record_objects,
            instance_id=self.instance_id(),
        )
        consumer.subscribe(self.topics, on_assigned=self._on_assigned, on_revoked=self._on_revoked)
        consumer.pause_all(self._paused)
        await consumer.start()
        self.consumer = consumer
        self.status.state = State.PAUSED if self._paused else State.RUNNING
        log.info(
            "pipeline started pipeline=%s kind=%s topics=%s group=%s",
            self.name,
            self.kind,
            ",".join(self.topics),
            self.group_id,
        )

    async def on_stop(self) -> None:
        await self._drain(final=True)

    async def _drain(self, *, final: bool) -> None:
        consumer = self.consumer
        if consumer is not None and not self._ended:
            async with self._lock:
                try:
                    commit = await self._halting(self.flush_partitions(set(self._assigned)))
                    await self._commit(commit)
                except Exception as exc:
                    log.error(
                        "pipeline flush on stop failed pipeline=%s error=%r",
                        self.name,
                        self._text(exc),
                    )
        await self._close_clients()
        if final and self.status.state in (State.RUNNING, State.STARTING, State.PAUSED):
            self.status.state = State.FINISHED

    async def _close_clients(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # pragma: no cover - best effort on the way out
                log.warning("consumer stop failed pipeline=%s error=%r", self.name, self._text(exc))
        try:
            await self.teardown()
        except Exception as exc:
            log.warning("teardown failed pipeline=%s error=%r", self.name, self._text(exc))
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # pragma: no cover
                log.warning("producer stop failed pipeline=%s error=%r", self.name, self._text(exc))

    def _text(self, exc: BaseException) -> str:
        """One line describing ``exc``, secrets redacted (for logs and status)."""
        return self.redact(describe_error(exc))

    # ---- pause/resume -------------------------------------------------------------

    def pause(self) -> None:
        """Stop fetching (the group membership and offsets stay)."""
        self._paused = True
        if self.consumer is not None:
            self.consumer.pause_all(True)
        if self.status.state == State.RUNNING:
            self.status.state = State.PAUSED

    def resume(self) -> None:
        """Fetch again after :meth:`pause`; halted partitions stay halted (:meth:`clear_halts`)."""
        self._paused = False
        if self.consumer is not None:
            self.consumer.pause_all(False)
        if self.status.state == State.PAUSED:
            self.status.state = State.RUNNING

    def clear_halts(self) -> list[str]:
        """Resume the partitions halted by the ``stop`` policy from their committed offsets.

        Their halts are forgotten at once (status and state); the loop seeks each one
        to its committed offset and resumes it before its next poll. Returns their
        ``topic/partition`` keys; [] when the pipeline's clients are closed (halted as
        a whole, failed or stopped: restart it instead).
        """
        if self.consumer is None or self._ended:
            return []
        cleared = self.halts.forget(list(self.halts))
        for tp, halt in cleared.items():
            self._releasing[tp] = halt.offset
        self.halts.show(paused=self._paused)
        keys = sorted(tp_key(tp) for tp in cleared)
        if keys:
            log.info("halts cleared pipeline=%s partitions=%s", self.name, keys)
        return keys

    # ---- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        kafka = self.settings.kafka
        backoff = Backoff(max_retries=self.max_retries)
        while not self.should_stop and not self._ended:
            try:
                batch = await self.consumer.getmany(
                    timeout_ms=kafka.poll_timeout_ms, max_records=kafka.max_batch_records
                )
                async with self._lock:
                    if self.should_stop or self.consumer is None:
                        # Stopped while polling: leave this batch uncommitted for the next owner.
                        break
                    await self._release_cleared()
                    if batch and self._paused:
                        # Fetched before the pause reached the client: not handled now,
                        # read again from its first record after the resume.
                        for tp, records in batch.items():
                            await self.consumer.seek(tp, record_offset(records[0]))
                        batch = {}
                    started = time.perf_counter()
                    commit: Commit = {}
                    if batch:
                        self._batch_start = {
                            tp: record_offset(records[0]) for tp, records in batch.items()
                        }
                        commit = await self._halting(self.process(batch))
                    commit.update(await self._halting(self.flush_due()))
                    await self._commit(commit)
                    seeks, self._seeks = self._seeks, {}
                    for tp, offset in seeks.items():
                        if tp in self._assigned and tp not in self.halts:
                            await self.consumer.seek(tp, offset)
                    if batch:
                        self.status.batches += 1
                        self.status.last_batch_ms = (time.perf_counter() - started) * 1000
                        self.status.consumed += sum(len(r) for r in batch.values())
                        for tp, records in batch.items():
                            if tp not in self.halts:
                                self._progress(tp).position = record_offset(records[-1]) + 1
                if self.status.state == State.FAILED:
                    # Recovered from a retried failure: running, paused or halted again.
                    self.status.state = State.RUNNING
                    self.halts.show(paused=self._paused)
                backoff.reset()
            except PipelineHalted as halt:
                # Not of some partitions (those are handled in _halting): the whole pipeline.
                await self._halt(halt, state=halt.state)
                return
            except (ProducerFenced, ConsumerFenced) as exc:
                # Exactly-once: a newer worker with this identity took the pipeline
                # over (a zombie's fate; nothing of its open transaction is visible),
                # or the client failed for good: retrying cannot help.
                await self._halt(
                    PipelineHalted(f"stopped, a newer worker took over: {self._text(exc)}"),
                    state=State.FAILED,
                )
                return
            except PipelineStopping as exc:
                log.warning("pipeline stopped mid-write pipeline=%s reason=%r", self.name, str(exc))
                return
            except BackpressureError as exc:
                await self._back_off(exc)
            except (RetriableError, KafkaException, ProduceError) as exc:
                text = self._text(exc)
                await self._rewind()
                try:
                    delay = backoff.next_delay()
                except GaveUp as gave_up:
                    await self._fail(f"{gave_up}: {text}")
                    return
                self.status.fail(State.FAILED, f"retrying: {text}")
                log.warning(
                    "batch failed, retrying pipeline=%s attempt=%d error=%r retry_in=%.1fs",
                    self.name,
                    backoff.attempts,
                    text,
                    delay,
                )
                await wait_unless_stopping(delay, lambda: self.should_stop)
            except (FatalError, GaveUp) as exc:
                # Retrying cannot fix it (or retries ran out): stop this pipeline as
                # failed, nothing past the last commit committed; no traceback, the
                # error says what to fix.
                await self._rewind()
                await self._fail(self._text(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug in a sink or the runtime: stop this pipeline, keep the others.
                text = self._text(exc)
                log.exception("pipeline crashed pipeline=%s error=%r", self.name, text)
                await self._rewind()
                await self._halt(PipelineHalted(f"crashed: {text}"), state=State.FAILED)
                return

    async def _fail(self, text: str) -> None:
        """Stop this pipeline as failed on a FatalError or GaveUp (nothing more committed)."""
        log.error("pipeline failed pipeline=%s error=%r", self.name, text)
        await self._halt(PipelineHalted(f"failed: {text}"), state=State.FAILED)

    async def _back_off(self, exc: BackpressureError) -> None:
        """The destination asked for a pause: stop fetching, read the batch again after it.

        Not a failure: the status stays running and no retry is counted.
        """
        log.info("backpressure, pausing pipeline=%s retry_in=%.2fs", self.name, exc.retry_after)
        await self._rewind()
        if self.consumer is not None:
            self.consumer.pause_all(True)
        await wait_unless_stopping(exc.retry_after, lambda: self.should_stop)
        if self.consumer is not None and not self._paused:
            self.consumer.pause_all(False)

    async def _halting(self, work: Awaitable[Commit]) -> Commit:
        """``work``'s commit; when it halts some partitions (the ``stop`` rule), halt those
        and return what is safe to commit on every partition. A halt of the whole
        pipeline (no partitions named, or a failure) propagates."""
        try:
            return await work
        except PipelineHalted as halt:
            if not halt.partitions or halt.state != State.HALTED:
                raise
            await self._halt_partitions(halt)
            return halt.commit

    async def _halt_partitions(self, halt: PipelineHalted) -> None:
        """Hold each partition of ``halt`` paused at its bad record (:mod:`etl.runtime.halts`)."""
        consumer = self.consumer
        self.forget_partitions(set(halt.partitions))
        for tp, where in halt.partitions.items():
            if consumer is None or tp not in self._assigned or tp in self.halts:
                continue
            reason = self.redact(where.reason)
            self.halts.add(tp, where.offset, reason)
            self._seeks.pop(tp, None)
            self._releasing.pop(tp, None)
            consumer.hold(tp)
            await consumer.seek(tp, where.offset)
            self._progress(tp).position = where.offset
            log.error(
                "partition halted by policy pipeline=%s partition=%s offset=%d reason=%r",
                self.name,
                tp_key(tp),
                where.offset,
                reason,
            )
        self.halts.show(paused=self._paused)

    async def _release_cleared(self) -> None:
        """Seek what :meth:`clear_halts` cleared to its committed offset, and resume it."""
        consumer = self.consumer
        for tp, offset in list(self._releasing.items()):
            if tp in self._assigned:
                committed = await consumer.committed(tp)
                await consumer.seek(tp, committed if committed is not None else offset)
            # Read again from here: nothing kept about it may be stale (a sink's view of
            # its destination, which the operator may have fixed before the resume).
            self.forget_partitions({tp})
            consumer.release(tp)
            # Done only now: a failed read above leaves it for the next iteration.
            del self._releasing[tp]

    async def _halt(self, halt: PipelineHalted, state: State = State.HALTED) -> None:
        """Halt the whole pipeline (or stop it as failed): commit what is safe, close."""
        self._ended = True
        try:
            await self._commit(halt.commit)
        except Exception as exc:
            log.error("commit on halt failed pipeline=%s error=%r", self.name, self._text(exc))
        reason = self.redact(halt.reason)
        self.status.fail(state, reason)
        log.error(
            "pipeline halted by policy pipeline=%s reason=%r committed=%s",
            self.name,
            reason,
            {tp_key(tp): off for tp, off in halt.commit.items()},
        )
        await self._close_clients()

    async def _rewind(self) -> None:
        """Seek back to the start of the uncommitted batch so it is processed again."""
        if self.consumer is None:
            return
        self.drop_partitions(set(self._batch_start))
        for tp, offset in self._batch_start.items():
            # A halted partition waits at its bad record; a cleared one is sought anyway.
            if tp in self._assigned and tp not in self.halts and tp not in self._releasing:
                committed = await self.consumer.committed(tp)
                await self.consumer.seek(tp, committed if committed is not None else offset)
            self._seeks.pop(tp, None)
        self._batch_start = {}

    async def _commit(self, commit: Commit) -> None:
        if not commit or self.consumer is None:
            return
        owned = {tp: off for tp, off in commit.items() if tp in self._assigned}
        if not owned:
            return
        try:
            await self.consumer.commit(owned)
        except CommitFailed as exc:
            # Lost the partitions in a rebalance: the new owner re-reads from the
            # last commit, so the records are redelivered, never lost.
            log.warning("commit failed pipeline=%s error=%r", self.name, self._text(exc))
            return
        for tp, offset in owned.items():
            self._progress(tp).committed = offset

    def _progress(self, tp: TopicPartition) -> PartitionProgress:
        key = tp_key(tp)
        progress = self.status.partitions.get(key)
        if progress is None:
            progress = self.status.partitions[key] = PartitionProgress()
        return progress

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        if self.consumer is None:
            # Closing (stop or halt): what was safe is committed already; keep the
            # partitions' last progress in the status.
            self._assigned -= revoked
            return
        async with self._lock:
            if not self._ended and self.consumer is not None:
                try:
                    await self._commit(await self.flush_partitions(revoked))
                except PipelineHalted as halt:
                    # The new owner reads the bad record again (and halts on it): commit
                    # what is safe; a halted partition that stays here halts now.
                    await self._commit(halt.commit)
                    kept = {tp: h for tp, h in halt.partitions.items() if tp not in revoked}
                    self.drop_partitions(revoked)
                    if kept and halt.state == State.HALTED:
                        await self._halt_partitions(PipelineHalted(halt.reason, partitions=kept))
                except Exception as exc:
                    log.error(
                        "flush on revoke failed pipeline=%s error=%r",
                        self.name,
                        self._text(exc),
                    )
                    self.drop_partitions(revoked)
            self._assigned -= revoked
            for tp in revoked:
                self.status.partitions.pop(tp_key(tp), None)
        log.info(
            "partitions revoked pipeline=%s partitions=%s",
            self.name,
            sorted(tp_key(tp) for tp in revoked),
        )

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned |= assigned
        for tp in assigned:
            self._progress(tp)
        # A halt (or a cleared one) stays with a partition this worker still owns; one
        # that went elsewhere is forgotten: its new owner halts at the bad record again.
        gone = {tp for tp in (*self.halts, *self._releasing) if tp not in self._assigned}
        if gone:
            self.halts.forget(gone)
            for tp in gone:
                self._releasing.pop(tp, None)
                if self.consumer is not None:
                    self.consumer.release(tp)
            self.forget_partitions(gone)
            self.halts.show(paused=self._paused)
            log.info(
                "halts forgotten, partitions moved pipeline=%s partitions=%s",
                self.name,
                sorted(tp_key(tp) for tp in gone),
            )
        log.info(
            "partitions assigned pipeline=%s partitions=%s",
            self.name,
            sorted(tp_key(tp) for tp in assigned),
        )

    async def refresh_progress(self) -> None:
        """Update committed and end offsets of the assigned partitions (for lag)."""
        consumer = self.consumer
        if consumer is None or not self._assigned:
            return
        assigned = [tp for tp in self._assigned]
        try:
            ends = await consumer.end_offsets(assigned)
        except Exception:
            return
        for tp in assigned:
            if tp not in self._assigned:
                continue  # revoked while the offsets were read: not ours to show
            progress = self._progress(tp)
            # end_offsets already takes the fetch high-water mark into account (some
            # brokers report the start of the last record batch + 1).
            progress.end = ends.get(tp)
            if progress.committed is None:
                try:
                    committed = await consumer.committed(tp)
                except Exception:
                    continue
                if tp in self._assigned:
                    progress.committed = committed
