"""The source conformance suite: what every source must do, checked the same way for all.

How a source's tests use it::

    import pytest
    from etl.testing.source_conformance import SourceConformance, SourceHarness

    class MyHarness(SourceHarness):
        source_class = MySource
        config_model = MySourceConfig

        async def prepare(self, name, count, *, bad_at=None, slow=False):
            # Arrange for a source that publishes ``count`` records (the one at
            # ``bad_at`` a record error; ``slow``: slowly enough to act mid-stream);
            # return its config options, its topic and what is expected in it, in
            # order: one ``identify(key, value)`` per record.
            ...

        def identify(self, key, value):
            # What stands for one published message (default: (key, value)); a
            # source whose messages carry times of their own keeps the rest.
            ...

    @pytest.mark.kafka
    class TestMySourceConformance(SourceConformance):
        @pytest.fixture
        def harness(self):
            return MyHarness()

Each test runs the source in the test process against the test broker
(``kafka_bootstrap``, ``uid`` and ``tmp_path`` fixtures) and checks what a user
sees in the topic:

* every record is published once, in order;
* a stop mid-stream and a new start lose nothing and publish nothing twice;
* a paused source publishes nothing until it is resumed;
* under ``on_error: stop`` a bad record halts the source (state ``stopped``):
  the records before it are published, none after;
* under ``on_error: continue`` it goes to the dead-letter topic and the rest is
  published;
* a source that runs on one worker only (its runner has a leadership): a second
  instance stands by while the first publishes, and takes over from where the
  first stopped, every record still once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from etl.config import ETLSettings, SourceConfigBase
from etl.runtime.status import State
from etl.sources.base import SourceRunner
from etl.testing.kafka import read_all
from etl.testing.settings import pipeline_settings

Pairs = list[tuple[bytes | None, bytes | None]]


class SourceHarness:
    """What the suite needs of one source type."""

    source_class: ClassVar[type[SourceRunner[Any]]]
    config_model: ClassVar[type[SourceConfigBase]]
    #: Whether the source ends (status ``finished``) once it has published everything.
    finishes: ClassVar[bool] = True

    async def prepare(
        self, name: str, count: int, *, bad_at: int | None = None, slow: bool = False
    ) -> tuple[dict[str, Any], str, list[Any]]:
        """Config options (``name``, ``type`` and the rest), the topic, and one
        :meth:`identify` per record expected in it, in order."""
        raise NotImplementedError

    def identify(self, key: bytes | None, value: bytes | None) -> Any:
        """What stands for one published message in the expected list."""
        return (key, value)


@asynccontextmanager
async def running_source(
    harness: SourceHarness, options: dict[str, Any], settings: ETLSettings, *, paused: bool = False
) -> AsyncIterator[SourceRunner[Any]]:
    """The source started in this event loop (paused first when asked), stopped after."""
    config = harness.config_model.model_validate(options)
    source = harness.source_class(config, settings=settings)
    if paused:
        source.pause()
    await source.start()
    try:
        yield source
    finally:
        await source.stop()


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> None:
    """Poll ``check`` (sync or async) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def pairs(bootstrap: str, topic: str) -> Pairs:
    """The topic's (key, value) pairs, per partition in offset order."""
    records = sorted(await read_all(bootstrap, topic), key=lambda r: (r.partition, r.offset))
    return [(r.key, r.value) for r in records]


async def published(harness: SourceHarness, bootstrap: str, topic: str) -> list[Any]:
    """The topic's messages as the harness identifies them, per partition in offset order."""
    return [harness.identify(key, value) for key, value in await pairs(bootstrap, topic)]


