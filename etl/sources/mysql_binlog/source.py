"""The ``mysql_binlog`` source service: preflight, position, reader thread, producer.

Only the worker holding the source's lock on the server runs it (:mod:`.leader`);
the others stand by. Lifecycle of one run: check the server (:mod:`.preflight`; a
failed check marks the source FAILED with every problem and leaves the worker
running), load the
saved position, decide where to start, create the table topics, start the
reader thread, then submit its batches and save the position of each
acknowledged transaction end. A lost broker or server connection restarts the
run from the last acknowledged position with backoff; a clean stop hands over
everything up to a transaction end and saves that position, so a restart
neither loses nor repeats a change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pymysql
from confluent_kafka import KafkaException
from mode import Service

from etl.config import ETLSettings
from etl.deadletter import DeadLetterWriter
from etl.errors import FatalError, RetriableError
from etl.kafka import describe_error, ensure_topics, topic_partitions
from etl.redact import Redactor
from etl.runtime.native import NativeProducer, ProduceError, is_record_error, produce_error
from etl.runtime.status import PartitionProgress, PipelineStatus, State
from etl.sources.mysql_binlog.changes import SourceHalted
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import (
    ACCESS_DENIED_CODES,
    connect,
    error_code,
    server_label,
)
from etl.sources.mysql_binlog.envelope import topic_for
from etl.sources.mysql_binlog.handoff import DeadRow, Handoff, Handover
from etl.sources.mysql_binlog.leader import LOCK_INTERVAL, SourceLock, lock_name
from etl.sources.mysql_binlog.position import BinlogPosition, PositionStore
from etl.sources.mysql_binlog.preflight import (
    PreflightError,
    ServerInfo,
    run_preflight,
)
from etl.sources.mysql_binlog.progress import BinlogProgress
from etl.sources.mysql_binlog.reader import BinlogReader, PositionPurged
from etl.sources.mysql_binlog.start import StartPlan, plan_start

log = logging.getLogger("etl.source.mysql_binlog")

STOP_TIMEOUT = 30.0


@dataclass(slots=True)
class _DeadRecord:
    """What the dead-letter writer needs of a change that was never a Kafka record."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1
    timestamp: int = -1
    headers: list[Any] = field(default_factory=list)


