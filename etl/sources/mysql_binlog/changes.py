"""Binlog events and snapshot rows -> change-event messages (runs in the reader thread).

:class:`ChangePublisher` keeps one encoder (and row decoder) per table version
seen in a table-map event, turns each row of a rows event into one message (an
UPDATE that changes the primary key into a DELETE of the old key and an INSERT
of the new one, so each key's history stays on its partition), publishes a DDL
statement to every partition of its table's topic, and applies the error policy
to a change it cannot publish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pymysql

from etl.errors import PipelineHalted
from etl.sources.mysql_binlog.batches import BatchWriter
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import close_quietly, connect
from etl.sources.mysql_binlog.ddl import DDLChange
from etl.sources.mysql_binlog.envelope import (
    DELETE,
    INSERT,
    UPDATE,
    TableEncoder,
    TableShape,
    ddl_value,
    timestamp_part,
)
from etl.sources.mysql_binlog.handoff import DeadRow
from etl.sources.mysql_binlog.position import sequence_prefix
from etl.sources.mysql_binlog.rowcodec import RowDecoder
from etl.sources.mysql_binlog.snapshot import primary_key_columns
from etl.sources.mysql_binlog.types import ValueConverters, column_from_binlog

log = logging.getLogger("etl.source.mysql_binlog")

#: (table, has a primary key, create if missing) -> (topic, partitions) or None.
TopicLookup = Callable[[str, bool, bool], "tuple[str, int] | None"]


class SourceHalted(PipelineHalted):
    """The ``stop`` policy halted the source at a change it could not publish."""


class ChangePublisher:
    """Encodes changes of the published tables into the batch writer."""

    def __init__(
        self,
        config: MySQLBinlogSourceConfig,
        batches: BatchWriter,
        topic_lookup: TopicLookup,
        *,
        policy: str = "continue",
        row_metadata_full: bool = True,
    ) -> None:
        self.config = config
        self.batches = batches
        self.topic_lookup = topic_lookup
        self.policy = policy
        self.row_metadata_full = row_metadata_full
        self.database = config.database
        self.selector = config.selector()
        self.converters = ValueConverters(config.timezone)
        #: (binlog file number, end position) of the last event turned into messages.
        self.emitted: tuple[int, int] = (-1, -1)
        self._tables: dict[int, tuple[TableEncoder, RowDecoder | None]] = {}
        self._versions: dict[tuple[Any, ...], tuple[TableEncoder, RowDecoder | None]] = {}
        self._topics: dict[str, tuple[str, int] | None] = {}
        self._keys: dict[str, tuple[str, ...]] = {}
        self._ctl: Any = None

    # ---- binlog events ------------------------------------------------------------

    def table_map(self, event: Any) -> None:
        """Remember how the table of the next rows events looks."""
        columns = event.columns
        names = tuple(c.name for c in columns)
        signature = (event.table_id, event.table, names, tuple(c.type for c in columns))
        entry = self._versions.get(signature)
        if entry is None:
            entry = (self._encoder(event, names), RowDecoder.for_columns(columns))
            self._versions[signature] = entry
        self._tables[event.table_id] = entry

    def _encoder(self, event: Any, names: tuple[str, ...]) -> TableEncoder:
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
            primary_key = self.primary_key_from_schema(table)
        shape = TableShape(
            self.database,
            table,
            tuple(column_from_binlog(c, self.converters) for c in event.columns),
            primary_key,
        )
        topic, partitions = self.topic(table, bool(primary_key), create=True) or ("", 1)
        return TableEncoder(shape, topic, partitions)

    def rows(self, event: Any, op: str, file: str, file_number: int, tx_ms: int) -> None:
        """One message per row of a rows event (skipped if published before a reconnect)."""
        entry = self._tables.get(event.table_id)
        if entry is None:
            return
        encoder, decoder = entry
        pos = event.packet.log_pos
        order = (file_number, pos)
        if order <= self.emitted:
            return
        prefix = sequence_prefix(file, pos)
        event_ms = event.timestamp * 1000
        stamp = timestamp_part(event_ms, int(time.time() * 1000), tx_ms or event_ms)
        try:
            rows = decoder.rows(event) if decoder is not None else event.rows
        except Exception as exc:
            self.record_error(encoder, None, prefix + f"{0:09d}", f"{file}:{pos}", exc)
            self.emitted = order
            return
        append = self.batches.append
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
                    append(topic, partition_of(key), key, value(op, None, after, sequence, stamp))
                elif op == DELETE:
                    before = convert(row["values"])
                    key = key_of(before)
                    append(topic, partition_of(key), key, value(op, before, None, sequence, stamp))
                else:
                    before = convert(row["before_values"])
                    after = convert(row["after_values"])
                    key = key_of(after)
                    old = key_of(before)
                    if old == key:
                        payload = value(UPDATE, before, after, sequence, stamp)
                        append(topic, partition_of(key), key, payload)
                    else:
                        payload = value(DELETE, before, None, sequence, stamp)
                        append(topic, partition_of(old), old, payload)
                        index += 1
                        sequence = prefix + f"{index:09d}"
                        payload = value(INSERT, None, after, sequence, stamp)
                        append(topic, partition_of(key), key, payload)
            except SourceHalted:
                raise
            except Exception as exc:
                self.record_error(encoder, key, sequence, f"{file}:{pos}", exc)
            index += 1
        self.batches.rows += len(rows)
        self.emitted = order

    def ddl(
        self,
        event: Any,
        change: DDLChange,
        default_db: str,
        file: str,
        file_number: int,
        tx_ms: int,
    ) -> None:
        """Publish a DDL statement to every partition of each published table it touches."""
        pos = event.packet.log_pos
        order = (file_number, pos)
        tables: list[str] = []
        for db, table in change.all_tables():
            if (db or default_db) == self.database and self.selector(table) and table not in tables:
                tables.append(table)
        if not tables or order <= self.emitted:
            return
        event_ms = event.timestamp * 1000
        stamp = timestamp_part(event_ms, int(time.time() * 1000), tx_ms or event_ms)
        sequence = sequence_prefix(file, pos) + f"{0:09d}"
        for table in tables:
            self.forget(table)
            hint = change.primary_key if change.kind == "create" else None
            target = self.topic(table, hint, create=change.kind != "drop")
            if target is None:
                continue
            topic, partitions = target
            value = ddl_value(self.database, table, event.query, sequence, stamp)
            # Every partition gets the statement, so each consumer sees it in order.
            for partition in range(partitions):
                self.batches.append(topic, partition, None, value)
        log.info(
            "ddl published source=%s tables=%s kind=%s position=%s:%d",
            self.config.name,
            ",".join(tables),
            change.kind,
            file,
            pos,
        )
        self.emitted = order

    # ---- snapshot rows ----------------------------------------------------------------

    def snapshot_rows(
        self, shape: TableShape, rows: Any, prefix: str, first: int, stamp: str, where: str
    ) -> int:
        """Publish existing rows as INSERTs (header ``etl.snapshot``); returns the count."""
        target = self.topic(shape.table, bool(shape.primary_key), create=True)
        topic, partitions = target or ("", 1)
        encoder = TableEncoder(shape, topic, partitions)
        headers = [("etl.snapshot", b"true")]
        index = first
        for row in rows:
            sequence = prefix + f"{index:09d}"
            key: bytes | None = None
            try:
                values = encoder.convert(row)
                key = encoder.key(values)
                payload = encoder.value(INSERT, None, values, sequence, stamp)
                self.batches.append(topic, encoder.partition(key), key, payload, headers)
            except SourceHalted:
                raise
            except Exception as exc:
                self.record_error(encoder, key, sequence, where, exc)
            index += 1
        self.batches.rows += index - first
        return index - first

    # ---- errors, topics, keys ------------------------------------------------------------

    def record_error(
        self,
        encoder: TableEncoder,
        key: bytes | None,
        sequence: str,
        where: str,
        exc: BaseException,
    ) -> None:
        """A change that cannot be published: halt (``stop``) or dead-letter (``continue``)."""
        table = encoder.shape.table
        text = f"{type(exc).__name__}: {exc}"
        if self.policy == "stop":
            raise SourceHalted(
                f"cannot publish a change of table {table!r} at {where} "
                f"(sequenceId {sequence}): {text}"
            )
        log.error(
            "change dead-lettered source=%s table=%s position=%s sequence_id=%s error=%r",
            self.config.name,
            table,
            where,
            sequence,
            text,
        )
        self.batches.dead_letter(DeadRow(encoder.topic, table, key, None, sequence, where, exc))

    def forget(self, table: str) -> None:
        """Drop what is known about a table's shape (after DDL)."""
        self._keys.pop(table, None)
        for table_id, (encoder, _decoder) in list(self._tables.items()):
            if encoder.shape.table == table:
                del self._tables[table_id]
        for signature in [s for s in self._versions if s[1] == table]:
            del self._versions[signature]

    def topic(self, table: str, has_key: bool | None, *, create: bool) -> tuple[str, int] | None:
        """The table's topic and its partition count (created when missing and asked to)."""
        known = self._topics.get(table)
        if known is not None:
            return known
        if has_key is None:
            has_key = bool(self.primary_key_from_schema(table))
        target = self.topic_lookup(table, has_key, create)
        self._topics[table] = target
        return target

    def primary_key_from_schema(self, table: str) -> tuple[str, ...]:
        """The table's primary key from ``information_schema`` (the table as it is now)."""
        if table in self._keys:
            return self._keys[table]
        for attempt in (1, 2):
            try:
                if self._ctl is None:
                    self._ctl = connect(self.config)
                with self._ctl.cursor() as cursor:
                    key = primary_key_columns(cursor, self.database, table)
                self._keys[table] = key
                return key
            except pymysql.err.OperationalError:
                self.close()
                if attempt == 2:
                    raise
        return ()

    def close(self) -> None:
        """Close the lookup connection."""
        ctl, self._ctl = self._ctl, None
        close_quietly(ctl)
