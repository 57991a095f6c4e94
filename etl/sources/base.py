"""The source contract: a reader says what to publish, the runner does the rest.

A source type is a :class:`SourceReader` (``open`` with the saved state,
``next_batch``, ``snapshot``, ``close``) plus a config model. Its pipeline is a
:class:`SourceRunner` subclass that only names the reader; the runner owns the
lifecycle, the same for every source:

* **position**: the reader's ``snapshot()`` is saved (:mod:`etl.sources.position`)
  only after every message before it is acknowledged by the broker; a restart
  hands the last saved state to ``open``, so nothing acknowledged is lost;
* **retry**: a :class:`~etl.errors.RetriableError` from the reader or the broker
  ends the run, which starts again from the saved state with
  :func:`etl.runtime.policy.retry` and its :class:`~etl.runtime.policy.Backoff`;
  a :class:`~etl.errors.FatalError` or :class:`~etl.errors.GaveUp` fails the
  source, the worker keeps running;
* **record errors**: a message the reader cannot build (``SourceBatch.dead``, which
  come after the batch's messages) or the broker refuses is dead-lettered under
  ``continue`` (:mod:`etl.runtime.dead_letters`: a dead letter the broker does not
  take is retried alone; one that cannot be written halts the source); under
  ``stop`` the source halts as a whole (state ``halted``: it has no partitions to
  halt one by one) and its position stays before that batch;
* **pause / resume / status**, and **leadership** where a source must run once
  (:meth:`SourceRunner.leadership`);
* **exactly-once** (``kafka.processing_guarantee: exactly_once``): a transactional
  producer (``transactional.id`` ``<group_prefix>-source-<name>``: the next run, on
  any worker, fences the previous one and aborts what it left open) writes the
  batches and the saved state in one Kafka transaction, committed at the first
  batch that ends at a boundary (``SourceBatch.boundary``: a transaction end of the
  outside system); a refused record, a halt, a stop or a failed run abort it, so a
  ``read_committed`` reader sees everything once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import KafkaException
from mode import Service

from etl.config import ETLSettings, SourceConfigBase
from etl.deadletter import DeadLetterWriter
from etl.errors import (
    ConfigurationError,
    ETLError,
    FatalError,
    GaveUp,
    PipelineHalted,
    PipelineStopping,
    RetriableError,
)
from etl.kafka import describe_error, ensure_topics
from etl.redact import Redactor
from etl.runtime.dead_letters import DeadLetterRouter, Letter
from etl.runtime.native import NativeProducer, is_record_error, produce_error
from etl.runtime.policy import Backoff, resolve_policy, retry, wait_unless_stopping
from etl.runtime.status import PipelineStatus, State
from etl.sources.position import PositionStore

log = logging.getLogger("etl.source")

C = TypeVar("C", bound=SourceConfigBase)

#: Longest a stop waits for the current batch to be acknowledged.
STOP_TIMEOUT = 30.0


@dataclass(slots=True)
class SourceMessage:
    """One message to publish; ``partition`` -1 lets the producer choose."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    timestamp: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class DeadMessage:
    """Something the reader could not turn into a message: a record error."""

    topic: str
    key: bytes | None
    value: bytes | None
    error: BaseException
    #: Dead-letter headers saying where it came from (``etl.source.*``).
    extra: dict[str, str] = field(default_factory=dict)
    partition: int = -1
    offset: int = -1
    timestamp: int = -1
    headers: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class SourceBatch:
    """Messages in order, and what the reader could not read, since the last batch."""

    messages: list[SourceMessage] = field(default_factory=list)
    dead: list[DeadMessage] = field(default_factory=list)
    #: Rows/records read from the outside system (the status's ``consumed``).
    read: int = 0
    #: The reader's state after this batch may be committed (exactly-once): False
    #: while the outside system's transaction goes on in the next batch.
    boundary: bool = True


class SourceFailed(FatalError):
    """A :class:`~etl.errors.FatalError` that says in the log what failed."""

    def __init__(self, message: str, what: str = "source failed") -> None:
        super().__init__(message)
        self.what = what


