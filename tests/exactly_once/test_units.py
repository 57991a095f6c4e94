"""The exactly-once settings: file, template and config options, and the worker identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.config import ETLSettings
from etl.errors import TransformLoadError
from etl.runtime.consumer import worker_identity
from etl.runtime.transform import TransformPipeline
from etl.transforms.loader import load_transform_file
from etl.transforms.templates import load_template_file

BODY = (
    'SOURCE_TOPIC = "a"\nTARGET_TOPIC = "b"\n\n\ndef deal_message(message):\n    return message\n'
)


def test_file_and_template_choose_the_guarantee(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text('PROCESSING_GUARANTEE = "exactly_once"\n' + BODY)
    assert load_transform_file(path).processing_guarantee == "exactly_once"
    path.write_text('PROCESSING_GUARANTEE = "once"\n' + BODY)
    with pytest.raises(TransformLoadError, match="PROCESSING_GUARANTEE must be one of"):
        load_transform_file(path)
    yaml_path = tmp_path / "y.yaml"
    yaml_path.write_text(
        "template: add_prefix_suffix\nsource_topic: a\ntarget_topic: b\n"
        "processing_guarantee: exactly_once\nparams: {value_suffix: '!'}\n"
    )
    spec = load_template_file(yaml_path)
    assert spec.processing_guarantee == "exactly_once"
    assert "PROCESSING_GUARANTEE = 'exactly_once'" in spec.extra["source"]


def test_config_default_and_pipeline_choice(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(BODY)
    settings = ETLSettings(data_dir=tmp_path / "data")
    assert settings.kafka.processing_guarantee == "at_least_once"
    plain = TransformPipeline(load_transform_file(path), settings=settings)
    assert not plain.exactly_once and plain.instance_id() is None
    settings = ETLSettings(
        data_dir=tmp_path / "data", kafka={"processing_guarantee": "exactly_once"}
    )
    pipeline = TransformPipeline(load_transform_file(path), settings=settings)
    assert pipeline.exactly_once
    assert pipeline.instance_id() == pipeline.transactional_id()
    assert pipeline.transactional_id().startswith("etl-transform-x-")
    producer = pipeline.make_producer()
    assert producer.config["transactional.id"] == pipeline.transactional_id()
    assert producer.config["enable.idempotence"] is True
    with pytest.raises(ValueError, match="processing_guarantee"):
        ETLSettings(kafka={"processing_guarantee": "twice"})


def test_worker_identity_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    settings = ETLSettings(data_dir=tmp_path / "one")
    first = worker_identity(settings)
    assert worker_identity(settings) == first
    assert (tmp_path / "one" / "worker-id").read_text().strip() == first
    assert worker_identity(ETLSettings(data_dir=tmp_path / "two")) != first
    named = ETLSettings(data_dir=tmp_path / "one", kafka={"worker_id": "pod-3"})
    assert worker_identity(named) == "pod-3"


def test_etl_query_reads_committed_only(noida_kafka: str, uid: str) -> None:
    """Our own readers (here ``etl query``) never show an aborted transaction's records."""
    import asyncio

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from etl.config import KafkaSettings
    from etl.ops.query import query_by_offset

    topic = f"eo-q-{uid}"
    admin = AdminClient({"bootstrap.servers": noida_kafka})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": noida_kafka, "transactional.id": f"q-{uid}"})
    producer.init_transactions(30)
    for values, commit in ((["a", "b"], True), (["aborted"], False), (["c"], True)):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value.encode(), partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    settings = KafkaSettings(bootstrap_servers=noida_kafka)
    result = asyncio.run(query_by_offset(settings, topic, 0, 0))
    assert [m.value for m in result.messages] == [b"a", b"b", b"c"]
