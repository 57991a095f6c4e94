"""One transform batch: its state, and the helpers that settle it.

A batch is filled on the pipeline's user-code thread (``_run_sync`` /
``_run_async`` in :mod:`etl.runtime.transform`) and read on the event loop only
after that thread is done with it, so it needs no locks; the one field both
sides write, a record's fate under a time limit, goes through
:meth:`~etl.runtime.usercode.CallClock.claim`.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from confluent_kafka import KafkaError, KafkaException

from etl.errors import PartitionHalt, PipelineHalted, RecordError, RetriableError
from etl.message import OutRecord
from etl.runtime.consumer import Batch, Commit
from etl.runtime.native import ProduceError, ProducerFenced, is_record_error, produce_error
from etl.runtime.policy import apply_halt_cut
from etl.runtime.usercode import ABANDON_GRACE_S, CallClock, TransformTimeout, _Interrupt

if TYPE_CHECKING:
    from etl.runtime.transform import TransformPipeline

#: Errors of building or handing one output to the client: that record's fault.
RECORD_PRODUCE_ERRORS: tuple[type[BaseException], ...] = (ProduceError, ValueError, TypeError)


class KnownBad:
    """A record whose earlier attempt in an aborted transaction failed (exactly-once)."""

    __slots__ = ("exc", "halt", "stage")

    def __init__(self, stage: str, exc: BaseException, halt: bool) -> None:
        self.stage = stage
        self.exc = exc
        #: Its dead letter could not be written either: its partition halts before it.
        self.halt = halt


class Job:
    """One batch's state, filled on the user-code thread and read on the event loop after."""

    def __init__(
        self,
        pipeline: TransformPipeline,
        stop: bool,
        acked: Mapping[TopicPartition, Container[int]],
        timeout: float,
        budget: float,
    ) -> None:
        self.pipeline = pipeline
        self.stop = stop
        self.acked = acked
        self.timeout = timeout
        self.budget = budget
        self.clock = CallClock()
        #: index -> (tp, source message); failed deliveries are matched back to it.
        self.sources: list[tuple[TopicPartition, Any]] = []
        #: (source index, output) for every output queued.
        self.outputs: list[tuple[int, OutRecord]] = []
        self.failed: list[tuple[int, str, BaseException]] = []
        self.commit: Commit = {}
        self.filtered = 0
        #: Partitions halted in this batch (``stop``), each at its first bad record.
        self.halts: dict[TopicPartition, PartitionHalt] = {}
        self.call_times: list[float] = []
        self.ended_early = False
        self.abandoned = False
        #: Exactly-once: records of an aborted attempt that failed (also in ``acked``).
        self.known_bad = pipeline._known_bad

    def known(self, tp: TopicPartition, message: Any) -> KnownBad | None:
        """How ``message`` failed in an aborted transaction, if it did."""
        return self.known_bad.get(tp, {}).get(message.offset())

    def fail(
        self,
        tp: TopicPartition,
        message: Any,
        index: int,
        exc: BaseException,
        stage: str | None = None,
        *,
        halt: bool = False,
    ) -> bool:
        """Route a failed record; True when its partition halts here (``stop``, or ``halt``):
        the batch goes on with the other partitions."""
        if stage is None:
            stage = exc.stage if isinstance(exc, RecordError | TransformTimeout) else "transform"
        if self.stop or halt:
            self.halt_at(tp, message, stage, exc)
            return True
        self.failed.append((index, stage, exc))
        return False

    def halt_at(
        self,
        tp: TopicPartition,
        message: Any,
        stage: str,
        exc: BaseException,
        reason: str | None = None,
    ) -> None:
        """``tp`` halts at ``message`` (its earliest bad record wins): nothing at or past
        it is committed."""
        offset = message.offset()
        current = self.halts.get(tp)
        if current is None or offset < current.offset:
            why = reason or self.pipeline._halt_reason(message, stage, exc)
            self.halts[tp] = PartitionHalt(offset, why)
        apply_halt_cut(self.commit, [(tp, offset)])

    def halted(self, commit: Commit) -> PipelineHalted | None:
        """The halt of this batch's halted partitions, committing ``commit``; None if none."""
        if not self.halts:
            return None
        return PipelineHalted.at_partitions(self.halts, commit)

    def cut(self, tp: TopicPartition, next_offset: int) -> None:
        """End the batch early: ``tp`` is done up to ``next_offset``; the rest is read again."""
        self.commit[tp] = next_offset
        self.ended_early = True

    def abandon(self, index: int) -> None:
        """The call of record ``index`` was left behind: it timed out; the batch ends."""
        self.abandoned = True
        tp, message = self.sources[index]
        if not self.fail(tp, message, index, TransformTimeout(self.timeout)):
            self.cut(tp, message.offset() + 1)

    def seeks(self, batch: Batch, complete: bool) -> dict[TopicPartition, int]:
        """Where to read again after a batch that ended early (a halted partition is
        sought to its bad record by the runner)."""
        if complete and not self.ended_early:
            return {}
        out = {}
        for tp, messages in batch.items():
            if not messages or tp in self.halts:
                continue
            resume = self.commit.get(tp, messages[0].offset())
            if resume <= messages[-1].offset():
                out[tp] = resume
        return out


def absorb(clock: CallClock, index: int) -> None:
    """Wait for the watchdog's interrupt of ``index`` (it claimed the record) and swallow it."""
    for _ in range(int(ABANDON_GRACE_S / 0.001) * 2):
        try:
            time.sleep(0.001)
        except _Interrupt:
            return


def source_of(msg: Any, outputs: list[tuple[int, OutRecord]], taken: set[int]) -> int:
    """The source index of a failed output, matched by its bytes (failures are rare).

    Byte-identical outputs (same key, value and headers) are interchangeable: which
    one is marked failed changes nothing in the target topic.
    """
    key, value, headers = msg.key(), msg.value(), msg.headers() or []
    fallback = -1
    for index, out in outputs:
        if out.key == key and out.value == value and (out.headers or []) == headers:
            if index not in taken:
                return index
            fallback = index
    return fallback


def produce_failure(exc: BaseException, topic: str) -> BaseException:
    """What a refused ``produce`` call means: a record error, or raise to retry."""

    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL):
            # The producer can never produce again (fenced by a newer transactional
            # producer with its id): retrying cannot help; the pipeline stops.
            raise ProducerFenced(f"producer unusable: {error.str()}") from None
        if isinstance(error, KafkaError) and not is_record_error(error):
            raise RetriableError(f"produce to {topic!r} failed: {error.str()}") from None
        reason = error if isinstance(error, KafkaError) else str(exc)
        return produce_error(reason, record_error=True)
    if isinstance(exc, RECORD_PRODUCE_ERRORS | OverflowError):
        return exc
    raise exc


def user_code_location(exc: BaseException, path: str) -> str | None:
    """``file:line`` of the innermost frame of the transform file in ``exc``'s traceback."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            where = f"{path}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
