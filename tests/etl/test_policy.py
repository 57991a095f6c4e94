"""Unit tests of the one place retry, the halt cut and the failure policy are decided."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import TopicPartition

from etl.config import ETLSettings
from etl.errors import (
    BackpressureError,
    ConfigurationError,
    ETLError,
    FatalError,
    GaveUp,
    PipelineHalted,
    PipelineStopping,
    RecordError,
    RetriableError,
)
from etl.runtime.policy import (
    Backoff,
    apply_halt_cut,
    halt_cut,
    halt_partitions,
    resolve_policy,
    retry,
)

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


def test_every_error_is_under_one_root() -> None:
    for cls in (
        ConfigurationError,
        RetriableError,
        FatalError,
        RecordError,
        BackpressureError,
        PipelineHalted,
        PipelineStopping,
        GaveUp,
    ):
        assert issubclass(cls, ETLError)
    # An outer retry loop must not retry what an inner one gave up on.
    assert not issubclass(GaveUp, RetriableError)


def test_backoff_grows_to_its_ceiling_and_gives_up_past_the_limit() -> None:
    backoff = Backoff(first=0.5, factor=2, ceiling=3, max_retries=4)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 3.0]
    with pytest.raises(GaveUp) as caught:
        backoff.next_delay()
    assert caught.value.attempts == 5
    backoff.reset()
    assert backoff.attempts == 0 and backoff.next_delay() == 0.5


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


def test_unset_policy_is_the_settings_policy() -> None:
    settings = ETLSettings.model_validate({"errors": {"policy": "stop"}})
    assert resolve_policy(None, settings) == "stop"
    assert resolve_policy("continue", settings) == "continue"
    assert resolve_policy(None, ETLSettings()) == "continue"
    with pytest.raises(ConfigurationError, match="'later'"):
        resolve_policy("later", settings)


async def test_retry_runs_again_until_the_destination_answers() -> None:
    calls: list[int] = []
    seen: list[tuple[int, str, float]] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetriableError("connection refused")
        return "written"

    backoff = Backoff(first=0.01, ceiling=0.02)
    result = await retry(
        flaky,
        what="write",
        backoff=backoff,
        stopping=lambda: False,
        on_retry=lambda n, exc, delay: seen.append((n, str(exc), delay)),
    )
    assert result == "written" and len(calls) == 3
    assert seen == [(1, "connection refused", 0.01), (2, "connection refused", 0.02)]
    assert backoff.attempts == 0  # a success resets


@pytest.mark.parametrize("error", [RecordError("bad row"), FatalError("no table"), KeyError("x")])
async def test_retry_never_retries_anything_but_an_unavailable_destination(
    error: Exception,
) -> None:
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        await retry(failing, what="write", backoff=Backoff(first=0), stopping=lambda: False)
    assert calls == [1]


async def test_retry_gives_up_past_max_retries_naming_the_operation() -> None:
    async def down() -> None:
        raise RetriableError("timed out")

    with pytest.raises(GaveUp, match="gave up after 3 attempts: open: timed out") as caught:
        await retry(
            down, what="open", backoff=Backoff(first=0, max_retries=2), stopping=lambda: False
        )
    assert isinstance(caught.value.__cause__, RetriableError)


async def test_retry_stops_waiting_as_soon_as_the_pipeline_stops() -> None:
    stop_at = time.monotonic() + 0.1

    async def down() -> Any:
        raise RetriableError("timed out")

    started = time.monotonic()
    with pytest.raises(PipelineStopping, match="write still failing at stop"):
        await retry(
            down,
            what="write",
            backoff=Backoff(first=30, ceiling=30),
            stopping=lambda: time.monotonic() >= stop_at,
        )
    assert time.monotonic() - started < 1


def test_halt_cut_keeps_each_partitions_first_bad_offset() -> None:
    cut = halt_cut([(A0, 7), (A1, 3), (A0, 5), (B0, 9), (A0, 6)])
    assert cut == {A0: 5, A1: 3, B0: 9}
    commit = {A0: 10, A1: 2, B0: 12}
    # A partition whose commit is already before the cut keeps it.
    assert apply_halt_cut(commit, [(A0, 5), (A1, 3), (B0, 9)]) == {A0: 5, A1: 2, B0: 9}


def test_pipeline_halted_carries_its_commit() -> None:
    halt = PipelineHalted("stop", {A0: 4})
    assert halt.reason == "stop" and halt.commit == {A0: 4}
    assert PipelineHalted("stop").commit == {}


async def test_retry_honours_the_destinations_hint_and_a_pause_is_not_an_attempt() -> None:
    answers: list[Exception | None] = [
        BackpressureError(0.01),
        RetriableError("busy", retry_after=0.02),
        None,
    ]
    waits: list[tuple[int, float]] = []

    async def write() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    await retry(
        write,
        what="write",
        backoff=Backoff(first=0.001, ceiling=1, max_retries=1),
        stopping=lambda: False,
        on_retry=lambda n, exc, delay: waits.append((n, delay)),
    )
    assert waits == [(0, 0.01), (1, 0.02)]


async def test_retry_leaves_other_kinds_of_retriable_error_to_the_outer_retry() -> None:
    class Refused(RetriableError):
        pass

    calls: list[int] = []

    async def unreachable() -> None:
        calls.append(1)
        raise RetriableError("connection refused")

    with pytest.raises(RetriableError, match="connection refused"):
        await retry(
            unreachable,
            what="request",
            backoff=Backoff(first=0),
            stopping=lambda: False,
            only=Refused,
        )
    assert calls == [1]


async def test_retry_leaves_other_kinds_of_pause_to_the_outer_retry() -> None:
    class Throttled(BackpressureError):
        pass

    answers: list[Exception | None] = [Throttled(0.001), BackpressureError(0.001)]

    async def write() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    with pytest.raises(BackpressureError) as caught:
        await retry(
            write, what="bulk", backoff=Backoff(first=0), stopping=lambda: False, pauses=Throttled
        )
    assert type(caught.value) is BackpressureError and answers == []


def test_halt_partitions_halts_each_partition_at_its_first_bad_record() -> None:
    commit = {A0: 9, A1: 9, B0: 9}
    halt = halt_partitions(commit, [(A0, 5, "a0@5"), (A0, 3, "a0@3"), (B0, 7, "b0@7")])
    assert commit == {A0: 3, A1: 9, B0: 7} and halt.commit is commit
    assert {tp: (h.offset, h.reason) for tp, h in halt.partitions.items()} == {
        A0: (3, "a0@3"),
        B0: (7, "b0@7"),
    }
    assert halt.reason == "a0@3 (and 1 other partition halted)"
