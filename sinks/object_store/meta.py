"""The per-partition meta object: what is in the store, so that a restart writes
nothing twice and skips nothing.

Kafka offsets are committed only after the objects are written, but a worker
can die between the two; the meta object closes that gap. For every write of a
partition the sink

1. records the objects it is about to write (``pending``) in the meta object,
2. writes the data objects, one after another, in offset order,
3. records them as written (``last_offset`` moves on, ``pending`` is cleared).

At start (or when the partition is assigned again) the sink reads the meta
object. Pending objects that exist were written (objects are put atomically,
and in order, so the ones that exist are a prefix of the list); the rest were
not, and their records are written again. A redelivered record at or below
``last_offset`` is skipped, unless it is listed in ``rejected`` (the sink
refused it and it must go through the error rules again).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from etl.errors import FatalError

FORMAT_VERSION = 1
#: How many rejected offsets a meta object remembers (only recent ones can be redelivered).
MAX_REJECTED = 1000


@dataclass
class PendingObject:
    """A data object the sink has started to write."""

    path: str
    first_offset: int
    last_offset: int
    records: int


@dataclass
class PartitionMeta:
    """The content of ``oss_meta_file_partition_{p}`` (JSON)."""

    sink: str
    topic: str
    partition: int
    #: Highest offset whose record is in a data object (-1: none yet).
    last_offset: int = -1
    #: Offsets at or below ``last_offset`` that were rejected, not written.
    rejected: list[int] = field(default_factory=list)
    pending: list[PendingObject] = field(default_factory=list)
    objects_written: int = 0
    records_written: int = 0
    last_object: str | None = None
    updated_ms: int = 0
    version: int = FORMAT_VERSION

    def is_written(self, offset: int) -> bool:
        """Whether a redelivered record is already in the store."""
        # Only redelivered records get past the first test, so the list scan is rare.
        return offset <= self.last_offset and offset not in self.rejected

    def add_rejected(self, offsets: list[int]) -> None:
        """Remember rejected offsets (the most recent :data:`MAX_REJECTED`)."""
        if offsets:
            self.rejected = sorted(set(self.rejected).union(offsets))[-MAX_REJECTED:]

    def mark_written(self, pending: PendingObject) -> None:
        """A data object is in the store."""
        self.last_offset = max(self.last_offset, pending.last_offset)
        self.objects_written += 1
        self.records_written += pending.records
        self.last_object = pending.path

    def to_bytes(self) -> bytes:
        """JSON of this meta object."""
        self.updated_ms = int(time.time() * 1000)
        data = asdict(self)
        return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> PartitionMeta:
        """Parse a meta object; a damaged one is a FatalError naming it."""
        try:
            data: dict[str, Any] = json.loads(raw)
            pending = [PendingObject(**item) for item in data.pop("pending", [])]
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known, pending=pending)
        except (ValueError, TypeError) as exc:
            raise FatalError(
                f"meta object {where} is not readable ({exc}); move it away to start this "
                "partition from the committed offset"
            ) from None
