"""Per-partition halts in the runner (stand-in Kafka client): one waits, the others go on."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from etl.config import ETLSettings
from etl.errors import PartitionHalt, PipelineHalted
from etl.runtime.consumer import Batch, Commit, ConsumerPipeline
from etl.runtime.status import State

P0, P1 = TopicPartition("src", 0), TopicPartition("src", 1)
BAD = 3


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class PartitionedConsumer:
    """Serves one record per partition per poll from each partition's position; keeps
    commits, seeks, and which partitions are paused or held."""

    def __init__(self, partitions: set[TopicPartition]) -> None:
        self.assigned = set(partitions)
        self.position = {tp: 0 for tp in partitions}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.held: set[TopicPartition] = set()
        self.all_paused = False

    def fetching(self) -> set[TopicPartition]:
        return set() if self.all_paused else self.assigned - self.held

    async def getmany(self, **_: Any) -> Batch:
        await asyncio.sleep(0)
        batch = {}
        for tp in sorted(self.fetching(), key=lambda t: t.partition):
            batch[tp] = [Record(self.position[tp])]
            self.position[tp] += 1
        return batch

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    async def commit(self, offsets: Commit) -> None:
        self.committed_offsets.update(offsets)

    def pause_all(self, paused: bool) -> None:
        self.all_paused = paused

    def hold(self, tp: TopicPartition) -> None:
        self.held.add(tp)

    def release(self, tp: TopicPartition) -> None:
        self.held.discard(tp)

    async def stop(self) -> None:
        pass


class HaltingPipeline(ConsumerPipeline):
    """Commits each record; a record at offset ``BAD`` of a partition in ``bad`` halts it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(name="p", topics=["src"], settings=ETLSettings(), **kwargs)
        self.bad = {P1}
        self.seen: list[tuple[int, int]] = []
        self.forgotten: list[set[TopicPartition]] = []

    async def _open(self) -> None:
        self.consumer = PartitionedConsumer({P0, P1})
        self._assigned = {P0, P1}
        self.status.state = State.RUNNING

    async def process(self, batch: Batch) -> Commit:
        commit: Commit = {}
        halts = {}
        for tp, records in batch.items():
            for record in records:
                self.seen.append((tp.partition, record.offset))
                if tp in self.bad and record.offset == BAD:
                    halts[tp] = PartitionHalt(BAD, f"bad record at {tp.partition}@{BAD}")
                    break
                commit[tp] = record.offset + 1
        if halts:
            raise PipelineHalted.at_partitions(halts, commit)
        return commit

    def forget_partitions(self, partitions: set[TopicPartition]) -> None:
        self.forgotten.append(set(partitions))


async def run_until(pipeline: HaltingPipeline, done: Any) -> PartitionedConsumer:
    """Run the loop until ``done(consumer)`` is true (or fail after 5 s)."""
    if pipeline.consumer is None:
        await pipeline._open()
    consumer: PartitionedConsumer = pipeline.consumer
    task = asyncio.ensure_future(pipeline._run())
    try:
        for _ in range(5000):
            if done(consumer):
                return consumer
            await asyncio.sleep(0.001)
        raise AssertionError(f"not reached; seen {pipeline.seen[-10:]}")
    finally:
        pipeline._ended = True
        await asyncio.wait_for(task, 5)
        pipeline._ended = False


async def test_a_bad_record_halts_its_partition_only_and_the_others_go_on() -> None:
    pipeline = HaltingPipeline()
    consumer = await run_until(pipeline, lambda c: c.committed_offsets.get(P0, 0) >= 10)
    assert consumer.committed_offsets[P1] == BAD, "nothing at or past the bad record"
    assert (P1, BAD) in consumer.seeks and consumer.held == {P1}
    assert [o for p, o in pipeline.seen if p == 1] == [0, 1, 2, 3], "read once, then held"
    assert [o for p, o in pipeline.seen if p == 0] == list(range(len(pipeline.seen) - 4))
    assert pipeline.forgotten == [{P1}], "what was kept of it is dropped"
    status = pipeline.status
    assert status.state == State.HALTED and status.error == f"bad record at 1@{BAD}"
    assert set(status.halted) == {"src/1"}
    assert status.halted["src/1"]["offset"] == BAD
    assert status.halted["src/1"]["reason"] == status.error
    assert status.to_dict()["halted"]["src/1"]["offset"] == BAD
    assert status.partitions["src/1"].position == BAD


async def test_a_pipeline_resume_keeps_a_halted_partition_halted() -> None:
    pipeline = HaltingPipeline()
    consumer = await run_until(pipeline, lambda c: bool(c.held))
    pipeline.pause()
    assert pipeline.status.state == State.HALTED, "a halt shows over a pause"
    pipeline.resume()
    assert consumer.held == {P1} and pipeline.status.state == State.HALTED


async def test_clear_halts_reads_the_partition_again_from_its_committed_offset() -> None:
    pipeline = HaltingPipeline()
    consumer = await run_until(pipeline, lambda c: bool(c.held))
    assert pipeline.clear_halts() == ["src/1"]
    assert pipeline.status.state == State.RUNNING and pipeline.status.halted == {}
    # Still bad: read again from the committed offset (the bad record), halted again.
    consumer.position[P1] = 99  # wherever it was, the resume starts at the commit
    seen = len(pipeline.seen)
    await run_until(pipeline, lambda c: bool(c.held) and (1, BAD) in pipeline.seen[seen:])
    assert [o for p, o in pipeline.seen[seen:] if p == 1] == [BAD]
    assert pipeline.status.state == State.HALTED
    # Fixed: read again from the bad record and on.
    pipeline.bad = set()
    assert pipeline.clear_halts() == ["src/1"]
    await run_until(pipeline, lambda c: c.committed_offsets[P1] >= BAD + 3)
    assert pipeline.status.state == State.RUNNING and not consumer.held
    assert pipeline.clear_halts() == []


async def test_clear_halts_of_a_closed_pipeline_is_empty() -> None:
    pipeline = HaltingPipeline()
    assert pipeline.clear_halts() == [], "no clients yet"


async def test_a_rebalance_keeps_a_halt_it_keeps_and_forgets_one_it_moves() -> None:
    pipeline = HaltingPipeline()
    consumer = await run_until(pipeline, lambda c: bool(c.held))
    # Revoked and assigned again (an eager rebalance that keeps both partitions).
    await pipeline._on_revoked({P0, P1})
    await pipeline._on_assigned({P0, P1})
    assert "src/1" in pipeline.status.halted and pipeline.status.state == State.HALTED
    assert consumer.held == {P1}
    # The next rebalance moves P1 elsewhere: its halt is forgotten here.
    await pipeline._on_revoked({P0, P1})
    consumer.assigned = {P0}
    await pipeline._on_assigned({P0})
    assert pipeline.status.halted == {} and pipeline.status.state == State.RUNNING
    assert consumer.held == set()
    assert pipeline.clear_halts() == []


async def test_a_halt_without_partitions_halts_the_whole_pipeline() -> None:
    class WholeHalt(HaltingPipeline):
        async def process(self, batch: Batch) -> Commit:
            raise PipelineHalted("the sink says stop")

    pipeline = WholeHalt()
    await pipeline._open()
    await asyncio.wait_for(pipeline._run(), 5)
    assert pipeline.status.state == State.HALTED and pipeline.consumer is None
    assert pipeline.status.halted == {}
    assert pipeline.clear_halts() == [], "closed: the supervisor restarts it"
