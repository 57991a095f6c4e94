"""The binlog reader thread: read events, track transactions, hand batches to the loop.

``BinLogStreamReader`` blocks, so it runs in its own thread. That thread also
decodes and encodes the changes (:mod:`.changes`) into per-partition message
lists (:mod:`.batches`); the event loop only queues them on the producer and waits
for acknowledgements (:mod:`.handoff`). Batches are handed over at transaction
ends (when the loop is idle, or every ``FLUSH_ROWS`` rows / ``FLUSH_SECONDS``),
always with the position of the last complete transaction in them.

A lost connection is retried from the last transaction end read; events already
built into batches are skipped by their binlog position, so nothing is repeated.
A stop request ends the thread at the next transaction end (or heartbeat).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XAPrepareEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from etl.errors import ETLError, FatalError
from etl.sources.mysql_binlog.batches import BatchWriter
from etl.sources.mysql_binlog.changes import ChangePublisher, SourceHalted
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import (
    ACCESS_DENIED_CODES,
    BINLOG_GONE_CODE,
    connection_settings,
    error_code,
    open_connection,
)
from etl.sources.mysql_binlog.ddl import is_dml, parse_ddl
from etl.sources.mysql_binlog.envelope import DELETE, INSERT, UPDATE, timestamp_part
from etl.sources.mysql_binlog.handoff import Handoff
from etl.sources.mysql_binlog.position import BinlogPosition, file_index, sequence_prefix
from etl.sources.mysql_binlog.snapshot import SnapshotReader

log = logging.getLogger("etl.source.mysql_binlog")

#: Hand over at a transaction end once this many messages wait in open batches ...
FLUSH_ROWS = 20000
#: ... or once the last handover is this old (seconds).
FLUSH_SECONDS = 0.05

EVENTS = [
    RotateEvent,
    QueryEvent,
    XidEvent,
    XAPrepareEvent,
    GtidEvent,
    MariadbGtidEvent,
    TableMapEvent,
    WriteRowsEvent,
    UpdateRowsEvent,
    DeleteRowsEvent,
    HeartbeatLogEvent,
]
_TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT", "XA ")
_ROW_OPS = {WriteRowsEvent: INSERT, UpdateRowsEvent: UPDATE, DeleteRowsEvent: DELETE}

EnsureTopic = Callable[[str, bool, bool], Coroutine[Any, Any, tuple[str, int] | None]]


class PositionPurged(ETLError):
    """The binlog file to read from is no longer on the server."""


class _Stopped(Exception):
    """Internal: a stop was requested."""


class BinlogReader:
    """Reads the snapshot (if asked) and the binlog in a thread; see the module docstring."""

    def __init__(
        self,
        config: MySQLBinlogSourceConfig,
        *,
        loop: asyncio.AbstractEventLoop,
        handoff: Handoff,
        ensure_topic: EnsureTopic,
        resume: BinlogPosition | None,
        gtid: str | None = None,
        snapshot: bool = False,
        is_mariadb: bool = False,
        row_metadata_full: bool = True,
        policy: str = "continue",
        max_request_size: int = 1048576,
        on_retry: Callable[[str | None], None] | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.handoff = handoff
        self.ensure_topic = ensure_topic
        self.gtid = gtid
        self.snapshot = snapshot
        self.is_mariadb = is_mariadb
        self.row_metadata_full = row_metadata_full
        self.on_retry = on_retry or (lambda text: None)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        #: The last transaction end read (where a reconnect resumes).
        self.resume = resume

        self._stop = threading.Event()
        self._abort = threading.Event()
        self._paused = threading.Event()
        self.batches = BatchWriter(handoff, max_request_size, self._abort.is_set)
        self.changes = ChangePublisher(
            config,
            self.batches,
            self._lookup_topic,
            policy=policy,
            row_metadata_full=row_metadata_full,
        )
        self._connections: list[Any] = []
        self._file = resume.file if resume else ""
        self._file_number = file_index(self._file)
        self._read_pos = resume.pos if resume else 0
        self._in_tx = False
        self._tx_gtid: str | None = None
        self._tx_ms = 0
        self._warned_dml = False
        self._retrying = False

    # ---- control (any thread) ---------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self.thread = threading.Thread(
            target=self.run, name=f"binlog-{self.config.name}", daemon=True
        )
        self.thread.start()

    def request_stop(self) -> None:
        """Stop at the next transaction end, handing over everything read until then."""
        self._stop.set()

    def abort(self) -> None:
        """Stop now: cut the server connection (what was not handed over is read again)."""
        self._stop.set()
        self._abort.set()
        for conn in list(self._connections):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                try:
                    sock.shutdown(2)
                except OSError:
                    pass

    def pause(self) -> None:
        """Stop reading at the next transaction end until :meth:`resume_reading`."""
        self._paused.set()

    def resume_reading(self) -> None:
        """Continue after :meth:`pause`."""
        self._paused.clear()

    @property
    def read_position(self) -> BinlogPosition | None:
        """The end of the last event read (for progress)."""
        return BinlogPosition(self._file, self._read_pos) if self._file else None

    @property
    def alive(self) -> bool:
        """The thread is still running."""
        return self.thread is not None and self.thread.is_alive()

    # ---- the thread -------------------------------------------------------------------

    def run(self) -> None:
        """Thread body: snapshot (if asked), then stream until stopped or failed."""
        try:
            if self.snapshot:
                self._run_snapshot()
            self._stream_forever()
        except _Stopped:
            pass
        except BaseException as exc:
            self.error = exc
        finally:
            try:
                if not self._abort.is_set():
                    halt = str(self.error) if isinstance(self.error, SourceHalted) else None
                    self.batches.flush(halt=halt)
            except BaseException as exc:  # pragma: no cover - only while failing already
                log.warning("final handover failed source=%s error=%r", self.config.name, exc)
            self.changes.close()
            self.handoff.close()

    def _lookup_topic(self, table: str, has_key: bool, create: bool) -> tuple[str, int] | None:
        future = asyncio.run_coroutine_threadsafe(
            self.ensure_topic(table, has_key, create), self.loop
        )
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if self._abort.is_set():
                    future.cancel()
                    raise _Stopped from None

    def _connect(self, **settings: Any) -> Any:
        # The binlog library reconnects by itself after a lost connection; refuse once
        # aborting, so that an abort is never undone by a reconnect.
        if self._abort.is_set():
            raise _Stopped
        conn = open_connection(self.config, settings)
        self._connections = [c for c in self._connections if c.open] + [conn]
        return conn

    def _stream_forever(self) -> None:
        delay = 0.5
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._stream_once()
                return
            except (pymysql.err.MySQLError, OSError, EOFError) as exc:
                code = error_code(exc)
                reason = exc.args[-1] if exc.args else exc
                if self._abort.is_set() or (self._stop.is_set() and not self._in_tx):
                    raise _Stopped from None
                if code == BINLOG_GONE_CODE:
                    raise PositionPurged(
                        f"the server cannot send the binlog from {self.resume}: {reason}"
                    ) from None
                if code in ACCESS_DENIED_CODES:
                    raise FatalError(f"access denied reading the binlog: {reason}") from None
                text = f"{type(exc).__name__}: {reason}"
                log.warning(
                    "binlog connection failed source=%s resume=%s error=%r retry_in=%.1fs",
                    self.config.name,
                    self.resume,
                    text,
                    delay,
                )
                self._retrying = True
                self.on_retry(f"retrying: {text}")
                if self._stop.wait(delay):
                    raise _Stopped from None
                delay = min(delay * 2, 30.0)

    def _stream_once(self) -> None:
        options: dict[str, Any] = {
            "connection_settings": connection_settings(self.config),
            "server_id": self.config.effective_server_id,
            "blocking": True,
            "resume_stream": True,
            "only_events": EVENTS,
            "only_schemas": [self.config.database],
            "only_tables": self.changes.selector,
            "slave_heartbeat": self.config.heartbeat_s,
            "enable_logging": False,
            "pymysql_wrapper": self._connect,
        }
        if not self.row_metadata_full:
            # Without names in the binlog the library reads them from information_schema.
            options["use_column_name_cache"] = True
        if self.resume is not None:
            options.update(log_file=self.resume.file, log_pos=self.resume.pos)
        elif self.gtid:
            options.update(auto_position=self.gtid, is_mariadb=self.is_mariadb)
        stream = BinLogStreamReader(**options)
        self._in_tx = False
        try:
            for event in stream:
                self._handle(event)
                if self._retrying:
                    self._retrying = False
                    self.on_retry(None)
        finally:
            stream.close()

    # ---- events ---------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        op = _ROW_OPS.get(type(event))
        if op is not None:
            self.changes.rows(event, op, self._file, self._file_number, self._tx_ms)
        elif isinstance(event, TableMapEvent):
            self.changes.table_map(event)
        elif isinstance(event, XidEvent | XAPrepareEvent):
            self._tx_end(event)
        elif isinstance(event, MariadbGtidEvent | GtidEvent):
            self._in_tx = True
            self._tx_gtid = event.gtid
            self._tx_ms = event.timestamp * 1000
        elif isinstance(event, QueryEvent):
            self._on_query(event)
        elif isinstance(event, RotateEvent):
            self._file = event.next_binlog
            self._file_number = file_index(self._file)
            if not self._in_tx:
                self._at_boundary()
            return
        elif isinstance(event, HeartbeatLogEvent):
            if not self._in_tx:
                self.batches.flush()
                self._at_boundary()
            return
        if event.packet.log_pos:
            self._read_pos = event.packet.log_pos

    def _at_boundary(self) -> None:
        if self._stop.is_set():
            self.batches.flush()
            raise _Stopped
        while self._paused.is_set() and not self._stop.is_set():
            self.batches.flush()
            time.sleep(0.2)

    def _tx_end(self, event: Any) -> None:
        self._in_tx = False
        mark = BinlogPosition(self._file, event.packet.log_pos, self._tx_gtid)
        batches = self.batches
        batches.mark = mark
        self.resume = mark
        if (
            self.handoff.hungry
            or batches.unflushed >= FLUSH_ROWS
            or time.monotonic() - batches.last_flush >= FLUSH_SECONDS
            or self._stop.is_set()
            or self._paused.is_set()
        ):
            batches.flush()
        self._at_boundary()

    def _on_query(self, event: Any) -> None:
        query: str = event.query
        head = query.lstrip()[:20].upper()
        if head.startswith("BEGIN"):
            self._in_tx = True
            self._tx_ms = event.timestamp * 1000
            return
        if head.startswith(("COMMIT", "ROLLBACK", "XA COMMIT", "XA ROLLBACK")):
            self._tx_end(event)
            return
        if head.startswith(_TX_CONTROL):
            return
        schema = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
        if is_dml(query):
            if schema == self.config.database and not self._warned_dml:
                self._warned_dml = True
                log.warning(
                    "row changes written in statement format are skipped source=%s "
                    "position=%s:%s hint=%r",
                    self.config.name,
                    self._file,
                    event.packet.log_pos,
                    "a session used binlog_format STATEMENT or MIXED; use ROW everywhere",
                )
            return
        change = parse_ddl(query)
        if change is not None:
            self.changes.ddl(
                event, change, schema or "", self._file, self._file_number, self._tx_ms
            )
        # DDL (and the other statements left) commit implicitly: a transaction end.
        self._tx_end(event)

    # ---- snapshot ------------------------------------------------------------------------

    def _run_snapshot(self) -> None:
        reader = SnapshotReader(self.config, self.changes.converters)
        try:
            position = reader.begin(self.is_mariadb)
            log.info(
                "snapshot started source=%s position=%s exact=%s",
                self.config.name,
                position,
                reader.exact,
            )
            self._file, self._read_pos = position.file, position.pos
            self._file_number = file_index(position.file)
            now = int(time.time() * 1000)
            stamp = timestamp_part(now, now, now)
            prefix = sequence_prefix(position.file, position.pos)
            total = 0
            for table in reader.tables():
                if self._stop.is_set():
                    raise _Stopped  # nothing saved: the next start copies again
                shape = reader.shape(table)
                if shape is None:
                    continue
                count = self.changes.snapshot_rows(
                    shape, reader.rows(shape), prefix, total, stamp, str(position)
                )
                total += count
                log.info(
                    "snapshot table done source=%s table=%s rows=%d",
                    self.config.name,
                    table,
                    count,
                )
            self.batches.mark = BinlogPosition(position.file, position.pos, snapshot="done")
            self.batches.flush()
            self.resume = BinlogPosition(position.file, position.pos)
            log.info(
                "snapshot done source=%s rows=%d position=%s", self.config.name, total, position
            )
        finally:
            reader.close()