class SourceReader(Protocol):
    """What a source type implements; the runner calls it from one task, in order."""

    async def open(self, saved: dict[str, Any] | None) -> None:
        """Connect and resume after ``saved`` (None: the source's first run)."""
        ...

    async def next_batch(self) -> SourceBatch | None:
        """The next messages (an empty batch when idle); None when the source is done."""
        ...

    def snapshot(self, failed: Sequence[SourceMessage]) -> dict[str, Any] | None:
        """The state to resume after everything returned so far (JSON-able).

        Called once a batch is acknowledged; ``failed`` are its messages the broker
        refused (dead-lettered). None: nothing new to save.
        """
        ...

    async def close(self) -> None:
        """Release connections (also after a failed run)."""
        ...


class Leadership(Protocol):
    """Elects the one worker that runs a source.

    :class:`etl.control.lease.KafkaLease` works on any Kafka broker; a lock of the
    outside system (the binlog source's MySQL ``GET_LOCK``) may serve instead. A
    blocking implementation runs its calls in a thread (``asyncio.to_thread``).
    """

    name: str
    #: Seconds between attempts to acquire it and between checks that it is held.
    check_seconds: float

    async def acquire(self) -> bool:
        """Try once, without waiting; True when this worker holds it now."""
        ...

    async def held(self) -> bool:
        """Still holding it."""
        ...

    async def release(self) -> None:
        """Give it up (the run is over: the next worker may take it at once)."""
        ...


