"""The one place dead letters are queued, waited for, retried and judged (stand-in producer)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from etl.deadletter import DeadLetterRefused, DeadLetterWriter
from etl.errors import GaveUp
from etl.redact import Redactor
from etl.runtime.dead_letters import DeadLetterRouter
from etl.runtime.native import ProduceError
from etl.runtime.policy import Backoff
from etl.runtime.status import PipelineStatus
from etl.testing.sink_conformance import make_record

TIMED_OUT = "Local: Message timed out"


class ScriptedProducer:
    """Each send of a dead letter (in any form) of the record at source offset ``n`` takes
    the next outcome scripted for ``n``, the last one for good (default: written)."""

    def __init__(self, script: dict[int, list[BaseException | None]]) -> None:
        self.script = script
        self.sent: list[int] = []
        self.written: list[int] = []

    async def send(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> Any:
        offset = int(dict(kw["headers"])["etl.source.offset"])
        self.sent.append(offset)
        outcomes = self.script.get(offset) or [None]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if outcome is None:
            self.written.append(offset)
            future.set_result(None)
        else:
            future.set_exception(outcome)
        return future


def router(producer: ScriptedProducer, max_retries: int | None = None) -> DeadLetterRouter:
    return DeadLetterRouter(
        DeadLetterWriter(producer, "dlq", Redactor()),
        pipeline="p",
        status=PipelineStatus(name="p", kind="sink"),
        redact=Redactor(),
        backoff=lambda: Backoff(first=0.001, ceiling=0.001, max_retries=max_retries),
        stopping=lambda: False,
    )


def unavailable() -> ProduceError:
    return ProduceError(TIMED_OUT, record_error=False)


def refused() -> ProduceError:
    return ProduceError("Broker: Message size too large", record_error=True)


async def send_all(letters: DeadLetterRouter, *where: tuple[int, int]) -> list[Any]:
    """The dead letters of the records at these (partition, offset)."""
    return [
        await letters.send(make_record("t", p, o, b"k", b"v"), "sink", ValueError("bad row"), tag=o)
        for p, o in where
    ]


async def test_every_letter_written_is_counted_and_logged_once() -> None:
    producer = ScriptedProducer({})
    letters = router(producer)
    settled = await letters.settle(await send_all(letters, (0, 1), (1, 7)))
    assert settled.refused == [] and settled.unavailable is None
    assert producer.written == [1, 7]
    assert letters.status.dead_lettered == 2
    assert letters.status.error == "sink t/1@7: ValueError: bad row"


async def test_a_letter_the_broker_did_not_take_is_retried_alone() -> None:
    producer = ScriptedProducer({2: [unavailable(), unavailable(), None]})
    letters = router(producer)
    settled = await letters.settle(await send_all(letters, (0, 1), (0, 2)))
    assert settled.refused == []
    assert producer.sent == [1, 2, 2, 2], "only the failed letter is sent again"
    assert producer.written == [1, 2] and letters.status.dead_lettered == 2


async def test_a_broker_that_stays_away_gives_up_past_the_retries() -> None:
    letters = router(ScriptedProducer({1: [unavailable()]}), max_retries=2)
    with pytest.raises(GaveUp, match="dead letter"):
        await letters.settle(await send_all(letters, (0, 1)))


async def test_a_refused_letter_is_reported_and_its_partitions_later_ones_wait() -> None:
    # t/0@1 is refused even in its smallest form; t/0@2 and t/1@5 are not taken at first.
    producer = ScriptedProducer(
        {1: [refused()], 2: [unavailable(), None], 5: [unavailable(), None]}
    )
    letters = router(producer)
    settled = await letters.settle(await send_all(letters, (0, 1), (0, 2), (1, 5)))
    [(letter, why)] = settled.refused
    assert letter.tag == 1 and isinstance(why, DeadLetterRefused)
    assert letters.halt_reason(letter, why).startswith("cannot dead-letter t/0@1: ")
    # t/0@2 is read again after its partition's halt: not retried; t/1@5 is.
    assert producer.sent.count(2) == 1 and producer.written == [5]
    assert letters.status.dead_lettered == 1


async def test_in_a_transaction_nothing_is_sent_again() -> None:
    producer = ScriptedProducer({1: [unavailable()], 2: [refused()]})
    letters = router(producer)
    settled = await letters.settle(
        await send_all(letters, (0, 1), (0, 2), (1, 3)), retry_alone=False
    )
    assert producer.sent == [1, 2, 3]
    assert isinstance(settled.unavailable, ProduceError)
    assert [letter.tag for letter, _ in settled.refused] == [2]
    assert letters.status.dead_lettered == 1
