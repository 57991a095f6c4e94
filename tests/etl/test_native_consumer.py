"""The librdkafka group consumer's pause rules across rebalances, on the real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from etl.config import KafkaSettings
from etl.runtime.native import NativeConsumer
from etl.testing.kafka import create_topic, produce

pytestmark = [pytest.mark.kafka, pytest.mark.serial]


async def poll_until(
    consumers: list[NativeConsumer], done: Any, what: str, timeout: float = 60.0
) -> dict[TopicPartition, list[Any]]:
    """Poll every consumer (a rebalance needs them all polling) until ``done()``;
    the records the first one got."""
    got: dict[TopicPartition, list[Any]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(got):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; got {got}")
        batches = await asyncio.gather(*(c.getmany(200, 500) for c in consumers))
        for tp, records in batches[0].items():
            got.setdefault(tp, []).extend(records)
    return got


async def test_a_partition_paused_before_a_rebalance_is_fetched_when_assigned_unpaused(
    kafka_bootstrap: str, uid: str
) -> None:
    # librdkafka keeps a partition's pause across its revoke and a new assignment.
    # A resume that arrives while nothing is assigned must still reach a partition
    # that was paused before the rebalance and comes back.
    topic = f"native-pause-{uid}"
    await create_topic(kafka_bootstrap, topic, 2)
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        enable_idempotence=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    group = f"native-pause-{uid}"
    windows: list[bool] = []

    first = NativeConsumer(settings, group_id=group, start_offset="earliest", name="first")

    async def on_revoked(tps: set[TopicPartition]) -> None:
        if not joined_second.is_set() or not left_second.is_set():
            return

        def resume_between() -> None:
            # After the revoke, before the next assignment: nothing is assigned.
            windows.append(not first.assignment())
            first.pause_all(False)

        asyncio.get_running_loop().call_later(0.3, resume_between)

    joined_second = asyncio.Event()
    left_second = asyncio.Event()
    first.subscribe([topic], on_revoked=on_revoked)
    first.pause_all(True)
    await first.start()
    second = NativeConsumer(settings, group_id=group, start_offset="earliest", name="second")
    second.subscribe([topic])
    try:
        await poll_until([first], lambda _: len(first.assignment()) == 2, "both partitions")
        await second.start()
        joined_second.set()
        await poll_until(
            [first, second],
            lambda _: len(first.assignment()) == 1 and len(second.assignment()) == 1,
            "one partition each",
        )
        kept = next(iter(first.assignment()))
        left_second.set()
        await second.stop()
        await poll_until(
            [first], lambda _: len(first.assignment()) == 2 and windows, "the rebalance back"
        )
        assert windows == [True], "the resume did not land between revoke and assignment"

        await produce(kafka_bootstrap, topic, [(None, f"p0-{i}") for i in range(5)], partition=0)
        await produce(kafka_bootstrap, topic, [(None, f"p1-{i}") for i in range(5)], partition=1)
        got = await poll_until(
            [first],
            lambda got: sum(len(r) for r in got.values()) == 10,
            "every record of both partitions",
            timeout=30,
        )
        # The partition it kept through the rebalance (paused then) is fetched too.
        assert len(got[kept]) == 5
        assert {tp.partition for tp in got} == {0, 1}
    finally:
        await second.stop()
        await first.stop()
