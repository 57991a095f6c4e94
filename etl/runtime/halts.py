"""Partitions halted by the ``stop`` policy, while the rest of the pipeline goes on.

Under ``stop`` one bad record halts only the partition that holds it. The runner
(:class:`etl.runtime.consumer.ConsumerPipeline`) does, in this order:

1. commit what is safe on every partition: nothing at or past the bad record on
   its partition (the halt cut, :func:`etl.runtime.policy.halt_partitions`);
2. hold the halted partition paused in the consumer
   (:meth:`~etl.runtime.native.NativeConsumer.hold`) and seek it back to the bad
   record; what was kept of it (a sink's buffered records, a transform's
   retry bookkeeping) is dropped: it is read again after the resume;
3. consume and commit every other partition as before. The status lists the
   halted partitions (``PipelineStatus.halted``: offset, reason, time); the
   pipeline's state is ``halted`` while any partition is, with the first halt's
   reason as its error, and ``running``/``paused`` again when none is.

Ordering: records of the other partitions, and so of other keys, go on while a
halted partition waits; the order per key holds, because a key lives on one
partition.

What ends a halt:

* :meth:`~etl.runtime.consumer.ConsumerPipeline.clear_halts` (the supervisor's
  resume, ``etl resume``): the partition is read again from its committed offset,
  so from the bad record, or from wherever an offset reset moved it; it halts again
  if that record is still bad;
* a transform swapped for a new version (hot reload) clears its halts the same way;
* a rebalance that moves the partition to another worker forgets the halt here; the
  new owner halts at the same record when it reads it. A rebalance that assigns it
  to this worker again keeps it halted (held paused from the assignment on).

A pipeline-level pause and resume never resume a halted partition. A source has no
partitions: it halts as a whole (:mod:`etl.sources.base`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aiokafka import TopicPartition

from etl.runtime.status import PipelineStatus, State


@dataclass(frozen=True, slots=True)
class Halt:
    """One halted partition: the offset of its bad record, why, and since when."""

    offset: int
    reason: str
    at: float


def tp_key(tp: TopicPartition) -> str:
    """``topic/partition`` as used in status output."""
    return f"{tp.topic}/{tp.partition}"


class PartitionHalts:
    """The halted partitions of one pipeline, mirrored in its status."""

    def __init__(self, status: PipelineStatus) -> None:
        self.status = status
        self._halts: dict[TopicPartition, Halt] = {}

    def __contains__(self, tp: object) -> bool:
        return tp in self._halts

    def __bool__(self) -> bool:
        return bool(self._halts)

    def __iter__(self) -> Iterator[TopicPartition]:
        return iter(list(self._halts))

    def get(self, tp: TopicPartition) -> Halt | None:
        return self._halts.get(tp)

    def add(self, tp: TopicPartition, offset: int, reason: str) -> Halt:
        """Halt ``tp`` at ``offset``."""
        halt = self._halts[tp] = Halt(offset, reason, time.time())
        return halt

    def forget(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Halt]:
        """Stop tracking these partitions; the halts that were there."""
        return {tp: halt for tp in tps if (halt := self._halts.pop(tp, None)) is not None}

    def show(self, *, paused: bool) -> None:
        """Bring the status in line: the list of halts, and the state they imply.

        A failed state (retrying, crashed) is left as it is: the loop settles it when
        it recovers.
        """
        status = self.status
        status.halted = {
            tp_key(tp): {"offset": halt.offset, "reason": halt.reason, "at": halt.at}
            for tp, halt in sorted(self._halts.items())
        }
        if status.state not in (State.RUNNING, State.PAUSED, State.HALTED):
            return
        if self._halts:
            first = next(iter(self._halts.values()))
            if status.state != State.HALTED or status.error != first.reason:
                status.fail(State.HALTED, first.reason)
        else:
            status.state = State.PAUSED if paused else State.RUNNING
