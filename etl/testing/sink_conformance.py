"""The sink conformance suite: what every sink must do, checked the same way for all.

How a sink's tests use it::

    import pytest
    from etl.testing.sink_conformance import ConformanceHarness, SinkConformance

    class MyHarness(ConformanceHarness):
        sink_class = MySink                     # the Sink subclass
        bad_value = b'{"id": 3, "name": 7}'     # a value it rejects per record (or None)
        keyed_options = {"id": "key"}           # options that make writes idempotent
                                                # (None: the sink has no keyed mode)

        def config(self, **options):            # a validated config with a fresh target
            return MySinkConfig.model_validate({"type": "mine", **options, ...})

        async def landed(self, config):         # the "id" of every item written, duplicates
            ...                                 # included, in any order

    @pytest.mark.kafka                          # the rule tests use the test broker
    class TestMySinkConformance(SinkConformance):
        @pytest.fixture
        def harness(self, my_server):
            return MyHarness(my_server)

The suite writes JSON values ``{"id": n, "name": "name-n"}`` with key ``"n"`` and
checks, on the sink itself:

* every record of a batch lands, once;
* a batch with one bad record writes all the good ones and returns exactly the
  bad one as a :class:`~sinks.base.RecordFailure`;
* with ``halt_on_failure`` the records before the bad one land (and, when
  ``holds_back`` is true, none after it);
* redelivery of the same batch in keyed mode leaves no duplicates;
* close then open again (the same instance, and a new one) keeps working;

and, through a :class:`~sinks.base.SinkPipeline` on the real broker, the
documents' rules for a bad record: with an error topic it goes there (with its
``etl.*`` headers) and writing goes on; with ``skip_error`` it is dropped and
writing goes on; with neither its partition halts and commits nothing past it,
while the other partition is written on, and a resume halts at it again.

The hostile records (:mod:`etl.testing.hostile`: huge key and value, NUL bytes,
non-UTF-8, odd headers, tombstones, year-10000 and negative timestamps, ...) go
through a pipeline with an error topic, with the harness's ``hostile_options``
(which make timestamps matter: a ``pt`` column, time directories, a dated index):
each one is written once or routed once with its reason, never both or neither,
the ones in ``must_route`` are routed, the ones in ``must_land`` written, and the
pipeline never reports ``failed``.

Each test writes to its own target, and offsets grow across the batches written to
one target (only the redelivery test writes the same records twice), so a sink
keyed by Kafka coordinates passes too.

``config(**options)`` receives the common sink options (``name``, ``topics``,
``skip_error``, ``runtime_error_topic``, ``on_error``, ...) and must give each
call its own target (table, index, prefix), derived from ``options["name"]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from etl.config import ErrorSettings, ETLSettings, KafkaSettings, SinkConfigBase
from etl.redact import Redactor
from etl.testing.hostile import produce_hostile
from etl.testing.kafka import create_topic, produce, read_all
from sinks.base import RecordFailure, Sink, SinkBatch, sink_pipeline_factory


def make_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
    value: bytes | str | None,
    *,
    timestamp: int | None = None,
    headers: Iterable[tuple[str, bytes]] = (),
) -> ConsumerRecord[Any, Any]:
    """An aiokafka ConsumerRecord as a sink receives it (str is encoded as UTF-8)."""
    k = key.encode() if isinstance(key, str) else key
    v = value.encode() if isinstance(value, str) else value
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp if timestamp is not None else int(time.time() * 1000),
        timestamp_type=0,
        key=k,
        value=v,
        checksum=None,
        serialized_key_size=len(k) if k else -1,
        serialized_value_size=len(v) if v else -1,
        headers=tuple(headers),
    )


def item(n: int) -> tuple[bytes, bytes]:
    """The suite's record n: key ``"n"``, value ``{"id": n, "name": "name-n"}``."""
    return str(n).encode(), json.dumps({"id": n, "name": f"name-{n}"}).encode()


def batch_of(
    topic: str,
    ids: Iterable[int],
    *,
    partitions: int = 1,
    bad: dict[int, bytes] | None = None,
    first_offset: int = 0,
) -> SinkBatch:
    """A batch of the suite's records spread round-robin over partitions, in offset order;
    each partition's offsets start at ``first_offset``."""
    records = []
    next_offset = [first_offset] * partitions
    for index, n in enumerate(ids):
        partition = index % partitions
        key, value = item(n)
        if bad and n in bad:
            value = bad[n]
        records.append(make_record(topic, partition, next_offset[partition], key, value))
        next_offset[partition] += 1
    records.sort(key=lambda r: (r.partition, r.offset))
    return SinkBatch(records, {TopicPartition(topic, p) for p in range(partitions)})


