"""Moving collected messages from the binlog thread to the event loop.

The reader thread appends :class:`Handover` objects to a deque and wakes the loop
only when the loop is not already awake, so a busy loop takes many handovers per
wakeup and there is no per-event cross-thread call. The thread waits (instead of
reading further) while more than ``max_bytes`` are handed over but not yet
acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from etl.sources.mysql_binlog.position import BinlogPosition

#: One message to publish: key, value, headers (None when there are none).
Message = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


@dataclass(slots=True)
class DeadRow:
    """A change that could not be published (the ``continue`` policy dead-letters it)."""

    topic: str
    table: str
    key: bytes | None
    value: bytes | None
    sequence: str
    position: str
    error: BaseException


@dataclass(slots=True)
class Handover:
    """Messages in binlog order, and the transaction end they complete (if any)."""

    #: (topic, partition, its messages in order)
    batches: list[tuple[str, int, list[Message]]] = field(default_factory=list)
    #: Bytes of keys and values in the batches (for the read-ahead limit).
    nbytes: int = 0
    #: Every change up to this transaction end is in this or an earlier handover.
    mark: BinlogPosition | None = None
    #: Row changes read from the binlog since the previous handover.
    rows: int = 0
    dead: list[DeadRow] = field(default_factory=list)
    #: Set when the ``stop`` policy halts the source after these batches.
    halt: str | None = None


class Handoff:
    """A thread-to-loop queue with one wakeup per batch of handovers and a byte limit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_bytes: int) -> None:
        self.loop = loop
        self.max_bytes = max_bytes
        self._items: deque[Handover] = deque()
        self._wakeup = asyncio.Event()
        self._signalled = False
        self._closed = False
        self._pending = 0
        self._room = threading.Condition()
        #: True while the loop waits for data: the thread hands over at the next
        #: transaction end instead of filling bigger batches.
        self.hungry = True

    # ---- thread side --------------------------------------------------------------

    def put(self, item: Handover, abort: Callable[[], bool]) -> None:
        """Queue a handover, then wait while too much is unacknowledged (unless aborting)."""
        with self._room:
            self._pending += item.nbytes
        self._items.append(item)
        self._signal()
        with self._room:
            while self._pending > self.max_bytes and not abort():
                self._room.wait(0.2)

    def close(self) -> None:
        """No more handovers (the thread has ended)."""
        self._closed = True
        self._signal()

    def _signal(self) -> None:
        if not self._signalled:
            self._signalled = True
            try:
                self.loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    # ---- loop side ------------------------------------------------------------------

    async def get(self) -> list[Handover] | None:
        """Everything queued (waiting for at least one); None once closed and empty."""
        while True:
            if not self._items:
                if self._closed:
                    return None
                self.hungry = True
                await self._wakeup.wait()
            self._wakeup.clear()
            self._signalled = False
            self.hungry = False
            items: list[Handover] = []
            while self._items:
                items.append(self._items.popleft())
            if items:
                return items

    def release(self, nbytes: int) -> None:
        """The broker acknowledged ``nbytes``: let the thread read on."""
        with self._room:
            self._pending -= nbytes
            self._room.notify_all()

    def discard(self) -> None:
        """Drop what is queued (after a failure; it is read again from the saved position)."""
        self._items.clear()
        with self._room:
            self._pending = 0
            self._room.notify_all()
