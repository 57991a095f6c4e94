"""Waiting in tests: poll a condition with a generous deadline, never a fixed sleep."""

from __future__ import annotations

import time
from typing import Any


def wait_until(
    predicate: Any,
    what: str,
    timeout: float = 60.0,
    worker: Any = None,
    retry_on: tuple[type[BaseException], ...] = (OSError,),
) -> Any:
    """Poll ``predicate`` until it returns something true (and return it).

    A connection refused (a worker still starting) counts as not yet, as does any
    other exception of ``retry_on`` (a pipeline not yet listed: ``KeyError``); with ``worker``
    (a :class:`~etl.testing.worker.WorkerProcess`) a worker that exited fails at once,
    and the failure shows the end of its log.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except retry_on:
            last = None
        if last:
            return last
        process = getattr(worker, "process", None)
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}:\n{worker.log()[-4000:]}")
        time.sleep(0.2)
    tail = f"\n{worker.log()[-4000:]}" if worker is not None else ""
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}{tail}")