class SourceRunner(Service, Generic[C]):
    """Runs one :class:`SourceReader`: position, retry, pause, status, dead letters."""

    kind = "source"

    def __init__(
        self,
        config: C,
        *,
        settings: ETLSettings,
        redact: Redactor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.settings = settings
        self.name = config.name
        self.redact = redact or Redactor(settings.secret_values())
        self.policy = resolve_policy(config.on_error, settings)
        self.status = PipelineStatus(
            name=config.name,
            kind=self.kind,
            source=self.describe_source(),
            target=self.describe_target(),
            dead_letter_topic=config.dead_letter_topic or settings.errors.dead_letter_topic,
        )
        self.producer: NativeProducer | None = None
        self.store: PositionStore | None = None
        self.exactly_once = settings.kafka.processing_guarantee == "exactly_once"
        #: Exactly-once: a Kafka transaction is open (batches since the last commit).
        self._in_transaction = False
        self._transaction_produced = 0
        self.lock = self.leadership()
        self.backoff = self.new_backoff()
        #: Seconds between position saves (0: after every batch); an idle source, a
        #: stop and a halt save the last acknowledged state at once.
        self.save_interval = 0.0
        self._unsaved: dict[str, Any] | None = None
        self._last_save = 0.0
        self._stopping = False
        self._paused = False
        self._finished = asyncio.Event()

    # ---- what a source type provides -------------------------------------------------

    def make_reader(self) -> SourceReader:
        """A new reader for one run."""
        raise NotImplementedError

    def describe_source(self) -> str:
        """Where the source reads (for the status; no credentials)."""
        return ""

    def describe_target(self) -> str:
        """Where it publishes (for the status)."""
        return ""

    def leadership(self) -> Leadership | None:
        """The lock that makes one worker run this source; None: every worker runs it."""
        return None

    def classify(self, exc: Exception) -> BaseException:
        """A reader's own exception as a branch of :mod:`etl.errors` (what the runner does).

        By default a broker or network error is retriable; others stay as they are
        (one outside :class:`~etl.errors.ETLError` fails the source as a crash).
        """
        if isinstance(exc, KafkaException | OSError) and not isinstance(exc, ETLError):
            return RetriableError(describe_error(exc))
        return exc

    def on_stopping(self) -> None:
        """The source is being stopped: wake a reader that waits (called once)."""

    def must_save(self, state: dict[str, Any]) -> bool:
        """Save this state now, whatever :attr:`save_interval` says."""
        return False

    def on_saved(self, state: dict[str, Any]) -> None:
        """``state`` is saved (progress for the status)."""

    # ---- lifecycle -------------------------------------------------------------------

    async def on_start(self) -> None:
        self.status.state = State.STARTING
        self.add_future(self._main())

    async def on_stop(self) -> None:
        self._stopping = True
        self.on_stopping()
        try:
            await asyncio.wait_for(self._finished.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("source stop timed out source=%s", self.name)
        if self.status.state in (State.RUNNING, State.STARTING, State.PAUSED):
            self.status.state = State.FINISHED

    def pause(self) -> None:
        """Publish nothing more after the current batch (the position is kept)."""
        self._paused = True
        if self.status.state == State.RUNNING:
            self.status.state = State.PAUSED

    def resume(self) -> None:
        """Publish on after :meth:`pause`."""
        self._paused = False
        if self.status.state == State.PAUSED:
            self.status.state = State.RUNNING

    def clear_halts(self) -> list[str]:
        """A source has no partitions to resume: a halted source halts as a whole and is
        restarted instead (by the supervisor). Always []."""
        return []

    async def refresh_progress(self) -> None:
        """Update the status's progress (called before each status publication)."""

    def stopping(self) -> bool:
        """True once the source is being stopped."""
        return self._stopping

    async def _main(self) -> None:
        try:
            await retry(
                self._run,
                what=f"source {self.name}",
                backoff=self.backoff,
                stopping=self.stopping,
                on_retry=self._on_retry,
            )
        except PipelineStopping:
            pass
        except PipelineHalted as exc:
            self._fail(State.HALTED, exc.reason, "source halted by policy")
        except (FatalError, GaveUp, ConfigurationError) as exc:
            self._fail(State.FAILED, str(exc), getattr(exc, "what", "source failed"))
        except Exception as exc:
            self._fail(State.FAILED, describe_error(exc), "source crashed")
        finally:
            if self.lock is not None:
                await self.lock.release()
            self._finished.set()

    def _on_retry(self, attempt: int, exc: BaseException, delay: float) -> None:
        text = self.redact(describe_error(exc))
        self.status.fail(State.FAILED, f"retrying: {text}")
        log.warning(
            "source run failed, retrying source=%s attempt=%d error=%r retry_in=%.1fs",
            self.name,
            attempt,
            text,
            delay,
        )

    def _fail(self, state: State, text: str, what: str) -> None:
        text = self.redact(text)
        self.status.fail(state, text)
        log.error("%s source=%s error=%r", what, self.name, text)

    async def _elected(self) -> bool:
        """Wait until this worker holds the source's lock (False: stopping)."""
        lock = self.lock
        if lock is None:
            return True
        standby = False
        while not self._stopping:
            if await lock.acquire():
                return True
            if not standby:
                standby = True
                log.info("source standby: another worker runs it source=%s", self.name)
            await wait_unless_stopping(lock.check_seconds, self.stopping)
        return False

    # ---- one run ---------------------------------------------------------------------

    async def _run(self) -> None:
        """One run: elected, connected, publishing until stopped (raises to be retried)."""
        try:
            if not await self._elected():
                return
        except Exception as exc:
            raise self._classified(exc) from exc
        self.producer = producer = self._make_producer()
        self._in_transaction = False
        reader = self.make_reader()
        try:
            await producer.start()
            self.store = PositionStore(self.settings, self.name, producer)
            self.status.group_id = self.store.topic
            await self.store.ensure_topic()
            if self.config.dead_letter_topic:
                errors = self.settings.errors
                await ensure_topics(
                    self.settings.kafka,
                    {self.config.dead_letter_topic: errors.dead_letter_partitions},
                )
            await reader.open(await self.store.load_state())
            if self._stopping:
                return
            self.status.state = State.PAUSED if self._paused else State.RUNNING
            self.status.error = None
            await self._pump(reader, producer, self.store)
        except Exception as exc:
            classified = self._classified(exc)
            if classified is exc:
                raise
            raise classified from exc
        finally:
            await reader.close()
            self.producer = None
            try:
                if self._in_transaction:
                    # Not ended at a boundary (stop, halt, failure): publish none of it.
                    self._in_transaction = False
                    await producer.abort_transaction()
                await producer.stop()
            except Exception as exc:  # pragma: no cover - best effort on the way out
                log.warning("producer stop failed source=%s error=%r", self.name, exc)

    def _classified(self, exc: Exception) -> BaseException:
        return self.classify(exc)

    def _make_producer(self) -> NativeProducer:
        kafka = self.settings.kafka
        if not self.exactly_once:
            return NativeProducer(kafka, name=self.name)
        # One stable transactional.id per source lets the next run (on any worker)
        # fence the previous producer and abort the transaction it left open.
        return NativeProducer(
            kafka,
            name=self.name,
            **{
                "transactional.id": f"{kafka.group_prefix}-source-{self.name}",
                "enable.idempotence": True,
                "transaction.timeout.ms": min(max(60_000, kafka.max_poll_interval_ms), 900_000),
            },
        )

    async def _pump(
        self, reader: SourceReader, producer: NativeProducer, store: PositionStore
    ) -> None:
        letters = self.dead_letter_router(
            DeadLetterWriter(producer, self.status.dead_letter_topic, self.redact)
        )
        watch = asyncio.ensure_future(self._watch_lock()) if self.lock is not None else None
        try:
            while not self._stopping:
                if self._paused and not self._in_transaction:
                    # Exactly-once: an open transaction is finished first (the reader
                    # pauses at its next boundary).
                    await self._save(store, force=True)
                    await wait_unless_stopping(0.2, self.stopping)
                    continue
                if watch is not None and watch.done():
                    raise RetriableError(f"source lock {self.lock.name!r} lost")  # type: ignore[union-attr]
                try:
                    batch = await reader.next_batch()
                except PipelineHalted:
                    await self._save(store, force=True)
                    raise
                if batch is None:
                    await self._save(store, force=True)
                    self.status.state = State.FINISHED
                    log.info("source finished source=%s", self.name)
                    await wait_unless_stopping(float("inf"), self.stopping)
                    return
                if self.exactly_once:
                    started = time.perf_counter()
                    if await self._publish_transaction(batch, reader, producer, store, letters):
                        self.status.batches += 1
                        self.status.last_batch_ms = (time.perf_counter() - started) * 1000
                    continue
                if not batch.messages and not batch.dead:
                    # Idle: save what is acknowledged (nothing is waiting on the broker).
                    self._unsaved = reader.snapshot([]) or self._unsaved
                    await self._save(store, force=True)
                    continue
                started = time.perf_counter()
                await self._publish(batch, reader, producer, store, letters)
                self.status.batches += 1
                self.status.last_batch_ms = (time.perf_counter() - started) * 1000
            await self._save(store, force=True)
        finally:
            if watch is not None:
                watch.cancel()

    async def _save(self, store: PositionStore, *, force: bool) -> None:
        """Save the last acknowledged state if there is one not saved yet and it is due."""
        state = self._unsaved
        if state is None or self.exactly_once:
            return  # exactly-once: saved inside each Kafka transaction
        due = time.monotonic() - self._last_save >= self.save_interval
        if not (force or due or self.must_save(state)):
            return
        await store.save_state(state)
        self._unsaved = None
        self._last_save = time.monotonic()
        self.on_saved(state)

    async def _publish(
        self,
        batch: SourceBatch,
        reader: SourceReader,
        producer: NativeProducer,
        store: PositionStore,
        letters: DeadLetterRouter,
    ) -> None:
        """Queue the batch, wait once for every acknowledgement, then save the position."""
        await self._produce(producer, batch)
        if batch.dead and self.policy == "stop":
            # The batch's messages (all before the bad record) are out; the position
            # stays before the batch, so a restart meets the bad record again.
            first = batch.dead[0]
            await self._save(store, force=True)
            raise PipelineHalted(f"cannot read a record for {first.topic!r}: {first.error}")
        failed: list[SourceMessage] = []
        dead = list(batch.dead)
        for error, native in producer.take_failures():
            if not is_record_error(error):
                raise RetriableError(
                    f"produce to {native.topic()!r} failed: {error.str()}"
                ) from produce_error(error, record_error=False)
            failure = produce_error(error, record_error=True)
            if self.policy == "stop":
                # The position stays before this batch: a restart publishes it again.
                await self._save(store, force=True)
                raise PipelineHalted(
                    f"cannot publish to topic {native.topic()!r}: {type(failure).__name__}: "
                    f"{failure}"
                )
            message = SourceMessage(
                native.topic(), native.key(), native.value(), native.partition()
            )
            failed.append(message)
            dead.append(DeadMessage(message.topic, message.key, message.value, failure))
        settled = await letters.settle([await self._dead_letter(letters, d) for d in dead])
        if settled.refused:
            # A dead letter that cannot be written: the position stays before the batch.
            await self._save(store, force=True)
            raise PipelineHalted(letters.halt_reason(*settled.refused[0]))
        self.status.consumed += batch.read
        self.status.produced += len(batch.messages) - len(failed)
        state = reader.snapshot(failed)
        if state is not None:
            self._unsaved = state
            await self._save(store, force=False)

    async def _produce(self, producer: NativeProducer, batch: SourceBatch) -> None:
        """Queue the batch's messages and wait once for every acknowledgement."""
        produce = producer.client.produce
        producer.take_failures()
        for message in batch.messages:
            kwargs: dict[str, Any] = {"headers": message.headers}
            if message.partition >= 0:
                kwargs["partition"] = message.partition
            if message.timestamp is not None and message.timestamp >= 0:
                kwargs["timestamp"] = message.timestamp
            while True:
                try:
                    produce(message.topic, message.value, message.key, **kwargs)
                    break
                except BufferError:
                    await producer.serve(0.1)
        await producer.wait_all(stopping=self.stopping)

    async def _publish_transaction(
        self,
        batch: SourceBatch,
        reader: SourceReader,
        producer: NativeProducer,
        store: PositionStore,
        letters: DeadLetterRouter,
    ) -> bool:
        """Exactly-once: produce the batch into the open Kafka transaction; at a
        boundary, save the reader's state in it and commit (False: nothing to do).

        A transaction of the outside system split over several batches stays in
        one Kafka transaction. A record the broker refuses cannot be dead-lettered
        (the refusal dooms the transaction): the transaction is aborted and the
        source halts before it, whatever the policy; so does a bad record under
        ``stop``. The run's end aborts a transaction still open.
        """
        if not batch.messages and not batch.dead:
            if not batch.boundary or self._in_transaction:
                return False  # idle, or inside a transaction of the outside system
            state = reader.snapshot([])
            if state is None:
                return False
            producer.begin_transaction()
            self._in_transaction = True
            await self._commit(producer, store, state)
            return True
        if not self._in_transaction:
            producer.begin_transaction()
            self._in_transaction = True
            self._transaction_produced = 0
        await self._produce(producer, batch)
        for error, native in producer.take_failures():
            failure = produce_error(error, record_error=is_record_error(error))
            if not failure.record_error:
                raise RetriableError(
                    f"produce to {native.topic()!r} failed: {error.str()}"
                ) from failure
            await self._abort(producer)
            raise PipelineHalted(
                f"cannot publish to topic {native.topic()!r}: {type(failure).__name__}: "
                f"{failure} (exactly_once: the transaction is aborted and the source stops "
                "before it)"
            )
        if batch.dead and self.policy == "stop":
            first = batch.dead[0]
            await self._abort(producer)
            raise PipelineHalted(f"cannot read a record for {first.topic!r}: {first.error}")
        # In a transaction nothing is sent again: a failed dead letter dooms it.
        pending = [await self._dead_letter(letters, dead) for dead in batch.dead]
        settled = await letters.settle(pending, retry_alone=False)
        if settled.unavailable is not None:
            raise RetriableError(f"dead letter failed: {settled.unavailable}")
        if settled.refused:
            await self._abort(producer)
            raise PipelineHalted(letters.halt_reason(*settled.refused[0]))
        self.status.consumed += batch.read
        self._transaction_produced += len(batch.messages)
        if batch.boundary:
            await self._commit(producer, store, reader.snapshot([]))
        return True

    async def _commit(
        self, producer: NativeProducer, store: PositionStore, state: dict[str, Any] | None
    ) -> None:
        """Save ``state`` inside the open transaction and commit both."""
        try:
            if state is not None:
                await store.save_state(state)
            await producer.commit_transaction({}, None)
        finally:
            self._in_transaction = False
        self.status.produced += self._transaction_produced
        self._transaction_produced = 0
        self._last_save = time.monotonic()
        if state is not None:
            self.on_saved(state)

    async def _abort(self, producer: NativeProducer) -> None:
        self._in_transaction = False
        self._transaction_produced = 0
        await producer.abort_transaction()

    @staticmethod
    def new_backoff() -> Backoff:
        """A source's back-off (1 s doubling to 30 s, never giving up): for its runs and
        for its dead letters."""
        return Backoff(first=1.0, ceiling=30.0)

    def dead_letter_router(self, writer: DeadLetterWriter) -> DeadLetterRouter:
        """How this source sends its dead letters (:mod:`etl.runtime.dead_letters`)."""
        return DeadLetterRouter(
            writer,
            pipeline=self.name,
            status=self.status,
            redact=self.redact,
            backoff=self.new_backoff,
            stopping=self.stopping,
        )

    async def _dead_letter(self, letters: DeadLetterRouter, dead: DeadMessage) -> Letter:
        return await letters.send(dead, "source", dead.error, extra=dead.extra)

    async def _watch_lock(self) -> None:
        """Returns as soon as the lock is no longer ours."""
        lock = self.lock
        assert lock is not None
        while not self._stopping:
            await wait_unless_stopping(lock.check_seconds, self.stopping)
            if not await lock.held():
                log.error("source lock lost, stopping source=%s lock=%s", self.name, lock.name)
                return
