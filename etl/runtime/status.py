"""What every pipeline reports about itself: state, counters, last error, partitions."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Lifecycle of one pipeline."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"  # the ``stop`` policy halted a partition (a source: the whole source)
    STOPPED = "stopped"  # stopped by an operator (control plane)
    FAILED = "failed"  # could not start or crashed
    LOAD_ERROR = "load_error"  # the transform file could not be loaded
    FINISHED = "finished"  # shut down cleanly


@dataclass
class PartitionProgress:
    """Per partition: what was committed and where the pipeline is."""

    committed: int | None = None
    position: int | None = None
    end: int | None = None

    @property
    def lag(self) -> int | None:
        """Messages behind the end of the partition (end - committed)."""
        if self.end is None:
            return None
        return max(0, self.end - (self.committed or 0))


@dataclass
class PipelineStatus:
    """A snapshot-able status record; the supervisor publishes these."""

    name: str
    kind: str  # transform | sink | source
    state: State = State.STARTING
    source: str = ""
    target: str = ""
    group_id: str = ""
    version: str = ""
    path: str = ""
    error: str | None = None
    error_at: float | None = None
    consumed: int = 0
    produced: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    #: Where this pipeline's dead letters go (its own topic or ``errors.dead_letter_topic``).
    dead_letter_topic: str = ""
    batches: int = 0
    last_batch_ms: float = 0.0
    #: 99th percentile of the last 10,000 ``deal_message`` calls (transforms).
    call_p99_ms: float | None = None
    started_at: float = field(default_factory=time.time)
    partitions: dict[str, PartitionProgress] = field(default_factory=dict)
    #: Partitions halted by the ``stop`` policy: ``topic/partition`` -> ``{"offset": the
    #: bad record's offset, "reason": why, "at": epoch seconds}``.
    halted: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fail(self, state: State, error: str) -> None:
        """Record a state with its reason."""
        self.state = state
        self.error = error
        self.error_at = time.time()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with lag computed per partition."""
        data = asdict(self)
        data["state"] = str(self.state)
        data["partitions"] = {
            tp: {**asdict(progress), "lag": progress.lag}
            for tp, progress in sorted(self.partitions.items())
        }
        return data
