"""Unit tests: options, index templates, document shapes and ids (no server)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from etl.config import validate_plugin
from etl.errors import RecordError
from etl.plugins import Plugin, register
from sinks.exported import exported_message
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.documents import DocumentBuilder
from sinks.opensearch.index_template import IndexTemplate

register(
    Plugin(
        "sink",
        "opensearch",
        "sinks.opensearch.config:OpenSearchSinkConfig",
        "sinks.opensearch.sink:OpenSearchSinkPipeline",
        "opensearch",
    )
)

DAY = 1709683140000  # 2024-03-05T23:59:00Z


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    topic: str = "Orders"
    partition: int = 2
    offset: int = 7
    timestamp: int = DAY
    headers: tuple[Any, ...] = ()


def config(**options: Any) -> OpenSearchSinkConfig:
    return OpenSearchSinkConfig.model_validate(
        {"name": "s", "type": "opensearch", "topics": ["t"], **options}
    )


def lines(body: bytes) -> list[Any]:
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.decode().splitlines()]


# ---- options -------------------------------------------------------------------------


def test_every_problem_is_reported_by_its_path() -> None:
    raw = {
        "name": "s",
        "type": "opensearch",
        "topics": ["t"],
        "index": "logs-{nope}",
        "document": "xml",
        "id": "key",
        "null_value": "explode",
        "ca_certs": "/no/such/ca.pem",
    }
    _, problems = validate_plugin("sink", raw, "sinks[0]")
    text = "\n".join(problems)
    assert "sinks[0].index: " in text and "unknown placeholder {nope}" in text
    assert "sinks[0].document: " in text
    assert "sinks[0].null_value: " in text
    assert "sinks[0].ca_certs: " in text and "file not found" in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"password": "x"}, "password needs username"),
        ({"username": "u"}, "username needs password"),
        ({"username": "u", "password": "p", "api_key": "k"}, "not both"),
        ({"null_value": "delete"}, "null_value: delete needs id: key"),
        ({"hosts": ["ftp://h:1"]}, "only http:// and https://"),
        ({"hosts": ["https://u:p@h:9200"]}, "not in hosts"),
        ({"index": "a b"}, "spaces"),
        ({"index": "_x"}, "must not start"),
        ({"index": "x-{yyyy"}, "unbalanced brace"),
    ],
)
def test_invalid_combinations_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        config(**options)


def test_defaults_and_null_value_default_follows_the_id_mode() -> None:
    default = config()
    assert (default.document, default.id, default.write_method) == (
        "envelope",
        "coordinates",
        "index",
    )
    assert default.null_value == "ignore" and default.bulk_bytes == 5 * 1024 * 1024
    assert config(id="key").null_value == "delete"
    assert config(hosts="http://a:9200, http://b:9200").hosts == ["http://a:9200", "http://b:9200"]
    assert "secret" not in repr(config(username="u", password="secret"))


# ---- index templates -------------------------------------------------------------------


def test_index_template_renders_topic_partition_and_utc_date_lowercased() -> None:
    template = IndexTemplate("logs-{topic}-{partition}-{yyyy.MM.dd}")
    assert template.render("Web", 3, DAY) == "logs-web-3-2024.03.05"
    assert template.render("Web", 3, DAY + 60_000) == "logs-web-3-2024.03.06"
    hourly = IndexTemplate("h-{yyyyMMddHH}-{mm}")
    assert hourly.render("t", 0, DAY) == "h-2024030523-59"
    assert IndexTemplate("{topic}").render("T", 0, None) == "t"


# ---- documents ---------------------------------------------------------------------------


def test_envelope_is_the_msg_body_of_the_documents() -> None:
    op = DocumentBuilder(config(index="x-{topic}")).build(Record(b"k", "välue".encode()))
    assert op is not None
    action, source = lines(op.body)
    assert action == {"index": {"_index": "x-orders", "_id": "Orders+2+7"}}
    assert source == {
        "msg_body": {
            "key": "k",
            "offset": 7,
            "overflowFlag": False,
            "partition": 2,
            "timestamp": DAY,
            "topic": "Orders",
            "value": "välue",
            "valueSize": 6,
        }
    }


@pytest.mark.parametrize("key", [None, b"k"])
def test_envelope_and_exported_message_agree_on_the_key(key: bytes | None) -> None:
    # The documents: a null key is left out of the request (HTTP), the lines (object
    # store) and so of the msg_body document too.
    record = Record(key, b"v")
    op = DocumentBuilder(config()).build(record)
    assert op is not None
    body = lines(op.body)[1]["msg_body"]
    assert body == exported_message(record)
    assert ("key" in body) is (key is not None)


def test_value_and_flatten_shapes_and_upsert() -> None:
    value = json.dumps({"a": {"b": 1}}, indent=2).encode()
    op = DocumentBuilder(config(document="value", id="key")).build(Record(b"k1", value))
    assert op is not None and lines(op.body) == [
        {"index": {"_index": "orders", "_id": "k1"}},
        {"a": {"b": 1}},
    ]
    upsert = DocumentBuilder(config(document="flatten", write_method="upsert"))
    op = upsert.build(Record(None, b'{"a":1}'))
    assert op is not None and op.action == "update"
    action, source = lines(op.body)
    assert action == {"update": {"_index": "orders", "_id": "Orders+2+7", "retry_on_conflict": 3}}
    assert source == {
        "doc": {
            "a": 1,
            "topic": "Orders",
            "partition": 2,
            "offset": 7,
            "key": None,
            "timestamp": DAY,
        },
        "doc_as_upsert": True,
    }


@pytest.mark.parametrize(
    ("options", "record", "message"),
    [
        ({"document": "value"}, Record(None, b"[1, 2]"), "JSON list"),
        ({"document": "value"}, Record(None, b"{oops"), "not JSON"),
        ({"document": "flatten"}, Record(None, b'{"offset": 1}'), "clash"),
        ({}, Record(None, b"\xff\xfe"), "value of Orders/2@7 is not valid UTF-8"),
        ({"id": "key"}, Record(None, b"x"), "has no key"),
        ({"id": "key"}, Record(b"k" * 600, b"x"), "600 bytes"),
        ({"null_value": "fail"}, Record(b"k", None), "value is null"),
    ],
)
def test_bad_records_are_record_errors_that_say_why(
    options: dict[str, Any], record: Record, message: str
) -> None:
    with pytest.raises(RecordError, match=message):
        DocumentBuilder(config(**options)).build(record)


def test_null_values_delete_by_key_or_are_ignored() -> None:
    op = DocumentBuilder(config(id="key")).build(Record(b"k9", None))
    assert op is not None and op.action == "delete"
    assert lines(op.body) == [{"delete": {"_index": "orders", "_id": "k9"}}]
    assert DocumentBuilder(config()).build(Record(b"k9", None)) is None


def test_auto_ids_are_stable_within_a_run_and_new_after_a_restart() -> None:
    first, second = DocumentBuilder(config(id="auto")), DocumentBuilder(config(id="auto"))
    record = Record(None, b"x")
    assert first.document_id(record) == first.document_id(record)
    assert first.document_id(record) != first.document_id(Record(None, b"x", offset=8))
    assert first.document_id(record) != second.document_id(record)
    assert len(first.document_id(record)) == 20