class MySQLBinlogSource(Service):
    """Publishes a MySQL/MariaDB database's row changes to Kafka (one topic per table)."""

    kind = "source"

    def __init__(
        self,
        config: MySQLBinlogSourceConfig,
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
        self.policy = config.on_error or settings.errors.policy
        self.server = server_label(config)
        self.store: PositionStore | None = None
        self.status = PipelineStatus(
            name=config.name,
            kind=self.kind,
            source=f"mysql://{self.server}/{config.database}",
            target=f"{config.topic_prefix}_*",
            dead_letter_topic=config.dead_letter_topic or settings.errors.dead_letter_topic,
        )
        self.producer: NativeProducer | None = None
        self.reader: BinlogReader | None = None
        self.handoff: Handoff | None = None
        self.topics: dict[str, int] = {}
        self.acked: BinlogPosition | None = None
        self._last_save = 0.0
        self._stopping = False
        self._paused = False
        self._resnapshot = False
        self._finished = asyncio.Event()
        self._stop_event = asyncio.Event()
        self.lock = SourceLock(config, lock_name(settings.kafka.group_prefix, config.name))
        self._lock_lost = False
        self.progress = BinlogProgress(config, PartitionProgress())

    # ---- lifecycle ------------------------------------------------------------------

    async def on_start(self) -> None:
        self.status.state = State.STARTING
        self.add_future(self._main())

    async def on_stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        reader = self.reader
        if reader is not None:
            reader.request_stop()
        try:
            await asyncio.wait_for(self._finished.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("source stop timed out, cutting the connection source=%s", self.name)
            if self.reader is not None:
                self.reader.abort()
            try:
                await asyncio.wait_for(self._finished.wait(), 5)
            except TimeoutError:
                pass
        if self.status.state in (State.RUNNING, State.STARTING, State.PAUSED):
            self.status.state = State.FINISHED

    def pause(self) -> None:
        """Stop reading at the next transaction end (the position is kept)."""
        self._paused = True
        if self.reader is not None:
            self.reader.pause()
        if self.status.state == State.RUNNING:
            self.status.state = State.PAUSED

    def resume(self) -> None:
        """Read on after :meth:`pause`."""
        self._paused = False
        if self.reader is not None:
            self.reader.resume_reading()
        if self.status.state == State.PAUSED:
            self.status.state = State.RUNNING

    async def _main(self) -> None:
        delay = 1.0
        try:
            while not self._stopping:
                try:
                    if not await self._elected():
                        return
                    await self._run()
                    delay = 1.0
                except asyncio.CancelledError:
                    raise
                except PreflightError as exc:
                    self._fail(State.FAILED, str(exc), "source preflight failed")
                    return
                except PositionPurged as exc:
                    if self.config.snapshot != "when_needed" or self._resnapshot:
                        self._fail(State.FAILED, str(exc), "source failed")
                        return
                    log.error("%s; taking a new snapshot source=%s", exc, self.name)
                    self._resnapshot = True
                except FatalError as exc:
                    self._fail(State.FAILED, str(exc), "source failed")
                    return
                except SourceHalted as exc:
                    self._fail(State.STOPPED, str(exc), "source halted by policy")
                    return
                except Exception as exc:
                    if self._stopping:
                        return
                    if isinstance(exc, pymysql.err.MySQLError) and (
                        error_code(exc) in ACCESS_DENIED_CODES
                    ):
                        self._fail(State.FAILED, describe_error(exc), "source cannot log in")
                        return
                    text = self.redact(describe_error(exc))
                    self.status.fail(State.FAILED, f"retrying: {text}")
                    log.warning(
                        "source run failed, retrying source=%s error=%r retry_in=%.0fs",
                        self.name,
                        text,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            await asyncio.to_thread(self.lock.release)
            self._finished.set()

    async def _elected(self) -> bool:
        """Wait until this worker holds the source's lock (False: the source is stopping)."""
        self._lock_lost = False
        standby = False
        while not self._stopping:
            if await asyncio.to_thread(self.lock.acquire):
                if standby:
                    log.info("source lock taken source=%s lock=%s", self.name, self.lock.name)
                return True
            if not standby:
                standby = True
                self.status.state = State.STARTING
                self.status.error = None
                log.info(
                    "source standby: another worker runs it source=%s lock=%s",
                    self.name,
                    self.lock.name,
                )
            try:
                await asyncio.wait_for(self._stop_event.wait(), LOCK_INTERVAL)
            except TimeoutError:
                pass
        return False

    async def _watch_lock(self) -> None:
        """While running: stop reading as soon as the lock is no longer ours."""
        while True:
            await asyncio.sleep(LOCK_INTERVAL)
            if not await asyncio.to_thread(self.lock.held):
                self._lock_lost = True
                log.error("source lock lost, stopping source=%s lock=%s", self.name, self.lock.name)
                if self.reader is not None:
                    self.reader.request_stop()
                return

    def _fail(self, state: State, text: str, what: str) -> None:
        text = self.redact(text)
        self.status.fail(state, text)
        log.error("%s source=%s error=%r", what, self.name, text)

    # ---- one run ------------------------------------------------------------------------

    async def _run(self) -> None:
        info = await asyncio.to_thread(self._preflight)
        for warning in info.warnings:
            log.warning("source preflight warning source=%s warning=%r", self.name, warning)
        self.producer = NativeProducer(self.settings.kafka, name=self.name)
        await self.producer.start()
        watcher = asyncio.ensure_future(self._watch_lock())
        try:
            self.store = PositionStore(self.settings, self.name, self.server, self.producer)
            self.status.group_id = self.store.topic
            await self.store.ensure_topic()
            if self.config.dead_letter_topic:
                errors = self.settings.errors
                await ensure_topics(
                    self.settings.kafka,
                    {self.config.dead_letter_topic: errors.dead_letter_partitions},
                )
            saved = await self.store.load()
            plan = plan_start(
                self.config,
                info,
                [p for p in (self.acked, saved) if p is not None],
                position_topic=self.store.topic,
                resnapshot=self._resnapshot,
            )
            log.info(
                "source starting source=%s server=%s database=%s start=%s reason=%r",
                self.name,
                self.server,
                self.config.database,
                plan,
                plan.reason,
            )
            for table, has_key in info.tables.items():
                await self._ensure_topic(table, has_key, True)
            await self._stream(plan, info)
        finally:
            watcher.cancel()
            producer, self.producer = self.producer, None
            try:
                if producer is not None:
                    await producer.stop()
            except Exception as exc:  # pragma: no cover - best effort on the way out
                log.warning("producer stop failed source=%s error=%r", self.name, exc)

    def _preflight(self) -> ServerInfo:
        connection = connect(self.config)
        try:
            return run_preflight(connection, self.config)
        finally:
            connection.close()

    async def _ensure_topic(
        self, table: str, has_key: bool, create: bool
    ) -> tuple[str, int] | None:
        """The topic of a table and its partition count, created if missing (and allowed)."""
        topic = topic_for(self.config.topic_prefix, table)
        if topic in self.topics:
            return topic, self.topics[topic]
        kafka = self.settings.kafka
        existing = await topic_partitions(kafka, [topic])
        if topic not in existing:
            if not create:
                return None
            if not kafka.auto_create_topics:
                raise FatalError(
                    f"topic {topic!r} of table {table!r} does not exist and "
                    "kafka.auto_create_topics is false"
                )
            partitions = (
                self.config.partitions_with_primary_key
                if has_key
                else self.config.partitions_without_primary_key
            )
            await ensure_topics(kafka, {topic: partitions})
            existing = await topic_partitions(kafka, [topic])
            existing.setdefault(topic, partitions)
        self.topics[topic] = existing[topic]
        return topic, existing[topic]

    async def _stream(self, plan: StartPlan, info: ServerInfo) -> None:
        loop = asyncio.get_running_loop()
        handoff = Handoff(loop, self.config.max_pending_bytes)
        reader = BinlogReader(
            self.config,
            loop=loop,
            handoff=handoff,
            ensure_topic=self._ensure_topic,
            resume=plan.resume,
            gtid=plan.gtid,
            snapshot=plan.snapshot,
            is_mariadb=info.is_mariadb,
            row_metadata_full=info.row_metadata_full,
            policy=self.policy,
            max_request_size=self.settings.kafka.max_request_size,
            on_retry=self._on_reader_retry,
        )
        if self._paused:
            reader.pause()
        if self._stopping or self._lock_lost:
            return
        self.reader, self.handoff = reader, handoff
        self.status.partitions["binlog"] = self.progress.progress
        self.status.state = State.PAUSED if self._paused else State.RUNNING
        self.status.error = None
        reader.start()
        try:
            await self._pump(handoff)
        except BaseException:
            reader.abort()
            handoff.discard()
            await self._join(reader)
            raise
        await self._join(reader)
        if reader.error is not None:
            raise reader.error

    async def _join(self, reader: BinlogReader) -> None:
        if reader.thread is not None:
            await asyncio.to_thread(reader.thread.join, STOP_TIMEOUT)
        if reader.alive:
            log.warning("binlog thread did not end source=%s", self.name)

    def _on_reader_retry(self, text: str | None) -> None:
        # Called from the reader thread; only plain attribute writes here.
        if text is None:
            if self.status.state == State.FAILED:
                self.status.state = State.PAUSED if self._paused else State.RUNNING
                self.status.error = None
        else:
            self.status.fail(State.FAILED, self.redact(text))

    # ---- submitting batches -------------------------------------------------------------

    async def _pump(self, handoff: Handoff) -> None:
        dead_letters = DeadLetterWriter(self.producer, self.status.dead_letter_topic, self.redact)
        halt: str | None = None
        idle = max(self.config.position_interval_ms / 1000, 0.2)
        while True:
            try:
                items = await asyncio.wait_for(handoff.get(), idle)
            except TimeoutError:
                # Nothing new: save the last acknowledged position if it is not saved yet.
                await self._save(force=False)
                continue
            if items is None:
                break
            if halt is not None:
                # Halted: publish nothing after the change that stopped the source.
                handoff.release(sum(item.nbytes for item in items))
                continue
            started = time.perf_counter()
            halt = await self._submit(items, dead_letters)
            if halt is not None and self.reader is not None:
                self.reader.request_stop()
            self.status.batches += 1
            self.status.last_batch_ms = (time.perf_counter() - started) * 1000
        await self._save(force=True)
        if halt is not None:
            raise SourceHalted(halt)

    async def _submit(self, items: list[Handover], dead_letters: DeadLetterWriter) -> str | None:
        """Queue every message of ``items`` on the producer, wait once, then save the mark."""
        producer = self.producer
        assert producer is not None
        produce = producer.client.produce
        producer.take_failures()
        letters = []
        records = nbytes = rows = 0
        mark: BinlogPosition | None = None
        halt: str | None = None
        for item in items:
            for topic, partition, messages in item.batches:
                for key, value, headers in messages:
                    while True:
                        try:
                            produce(topic, value, key, partition=partition, headers=headers)  # type: ignore[arg-type]
                            break
                        except BufferError:
                            # The client's queue is full: let it send, then go on.
                            await producer.serve(0.1)
                        except KafkaException as exc:
                            raise RetriableError(
                                f"produce to {topic!r} failed: {exc.args[0] if exc.args else exc}"
                            ) from None
                records += len(messages)
            for dead in item.dead:
                letters.append(await self._dead_letter(dead_letters, dead))
            nbytes += item.nbytes
            rows += item.rows
            mark = item.mark or mark
            halt = item.halt or halt
        # One wait for every acknowledgement before the position moves; a stop while
        # the broker is away gives up (the position stays at the last acknowledged end).
        await producer.wait_all(stopping=lambda: self._stopping)
        failed = 0
        for error, message in producer.take_failures():
            if not is_record_error(error):
                raise RetriableError(
                    f"produce to {message.topic()!r} failed: {error.str()}"
                ) from produce_error(error, record_error=False)
            failed += 1
            failure = produce_error(error, record_error=True)
            if self.policy == "stop":
                # Keep the position before this change: a restart publishes it again.
                mark = None
                halt = halt or (
                    f"cannot publish a change to topic {message.topic()!r}: "
                    f"{type(failure).__name__}: {failure}"
                )
                continue
            letters.append(await self._dead_letter(dead_letters, _failed_row(message, failure)))
        for letter in letters:
            await letter
        if self.handoff is not None:
            self.handoff.release(nbytes)
        self.status.consumed += rows
        self.status.produced += records - failed
        self.status.dead_lettered += len(letters)
        if mark is not None:
            self.acked = mark
            if mark.snapshot == "done":
                self._resnapshot = False
                await self._save(force=True)
            await self._save(force=False)
        return halt

    async def _dead_letter(self, writer: DeadLetterWriter, dead: DeadRow) -> Any:
        record = _DeadRecord(topic=dead.topic, key=dead.key, value=dead.value)
        return await writer.send(
            record,
            pipeline=self.name,
            stage="source",
            exc=dead.error,
            extra={
                "etl.source.table": dead.table,
                "etl.source.binlog_position": dead.position,
                "etl.source.sequence_id": dead.sequence,
            },
        )

    async def _save(self, *, force: bool) -> None:
        store = self.store
        position = self.acked
        if store is None or position is None or position == store.saved:
            return
        interval = self.config.position_interval_ms / 1000
        if not force and time.monotonic() - self._last_save < interval:
            return
        await store.save(position)
        self._last_save = time.monotonic()
        self.progress.progress.committed = self.progress.offset(position)

    # ---- progress ---------------------------------------------------------------------------

    async def refresh_progress(self) -> None:
        """Binlog bytes: read, saved (committed) and written by the server (end)."""
        if self.reader is not None:
            self.progress.update(
                self.reader.read_position, self.store.saved if self.store else None
            )


def _failed_row(message: Any, error: ProduceError) -> DeadRow:
    """A change the broker refused, as a dead letter (its value holds table and sequence)."""
    return DeadRow(message.topic(), "", message.key(), message.value(), "", "", error)
