"""The reader thread's side of publishing: record batches per partition, handed over in order.

Messages are appended to one aiokafka batch builder per topic-partition (the C
record builder, so the event loop never touches single messages). A handover
carries every open batch plus the last transaction end read, so the loop saves a
position only after everything before it is acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from etl.sources.mysql_binlog.handoff import DeadRow, Handoff, Handover
from etl.sources.mysql_binlog.position import BinlogPosition

#: Hand over full batches inside a long transaction once they hold this many bytes.
SEALED_FLUSH_BYTES = 4 * 1024 * 1024
#: Room for the record and batch headers within ``max_request_size``.
RECORD_OVERHEAD = 512

NO_HEADERS: list[tuple[str, bytes]] = []


class RecordTooLarge(ValueError):
    """A change event is larger than the producer's ``max_request_size``."""


class BatchWriter:
    """Open batches per (topic, partition), the pending transaction end, dead letters."""

    def __init__(
        self,
        handoff: Handoff,
        make_batch: Callable[[], Any],
        max_request_size: int,
        abort: Callable[[], bool],
    ) -> None:
        self.handoff = handoff
        self.make_batch = make_batch
        self.max_message_bytes = max_request_size - RECORD_OVERHEAD
        self.abort = abort
        #: Messages appended since the last handover.
        self.unflushed = 0
        #: Row changes read since the last handover (for the status).
        self.rows = 0
        #: The last transaction end read and not yet handed over.
        self.mark: BinlogPosition | None = None
        self.last_flush = time.monotonic()
        self._open: dict[tuple[str, int], list[Any]] = {}
        self._sealed: list[tuple[str, int, Any, int]] = []
        self._sealed_bytes = 0
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
        self.unflushed += 1
        self._bytes += size
        if self._sealed_bytes >= SEALED_FLUSH_BYTES:
            self._hand_over_sealed()

    def dead_letter(self, row: DeadRow) -> None:
        """A change to dead-letter, in order with the batches around it."""
        self._dead.append(row)

    def _hand_over_sealed(self) -> None:
        # Full batches inside a long transaction: no position (it has not ended).
        batches, self._sealed = self._sealed, []
        nbytes, self._sealed_bytes = self._sealed_bytes, 0
        self._bytes -= nbytes
        self.handoff.put(Handover(batches, nbytes), self.abort)

    def flush(self, halt: str | None = None) -> None:
        """Hand over every batch and the last transaction end."""
        batches = self._sealed
        for (topic, partition), (builder, count, _size) in self._open.items():
            if count:
                batches.append((topic, partition, builder, count))
        if not batches and self.mark is None and not self._dead and halt is None:
            return
        item = Handover(batches, self._bytes, self.mark, self.rows, self._dead, halt)
        self._open = {}
        self._sealed = []
        self._sealed_bytes = self._bytes = self.unflushed = self.rows = 0
        self._dead = []
        self.mark = None
        self.last_flush = time.monotonic()
        self.handoff.put(item, self.abort)
