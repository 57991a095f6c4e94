"""The ``mysql_binlog`` source on the source runner: preflight, start plan, reader thread.

The runner (:mod:`etl.sources.base`) owns the lifecycle: leadership (the named
lock of :mod:`.leader`: one worker per source), retry with backoff, pause,
status, dead letters, and saving the position once the broker has acknowledged
everything before it. This module says what is binlog-specific: a run checks
the server (:mod:`.preflight`; a failed check marks the source FAILED with every
problem and leaves the worker running), decides where to start from the saved
position (:mod:`.start`), creates the table topics and starts the reader thread;
its handovers become batches, each ending at a transaction end, so a restart
neither loses nor repeats a change. Under ``kafka.processing_guarantee:
exactly_once`` a batch is a commit boundary only when its last handover ends a
MySQL transaction: a MySQL transaction split over several handovers stays in one
Kafka transaction, committed with the position of its end. A purged start position takes a new
snapshot when ``snapshot: when_needed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pymysql

from etl.config import ETLSettings
from etl.errors import ETLError, FatalError, RetriableError
from etl.kafka import describe_error, ensure_topics, topic_partitions
from etl.redact import Redactor
from etl.runtime.status import PartitionProgress, State
from etl.sources.base import (
    DeadMessage,
    SourceBatch,
    SourceFailed,
    SourceMessage,
    SourceRunner,
)
from etl.sources.mysql_binlog.changes import SourceHalted
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import ACCESS_DENIED_CODES, connect, error_code, server_label
from etl.sources.mysql_binlog.envelope import topic_for
from etl.sources.mysql_binlog.handoff import Handoff
from etl.sources.mysql_binlog.leader import SourceLock, lock_name
from etl.sources.mysql_binlog.position import BinlogPosition
from etl.sources.mysql_binlog.preflight import PreflightError, ServerInfo, run_preflight
from etl.sources.mysql_binlog.progress import BinlogProgress
from etl.sources.mysql_binlog.reader import BinlogReader, PositionPurged
from etl.sources.mysql_binlog.reset import position_for as binlog_position_for
from etl.sources.mysql_binlog.start import plan_start

log = logging.getLogger("etl.source.mysql_binlog")

STOP_TIMEOUT = 30.0


class BinlogChanges:
    """The source's reader: the binlog thread's handovers as batches."""

    def __init__(self, source: MySQLBinlogSource) -> None:
        self.source = source
        self.reader: BinlogReader | None = None
        self.handoff: Handoff | None = None
        self._mark: BinlogPosition | None = None
        self._nbytes = 0
        self._halt: str | None = None

    async def open(self, saved: dict[str, Any] | None) -> None:
        source, config = self.source, self.source.config
        info = await asyncio.to_thread(source.preflight)
        for warning in info.warnings:
            log.warning("source preflight warning source=%s warning=%r", config.name, warning)
        position = None
        if saved is not None:
            try:
                position = BinlogPosition.from_record(saved)
            except ValueError as exc:
                log.warning(
                    "ignored unreadable saved position source=%s error=%r", config.name, exc
                )
        assert source.store is not None
        plan = plan_start(
            config,
            info,
            [p for p in (source.acked, position) if p is not None],
            position_topic=source.store.topic,
            resnapshot=source.resnapshot,
        )
        log.info(
            "source starting source=%s server=%s database=%s start=%s reason=%r",
            config.name,
            source.server,
            config.database,
            plan,
            plan.reason,
        )
        for table, has_key in info.tables.items():
            await source.ensure_topic(table, has_key, True)
        loop = asyncio.get_running_loop()
        self.handoff = Handoff(loop, config.max_pending_bytes)
        self.reader = BinlogReader(
            config,
            loop=loop,
            handoff=self.handoff,
            ensure_topic=source.ensure_topic,
            resume=plan.resume,
            gtid=plan.gtid,
            snapshot=plan.snapshot,
            is_mariadb=info.is_mariadb,
            row_metadata_full=info.row_metadata_full,
            policy=source.policy,
            max_request_size=source.settings.kafka.max_request_size,
            on_retry=source.on_reader_retry,
        )
        if source.paused:
            self.reader.pause()
        source.status.partitions["binlog"] = source.progress.progress
        self.reader.start()

    async def next_batch(self) -> SourceBatch | None:
        assert self.handoff is not None and self.reader is not None
        if self._halt is not None:
            raise SourceHalted(self._halt)
        # The runner asks for the next batch once the last one is acknowledged.
        self._release()
        idle = max(self.source.config.position_interval_ms / 1000, 0.2)
        try:
            items = await asyncio.wait_for(self.handoff.get(), idle)
        except TimeoutError:
            return SourceBatch(boundary=False)
        if items is None:
            await self._join()
            if self.reader.error is not None:
                raise self.reader.error
            if self.source.stopping():
                return SourceBatch()
            raise RetriableError("the binlog reader ended")
        batch = SourceBatch()
        for item in items:
            if self._halt is not None:
                # Halted: publish nothing after the change that stopped the source.
                self.handoff.release(item.nbytes)
                continue
            for topic, partition, messages in item.batches:
                batch.messages += [
                    SourceMessage(topic, key, value, partition, None, headers)
                    for key, value, headers in messages
                ]
            batch.dead += [
                DeadMessage(
                    dead.topic,
                    dead.key,
                    dead.value,
                    dead.error,
                    extra={
                        "etl.source.table": dead.table,
                        "etl.source.binlog_position": dead.position,
                        "etl.source.sequence_id": dead.sequence,
                    },
                )
                for dead in item.dead
            ]
            batch.read += item.rows
            self._nbytes += item.nbytes
            self._mark = item.mark or self._mark
            if item.halt is not None:
                self._halt = item.halt
                self.reader.request_stop()
        # Exactly-once commits only at a MySQL transaction end, never before a halt.
        batch.boundary = bool(items) and items[-1].mark is not None and self._halt is None
        return batch

    def _release(self) -> None:
        if self.handoff is not None and self._nbytes:
            self.handoff.release(self._nbytes)
        self._nbytes = 0

    def snapshot(self, failed: Sequence[SourceMessage]) -> dict[str, Any] | None:
        self._release()
        mark, self._mark = self._mark, None
        if mark is None:
            return None
        source = self.source
        if not source.exactly_once:
            # Acknowledged is enough here; exactly-once waits for the commit (on_saved).
            source.accept(mark)
        return mark.to_record(source.name, source.server)

    async def close(self) -> None:
        reader, handoff = self.reader, self.handoff
        if reader is None or handoff is None:
            return
        reader.request_stop()
        handoff.discard()
        await self._join()
        if reader.alive:
            log.warning("binlog thread did not stop, cutting it source=%s", self.source.name)
            reader.abort()
            handoff.discard()
            await self._join()

    async def _join(self) -> None:
        reader = self.reader
        if reader is not None and reader.thread is not None:
            await asyncio.to_thread(reader.thread.join, STOP_TIMEOUT)


class MySQLBinlogSource(SourceRunner[MySQLBinlogSourceConfig]):
    """Publishes a MySQL/MariaDB database's row changes to Kafka (one topic per table)."""

    #: ``etl offsets reset SOURCE --to-position now|FILE:POS`` (etl.ops.reset).
    position_for = staticmethod(binlog_position_for)

    def __init__(
        self,
        config: MySQLBinlogSourceConfig,
        *,
        settings: ETLSettings,
        redact: Redactor | None = None,
        **kwargs: Any,
    ) -> None:
        self.server = server_label(config)
        super().__init__(config, settings=settings, redact=redact, **kwargs)
        self.save_interval = config.position_interval_ms / 1000
        self.topics: dict[str, int] = {}
        #: The last position the broker acknowledged everything before (saved or not).
        self.acked: BinlogPosition | None = None
        #: Set after a purged start position under ``snapshot: when_needed``.
        self.resnapshot = False
        self.progress = BinlogProgress(config, PartitionProgress())
        self.changes: BinlogChanges | None = None

    def make_reader(self) -> BinlogChanges:
        self.changes = BinlogChanges(self)
        return self.changes

    def describe_source(self) -> str:
        return f"mysql://{self.server}/{self.config.database}"

    def describe_target(self) -> str:
        return f"{self.config.topic_prefix}_*"

    def leadership(self) -> SourceLock:
        return SourceLock(self.config, lock_name(self.settings.kafka.group_prefix, self.name))

    @property
    def paused(self) -> bool:
        """Paused by the operator."""
        return self._paused

    @property
    def saved(self) -> BinlogPosition | None:
        """The position saved last (None: none yet)."""
        state = self.store.saved_state if self.store is not None else None
        return BinlogPosition.from_record(state) if state else None

    @property
    def reader(self) -> BinlogReader | None:
        """The binlog thread of the current run."""
        return self.changes.reader if self.changes is not None else None

    def classify(self, exc: Exception) -> BaseException:
        if isinstance(exc, PreflightError):
            return SourceFailed(str(exc), "source preflight failed")
        if isinstance(exc, PositionPurged):
            if self.config.snapshot != "when_needed" or self.resnapshot:
                return FatalError(str(exc))
            log.error("%s; taking a new snapshot source=%s", exc, self.name)
            self.resnapshot = True
            self.backoff.reset()
            return RetriableError(str(exc))
        if isinstance(exc, pymysql.err.MySQLError) and error_code(exc) in ACCESS_DENIED_CODES:
            return SourceFailed(describe_error(exc), "source cannot log in")
        if isinstance(exc, ETLError):
            return exc
        # A lost server or broker connection: the run starts again from the saved position.
        return RetriableError(describe_error(exc))

    def on_stopping(self) -> None:
        if self.reader is not None:
            self.reader.request_stop()

    def must_save(self, state: dict[str, Any]) -> bool:
        # The end of the initial snapshot is saved at once: a crash right after it
        # would otherwise take the whole snapshot again.
        saved = self.store.saved_state if self.store is not None else None
        return state.get("snapshot") == "done" and (saved or {}).get("snapshot") != "done"

    def on_saved(self, state: dict[str, Any]) -> None:
        position = BinlogPosition.from_record(state)
        if self.exactly_once:
            self.accept(position)
        self.progress.progress.committed = self.progress.offset(position)

    def accept(self, mark: BinlogPosition) -> None:
        """Everything up to ``mark`` is published: a new run starts after it."""
        self.acked = mark
        if mark.snapshot == "done":
            self.resnapshot = False

    def pause(self) -> None:
        """Stop reading at the next transaction end (the position is kept)."""
        super().pause()
        if self.reader is not None:
            self.reader.pause()

    def resume(self) -> None:
        """Read on after :meth:`pause`."""
        super().resume()
        if self.reader is not None:
            self.reader.resume_reading()

    def on_reader_retry(self, text: str | None) -> None:
        """The reader thread lost (None: got back) its server connection."""
        # Called from the reader thread; only plain attribute writes here.
        if text is None:
            if self.status.state == State.FAILED:
                self.status.state = State.PAUSED if self._paused else State.RUNNING
                self.status.error = None
        else:
            self.status.fail(State.FAILED, self.redact(text))

    def preflight(self) -> ServerInfo:
        """Check the server and the account (blocking)."""
        connection = connect(self.config)
        try:
            return run_preflight(connection, self.config)
        finally:
            connection.close()

    async def ensure_topic(self, table: str, has_key: bool, create: bool) -> tuple[str, int] | None:
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

    async def refresh_progress(self) -> None:
        """Binlog bytes: read, saved (committed) and written by the server (end)."""
        if self.reader is not None:
            self.progress.update(self.reader.read_position, self.saved)
