"""The error hierarchy.

One root with branches so that the runtime, not each sink or transform, decides
what to do: a :class:`ConfigurationError` stops start-up, a
:class:`RetriableError` is retried with backoff, a :class:`RecordError` concerns
one record (dead letter, skip or stop by policy) and a :class:`FatalError` stops
the pipeline that raised it.
"""

from __future__ import annotations

from collections.abc import Iterable


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
    """A transient failure (connection lost, deadlock, server busy): retry later."""


class FatalError(ETLError):
    """A failure that retrying cannot fix: the pipeline stops."""


class RecordError(ETLError):
    """One record cannot be handled (bad JSON, wrong type, constraint violation).

    ``stage`` says where it failed (decode, transform, produce, sink).
    """

    def __init__(self, message: str, stage: str = "sink") -> None:
        super().__init__(message)
        self.stage = stage


class PipelineStopping(ETLError):
    """The pipeline is being stopped while a write was still failing: give up, commit nothing."""


class BackpressureError(ETLError):
    """A sink asks the runtime to pause its partitions for ``retry_after`` seconds."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(f"backpressure: retry after {retry_after}s")
        self.retry_after = retry_after


class MissingExtraError(ETLError, ImportError):
    """An optional dependency is not installed; names the extra that provides it."""

    def __init__(self, package: str, extra: str) -> None:
        from etl.plugins import install_command

        super().__init__(f"{package} is not installed; install it with: {install_command(extra)}")
