"""The error hierarchy: one root, :class:`ETLError`, one branch per decision.

Sinks, sources and transforms only *say* what went wrong by the branch they
raise; the runner (:mod:`etl.runtime.consumer`, with the helpers of
:mod:`etl.runtime.policy`) decides what happens, each branch in one place:

==========================  ====================================================
branch                      what the runner does
==========================  ====================================================
:class:`ConfigurationError` start-up stops with the list of problems
:class:`RetriableError`     the destination is unavailable: the write (or the
                            whole batch) is retried with backoff; nothing
                            already written is written again
:class:`GaveUp`             retries ran out (``max_retries``): the pipeline
                            stops as *failed*, nothing past the last commit is
                            committed
:class:`FatalError`         retrying cannot fix it: the pipeline stops as
                            *failed*, nothing past the last commit is committed
:class:`RecordError`        one record: dead letter, skip or stop by the
                            pipeline's rules; never retried, never a crash
:class:`BackpressureError`  the destination asks for a pause: wait
                            ``retry_after`` seconds, then write again (a sink's
                            write) or read the batch again (fetching paused);
                            never counted as a retry, not an error in the status
:class:`PipelineHalted`     the ``stop`` rule: commit what is safe; the
                            partitions it names (``partitions``) halt at their
                            bad record, the others go on (a source, which has
                            no partitions, halts as a whole)
:class:`PipelineStopping`   the worker stops while a write still fails: give
                            up, commit nothing
==========================  ====================================================

:class:`GaveUp` is a branch of its own, not a :class:`RetriableError`: an
outer retry loop must not retry what an inner one gave up on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from etl.runtime.status import State


class ETLError(Exception):
    """Root of every error this framework raises on purpose."""


class ConfigurationError(ETLError):
    """The configuration is invalid; ``problems`` lists each one by path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems))


class TransformLoadError(ETLError):
    """A transform file cannot be used; names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class RetriableError(ETLError):
    """A transient failure (connection lost, deadlock, server busy): retry later.

    ``retry_after`` is the destination's own hint (an HTTP ``Retry-After``): the retry
    waits at least that long, within the back-off's ceiling.
    """

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(ETLError):
    """A failure that retrying cannot fix: the pipeline stops."""


class RecordError(ETLError):
    """One record cannot be handled (bad JSON, wrong type, constraint violation).

    ``stage`` says where it failed (decode, transform, produce, sink).
    """

    def __init__(self, message: str, stage: str = "sink") -> None:
        super().__init__(message)
        self.stage = stage


class GaveUp(ETLError):
    """A retriable failure persisted past ``max_retries``: the pipeline stops as failed."""

    def __init__(self, attempts: int, reason: str = "") -> None:
        self.attempts = attempts
        self.reason = reason
        text = f"gave up after {attempts} attempts"
        super().__init__(f"{text}: {reason}" if reason else text)


class PartitionHalt(NamedTuple):
    """Where one partition halts under the ``stop`` rule: its first bad record, and why."""

    offset: int
    reason: str


class PipelineHalted(ETLError):
    """The ``stop`` rule: commit ``commit`` (``{partition: next offset}``), then halt.

    Raised by a pipeline's ``process`` (transform, sink) or a source; nothing at or past
    a partition's first bad record is in ``commit`` (see :func:`etl.runtime.policy.halt_cut`).
    ``partitions`` names the partitions that halt, each at its bad record
    (:meth:`at_partitions`): the runner halts those and goes on with the others. Without
    ``partitions`` (a source, a sink that raises it itself) the whole pipeline halts.
    """

    def __init__(
        self,
        reason: str,
        commit: dict[Any, int] | None = None,
        state: State = State.HALTED,
        partitions: Mapping[Any, PartitionHalt] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.commit: dict[Any, int] = commit or {}
        #: The pipeline's state after the halt (``failed`` when it cannot go on by itself).
        self.state = state
        self.partitions: dict[Any, PartitionHalt] = dict(partitions or {})

    @classmethod
    def at_partitions(
        cls, partitions: Mapping[Any, PartitionHalt], commit: dict[Any, int]
    ) -> PipelineHalted:
        """These partitions halt, each at its bad record (the reason names the first one
        given); ``commit`` is what is safe to commit on every partition."""
        first = next(iter(partitions.values()))
        more = len(partitions) - 1
        others = f"{more} other partition{'s' if more > 1 else ''}"
        reason = f"{first.reason} (and {others} halted)" if more else first.reason
        return cls(reason, commit, partitions=partitions)


class PipelineStopping(ETLError):
    """The pipeline is being stopped while a write was still failing: give up, commit nothing."""


class BackpressureError(ETLError):
    """The destination asks for a pause of ``retry_after`` seconds (a 429, a full queue).

    Raised instead of sleeping: the runner pauses fetching, reads the uncommitted batch
    again after the pause, and keeps the pipeline's status running. Nothing of the
    batch may have been written yet, or writing it again must be harmless (upsert,
    document id, deterministic object name), as for a retry.
    """

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(f"backpressure: retry after {retry_after}s")
        self.retry_after = retry_after


class MissingExtraError(ETLError, ImportError):
    """An optional dependency is not installed; names the extra that provides it."""

    def __init__(self, package: str, extra: str) -> None:
        from etl.plugins import install_command

        super().__init__(f"{package} is not installed; install it with: {install_command(extra)}")
