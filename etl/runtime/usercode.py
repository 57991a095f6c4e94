"""Where ``deal_message`` runs: a thread of the pipeline's own, never the worker's event loop.

Rules kept here:

* a transform's batch runs on its pipeline's user-code thread, which has an event
  loop of its own for ``async def deal_message``; the worker's loop (Kafka
  group membership, the web API, other pipelines, sinks) never waits on user
  code;
* a call that runs longer than the time limit is a failed record with stage
  ``timeout``: a pure-Python call is interrupted in place; one stuck in C (a
  socket, ``time.sleep``) is abandoned: its thread is left behind (a daemon, it
  never holds up the worker's exit), a new thread takes over, and whatever the
  old call returns later is dropped. Who decides a record's fate (the thread
  finishing the call, or the watchdog timing it out) is settled by one atomic
  ``dict.setdefault``, so a record is never both produced and timed out;
* async calls run concurrently (``CONCURRENCY`` at a time), each with the time
  limit; their outputs are produced in source order, so per-key order holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("etl.transform")

#: How long an interrupted call may take to notice before its thread is abandoned.
ABANDON_GRACE_S = 1.0


class TransformTimeout(Exception):
    """A ``deal_message`` call ran past the pipeline's time limit."""

    stage = "timeout"

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(f"deal_message did not return within {seconds:g}s")
        self.seconds = seconds


class _Interrupt(TransformTimeout):
    """Raised inside the user-code thread to stop a pure-Python call (see ``interrupt``)."""


class CallClock:
    """What the watchdog reads: which record is in a call and since when.

    Written only by the user-code thread (plain attribute writes are atomic);
    ``fate`` is the one place both sides write, through ``setdefault``.
    """

    __slots__ = ("fate", "index", "started")

    def __init__(self) -> None:
        self.index = -1
        self.started = 0.0
        self.fate: dict[int, str] = {}

    def claim(self, index: int, outcome: str) -> bool:
        """Decide ``index``'s fate once; True if ``outcome`` won."""
        return self.fate.setdefault(index, outcome) == outcome


class CallTimes:
    """The most recent call durations, for the status's p99."""

    def __init__(self, size: int = 10_000) -> None:
        self.recent: deque[float] = deque(maxlen=size)

    def add_many(self, seconds: list[float]) -> None:
        self.recent.extend(seconds)

    def p99_ms(self) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class UserCodeThread:
    """A daemon thread running an event loop, for one pipeline's user code."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"etl-user-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        except BaseException:  # an interrupt delivered too late lands here: nothing to do
            pass

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run a plain function on this thread (it may block the thread, not the worker)."""

        async def run() -> Any:
            return fn(*args)

        return self.submit(run())

    def interrupt(self) -> None:
        """Raise :class:`_Interrupt` in this thread at its next Python instruction."""
        ident = self.thread.ident
        if ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(_Interrupt)
            )

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)


async def watch(
    future: concurrent.futures.Future[Any],
    clock: CallClock,
    thread: UserCodeThread,
    *,
    timeout: float,
    stopping: Callable[[], bool],
    on_abandon: Callable[[int], None],
) -> bool:
    """Wait for a sync batch, enforcing the time limit; False if its thread was abandoned.

    ``on_abandon(index)`` is called for the record whose call was left behind.
    Raises :class:`~etl.errors.PipelineStopping` when the pipeline stops meanwhile.
    """
    from etl.errors import PipelineStopping

    wrapped = asyncio.wrap_future(future)
    interrupted: tuple[int, float] | None = None
    while True:
        done, _ = await asyncio.wait({wrapped}, timeout=0.1)
        if done:
            wrapped.result()
            return True
        if stopping():
            # The batch is left uncommitted (read again after the restart); a user
            # call still running is abandoned with its daemon thread.
            wrapped.cancel()
            raise PipelineStopping("stopped while deal_message was running")
        index, started = clock.index, clock.started
        if index < 0 or not started:
            continue
        now = time.monotonic()
        if now - started <= timeout:
            continue
        if interrupted is None or interrupted[0] != index:
            interrupted = (index, now)
            thread.interrupt()
            continue
        if now - interrupted[1] > ABANDON_GRACE_S and clock.claim(index, "timeout"):
            log.error(
                "deal_message stuck, thread abandoned pipeline=%s seconds=%.1f",
                thread.name,
                now - started,
            )
            on_abandon(index)
            return False


def call_once(fn: Callable[[dict[str, Any]], Any], message: dict[str, Any], timeout: float) -> Any:
    """One call as the worker makes it (``etl test-transform``): off this thread, time-limited.

    A sync function runs on a daemon thread (a stuck one is left behind); an async
    one under ``asyncio.wait_for``. Raises what the function raised (SystemExit
    included) or :class:`TransformTimeout`.
    """
    if asyncio.iscoroutinefunction(fn):

        async def run() -> Any:
            try:
                return await asyncio.wait_for(fn(message), timeout)
            except TimeoutError:
                raise TransformTimeout(timeout) from None

        return asyncio.run(run())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(message)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="etl-user-test", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TransformTimeout(timeout)
    if "error" in box:
        raise box["error"]
    return box.get("result")
