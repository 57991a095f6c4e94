"""Where retry, the halt cut and the failure policy are decided: once, for every pipeline.

Transforms, sinks and sources do not write their own retry loops or policy
defaults; they call these helpers, and the runner (:mod:`etl.runtime.consumer`)
handles what they raise, one branch of :mod:`etl.errors` each.

Rules kept here:

* only a :class:`~etl.errors.RetriableError` (the destination is unavailable) is
  retried; a :class:`~etl.errors.RecordError`, a
  :class:`~etl.errors.FatalError` or anything else propagates at once, so one
  bad record never turns into a retry of the batch;
* a retry waits by :class:`Backoff` (exponential, capped), gives up with
  :class:`~etl.errors.GaveUp` past ``max_retries``, and gives up with
  :class:`~etl.errors.PipelineStopping` as soon as the pipeline is stopped, so
  a worker never hangs on a destination that is down;
* an unset ``on_error`` means ``errors.policy`` (:func:`resolve_policy`), for
  transforms, sinks and sources alike;
* under the ``stop`` rule nothing at or past a partition's first bad record is
  committed (:func:`halt_cut`), and that partition alone halts there
  (:func:`halt_partitions`); how the runner halts one partition and goes on with
  the others is in :mod:`etl.runtime.consumer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Literal, TypeVar

from aiokafka import TopicPartition

from etl.errors import (
    BackpressureError,
    ConfigurationError,
    GaveUp,
    PartitionHalt,
    PipelineHalted,
    PipelineStopping,
    RetriableError,
)

if TYPE_CHECKING:
    from etl.config import ETLSettings, SinkConfigBase

T = TypeVar("T")

Policy = Literal["continue", "stop"]

#: How often a retry's wait looks at ``stopping()``: the longest a stop waits for it.
STOP_CHECK_SECONDS = 0.05


class Backoff:
    """Exponential back-off: first, factor, ceiling, optional retry limit.

    ``next_delay()`` counts one more failed attempt and returns how long to wait
    before the next one; past ``max_retries`` it raises :class:`GaveUp` instead.
    ``reset()`` after a success starts again from ``first``.
    """

    def __init__(
        self,
        first: float = 0.5,
        factor: float = 2.0,
        ceiling: float = 30.0,
        max_retries: int | None = None,
    ) -> None:
        if first < 0 or factor < 1 or ceiling < first:
            raise ValueError(
                f"backoff needs 0 <= first <= ceiling and factor >= 1, got "
                f"first={first} factor={factor} ceiling={ceiling}"
            )
        self.first = first
        self.factor = factor
        self.ceiling = ceiling
        self.max_retries = max_retries
        self.attempts = 0
        self._delay = first

    @classmethod
    def for_sink(cls, config: SinkConfigBase) -> Backoff:
        """A sink's back-off: retry_backoff_ms, retry_backoff_max_ms, max_retries."""
        return cls(
            first=config.retry_backoff_ms / 1000,
            ceiling=max(config.retry_backoff_max_ms, config.retry_backoff_ms) / 1000,
            max_retries=config.max_retries,
        )

    def next_delay(self) -> float:
        """Count a failed attempt; the seconds to wait before the next (GaveUp past the limit)."""
        self.attempts += 1
        if self.max_retries is not None and self.attempts > self.max_retries:
            raise GaveUp(self.attempts)
        delay = self._delay
        self._delay = min(self._delay * self.factor, self.ceiling)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits ``first`` again."""
        self.attempts = 0
        self._delay = self.first


def resolve_policy(explicit: str | None, settings: ETLSettings) -> Policy:
    """The one place an unset on_error becomes errors.policy (transforms, sinks, sources)."""
    policy = explicit if explicit is not None else settings.errors.policy
    if policy not in ("continue", "stop"):
        raise ConfigurationError([f"on_error: {policy!r} is not one of: continue, stop"])
    return policy  # type: ignore[return-value]


async def wait_unless_stopping(seconds: float, stopping: Callable[[], bool]) -> bool:
    """Sleep ``seconds``; return False early (and at once) when ``stopping()`` turns true."""
    deadline = time.monotonic() + seconds
    while not stopping():
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, STOP_CHECK_SECONDS))
    return False


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    stopping: Callable[[], bool],
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    only: type[RetriableError] = RetriableError,
    pauses: type[BackpressureError] | None = BackpressureError,
) -> T:
    """Run operation; on RetriableError (the destination is unavailable) wait and run it again.

    Record errors are never retried (they propagate). Raises PipelineStopping as soon as
    stopping() is true during a wait, GaveUp past max_retries. ``on_retry(attempt, error,
    delay)`` is called before each wait (log, status). ``what`` names the operation in
    the errors raised. A success resets ``backoff``.

    A :class:`~etl.errors.BackpressureError` (the destination asks for a pause) waits
    its ``retry_after`` and runs the operation again without counting an attempt; a
    RetriableError's ``retry_after`` hint lengthens its wait up to the ceiling.

    ``only`` narrows what is retried here to one kind of RetriableError, and ``pauses``
    what is paused for here to one kind of BackpressureError (None: none); the others
    propagate at once, to the retry that owns them (e.g. a request retried ``retries``
    times inside a write, while an unreachable server retries the whole write).
    """
    while True:
        try:
            result = await operation()
        except BackpressureError as exc:
            if pauses is None or not isinstance(exc, pauses):
                raise
            if on_retry is not None:
                on_retry(backoff.attempts, exc, exc.retry_after)
            if not await wait_unless_stopping(exc.retry_after, stopping):
                raise PipelineStopping(f"{what} still paused at stop: {exc}") from exc
            continue
        except RetriableError as exc:
            if not isinstance(exc, only):
                raise
            if stopping():
                raise PipelineStopping(f"{what} still failing at stop: {exc}") from exc
            try:
                delay = backoff.next_delay()
            except GaveUp as gave_up:
                raise GaveUp(gave_up.attempts, f"{what}: {exc}") from exc
            if exc.retry_after:
                delay = min(max(delay, exc.retry_after), backoff.ceiling)
            if on_retry is not None:
                on_retry(backoff.attempts, exc, delay)
            if not await wait_unless_stopping(delay, stopping):
                raise PipelineStopping(f"{what} still failing at stop: {exc}") from exc
            continue
        backoff.reset()
        return result


def halt_cut(failures: Iterable[tuple[TopicPartition, int]]) -> dict[TopicPartition, int]:
    """Per partition, the offset of its first bad record: nothing at or past it may be committed.

    The result is the commit that halts there (a committed offset is the next one to read).
    """
    cut: dict[TopicPartition, int] = {}
    for tp, offset in failures:
        if tp not in cut or offset < cut[tp]:
            cut[tp] = offset
    return cut


def apply_halt_cut(
    commit: dict[TopicPartition, int], failures: Iterable[tuple[TopicPartition, int]]
) -> dict[TopicPartition, int]:
    """``commit`` lowered to the :func:`halt_cut` of ``failures`` (in place; returned)."""
    for tp, offset in halt_cut(failures).items():
        commit[tp] = min(commit[tp], offset) if tp in commit else offset
    return commit


def halt_partitions(
    commit: dict[TopicPartition, int], failures: Iterable[tuple[TopicPartition, int, str]]
) -> PipelineHalted:
    """The ``stop`` rule for ``(partition, offset, reason)`` failures: each partition halts at
    its first bad record, and ``commit`` (lowered to the :func:`halt_cut`, in place) is what
    is safe on every partition. Raise the result."""
    halts: dict[TopicPartition, PartitionHalt] = {}
    for tp, offset, reason in failures:
        if tp not in halts or offset < halts[tp].offset:
            halts[tp] = PartitionHalt(offset, reason)
    apply_halt_cut(commit, ((tp, halt.offset) for tp, halt in halts.items()))
    return PipelineHalted.at_partitions(halts, commit)