class SourceConformance:
    """Subclass it with a ``harness`` fixture (see the module)."""

    COUNT = 60

    @pytest.fixture
    def harness(self) -> SourceHarness:
        raise NotImplementedError("give the suite a harness fixture")

    async def test_publishes_every_record_once_in_order(
        self, harness: SourceHarness, kafka_bootstrap: str, uid: str, tmp_path: Path
    ) -> None:
        options, topic, expected = await harness.prepare(f"all-{uid}", self.COUNT)
        settings = pipeline_settings(kafka_bootstrap, uid, data_dir=tmp_path / "data")
        async with running_source(harness, options, settings) as source:
            await until(
                lambda: source.status.produced >= len(expected), f"{len(expected)} published"
            )
            if harness.finishes:
                await until(lambda: str(source.status.state) == "finished", "finished")
        found = await published(harness, kafka_bootstrap, topic)
        assert found == expected, (len(found), found[:3], expected[:3])

    async def test_a_stop_mid_stream_and_a_restart_lose_and_double_nothing(
        self, harness: SourceHarness, kafka_bootstrap: str, uid: str, tmp_path: Path
    ) -> None:
        options, topic, expected = await harness.prepare(f"resume-{uid}", self.COUNT, slow=True)
        settings = pipeline_settings(kafka_bootstrap, uid, data_dir=tmp_path / "data")
        async with running_source(harness, options, settings) as source:
            await until(lambda: source.status.produced > 0, "a first batch")
        first = await published(harness, kafka_bootstrap, topic)
        assert 0 < len(first) < len(expected), "stopped too late to test a resume"
        async with running_source(harness, options, settings) as source:
            await until(lambda: len(first) + source.status.produced >= len(expected), "the rest")
        assert await published(harness, kafka_bootstrap, topic) == expected

    async def test_a_paused_source_publishes_nothing_until_resumed(
        self, harness: SourceHarness, kafka_bootstrap: str, uid: str, tmp_path: Path
    ) -> None:
        options, topic, expected = await harness.prepare(f"pause-{uid}", self.COUNT)
        settings = pipeline_settings(kafka_bootstrap, uid, data_dir=tmp_path / "data")
        async with running_source(harness, options, settings, paused=True) as source:
            await asyncio.sleep(1.0)
            assert source.status.produced == 0
            assert str(source.status.state) in ("paused", "starting")
            source.resume()
            await until(lambda: source.status.produced >= len(expected), "published")
        assert await published(harness, kafka_bootstrap, topic) == expected

    async def test_stop_policy_halts_at_a_bad_record(
        self, harness: SourceHarness, kafka_bootstrap: str, uid: str, tmp_path: Path
    ) -> None:
        bad_at = self.COUNT // 2
        options, topic, expected = await harness.prepare(f"halt-{uid}", self.COUNT, bad_at=bad_at)
        settings = pipeline_settings(kafka_bootstrap, uid, data_dir=tmp_path / "data")
        async with running_source(harness, {**options, "on_error": "stop"}, settings) as source:
            await until(lambda: source.status.state == State.STOPPED, "halted")
            assert source.status.error
        assert await published(harness, kafka_bootstrap, topic) == expected[:bad_at]

    async def test_continue_policy_dead_letters_a_bad_record(
        self, harness: SourceHarness, kafka_bootstrap: str, uid: str, tmp_path: Path
    ) -> None:
        bad_at = self.COUNT // 2
        options, topic, expected = await harness.prepare(f"dead-{uid}", self.COUNT, bad_at=bad_at)
        settings = pipeline_settings(kafka_bootstrap, uid, data_dir=tmp_path / "data")
        async with running_source(harness, {**options, "on_error": "continue"}, settings) as src:
            await until(lambda: src.status.produced >= len(expected), "the good records")
            await until(lambda: src.status.dead_lettered == 1, "one dead letter")
        found = await published(harness, kafka_bootstrap, topic)
        assert found == expected, (len(found), found[:3], expected[:3])
        letters = await read_all(kafka_bootstrap, f"dlq-{uid}")
        assert len(letters) == 1, letters
        assert dict(letters[0].headers).get("etl.stage") == b"source", letters[0].headers

    async def test_a_second_instance_stands_by_and_takes_over_from_a_stopped_first(
        self, harness: SourceHarness, kafka_bootstrap: str, uid: str, tmp_path: Path
    ) -> None:
        options, topic, expected = await harness.prepare(f"lead-{uid}", self.COUNT, slow=True)
        # Two workers: the same source and groups, each its own data directory (worker id).
        first_settings, second_settings = (
            pipeline_settings(kafka_bootstrap, uid, data_dir=tmp_path / f"data-{n}")
            for n in ("a", "b")
        )
        first_source = harness.source_class(
            harness.config_model.model_validate(options), settings=first_settings
        )
        if first_source.lock is None:
            pytest.skip("the source runs on every worker (no leadership)")
        async with running_source(harness, options, first_settings, paused=True) as first:
            await until(lambda: first.status.state == State.PAUSED, "the first holding it")
            async with running_source(harness, options, second_settings) as second:
                await asyncio.sleep(1.0)
                assert second.status.state == State.STARTING, "not standing by"
                first.resume()
                await until(lambda: first.status.produced > 0, "a first batch")
                await first.stop()  # hands the source over
                done = first.status.produced
                assert 0 < done < len(expected), "stopped too late to test a hand-over"
                await until(lambda: done + second.status.produced >= len(expected), "the rest")
                if harness.finishes:
                    await until(lambda: second.status.state == State.FINISHED, "finished")
        found = await published(harness, kafka_bootstrap, topic)
        assert found == expected, (len(found), found[:3], expected[:3])
