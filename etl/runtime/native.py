"""The data path on librdkafka (confluent-kafka): a consumer and a producer for asyncio.

Why librdkafka and not aiokafka: aiokafka resolves one asyncio future per
produced message and allocates a Python object per record on both sides; a
profile of the worker put over half of its time there and a fifth in the
garbage collector. librdkafka batches, acknowledges and fetches in C threads;
the pipeline only hands it a batch and waits once (docs/performance.md).

Threading, and the rules that keep it safe:

* every call that can block or that serves consumer callbacks (``consume``,
  ``close``) runs on the consumer's own thread, one at a time, so the event
  loop never blocks on the broker;
* rebalance callbacks fire inside ``consume`` on that thread; they hand the
  work (flush the batch in hand, commit) to the event loop and wait for it, so
  a revoked partition's batch is committed before the partition is given up;
* commits, committed-offset and watermark reads run on a second thread: they
  must not queue behind a ``consume`` that is waiting for a rebalance callback;
* the producer's delivery reports are served only on the producer's own thread
  (``flush``/``poll`` there), so per-batch bookkeeping needs no locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import TopicPartition
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka import TopicPartition as NativeTopicPartition

from etl.config import KafkaSettings
from etl.errors import PipelineStopping, RetriableError

log = logging.getLogger("etl.kafka")

RebalanceHandler = Callable[[set[TopicPartition]], Awaitable[None]]

#: librdkafka error codes that concern one record: dead-letter it, never retry.
RECORD_ERROR_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
        KafkaError.INVALID_REQUIRED_ACKS,
    }
)


class ProduceError(Exception):
    """A produce failed; ``record_error`` says whether the record itself is at fault."""

    def __init__(self, error: KafkaError | str, *, record_error: bool) -> None:
        text = error.str() if isinstance(error, KafkaError) else str(error)
        super().__init__(text)
        self.error = error
        self.record_error = record_error


class MessageSizeTooLargeError(ProduceError):
    """The record is larger than ``max_request_size`` (or the topic's limit)."""


def produce_error(error: KafkaError | str, *, record_error: bool) -> ProduceError:
    """The exception for a failed produce, named after what went wrong."""
    if isinstance(error, KafkaError) and error.code() in (
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
    ):
        return MessageSizeTooLargeError(error, record_error=True)
    return ProduceError(error, record_error=record_error)


def is_record_error(error: KafkaError) -> bool:
    """True when the broker or client refused this record, not the connection."""
    return error.code() in RECORD_ERROR_CODES


_GC_TUNED = False


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated and collect young objects less often (once per process).

    A batch allocates tens of thousands of short-lived objects (messages, dicts,
    bytes); with the default thresholds the collector ran every 700 of them and
    kept walking the app's long-lived objects: about a third of a worker's CPU.
    Reference counting frees these objects anyway; the collector is only needed
    for cycles, which the data path does not make.
    """
    global _GC_TUNED
    if _GC_TUNED:
        return
    _GC_TUNED = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def common_config(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by every librdkafka client."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol.lower(),
        # Brokers that report an older ApiVersion than they serve are common in tests.
        "api.version.request": True,
        "log_level": 3,
    }
    if settings.security_protocol.endswith("SSL"):
        # Verified TLS by default: librdkafka checks the chain and the host name.
        config["enable.ssl.certificate.verification"] = True
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.ssl_check_hostname else "none"
        )
        if settings.ssl_cafile:
            config["ssl.ca.location"] = str(settings.ssl_cafile)
        if settings.ssl_certfile:
            config["ssl.certificate.location"] = str(settings.ssl_certfile)
        if settings.ssl_keyfile:
            config["ssl.key.location"] = str(settings.ssl_keyfile)
        if settings.ssl_password:
            config["ssl.key.password"] = settings.ssl_password.get_secret_value()
    if settings.security_protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        if settings.sasl_password:
            config["sasl.password"] = settings.sasl_password.get_secret_value()
    return config


def producer_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """``acks=all``, idempotent unless disabled, our batching and size limits."""
    config = common_config(settings)
    config.update(
        {
            "acks": "all",
            "enable.idempotence": settings.enable_idempotence,
            "linger.ms": settings.linger_ms,
            "message.max.bytes": settings.max_request_size,
            "batch.size": max(16384, min(settings.max_request_size, 1048576)),
            "compression.type": settings.compression_type or "none",
            # Five requests in flight: with idempotence (the default) librdkafka keeps a
            # partition's order across retries; without it, as in Kafka's own clients,
            # a retried request can land after a later one (docs/performance.md).
            "max.in.flight.requests.per.connection": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    config.update(overrides)
    return config


def consumer_config(
    settings: KafkaSettings, *, group_id: str, start_offset: str, **overrides: Any
) -> dict[str, Any]:
    """A consumer that never commits or stores offsets on its own."""
    config = common_config(settings)
    config.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": start_offset,
            # Some brokers (tansu) hold a JoinGroup for half the session time-out; the
            # librdkafka default (45 s) made a group join take 23 s there.
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "fetch.wait.max.ms": 100,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": 30000,
        }
    )
    config.update(overrides)
    return config


class Record:
    """A consumed record with attributes (what sinks and dead letters read)."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        timestamp: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers or []
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"Record({self.topic}/{self.partition}@{self.offset})"


def to_record(message: Any) -> Record:
    """A librdkafka message as a :class:`Record` (an aiokafka-like record passes through)."""
    if isinstance(message, Record) or not callable(getattr(message, "topic", None)):
        return message  # type: ignore[no-any-return]
    return _native_record(message)


def _native_record(message: Any) -> Record:
    """A librdkafka message as a Record (``getmany`` sees only native messages)."""
    return Record(
        message.topic(),
        message.partition(),
        message.offset(),
        message.key(),
        message.value(),
        message.headers(),
        message.timestamp()[1],
    )


def _tp(native: NativeTopicPartition) -> TopicPartition:
    return TopicPartition(native.topic, native.partition)


def _native(tp: TopicPartition, offset: int = OFFSET_INVALID) -> NativeTopicPartition:
    return NativeTopicPartition(tp.topic, tp.partition, offset)


class NativeConsumer:
    """A librdkafka group consumer driven from asyncio (see the module notes)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        start_offset: str = "latest",
        name: str = "",
        records: bool = True,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = consumer_config(settings, group_id=group_id, start_offset=start_offset)
        if instance_id:
            # Static membership (exactly-once pipelines): a restarted worker takes its
            # predecessor's place in the group at once, without waiting for the broker
            # to evict the dead member (some never do), and fences it if it still runs.
            self.config["group.instance.id"] = instance_id
        self.config["error_cb"] = self._on_error
        self.name = name
        #: Return :class:`Record` objects (sinks) or the raw librdkafka messages (transforms).
        self.records = records
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_thread = concurrent.futures.ThreadPoolExecutor(1, f"etl-consume-{name}")
        self._io_thread = concurrent.futures.ThreadPoolExecutor(1, f"etl-commit-{name}")
        self._on_assigned: RebalanceHandler | None = None
        self._on_revoked: RebalanceHandler | None = None
        self._topics: list[str] = []
        self._paused: set[TopicPartition] = set()
        #: What the rebalance callbacks assigned (read without calling librdkafka).
        self._assigned: set[TopicPartition] = set()
        #: Orders pause decisions of the rebalance callback and of pause_all.
        self._pause_lock = threading.Lock()
        self._pause_all = False
        #: Partitions kept paused whatever pause_all says, also across a rebalance that
        #: assigns them again (partitions halted by the ``stop`` policy).
        self._held: set[TopicPartition] = set()
        self._closed = threading.Event()
        self._last_error = ""
        self._fatal = ""

    # ---- lifecycle ----------------------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str],
        *,
        on_assigned: RebalanceHandler | None = None,
        on_revoked: RebalanceHandler | None = None,
    ) -> None:
        """Topics and the async rebalance handlers (called on the event loop)."""
        self._topics = list(topics)
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def start(self) -> None:
        """Create the client and subscribe (joining happens in the first polls)."""
        self._loop = asyncio.get_running_loop()
        self._consumer = await self._run(self._poll_thread, Consumer, self.config)
        self._consumer.subscribe(self._topics, on_assign=self._assign_cb, on_revoke=self._revoke_cb)

    async def stop(self) -> None:
        """Leave the group (revoke handlers run first) and close the client."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self._closed.set()
            try:
                await self._run(self._poll_thread, consumer.close)
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed pipeline=%s error=%r", self.name, str(exc))
        self._poll_thread.shutdown(wait=False)
        self._io_thread.shutdown(wait=False)

    async def _run(self, pool: concurrent.futures.Executor | None, fn: Any, *args: Any) -> Any:
        loop = self._loop or asyncio.get_running_loop()
        return await loop.run_in_executor(pool, fn, *args)

    def _on_error(self, error: KafkaError) -> None:
        text = error.str()
        if error.fatal() or error.code() == KafkaError._FATAL:
            # Fenced (another member took this static member's place): this consumer
            # can do nothing more; the next poll stops the pipeline.
            self._fatal = text
        if text != self._last_error:
            self._last_error = text
            log.warning("kafka consumer error pipeline=%s error=%r", self.name, text)

    # ---- rebalance (called on the poll thread, inside consume) -----------------------

    def _call_loop(self, handler: RebalanceHandler | None, tps: set[TopicPartition]) -> None:
        if handler is None or self._loop is None or self._loop.is_closed():
            return
        future: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(
            _as_coroutine(handler(tps)), self._loop
        )
        try:
            future.result(timeout=max(60.0, self.settings.max_poll_interval_ms / 1000))
        except Exception as exc:
            log.error("rebalance handler failed pipeline=%s error=%r", self.name, str(exc))

    def _assign_cb(self, consumer: Consumer, partitions: list[NativeTopicPartition]) -> None:
        # Assign here (not after the callback) so that a paused pipeline's new
        # partitions can be paused before anything is fetched for them.
        consumer.assign(partitions)
        tps = {_tp(p) for p in partitions}
        # Under the lock: a resume asked meanwhile either sees these partitions (and
        # is queued after this pause) or is seen here (and nothing is paused).
        with self._pause_lock:
            self._assigned = tps
            paused = (
                partitions if self._pause_all else [p for p in partitions if _tp(p) in self._held]
            )
            if paused:
                consumer.pause(paused)
                self._paused |= {_tp(p) for p in paused}
            # librdkafka keeps a partition's pause across a revoke and a new assignment
            # of it: one paused before this rebalance and not to be paused now (a resume
            # came while nothing was assigned) is resumed here, or it would stay silent.
            fetched = [p for p in partitions if _tp(p) not in self._paused]
            if fetched:
                consumer.resume(fetched)
        self._call_loop(self._on_assigned, tps)

    def _revoke_cb(self, consumer: Consumer, partitions: list[NativeTopicPartition]) -> None:
        tps = {_tp(p) for p in partitions}
        self._call_loop(self._on_revoked, tps)
        self._paused -= tps
        self._assigned = set()
        consumer.unassign()

    # ---- polling ----------------------------------------------------------------------

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """One poll: records grouped by partition, in offset order."""
        consumer = self._consumer
        if consumer is None:
            return {}
        messages = await self._run(
            self._poll_thread, self._consume, consumer, max_records, timeout_ms / 1000
        )
        if self._fatal:
            raise ConsumerFenced(f"consumer unusable: {self._fatal}")
        if not messages:
            return {}
        batch: dict[TopicPartition, list[Any]] = {}
        convert = _native_record if self.records else None
        # A fetch returns runs of one partition: look the list up only when it changes.
        current: list[Any] = []
        where: tuple[str, int] | None = None
        several_topics = len(self._topics) != 1
        for message in messages:
            if message.error() is not None:
                self._on_error(message.error())
                continue
            partition = message.partition()
            if (
                where is None
                or partition != where[1]
                or (several_topics and message.topic() != where[0])
            ):
                where = (message.topic(), partition)
                tp = TopicPartition(*where)
                current = batch.get(tp) or batch.setdefault(tp, [])
            current.append(convert(message) if convert else message)
        return batch

    def _consume(self, consumer: Consumer, max_records: int, timeout: float) -> list[Any]:
        if self._closed.is_set():
            return []
        return consumer.consume(max_records, timeout)  # type: ignore[no-any-return]

    # ---- offsets ------------------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``{tp: next offset}``; raises :class:`CommitFailed` if the group moved on."""
        consumer = self._consumer
        if consumer is None or not offsets:
            return
        natives = [_native(tp, off) for tp, off in offsets.items()]
        try:
            await self._run(self._io_thread, self._commit_sync, consumer, natives)
        except KafkaException as exc:
            raise CommitFailed(exc.args[0].str() if exc.args else str(exc)) from None

    @staticmethod
    def _commit_sync(consumer: Consumer, natives: list[NativeTopicPartition]) -> None:
        result = consumer.commit(offsets=natives, asynchronous=False)
        for part in result or ():
            if part.error is not None:
                raise KafkaException(part.error)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (None if nothing was committed)."""
        consumer = self._consumer
        if consumer is None:
            return None
        parts = await self._run(self._io_thread, consumer.committed, [_native(tp)], 10.0)
        offset = parts[0].offset if parts else OFFSET_INVALID
        return offset if offset >= 0 else None

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next."""
        consumer = self._consumer
        if consumer is None:
            return

        def seek() -> None:
            try:
                consumer.seek(_native(tp, offset))
            except KafkaException:
                # Not fetching yet (just assigned): re-assign with the offset instead,
                # keeping every other partition where it is.
                current = consumer.position(consumer.assignment())
                wanted = [
                    _native(tp, offset) if (p.topic, p.partition) == tp else p for p in current
                ]
                consumer.assign(wanted)
                # Keep what is paused paused through the new assignment (a halted
                # partition sought back to its bad record, say).
                paused = [p for p in wanted if _tp(p) in self._paused]
                if paused:
                    consumer.pause(paused)

        await self._run(self._io_thread, seek)

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermark of each partition, asked of the broker."""
        consumer = self._consumer
        if consumer is None:
            return {}

        def read() -> dict[TopicPartition, int]:
            out = {}
            for tp in tps:
                _low, high = consumer.get_watermark_offsets(_native(tp), timeout=5.0)
                # Some brokers report the end as the start of the last record batch + 1;
                # the fetch high-water mark this consumer saw is never below the truth.
                try:
                    _low, seen = consumer.get_watermark_offsets(_native(tp), cached=True)
                except KafkaException:
                    seen = -1
                out[tp] = max(high, seen)
            return out

        # Not on the commit thread: a status refresh (one broker round trip per
        # partition, every second) must never make a batch's commit wait. Not on the
        # event loop either: a librdkafka call there can wait for a rebalance callback
        # that itself waits for the loop (a frozen worker, seen during a rebalance).
        return await self._run(None, read)  # type: ignore[no-any-return]

    def highwater(self, tp: TopicPartition) -> int | None:
        """The high watermark seen in the last fetch (no broker round trip)."""
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            _low, high = consumer.get_watermark_offsets(_native(tp), cached=True)
        except KafkaException:
            return None
        return high if high >= 0 else None

    async def group_metadata(self) -> Any:
        """The group generation and member, for ``send_offsets_to_transaction``
        (read on the io thread: the event loop never calls the consumer)."""
        consumer = self._consumer
        if consumer is None:
            raise RetriableError("consumer is closed")
        return await self._run(self._io_thread, consumer.consumer_group_metadata)

    # ---- pause ----------------------------------------------------------------------------

    # The event loop never calls librdkafka's consumer itself: such a call can wait
    # for a rebalance callback running on the poll thread, which waits for the loop
    # (a frozen worker). Pause and resume are queued on the commit thread, in order.

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned now, as the rebalance handlers reported them."""
        return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        consumer = self._consumer
        if consumer is None or not tps:
            return
        self._paused |= set(tps)
        self._io_thread.submit(_quietly, consumer.pause, [_native(tp) for tp in tps])

    def resume(self, *tps: TopicPartition) -> None:
        consumer = self._consumer
        if consumer is None or not tps:
            return
        self._paused -= set(tps)
        self._io_thread.submit(_quietly, consumer.resume, [_native(tp) for tp in tps])

    async def settled(self) -> None:
        """Return once every pause and resume asked so far reached librdkafka."""
        if self._consumer is None:
            return
        await self._run(self._io_thread, lambda: None)

    def pause_all(self, paused: bool) -> None:
        """Keep every partition (also ones assigned later) paused or not; a held
        partition stays paused either way."""
        with self._pause_lock:
            self._pause_all = paused
            tps = self.assignment()
            if paused:
                self.pause(*tps)
            else:
                self.resume(*(tps - self._held))

    def hold(self, tp: TopicPartition) -> None:
        """Pause ``tp`` until :meth:`release`, whatever :meth:`pause_all` says, also when a
        rebalance assigns it to this consumer again (a halted partition)."""
        with self._pause_lock:
            self._held.add(tp)
            if tp in self.assignment():
                self.pause(tp)

    def release(self, tp: TopicPartition) -> None:
        """Undo :meth:`hold`: fetch ``tp`` again unless every partition is paused."""
        with self._pause_lock:
            self._held.discard(tp)
            if not self._pause_all and tp in self.assignment():
                self.resume(tp)


class CommitFailed(Exception):
    """The commit was refused (a rebalance took the partitions): redelivery, not loss."""


class ConsumerFenced(Exception):
    """A fatal consumer error: another member with this static identity took over."""


class ProducerFenced(Exception):
    """A producer's fatal error (a newer transactional producer with its id took over)."""


class NativeProducer:
    """A librdkafka producer for asyncio: batch produce + one wait, or aiokafka-style send."""

    def __init__(self, settings: KafkaSettings, name: str = "", **overrides: Any) -> None:
        self.settings = settings
        self.config = producer_config(settings, **overrides)
        self.config["error_cb"] = self._on_error
        # One delivery callback for every record produced without its own: it keeps
        # only failures (a per-record callback object costs ~3 us a record).
        self.config["on_delivery"] = self._delivered
        self._failures: list[tuple[KafkaError, Any]] = []
        self.name = name
        self.max_request_size = settings.max_request_size
        self._producer: Producer | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, f"etl-produce-{name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Future[None] | None = None
        self._waiting = 0
        self._last_error = ""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = await self._loop.run_in_executor(self._thread, Producer, self.config)
        if self.config.get("transactional.id"):
            # Fences any older producer with this id and aborts its open transaction.
            await self._txn(self._producer.init_transactions, 30.0)

    # ---- transactions (exactly-once only: docs/transforms.md, "Exactly-once") ----------

    @property
    def transactional(self) -> bool:
        return bool(self.config.get("transactional.id"))

    def begin_transaction(self) -> None:
        """Open the batch's transaction (a local call; no broker round trip)."""
        self.client.begin_transaction()

    async def commit_transaction(self, offsets: dict[TopicPartition, int], group: Any) -> None:
        """Add the consumed ``offsets`` to the transaction and commit it.

        Raises :class:`ProducerFenced` when a newer producer took the id over,
        :class:`RetriableError` when the transaction had to be aborted.
        """
        producer = self.client
        natives = [_native(tp, off) for tp, off in offsets.items()]
        try:
            if natives:
                await self._txn(producer.send_offsets_to_transaction, natives, group, 30.0)
            await self._txn(producer.commit_transaction, 60.0)
        except KafkaException as exc:
            await self.abort_transaction()
            raise RetriableError(f"transaction not committed: {exc.args[0].str()}") from None

    async def abort_transaction(self) -> None:
        """Abort the open transaction: nothing of it is visible to ``read_committed`` readers."""
        producer = self._producer
        if producer is None:
            return
        try:
            await self._txn(producer.abort_transaction, 60.0)
        except KafkaException as exc:
            # Nothing open (already aborted or never begun) is fine; fenced is not.
            if exc.args[0].code() != KafkaError._STATE:
                raise

    async def _txn(self, call: Any, *args: Any) -> Any:
        """A transactional call on the producer thread; retriable errors are retried."""
        loop = self._loop or asyncio.get_running_loop()
        for attempt in range(5):
            try:
                return await loop.run_in_executor(self._thread, call, *args)
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or error.code() == KafkaError._FATAL:
                    raise ProducerFenced(f"producer unusable: {error.str()}") from None
                if error.retriable() and attempt < 4:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                raise
        return None  # pragma: no cover

    async def stop(self, timeout: float = 10.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None and self._loop is not None:
            await self._loop.run_in_executor(self._thread, producer.flush, timeout)
        self._thread.shutdown(wait=False)

    def _on_error(self, error: KafkaError) -> None:
        text = error.str()
        if text != self._last_error:
            self._last_error = text
            log.warning("kafka producer error pipeline=%s error=%r", self.name, text)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        # Runs on the producer thread only.
        if err is not None:
            self._failures.append((err, msg))

    def take_failures(self) -> list[tuple[KafkaError, Any]]:
        """Failed deliveries of records produced on ``client`` since the last call.

        Read after :meth:`wait_all`: every delivery report has been served then.
        """
        failures, self._failures = self._failures, []
        return failures

    @property
    def client(self) -> Producer:
        if self._producer is None:
            raise RetriableError("producer is not started")
        return self._producer

    # ---- the batch path (transforms produce on ``client`` with DeliveryBatch) ----

    async def wait_all(
        self, timeout: float | None = None, *, stopping: Callable[[], bool] | None = None
    ) -> None:
        """Wait until everything queued so far is acknowledged or failed.

        Waits in steps of a second so that a pipeline being stopped while the
        broker is away gives up (:class:`PipelineStopping`, nothing committed)
        instead of holding the worker's shutdown for the delivery time-out.
        """
        limit = timeout if timeout is not None else self._delivery_timeout()
        loop = self._loop or asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            left = await self.serve(min(1.0, max(0.0, deadline - loop.time())), flush=True)
            if not left:
                return
            if stopping is not None and stopping():
                raise PipelineStopping(f"stopped with {left} records not acknowledged")
            if loop.time() >= deadline:
                raise RetriableError(f"{left} records not acknowledged within {limit:.0f}s")

    def _delivery_timeout(self) -> float:
        return float(self.config.get("message.timeout.ms", 300000)) / 1000 + 5

    def serve_from_thread(self, timeout: float) -> None:
        """Like :meth:`serve`, for a thread other than the event loop's (blocks it)."""
        self._thread.submit(self.client.poll, timeout).result()

    async def serve(self, timeout: float, *, flush: bool = False) -> int:
        """Serve delivery reports on the producer thread (``timeout`` s); returns what is left."""
        producer = self.client
        loop = self._loop or asyncio.get_running_loop()
        if flush:
            return await loop.run_in_executor(self._thread, producer.flush, timeout)  # type: ignore[no-any-return]
        await loop.run_in_executor(self._thread, producer.poll, timeout)
        return len(producer)

    # ---- aiokafka-style send (dead letters, error topics, positions) ----------------------

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one record; the returned future resolves on its acknowledgement."""
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                result: Any = (msg.topic(), msg.partition(), msg.offset())
                loop.call_soon_threadsafe(_settle, future, result, None)
            else:
                exc = produce_error(err, record_error=is_record_error(err))
                loop.call_soon_threadsafe(_settle, future, None, exc)

        kwargs: dict[str, Any] = {"headers": list(headers or ()) or None, "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self.client.produce(topic, value, key, **kwargs)
                break
            except BufferError:
                await self.serve(0.1)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                record = isinstance(error, KafkaError) and is_record_error(error)
                raise produce_error(error or str(exc), record_error=bool(record)) from None
            except (TypeError, ValueError, OverflowError) as exc:
                raise ProduceError(str(exc), record_error=True) from None
        self._ensure_poller()
        return future

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_until_empty())

    async def _poll_until_empty(self) -> None:
        while self._producer is not None and len(self._producer) > 0:
            await self.serve(0.05)


def _quietly(call: Any, partitions: list[NativeTopicPartition]) -> None:
    try:
        call(partitions)
    except (KafkaException, RuntimeError) as exc:  # closed meanwhile, or not assigned
        log.debug("consumer pause/resume skipped error=%r", str(exc))


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable
