"""The binlog reader thread: decode row changes, build Kafka record batches, hand them over.

``BinLogStreamReader`` blocks, so it runs in its own thread. That thread also
encodes the messages and appends them to per-partition aiokafka batch builders;
the event loop only submits finished batches and waits for acknowledgements
(see :mod:`.handoff`). Batches are handed over at transaction ends (when the
loop is idle, or every ``FLUSH_ROWS`` rows / ``FLUSH_SECONDS``), and always
with the position of the last complete transaction in them.

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
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import (
    ACCESS_DENIED_CODES,
    BINLOG_GONE_CODE,
    connect,
    connection_settings,
    error_code,
)
from etl.sources.mysql_binlog.ddl import DDLChange, is_dml, parse_ddl
from etl.sources.mysql_binlog.envelope import (
    DELETE,
    INSERT,
    UPDATE,
    TableEncoder,
    TableShape,
    ddl_value,
    timestamp_part,
)
from etl.sources.mysql_binlog.handoff import DeadRow, Handoff, Handover
from etl.sources.mysql_binlog.position import BinlogPosition, file_index, sequence_prefix
from etl.sources.mysql_binlog.rowcodec import RowDecoder
from etl.sources.mysql_binlog.snapshot import (
    SNAPSHOT_HEADERS,
    SnapshotReader,
    primary_key_columns,
)
from etl.sources.mysql_binlog.types import ValueConverters, column_from_binlog

log = logging.getLogger("etl.source.mysql_binlog")

#: Hand over at a transaction end once this many rows wait in open batches ...
FLUSH_ROWS = 20000
#: ... or once the last handover is this old.
FLUSH_SECONDS = 0.05
#: Hand over full batches inside a long transaction once they hold this many bytes.
SEALED_FLUSH_BYTES = 4 * 1024 * 1024

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
_NO_HEADERS: list[tuple[str, bytes]] = []
_TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT", "XA ")

EnsureTopic = Callable[[str, bool, bool], Coroutine[Any, Any, tuple[str, int] | None]]


class PositionPurged(ETLError):
    """The binlog file to read from is no longer on the server."""


class SourceHalted(ETLError):
    """The ``stop`` policy halted the source at a change it could not publish."""


class RecordTooLarge(ValueError):
    """A change event is larger than the producer's ``max_request_size``."""


class _Stopped(Exception):
    """Internal: a stop was requested."""


class BinlogReader:
    """Reads the binlog (and the snapshot) in a thread; see the module docstring."""

    def __init__(
        self,
        config: MySQLBinlogSourceConfig,
        *,
        loop: asyncio.AbstractEventLoop,
        handoff: Handoff,
        make_batch: Callable[[], Any],
        ensure_topic: EnsureTopic,
        resume: BinlogPosition | None,
        gtid: str | None = None,
        snapshot: bool = False,
        is_mariadb: bool = False,
        row_metadata_full: bool = True,
        policy: str = "continue",
        max_message_bytes: int = 1048576,
        on_retry: Callable[[str | None], None] | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.handoff = handoff
        self.make_batch = make_batch
        self.ensure_topic = ensure_topic
        self.gtid = gtid
        self.snapshot = snapshot
        self.is_mariadb = is_mariadb
        self.row_metadata_full = row_metadata_full
        self.policy = policy
        self.max_message_bytes = max_message_bytes - 512  # room for the record overhead
        self.on_retry = on_retry or (lambda text: None)
        self.database = config.database
        self.selector = config.selector()
        self.converters = ValueConverters(config.timezone)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        #: The last transaction end read (where a reconnect resumes).
        self.resume = resume

        self._stop = threading.Event()
        self._abort = threading.Event()
        self._paused = threading.Event()
        self._connections: list[Any] = []
        self._ctl: Any = None
        self._file = resume.file if resume else ""
        self._file_index = file_index(self._file) if resume else 0
        self._emitted: tuple[int, int] = (-1, -1)
        self._in_tx = False
        self._tx_gtid: str | None = None
        self._tx_ms = 0
        self._encoders: dict[int, tuple[TableEncoder, RowDecoder | None]] = {}
        self._encoder_cache: dict[tuple[Any, ...], tuple[TableEncoder, RowDecoder | None]] = {}
        self._topics: dict[str, tuple[str, int] | None] = {}
        self._pk_cache: dict[str, tuple[str, ...]] = {}
        self._open: dict[tuple[str, int], list[Any]] = {}
        self._sealed: list[tuple[str, int, Any, int]] = []
        self._sealed_bytes = 0
        self._bytes = 0
        self._unflushed = 0
        self._rows = 0
        self._dead: list[DeadRow] = []
        self._mark: BinlogPosition | None = None
        self._last_flush = time.monotonic()
        self._warned_dml: set[str] = set()
        self._retrying = False
        self._read_pos = resume.pos if resume else 0

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
        """Stop reading at the next transaction end until :meth:`resume`."""
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
                    self._flush(halt=halt)
            except BaseException as exc:  # pragma: no cover - only while failing already
                log.warning("final handover failed source=%s error=%r", self.config.name, exc)
            self._close_ctl()
            self.handoff.close()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def _connect(self, **settings: Any) -> Any:
        # The binlog library reconnects by itself after a lost connection; refuse once
        # stopping, so that a stop is never undone by a reconnect.
        if self._abort.is_set():
            raise _Stopped
        conn = pymysql.connect(**settings)
        self._connections = [c for c in self._connections if c.open] + [conn]
        return conn

    def _stream_forever(self) -> None:
        delay = 0.5
        while True:
            self._check_stop()
            try:
                self._stream_once()
                return
            except (_Stopped, SourceHalted, FatalError, PositionPurged):
                raise
            except (pymysql.err.MySQLError, OSError, EOFError) as exc:
                code = error_code(exc)
                if self._abort.is_set() or (self._stop.is_set() and not self._in_tx):
                    raise _Stopped from None
                if code == BINLOG_GONE_CODE:
                    raise PositionPurged(
                        f"the server cannot send the binlog from {self.resume}: "
                        f"{exc.args[-1] if exc.args else exc}"
                    ) from None
                if code in ACCESS_DENIED_CODES:
                    raise FatalError(f"access denied reading the binlog: {exc.args[-1]}") from None
                text = f"{type(exc).__name__}: {exc.args[-1] if exc.args else exc}"
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
            "only_schemas": [self.database],
            "only_tables": self.selector,
            "slave_heartbeat": self.config.heartbeat_s,
            "enable_logging": False,
            "pymysql_wrapper": self._connect,
            "use_column_name_cache": not self.row_metadata_full,
        }
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
        if isinstance(event, TableMapEvent):
            self._on_table_map(event)
        elif isinstance(event, WriteRowsEvent):
            self._on_rows(event, INSERT)
        elif isinstance(event, UpdateRowsEvent):
            self._on_rows(event, UPDATE)
        elif isinstance(event, DeleteRowsEvent):
            self._on_rows(event, DELETE)
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
            self._file_index = file_index(self._file)
            if not self._in_tx:
                self._at_boundary()
        elif isinstance(event, HeartbeatLogEvent):
            if not self._in_tx:
                self._flush()
                self._at_boundary()
        if event.packet.log_pos and not isinstance(event, RotateEvent | HeartbeatLogEvent):
            self._read_pos = event.packet.log_pos

    def _at_boundary(self) -> None:
        if self._stop.is_set():
            self._flush()
            raise _Stopped
        while self._paused.is_set() and not self._stop.is_set():
            self._flush()
            time.sleep(0.2)

    def _tx_end(self, event: Any) -> None:
        self._in_tx = False
        mark = BinlogPosition(self._file, event.packet.log_pos, self._tx_gtid)
        self._mark = mark
        self.resume = mark
        if (
            self.handoff.hungry
            or self._unflushed >= FLUSH_ROWS
            or time.monotonic() - self._last_flush >= FLUSH_SECONDS
            or self._stop.is_set()
            or self._paused.is_set()
        ):
            self._flush()
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
        if is_dml(query):
            self._warn_statement_dml(event)
            return
        change = parse_ddl(query)
        if change is not None:
            schema = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
            self._on_ddl(event, change, schema or "", query)
        # DDL (and the other statements left) commit implicitly: a transaction end.
        self._tx_end(event)

    def _warn_statement_dml(self, event: Any) -> None:
        schema = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
        if schema == self.database and schema not in self._warned_dml:
            self._warned_dml.add(schema)
            log.warning(
                "row changes written in statement format are skipped source=%s database=%s "
                "position=%s:%s hint=%r",
                self.config.name,
                schema,
                self._file,
                event.packet.log_pos,
                "a session used binlog_format STATEMENT or MIXED; use ROW everywhere",
            )

    def _on_ddl(self, event: Any, change: DDLChange, default_db: str, query: str) -> None:
        pos = event.packet.log_pos
        order = (self._file_index, pos)
        tables: list[str] = []
        for db, table in change.all_tables():
            if (db or default_db) == self.database and self.selector(table) and table not in tables:
                tables.append(table)
        if not tables or order <= self._emitted:
            return
        now = int(time.time() * 1000)
        event_ms = event.timestamp * 1000
        stamp = timestamp_part(event_ms, now, self._tx_ms or event_ms)
        sequence = sequence_prefix(self._file, pos) + f"{0:09d}"
        for table in tables:
            self._forget(table)
            hint = change.primary_key if change.kind == "create" else None
            create = change.kind != "drop"
            target = self._topic(table, hint, create=create)
            if target is None:
                continue
            topic, partitions = target
            value = ddl_value(self.database, table, query, sequence, stamp)
            # Every partition gets the statement, so each consumer sees it in order.
            for partition in range(partitions):
                self._append(topic, partition, None, value)
        log.info(
            "ddl published source=%s tables=%s kind=%s position=%s:%d",
            self.config.name,
            ",".join(tables),
            change.kind,
            self._file,
            pos,
        )
        self._emitted = order

    def _on_table_map(self, event: Any) -> None:
        columns = event.columns
        names = tuple(c.name for c in columns)
        signature = (
            event.table_id,
            event.table,
            names,
            tuple(c.type for c in columns),
        )
        entry = self._encoder_cache.get(signature)
        if entry is None:
            entry = (self._new_encoder(event, names), RowDecoder.for_columns(columns))
            self._encoder_cache[signature] = entry
        self._encoders[event.table_id] = entry

    def _new_encoder(self, event: Any, names: tuple[str, ...]) -> TableEncoder:
        table = event.table
        meta = getattr(event, "optional_metadata", None)
        indexes: list[int] = []
        if meta is not None:
            indexes = list(meta.simple_primary_key_list or []) or list(
                (meta.primary_keys_with_prefix or {}).keys()
            )
        if indexes:
            primary_key = tuple(names[i] for i in indexes if i < len(names))
        elif self.row_metadata_full:
            primary_key = ()
        else:
            primary_key = self._primary_key_from_schema(table)
        shape = TableShape(
            self.database,
            table,
            tuple(column_from_binlog(c, self.converters) for c in event.columns),
            primary_key,
        )
        target = self._topic(table, bool(primary_key), create=True)
        assert target is not None
        return TableEncoder(shape, target[0], target[1])

    def _on_rows(self, event: Any, op: str) -> None:
        entry = self._encoders.get(event.table_id)
        if entry is None:
            return
        encoder, decoder = entry
        pos = event.packet.log_pos
        order = (self._file_index, pos)
        if order <= self._emitted:
            return  # built into a batch before a reconnect
        prefix = sequence_prefix(self._file, pos)
        event_ms = event.timestamp * 1000
        stamp = timestamp_part(event_ms, int(time.time() * 1000), self._tx_ms or event_ms)
        try:
            rows = decoder.rows(event) if decoder is not None else event.rows
        except Exception as exc:
            self._record_error(encoder, None, None, prefix + f"{0:09d}", pos, exc)
            self._emitted = order
            return
        append = self._append
        value = encoder.value
        convert = encoder.convert
        key_of = encoder.key
        partition_of = encoder.partition
        topic = encoder.topic
        index = 0
        for row in rows:
            sequence = prefix + f"{index:09d}"
            key: bytes | None = None
            try:
                if op == INSERT:
                    after = convert(row["values"])
                    key = key_of(after)
                    append(
                        topic, partition_of(key), key, value(INSERT, None, after, sequence, stamp)
                    )
                elif op == DELETE:
                    before = convert(row["values"])
                    key = key_of(before)
                    append(
                        topic, partition_of(key), key, value(DELETE, before, None, sequence, stamp)
                    )
                else:
                    before = convert(row["before_values"])
                    after = convert(row["after_values"])
                    key = key_of(after)
                    old_key = key_of(before)
                    if old_key == key:
                        append(
                            topic,
                            partition_of(key),
                            key,
                            value(UPDATE, before, after, sequence, stamp),
                        )
                    else:
                        # The primary key changed: a delete of the old key and an insert of
                        # the new one, so that each key's history stays on its partition.
                        append(
                            topic,
                            partition_of(old_key),
                            old_key,
                            value(DELETE, before, None, sequence, stamp),
                        )
                        index += 1
                        sequence = prefix + f"{index:09d}"
                        append(
                            topic,
                            partition_of(key),
                            key,
                            value(INSERT, None, after, sequence, stamp),
                        )
            except (_Stopped, SourceHalted):
                raise
            except Exception as exc:
                self._record_error(encoder, key, None, sequence, pos, exc)
            index += 1
        self._rows += len(rows)
        self._emitted = order
        if self._sealed_bytes >= SEALED_FLUSH_BYTES:
            self._hand_over_sealed()

    # ---- errors ---------------------------------------------------------------------

    def _record_error(
        self,
        encoder: TableEncoder,
        key: bytes | None,
        value: bytes | None,
        sequence: str,
        pos: int,
        exc: BaseException,
    ) -> None:
        where = f"{self._file}:{pos}"
        table = encoder.shape.table
        if self.policy == "stop":
            raise SourceHalted(
                f"cannot publish a change of table {table!r} at {where} "
                f"(sequenceId {sequence}): {type(exc).__name__}: {exc}"
            )
        log.error(
            "change dead-lettered source=%s table=%s position=%s sequence_id=%s error=%r",
            self.config.name,
            table,
            where,
            sequence,
            f"{type(exc).__name__}: {exc}",
        )
        self._dead.append(DeadRow(encoder.topic, table, key, value, sequence, where, exc))

    # ---- topics and tables ---------------------------------------------------------------

    def _forget(self, table: str) -> None:
        self._pk_cache.pop(table, None)
        for table_id, (encoder, _decoder) in list(self._encoders.items()):
            if encoder.shape.table == table:
                del self._encoders[table_id]
        for signature in [s for s in self._encoder_cache if s[1] == table]:
            del self._encoder_cache[signature]

    def _topic(self, table: str, has_key: bool | None, *, create: bool) -> tuple[str, int] | None:
        if table in self._topics and self._topics[table] is not None:
            return self._topics[table]
        if has_key is None:
            has_key = bool(self._primary_key_from_schema(table))
        target = self._call_in_loop(self.ensure_topic(table, has_key, create))
        self._topics[table] = target
        return target

    def _call_in_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if self._abort.is_set():
                    future.cancel()
                    raise _Stopped from None

    def _primary_key_from_schema(self, table: str) -> tuple[str, ...]:
        if table in self._pk_cache:
            return self._pk_cache[table]
        for attempt in (1, 2):
            try:
                if self._ctl is None:
                    self._ctl = connect(self.config)
                cursor = self._ctl.cursor()
                key = primary_key_columns(cursor, self.database, table)
                cursor.close()
                self._pk_cache[table] = key
                return key
            except pymysql.err.OperationalError:
                self._close_ctl()
                if attempt == 2:
                    raise
        return ()

    def _close_ctl(self) -> None:
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            try:
                ctl.close()
            except Exception:
                pass

    # ---- batches ------------------------------------------------------------------------

    def _append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] = _NO_HEADERS,
    ) -> None:
        size = len(value) + (len(key) if key is not None else 0)
        if size > self.max_message_bytes:
            raise RecordTooLarge(
                f"the change event is {size} bytes, more than kafka.max_request_size allows"
            )
        slot = self._open.get((topic, partition))
        if slot is None:
            slot = self._open[(topic, partition)] = [self.make_batch(), 0, 0]
        if slot[0].append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._sealed.append((topic, partition, slot[0], slot[1]))
            self._sealed_bytes += slot[2]
            slot = self._open[(topic, partition)] = [self.make_batch(), 0, 0]
            slot[0].append(timestamp=None, key=key, value=value, headers=headers)
        slot[1] += 1
        slot[2] += size
        self._unflushed += 1
        self._bytes += size

    def _hand_over_sealed(self) -> None:
        """Full batches inside a long transaction (no position: it has not ended)."""
        batches, self._sealed = self._sealed, []
        nbytes, self._sealed_bytes = self._sealed_bytes, 0
        self._bytes -= nbytes
        self.handoff.put(Handover(batches, nbytes), self._abort.is_set)

    def _flush(self, halt: str | None = None) -> None:
        """Hand over every batch and the last transaction end."""
        batches = self._sealed
        for (topic, partition), (builder, count, _size) in self._open.items():
            if count:
                batches.append((topic, partition, builder, count))
        if not batches and self._mark is None and not self._dead and halt is None:
            return
        item = Handover(batches, self._bytes, self._mark, self._rows, self._dead, halt)
        self._open = {}
        self._sealed = []
        self._sealed_bytes = self._bytes = self._unflushed = self._rows = 0
        self._dead = []
        self._mark = None
        self._last_flush = time.monotonic()
        self.handoff.put(item, self._abort.is_set)

    # ---- snapshot ------------------------------------------------------------------------

    def _run_snapshot(self) -> None:
        reader = SnapshotReader(self.config, self.converters)
        try:
            position = reader.begin(self.is_mariadb)
            log.info(
                "snapshot started source=%s position=%s exact=%s",
                self.config.name,
                position,
                reader.exact,
            )
            self._file = position.file
            self._file_index = file_index(position.file)
            now = int(time.time() * 1000)
            stamp = timestamp_part(now, now, now)
            prefix = sequence_prefix(position.file, position.pos)
            index = 0
            for table in reader.tables():
                shape = reader.shape(table)
                if shape is None:
                    continue
                target = self._topic(table, bool(shape.primary_key), create=True)
                assert target is not None
                encoder = TableEncoder(shape, target[0], target[1])
                count = 0
                for row in reader.rows(shape):
                    sequence = prefix + f"{index:09d}"
                    key: bytes | None = None
                    try:
                        values = encoder.convert(row)
                        key = encoder.key(values)
                        payload = encoder.value(INSERT, None, values, sequence, stamp)
                        self._append(
                            encoder.topic, encoder.partition(key), key, payload, SNAPSHOT_HEADERS
                        )
                    except Exception as exc:
                        self._record_error(encoder, key, None, sequence, position.pos, exc)
                    index += 1
                    count += 1
                    if self._sealed_bytes >= SEALED_FLUSH_BYTES:
                        self._check_stop()
                        self._hand_over_sealed()
                self._rows += count
                log.info(
                    "snapshot table done source=%s table=%s rows=%d", self.config.name, table, count
                )
            self._mark = BinlogPosition(position.file, position.pos, snapshot="done")
            self._flush()
            self.resume = BinlogPosition(position.file, position.pos)
            self._read_pos = position.pos
            log.info(
                "snapshot done source=%s rows=%d position=%s", self.config.name, index, position
            )
        finally:
            reader.close()
