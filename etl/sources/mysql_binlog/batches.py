"""The reader thread's side of publishing: messages per partition, handed over in order.

Messages are collected per topic-partition as plain ``(key, value, headers)``
tuples; the event loop queues a whole handover on the librdkafka producer and
waits once (:mod:`.source`), so it never waits for single messages. A handover
carries every collected message plus the last transaction end read, so the loop
saves a position only after everything before it is acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from etl.sources.mysql_binlog.handoff import DeadRow, Handoff, Handover, Message
from etl.sources.mysql_binlog.position import BinlogPosition

#: Hand over inside a long transaction once this many bytes are collected.
SEALED_FLUSH_BYTES = 4 * 1024 * 1024
#: Room for the record and batch headers within ``max_request_size``.
RECORD_OVERHEAD = 512

NO_HEADERS: list[tuple[str, bytes]] = []


class RecordTooLarge(ValueError):
    """A change event is larger than the producer's ``max_request_size``."""


class BatchWriter:
    """Messages per (topic, partition), the pending transaction end, dead letters."""

    def __init__(
        self,
        handoff: Handoff,
        max_request_size: int,
        abort: Callable[[], bool],
    ) -> None:
        self.handoff = handoff
        self.max_message_bytes = max_request_size - RECORD_OVERHEAD
        self.abort = abort
        #: Messages appended since the last handover.
        self.unflushed = 0
        #: Row changes read since the last handover (for the status).
        self.rows = 0
        #: The last transaction end read and not yet handed over.
        self.mark: BinlogPosition | None = None
        self.last_flush = time.monotonic()
        self._open: dict[tuple[str, int], list[Message]] = {}
        self._bytes = 0
        self._dead: list[DeadRow] = []

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] = NO_HEADERS,
    ) -> None:
        """Add one message; raises :class:`RecordTooLarge` for one the broker would refuse."""
        size = len(value) + (len(key) if key is not None else 0)
        if size > self.max_message_bytes:
            raise RecordTooLarge(
                f"the change event is {size} bytes, more than kafka.max_request_size allows"
            )
        messages = self._open.get((topic, partition))
        if messages is None:
            messages = self._open[(topic, partition)] = []
        messages.append((key, value, headers or None))
        self.unflushed += 1
        self._bytes += size
        if self._bytes >= SEALED_FLUSH_BYTES:
            # A long transaction: hand over what it has so far. Every change up to
            # ``mark`` (an earlier transaction end) is in this handover, so it may go too.
            self.flush()

    def dead_letter(self, row: DeadRow) -> None:
        """A change to dead-letter, in order with the messages around it."""
        self._dead.append(row)

    def flush(self, halt: str | None = None) -> None:
        """Hand over every collected message and the last transaction end."""
        batches = [(topic, part, msgs) for (topic, part), msgs in self._open.items() if msgs]
        if not batches and self.mark is None and not self._dead and halt is None:
            return
        item = Handover(batches, self._bytes, self.mark, self.rows, self._dead, halt)
        self._open = {}
        self._bytes = self.unflushed = self.rows = 0
        self._dead = []
        self.mark = None
        self.last_flush = time.monotonic()
        self.handoff.put(item, self.abort)