class ConformanceHarness:
    """What the suite needs to know about a sink (see the module docstring)."""

    sink_class: ClassVar[type[Sink[Any]]]
    #: A record value the sink rejects per record; None when it accepts any value.
    bad_value: ClassVar[bytes | None] = None
    #: Options that make the sink's writes idempotent by key; None: no keyed mode.
    keyed_options: ClassVar[dict[str, Any] | None] = None
    #: True when, under halt_on_failure, nothing after a bad record is written.
    holds_back: ClassVar[bool] = True
    #: Options for the hostile-records test (make timestamps matter, where they can).
    hostile_options: ClassVar[dict[str, Any]] = {}
    #: Hostile records (by name) this sink must route to the error topic.
    must_route: ClassVar[frozenset[str]] = frozenset()
    #: Hostile records (by name) this sink must write.
    must_land: ClassVar[frozenset[str]] = frozenset(
        {"plain-first", "plain-last", "negative-timestamp"}
    )

    def config(self, **options: Any) -> SinkConfigBase:
        raise NotImplementedError

    async def landed(self, config: SinkConfigBase) -> list[int]:
        raise NotImplementedError

    def settings(self, bootstrap: str = "127.0.0.1:9") -> ETLSettings:
        """Settings for the test broker (idempotence off), with a unique group prefix."""
        return ETLSettings(
            kafka=KafkaSettings(
                bootstrap_servers=bootstrap,
                enable_idempotence=False,
                group_prefix=f"conf{uuid.uuid4().hex[:6]}",
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
            ),
            errors=ErrorSettings(dead_letter_topic=f"dlq-{uuid.uuid4().hex[:8]}"),
        )

    def make_sink(self, config: SinkConfigBase, settings: ETLSettings | None = None) -> Sink[Any]:
        settings = settings or self.settings()
        return self.sink_class(config, settings=settings, redact=Redactor(settings.secret_values()))


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _write(sink: Sink[Any], batch: SinkBatch) -> list[RecordFailure]:
    return list(await sink.write(batch))


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def _until(check: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


class SinkConformance:
    """Subclass as ``Test...`` and provide a ``harness`` fixture (see the module docstring)."""

    @pytest.fixture
    def harness(self) -> ConformanceHarness:
        raise NotImplementedError("provide a harness fixture")

    # ---- the sink itself -------------------------------------------------------------

    async def test_conformance_batch_lands(self, harness: ConformanceHarness) -> None:
        config = harness.config(name=_name("all"), topics=["t"])
        sink = harness.make_sink(config)
        await sink.open()
        try:
            failures = await _write(sink, batch_of("t", range(1, 21), partitions=2))
        finally:
            await sink.close()
        assert failures == []
        assert sorted(await harness.landed(config)) == list(range(1, 21))

    async def test_conformance_bad_record_keeps_the_good(self, harness: ConformanceHarness) -> None:
        if harness.bad_value is None:
            pytest.skip("this sink rejects no value")
        config = harness.config(name=_name("bad"), topics=["t"])
        sink = harness.make_sink(config)
        await sink.open()
        try:
            batch = batch_of("t", [1, 2, 3, 4, 5], bad={3: harness.bad_value})
            failures = await _write(sink, batch)
        finally:
            await sink.close()
        assert [f.record.offset for f in failures] == [2]
        assert failures[0].record.value == harness.bad_value
        assert sorted(await harness.landed(config)) == [1, 2, 4, 5]

    async def test_conformance_halt_writes_nothing_past_the_bad(
        self, harness: ConformanceHarness
    ) -> None:
        if harness.bad_value is None:
            pytest.skip("this sink rejects no value")
        config = harness.config(name=_name("halt"), topics=["t"])
        sink = harness.make_sink(config)
        await sink.open()
        try:
            batch = batch_of("t", [1, 2, 3, 4, 5], bad={3: harness.bad_value})
            batch.halt_on_failure = True
            failures = await _write(sink, batch)
        finally:
            await sink.close()
        assert [f.record.offset for f in failures] == [2]
        landed = sorted(await harness.landed(config))
        if harness.holds_back:
            assert landed == [1, 2]
        else:
            assert landed[:2] == [1, 2] and 3 not in landed

    async def test_conformance_redelivery_leaves_no_duplicates(
        self, harness: ConformanceHarness
    ) -> None:
        if harness.keyed_options is None:
            pytest.skip("this sink has no keyed mode")
        config = harness.config(name=_name("keyed"), topics=["t"], **harness.keyed_options)
        sink = harness.make_sink(config)
        await sink.open()
        try:
            batch = batch_of("t", range(1, 11), partitions=2)
            assert await _write(sink, batch) == []
            assert await _write(sink, batch) == []  # redelivered after a crash
        finally:
            await sink.close()
        assert sorted(await harness.landed(config)) == list(range(1, 11))

    async def test_conformance_close_and_reopen(self, harness: ConformanceHarness) -> None:
        config = harness.config(name=_name("reopen"), topics=["t"])
        sink = harness.make_sink(config)
        await sink.open()
        assert await _write(sink, batch_of("t", [1, 2])) == []
        await sink.close()
        await sink.open()  # the same instance again
        assert await _write(sink, batch_of("t", [3, 4], first_offset=2)) == []
        await sink.close()
        other = harness.make_sink(config)  # and a new one on the same target
        await other.open()
        try:
            assert await _write(other, batch_of("t", [5], first_offset=4)) == []
        finally:
            await other.close()
        assert sorted(await harness.landed(config)) == [1, 2, 3, 4, 5]

    # ---- the documents' rules, through a pipeline on the real broker ---------------------

    async def _run_rules(
        self, harness: ConformanceHarness, bootstrap: str, **options: Any
    ) -> tuple[Any, SinkConfigBase, ETLSettings, str]:
        assert harness.bad_value is not None
        topic = _name("rules")
        await create_topic(bootstrap, topic, 1)
        items = [item(n) for n in (1, 2, 3, 4, 5)]
        items[2] = (items[2][0], harness.bad_value)
        await produce(bootstrap, topic, items)
        pipeline, config, settings = self._pipeline(harness, bootstrap, topic, **options)
        return pipeline, config, settings, topic

    def _pipeline(
        self, harness: ConformanceHarness, bootstrap: str, topic: str, **options: Any
    ) -> tuple[Any, SinkConfigBase, ETLSettings]:
        """A sink pipeline reading ``topic`` from the beginning, with a short linger."""
        config = harness.config(
            name=_name(topic.split("-")[0]),
            topics=[topic],
            start_offset="earliest",
            linger_ms=100,
            retry_backoff_ms=100,
            **options,
        )
        settings = harness.settings(bootstrap)
        pipeline = sink_pipeline_factory(harness.sink_class)(
            config, settings=settings, redact=Redactor(settings.secret_values())
        )
        return pipeline, config, settings

    async def _committed_after(self, pipeline: Any, topic: str, bootstrap: str) -> int | None:
        return await _committed(bootstrap, pipeline.group_id, TopicPartition(topic, 0))

    @pytest.mark.kafka
    async def test_conformance_rule_error_topic(
        self, harness: ConformanceHarness, kafka_bootstrap: str
    ) -> None:
        if harness.bad_value is None:
            pytest.skip("this sink rejects no value")
        errors = _name("errors")
        pipeline, config, _, topic = await self._run_rules(
            harness, kafka_bootstrap, runtime_error_topic=errors, skip_error=False
        )
        await pipeline.start()
        try:

            async def landed() -> list[int] | None:
                found = sorted(await harness.landed(config))
                return found if len(found) >= 4 else None

            assert await _until(landed, what="4 good records") == [1, 2, 4, 5]
            dead = await _until(lambda: read_all(kafka_bootstrap, errors), what="the error record")
        finally:
            await pipeline.stop()
        assert [r.value for r in dead] == [harness.bad_value]
        headers = {k: v.decode() for k, v in dead[0].headers}
        assert headers["etl.source.topic"] == topic
        assert headers["etl.source.offset"] == "2"
        assert headers["etl.stage"] == "sink"
        assert await self._committed_after(pipeline, topic, kafka_bootstrap) == 5

    @pytest.mark.kafka
    async def test_conformance_rule_skip_error(
        self, harness: ConformanceHarness, kafka_bootstrap: str
    ) -> None:
        if harness.bad_value is None:
            pytest.skip("this sink rejects no value")
        pipeline, config, settings, topic = await self._run_rules(
            harness, kafka_bootstrap, skip_error=True
        )
        await pipeline.start()
        try:

            async def committed() -> bool:
                return await self._committed_after(pipeline, topic, kafka_bootstrap) == 5

            await _until(committed, what="offset 5 committed")
        finally:
            await pipeline.stop()
        assert sorted(await harness.landed(config)) == [1, 2, 4, 5]
        assert pipeline.skipped == 1
        assert await read_all(kafka_bootstrap, settings.errors.dead_letter_topic) == []

    @pytest.mark.kafka
    async def test_conformance_rule_stop(
        self, harness: ConformanceHarness, kafka_bootstrap: str
    ) -> None:
        """Under the stop rule the bad record's partition halts before it; the other
        partition is written and committed on; a resume reads the bad record again."""
        if harness.bad_value is None:
            pytest.skip("this sink rejects no value")
        topic = _name("rules")
        await create_topic(kafka_bootstrap, topic, 2)
        items = [item(n) for n in (1, 2, 3, 4, 5)]
        items[2] = (items[2][0], harness.bad_value)
        await produce(kafka_bootstrap, topic, items, partition=0)
        await produce(kafka_bootstrap, topic, [item(n) for n in (11, 12, 13)], partition=1)
        pipeline, config, settings = self._pipeline(
            harness, kafka_bootstrap, topic, skip_error=False, on_error="stop"
        )
        halted_key = f"{topic}/0"
        await pipeline.start()
        try:

            async def halted() -> bool:
                return str(pipeline.status.state) == "halted" and halted_key in (
                    pipeline.status.halted
                )

            await _until(halted, what="partition 0 to halt")
            assert list(pipeline.status.halted) == [halted_key]
            assert pipeline.status.halted[halted_key]["offset"] == 2
            first_halt = pipeline.status.halted[halted_key]["at"]
            # The other partition goes on while partition 0 waits.
            await produce(kafka_bootstrap, topic, [item(n) for n in (14, 15)], partition=1)

            async def others_done() -> bool:
                return (
                    await _committed(kafka_bootstrap, pipeline.group_id, TopicPartition(topic, 1))
                    == 5
                )

            await _until(others_done, what="partition 1 committed to its end")
            # A resume reads partition 0 again from the bad record: it halts there again.
            assert pipeline.clear_halts() == [halted_key]

            async def halted_again() -> bool:
                halt = pipeline.status.halted.get(halted_key)
                return halt is not None and halt["at"] > first_halt

            await _until(halted_again, what="partition 0 to halt again")
        finally:
            await pipeline.stop()
        landed = sorted(await harness.landed(config))
        good = [11, 12, 13, 14, 15]
        if harness.holds_back:
            assert landed == [1, 2, *good]
        else:
            assert set(landed) >= {1, 2, *good} and 3 not in landed
        assert [n for n in landed if n > 10] == good, "the other partition's records once each"
        assert await self._committed_after(pipeline, topic, kafka_bootstrap) == 2
        assert await read_all(kafka_bootstrap, settings.errors.dead_letter_topic) == []

    # ---- hostile records ------------------------------------------------------------

    @pytest.mark.kafka
    async def test_conformance_hostile_records(
        self, harness: ConformanceHarness, kafka_bootstrap: str
    ) -> None:
        topic = _name("hostile")
        errors = _name("errors")
        await create_topic(kafka_bootstrap, topic, 1)
        produced = await produce_hostile(kafka_bootstrap, topic)
        pipeline, config, settings = self._pipeline(
            harness,
            kafka_bootstrap,
            topic,
            runtime_error_topic=errors,
            skip_error=False,
            **harness.hostile_options,
        )
        await pipeline.start()
        try:

            async def done() -> bool:
                state = str(pipeline.status.state)
                if state in ("failed", "halted"):
                    raise AssertionError(f"the sink is {state}: {pipeline.status.error}")
                committed = await self._committed_after(pipeline, topic, kafka_bootstrap)
                return committed == len(produced)

            await _until(done, what=f"all {len(produced)} hostile records handled")
        finally:
            await pipeline.stop()
        landed = Counter(await harness.landed(config))
        dead = await read_all(kafka_bootstrap, errors)
        routed = Counter(int(dict(r.headers)["etl.source.offset"]) for r in dead)
        for record in dead:
            headers = dict(record.headers)
            assert headers["etl.source.topic"] == topic.encode()
            assert headers["etl.exception.message"], "a dead letter says why"
        report = {}
        for offset, item in enumerate(produced):
            report[item.name] = (landed[item.id], routed[offset])
        for item in produced:
            wrote, sent = report[item.name]
            if item.carries_id:
                assert wrote + sent == 1, (item.name, report)
            else:  # a tombstone may delete instead
                assert wrote + sent <= 1, (item.name, report)
            if item.name in harness.must_route:
                assert sent == 1, (item.name, report)
            if item.name in harness.must_land:
                assert wrote == 1, (item.name, report)
        ids = {item.id for item in produced}
        assert set(landed) <= ids, f"written but not produced: {set(landed) - ids}"
        big = [r for r in dead if dict(r.headers).get("etl.truncated") == b"true"]
        assert all(len(r.value or b"") < settings.kafka.max_request_size for r in big)
