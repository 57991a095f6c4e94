"""The batch writer every SQL sink shares; a database supplies a few small hooks.

How a batch is written:

1. each record becomes a :class:`~sinks.sql.rows.RowOp` (a record that cannot is
   a failure right away, and the others go on);
2. the rows of a table are grouped into statements: consecutive rows of the same
   kind (insert, upsert, update, delete) and columns, in record order (where a
   database cannot change one row twice in a statement, a repeated key starts the
   next statement);
3. all statements run in one transaction. When the database rejects a row
   (bad value, constraint), the transaction is rolled back and written again with
   the rows isolated: each statement under a savepoint, split in halves until the
   rejected rows stand alone. Those are returned as failures; every other row is
   written once, in order;
4. under the ``stop`` rule (``SinkBatch.halt_on_failure``) rows after a
   partition's first rejected record are left unwritten: the pipeline stops before
   that record and they are read again on restart.

A lost connection, deadlock or busy server is a :class:`RetriableError` (the
pipeline retries the whole batch, with backoff, on a new connection); anything
else the database says about the setup (no such table, permission) is fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiokafka import TopicPartition

from etl.errors import FatalError, RecordError, RetriableError
from etl.kafka import describe_error
from etl.runtime.policy import halt_cut
from sinks.base import RecordFailure, Sink, SinkBatch, record_failure
from sinks.sql.config import SqlSinkConfig
from sinks.sql.rows import RowBuilder, RowOp
from sinks.sql.table import PlannedColumn, TableInfo, pk_columns, planned_columns, required_columns

ErrorKind = Literal["retriable", "record", "fatal"]
SqlConfigT = TypeVar("SqlConfigT", bound=SqlSinkConfig)


@dataclass
class Statement:
    """Rows of one table written by one statement (COPY, INSERT, UPDATE or DELETE)."""

    table: str
    kind: Literal["insert", "upsert", "update", "delete"]
    columns: tuple[str, ...]
    pk: tuple[str, ...]
    ops: list[RowOp] = field(default_factory=list)
    _keys: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)

    def rows(self) -> list[tuple[Any, ...]]:
        """The values in ``columns`` order."""
        columns = self.columns
        return [tuple(op.values[c] for c in columns) for op in self.ops]

    def halves(self) -> tuple[Statement, Statement]:
        mid = len(self.ops) // 2
        return (
            Statement(self.table, self.kind, self.columns, self.pk, self.ops[:mid]),
            Statement(self.table, self.kind, self.columns, self.pk, self.ops[mid:]),
        )


class _Redo(Exception):
    """Roll back the isolation pass: rows past a halting failure were written."""


def plan_statements(
    ops: Sequence[RowOp],
    insert_mode: str,
    pk: tuple[str, ...],
    *,
    split_repeats: frozenset[str] = frozenset(),
) -> list[Statement]:
    """Group rows into statements, keeping the order of rows per table.

    For the kinds in ``split_repeats`` a key seen again starts a new statement
    (PostgreSQL's ON CONFLICT cannot change one row twice in one statement).
    """
    by_table: dict[str, list[RowOp]] = {}
    for op in ops:
        by_table.setdefault(op.table, []).append(op)
    out: list[Statement] = []
    for table, table_ops in by_table.items():
        current: Statement | None = None
        for op in table_ops:
            kind = "delete" if op.delete else insert_mode
            columns = tuple(op.values)
            split = kind in split_repeats and bool(op.key)
            if (
                current is None
                or current.kind != kind
                or (columns != current.columns and set(columns) != set(current.columns))
                or (split and op.key in current._keys)
            ):
                current = Statement(table, kind, columns, pk, [])  # type: ignore[arg-type]
                out.append(current)
            if split:
                current._keys[op.key] = len(current.ops)
            current.ops.append(op)
    return out


def after_first_failure(ops: Sequence[RowOp], failed: Sequence[Any]) -> list[RowOp]:
    """Rows whose record comes after the first failed record of its partition."""
    first = halt_cut((TopicPartition(r.topic, r.partition), r.offset) for r in failed)
    out = []
    for op in ops:
        cut = first.get(TopicPartition(op.record.topic, op.record.partition))
        if cut is not None and op.record.offset >= cut:
            out.append(op)
    return out


class SqlSink(Sink[SqlConfigT]):
    """A table sink; subclasses implement the database hooks below."""

    #: The next batch is read from Kafka while the database writes this one.
    overlap_writes = True
    #: Pass JSON numbers/booleans as Python values (else as text the database casts).
    native_scalars = False
    #: Statement kinds in which one key may appear only once (see plan_statements).
    split_repeats: frozenset[str] = frozenset()

    def __init__(self, config: SqlConfigT, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.rows = RowBuilder(config, native_scalars=self.native_scalars)
        self._tables: dict[str, TableInfo] = {}
        self.connected = False

    # ---- hooks ------------------------------------------------------------------------

    def identifier_too_long(self, name: str) -> bool:
        """True when the database would refuse (or cut) this table name."""
        return len(name.encode()) > 63

    async def connect(self) -> None:
        """Open the connection (autocommit; :meth:`transaction` begins explicitly)."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        """Close the connection; never raises."""
        raise NotImplementedError

    async def describe_table(self, name: str) -> TableInfo | None:
        """The table's columns in order, or None when it does not exist."""
        raise NotImplementedError

    async def create_table(self, name: str, columns: list[PlannedColumn], pk: list[str]) -> None:
        """CREATE TABLE IF NOT EXISTS."""
        raise NotImplementedError

    async def add_columns(self, name: str, columns: list[PlannedColumn]) -> None:
        """ALTER TABLE ADD COLUMN IF NOT EXISTS for each."""
        raise NotImplementedError

    async def unique_keys(self, name: str) -> list[set[str]]:
        """The column sets of the table's primary key and unique indexes."""
        raise NotImplementedError

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """BEGIN ... COMMIT (ROLLBACK on an exception)."""
        raise NotImplementedError

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        """SAVEPOINT ... RELEASE (ROLLBACK TO on an exception), inside a transaction."""
        raise NotImplementedError

    async def execute(self, statement: Statement) -> None:
        """Write one statement's rows."""
        raise NotImplementedError

    def classify(self, exc: BaseException) -> ErrorKind | None:
        """What a database error means; None for an exception that is not the database's."""
        raise NotImplementedError

    # ---- the contract -------------------------------------------------------------------

    async def open(self) -> None:
        await self._guard(self._ensure_connected())

    def on_revoke(self, partitions: set[TopicPartition]) -> None:
        # Records of these partitions are read again (a rebalance, a halt, its resume):
        # look at the tables again then, an operator may have fixed one meanwhile.
        self._tables.clear()

    async def close(self) -> None:
        self._tables.clear()
        if self.connected:
            self.connected = False
            await self.disconnect()

    async def write(self, batch: SinkBatch) -> list[RecordFailure]:
        return await self._guard(self._write(batch))  # type: ignore[no-any-return]

    # ---- internals ----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if not self.connected:
            await self.connect()
            self.connected = True

    async def _guard(self, work: Any) -> Any:
        """Run ``work``; turn database errors into Retriable/Fatal, drop a broken connection."""
        try:
            return await asyncio.wait_for(work, self.config.statement_timeout_s)
        except (FatalError, RetriableError, RecordError):
            raise
        except TimeoutError as exc:
            await self._reset()
            raise RetriableError(
                f"database did not answer in {self.config.statement_timeout_s}s"
            ) from exc
        except Exception as exc:
            kind = self.classify(exc)
            text = " ".join(self.redact(describe_error(exc)).split())
            self._tables.clear()  # someone may have changed a table: look again next time
            if kind == "retriable":
                await self._reset()
                raise RetriableError(text) from exc
            if kind is None:
                raise
            raise FatalError(text) from exc

    async def _reset(self) -> None:
        self.connected = False
        await self.disconnect()

    async def _write(self, batch: SinkBatch) -> list[RecordFailure]:
        await self._ensure_connected()
        failures: list[RecordFailure] = []
        ops: list[RowOp] = []
        tables: dict[str, TableInfo] = {}
        build = self.rows.build
        for record in batch.records:
            table = tables.get(record.topic)
            if table is None:
                table = tables[record.topic] = await self.table(self.config.table_for(record.topic))
            try:
                ops.append(build(record, table))
            except Exception as exc:  # whatever one record's data raises: a record error
                failures.append(record_failure(record, exc))
        if failures and batch.halt_on_failure:
            cut = {id(op) for op in after_first_failure(ops, [f.record for f in failures])}
            ops = [op for op in ops if id(op) not in cut]
        if ops:
            failures += await self._apply(ops, halt=batch.halt_on_failure)
        if len(failures) > 1:  # in record order, as they go to the error topic
            position = {id(record): index for index, record in enumerate(batch.records)}
            failures.sort(key=lambda failure: position[id(failure.record)])
        return failures

    async def table(self, name: str) -> TableInfo:
        """The table's columns, creating it when ``auto_create`` is on (cached)."""
        found = self._tables.get(name)
        if found is not None:
            return found
        config = self.config
        if self.identifier_too_long(name):
            raise FatalError(f"table name {name!r} is too long for the database")
        info = await self.describe_table(name)
        planned = planned_columns(config)
        if info is None:
            if not config.auto_create:
                raise FatalError(
                    f"table {name!r} does not exist; create it or set auto_create: true"
                )
            self.log.info("creating table sink=%s table=%r", config.name, name)
            await self.create_table(name, planned, pk_columns(config))
            info = await self.describe_table(name)
            if info is None:
                raise FatalError(f"table {name!r} was created but cannot be found")
        elif config.auto_create:
            missing = [c for c in planned if info.resolve(c.name) is None]
            if missing:
                self.log.info(
                    "adding columns sink=%s table=%r columns=%s",
                    config.name,
                    name,
                    ",".join(c.name for c in missing),
                )
                await self.add_columns(name, missing)
                info = await self.describe_table(name) or info
        absent = [c for c in required_columns(config) if info.resolve(c) is None]
        if absent:
            raise FatalError(
                f"table {name!r} has no column {', '.join(repr(c) for c in absent)} "
                f"(needed by format {config.format}, fixed_columns, pk or columns)"
            )
        pk = {info.resolve(c) or c for c in pk_columns(config)}
        if config.insert_mode == "upsert" and pk not in await self.unique_keys(name):
            raise FatalError(
                f"table {name!r} has no primary key or unique index on exactly "
                f"({', '.join(sorted(pk))}); insert_mode upsert needs one"
            )
        self._tables[name] = info
        return info

    def _pk(self, table: TableInfo) -> tuple[str, ...]:
        return tuple(table.resolve(c) or c for c in pk_columns(self.config))

    def _plan(self, ops: Sequence[RowOp]) -> list[Statement]:
        out: list[Statement] = []
        by_table: dict[str, list[RowOp]] = {}
        for op in ops:
            by_table.setdefault(op.table, []).append(op)
        for name, table_ops in by_table.items():
            pk = self._pk(self._tables[name])
            out += plan_statements(
                table_ops, self.config.insert_mode, pk, split_repeats=self.split_repeats
            )
        return out

    async def _apply(self, ops: list[RowOp], *, halt: bool) -> list[RecordFailure]:
        try:
            async with self.transaction():
                for statement in self._plan(ops):
                    await self.execute(statement)
            return []
        except Exception as exc:
            if self._kind(exc) != "record":
                raise
            self.log.info(
                "batch rejected, isolating bad rows sink=%s rows=%d error=%r",
                self.config.name,
                len(ops),
                self.redact(describe_error(exc)),
            )
        excluded: set[int] = set()
        rejected: dict[int, tuple[RowOp, BaseException]] = {}
        while True:
            live = [op for op in ops if id(op) not in excluded]
            bad: list[tuple[RowOp, BaseException]] = []
            try:
                async with self.transaction():
                    for statement in self._plan(live):
                        await self._isolate(statement, bad)
                    if halt and bad:
                        past = after_first_failure(live, [op.record for op, _ in bad])
                        bad_ids = {id(op) for op, _ in bad}
                        if any(id(op) not in bad_ids for op in past):
                            # Rows past the stop were written: undo, and leave them out.
                            rejected.update((id(op), (op, exc)) for op, exc in bad)
                            excluded |= {id(op) for op in past} | bad_ids
                            raise _Redo
            except _Redo:
                continue
            rejected.update((id(op), (op, exc)) for op, exc in bad)
            position = {id(op): index for index, op in enumerate(ops)}
            found = sorted(rejected.values(), key=lambda item: position[id(item[0])])
            return [RecordFailure(op.record, self._record_error(exc)) for op, exc in found]

    async def _isolate(self, statement: Statement, bad: list[tuple[RowOp, BaseException]]) -> None:
        try:
            async with self.savepoint():
                await self.execute(statement)
        except Exception as exc:
            if self._kind(exc) != "record":
                raise
            if len(statement.ops) == 1:
                bad.append((statement.ops[0], exc))
                return
            first, second = statement.halves()
            await self._isolate(first, bad)
            await self._isolate(second, bad)

    def _kind(self, exc: BaseException) -> ErrorKind | None:
        """:meth:`classify`, and a value the driver cannot encode (a lone surrogate in a
        JSON string) is about that row too."""
        if isinstance(exc, UnicodeError):
            return "record"
        return self.classify(exc)

    def _record_error(self, exc: BaseException) -> RecordError:
        error = RecordError(" ".join(self.redact(describe_error(exc)).split()))
        error.__cause__ = exc
        return error
