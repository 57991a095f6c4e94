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
        self.client = SimpleNamespace(produce=self.produce)

    def produce(self, topic: str, value: Any, key: Any, **kwargs: Any) -> None:
        self.sent.append((topic, value))

    def take_failures(self) -> list[Any]:
        return []

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, kwargs.get("value")))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def wait_all(self, **_: Any) -> None:
        pass

    async def serve(self, timeout: float) -> int:
        return 0

    async def stop(self) -> None:
        pass


def transform_pipeline(deal_message: Any, policy: str = "continue") -> TransformPipeline:
    """A transform pipeline on the stand-in producer, dead letters to ``dlq``."""
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


def exiting_transform(policy: str) -> TransformPipeline:
    def deal_message(message: dict[str, Any]) -> Any:
        if message["value"] == "bye":
            sys.exit(3)
        return message

    return transform_pipeline(deal_message, policy)


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
    settings = ETLSettings(
        transforms_dir=tmp_path / "transforms",
        data_dir=tmp_path / "data",
        control={"enabled": False},  # no broker here: the control state in this process
    )
    sup = PipelineSupervisor(settings)
    monkeypatch.setattr(sup, "add_future", lambda coro: coro.close())
    monkeypatch.setattr(sup, "add_runtime_dependency", reachable)
    monkeypatch.setattr(sup, "start_transform", start_transform)
    with caplog.at_level(logging.ERROR, logger="etl.supervisor"):
        await sup._boot()
    assert started == ["t"]
    assert "cannot create the dead-letter topic" in caplog.text


class FailedDelivery:
    """A delivery report's message (what librdkafka hands the callback)."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self._key = key
        self._value = value

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


def suffix_pipeline(policy: str = "continue") -> TransformPipeline:
    def deal_message(message: dict[str, Any]) -> Any:
        message["value"] = message["value"] + "+"
        return message

    return transform_pipeline(deal_message, policy)


async def test_a_retried_batch_does_not_repeat_acknowledged_outputs() -> None:
    from confluent_kafka import KafkaError as NativeError

    pipeline = suffix_pipeline()
    producer = pipeline.producer
    batch = {TP: [record(0, b"a"), record(1, b"b"), record(2, b"c")]}
    # The broker times out the delivery of b's output; a's and c's are acknowledged.
    timed_out = (NativeError(NativeError._MSG_TIMED_OUT), FailedDelivery(b"k", b"b+"))
    producer.take_failures = lambda: [timed_out] if producer.sent else []  # type: ignore[method-assign]
    with pytest.raises(RetriableError):
        await pipeline.process(batch)
    assert [value for _topic, value in producer.sent] == [b"a+", b"b+", b"c+"]
    producer.sent.clear()
    producer.take_failures = lambda: []  # type: ignore[method-assign]
    # The runtime rewinds and hands the same batch again: only b is produced again.
    commit = await pipeline.process(batch)
    assert [value for _topic, value in producer.sent] == [b"b+"]
    assert commit == {TP: 3}
    assert pipeline._acked == {}


async def test_an_output_the_broker_refuses_is_dead_lettered_once() -> None:
    from confluent_kafka import KafkaError as NativeError

    pipeline = suffix_pipeline()
    producer = pipeline.producer
    too_large = (NativeError(NativeError.MSG_SIZE_TOO_LARGE), FailedDelivery(b"k", b"b+"))
    calls = iter([[], [too_large]])
    producer.take_failures = lambda: next(calls, [])  # type: ignore[method-assign]
    commit = await pipeline.process({TP: [record(0, b"a"), record(1, b"b"), record(2, b"c")]})
    assert commit == {TP: 3}
    assert [value for topic, value in producer.sent if topic == "dlq"] == [b"b"]
    assert pipeline.status.dead_lettered == 1
    assert pipeline.status.produced == 2
    assert "MessageSizeTooLargeError" in (pipeline.status.error or "")


async def test_an_output_the_broker_refuses_halts_before_it_under_stop() -> None:
    from confluent_kafka import KafkaError as NativeError

    pipeline = suffix_pipeline("stop")
    producer = pipeline.producer
    too_large = (NativeError(NativeError.MSG_SIZE_TOO_LARGE), FailedDelivery(b"k", b"b+"))
    calls = iter([[], [too_large]])
    producer.take_failures = lambda: next(calls, [])  # type: ignore[method-assign]
    with pytest.raises(PipelineHalted) as halted:
        await pipeline.process({TP: [record(0, b"a"), record(1, b"b"), record(2, b"c")]})
    assert halted.value.commit == {TP: 1}
    assert "produce failed at src/0@1" in halted.value.reason


def test_native_clients_verify_tls_and_carry_the_security_options(tmp_path: Path) -> None:
    from etl.config import KafkaSettings
    from etl.runtime.native import consumer_config, producer_config

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")

    settings = KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="etl",
        sasl_password="s3cret-pw",
        ssl_cafile=ca,
        compression_type="zstd",
        session_timeout_ms=7000,
    )
    producer = producer_config(settings)
    assert producer["security.protocol"] == "sasl_ssl"
    assert producer["enable.ssl.certificate.verification"] is True
    assert producer["ssl.endpoint.identification.algorithm"] == "https"
    assert producer["ssl.ca.location"] == str(ca)
    assert producer["sasl.mechanism"] == "SCRAM-SHA-512"
    assert producer["sasl.password"] == "s3cret-pw"
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    assert producer["compression.type"] == "zstd"
    consumer = consumer_config(settings, group_id="g", start_offset="earliest")
    assert consumer["session.timeout.ms"] == 7000, "librdkafka's 45 s default means slow joins"
    assert consumer["enable.auto.commit"] is False and consumer["enable.auto.offset.store"] is False
    assert consumer["auto.offset.reset"] == "earliest"
    unchecked = KafkaSettings(security_protocol="SSL", ssl_check_hostname=False)
    assert producer_config(unchecked)["ssl.endpoint.identification.algorithm"] == "none"
