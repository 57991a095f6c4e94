"""Unit tests of the pipeline runtime's error paths, with stand-in Kafka clients."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

import etl.supervisor as supervisor_module
from etl.config import ETLSettings
from etl.deadletter import DeadLetterWriter
from etl.errors import RetriableError
from etl.redact import Redactor
from etl.runtime.consumer import Batch, Commit, ConsumerPipeline, PipelineHalted
from etl.runtime.status import State
from etl.runtime.transform import TransformPipeline
from etl.supervisor import PipelineSupervisor
from etl.transforms.loader import TransformSpec

TP = TopicPartition("src", 0)


class NativeMessage:
    """Stands in for a librdkafka message (fields are methods)."""

    def __init__(self, offset: int, value: bytes) -> None:
        self._offset = offset
        self._value = value

    def topic(self) -> str:
        return TP.topic

    def partition(self) -> int:
        return TP.partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1)

    def error(self) -> None:
        return None


def record(offset: int, value: bytes = b"v") -> Any:
    return NativeMessage(offset, value)


class FakeProducer:
    """The NativeProducer surface the transform uses; every record is acknowledged."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.callbacks: list[Any] = []
        self.client = SimpleNamespace(produce=self.produce)

    def produce(self, topic: str, value: Any, key: Any, **kwargs: Any) -> None:
        self.sent.append((topic, value))
        self.callbacks.append(kwargs.get("on_delivery"))

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, kwargs.get("value")))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def wait_all(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(None, None)

    async def serve(self, timeout: float) -> int:
        return 0

    async def stop(self) -> None:
        pass


def exiting_transform(policy: str) -> TransformPipeline:
    def deal_message(message: dict[str, Any]) -> Any:
        if message["value"] == "bye":
            sys.exit(3)
        return message

    spec = TransformSpec(
        name="t",
        path=Path("t.py"),
        source_topic="src",
        target_topic="out",
        deal_message=deal_message,
        on_error=policy,
    )
    pipeline = TransformPipeline(spec, settings=ETLSettings())
    producer = FakeProducer()
    pipeline.producer = producer
    pipeline.dead_letters = DeadLetterWriter(producer, "dlq", Redactor())
    return pipeline


async def test_sys_exit_in_a_transform_dead_letters_the_record_under_continue() -> None:
    pipeline = exiting_transform("continue")
    commit = await pipeline.process({TP: [record(0), record(1, b"bye"), record(2)]})
    assert commit == {TP: 3}
    assert sorted(topic for topic, _ in pipeline.producer.sent) == ["dlq", "out", "out"]
    assert pipeline.status.dead_lettered == 1
    assert "SystemExit" in (pipeline.status.error or "")


async def test_sys_exit_in_a_transform_halts_before_the_record_under_stop() -> None:
    pipeline = exiting_transform("stop")
    with pytest.raises(PipelineHalted) as halted:
        await pipeline.process({TP: [record(0), record(1, b"bye"), record(2)]})
    assert halted.value.commit == {TP: 1}
    assert "SystemExit" in halted.value.reason


class FakeConsumer:
    """Hands out one batch, then fails every read of the committed offsets."""

    def __init__(self) -> None:
        self.stopped = False

    async def getmany(self, **_: Any) -> Batch:
        return {TP: [record(5)]}

    async def committed(self, tp: TopicPartition) -> int:
        raise KafkaError("coordinator gone for sasl_password=hunter22")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        raise AssertionError("must not seek without the committed offset")

    async def commit(self, offsets: Commit) -> None:
        raise AssertionError("nothing may be committed")

    async def stop(self) -> None:
        self.stopped = True


class RetryingPipeline(ConsumerPipeline):
    async def _open(self) -> None:
        self.consumer = FakeConsumer()
        self._assigned = {TP}
        self.status.state = State.RUNNING

    async def process(self, batch: Batch) -> Commit:
        raise RetriableError("database down")


async def test_a_failing_rewind_fails_the_pipeline_visibly_without_committing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = RetryingPipeline(name="p", topics=["src"], settings=ETLSettings())
    consumer: Any = None

    async def run() -> None:
        nonlocal consumer
        await pipeline._open()
        consumer = pipeline.consumer
        pipeline._open = _noop  # type: ignore[method-assign]
        await pipeline._main()

    async def _noop() -> None:
        pass

    with caplog.at_level(logging.ERROR, logger="etl.runtime"):
        await asyncio.wait_for(run(), 5)
    assert pipeline.status.state == State.FAILED
    assert "coordinator gone" in (pipeline.status.error or "")
    assert "hunter22" not in (pipeline.status.error or "")
    assert "hunter22" not in caplog.text
    assert consumer.stopped and pipeline.consumer is None


async def test_worker_boot_goes_on_when_the_dead_letter_topic_cannot_be_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def reachable(*_: Any, **__: Any) -> None:
        pass

    async def refuse(*_: Any, **__: Any) -> None:
        raise KafkaError("not authorized to create topics")

    started: list[Any] = []

    async def start_transform(spec: TransformSpec) -> None:
        started.append(spec.name)

    monkeypatch.setattr(supervisor_module, "wait_for_broker", reachable)
    monkeypatch.setattr(supervisor_module, "ensure_dead_letter_topic", refuse)
    monkeypatch.setattr(supervisor_module, "TransformWatcher", lambda *a, **k: None)
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "t.py").write_text(
        "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\ndef deal_message(m):\n    return m\n"
    )
    settings = ETLSettings(transforms_dir=tmp_path / "transforms", data_dir=tmp_path / "data")
    sup = PipelineSupervisor(settings)
    monkeypatch.setattr(sup, "add_future", lambda coro: coro.close())
    monkeypatch.setattr(sup, "add_runtime_dependency", reachable)
    monkeypatch.setattr(sup, "start_transform", start_transform)
    with caplog.at_level(logging.ERROR, logger="etl.supervisor"):
        await sup._boot()
    assert started == ["t"]
    assert "cannot create the dead-letter topic" in caplog.text
