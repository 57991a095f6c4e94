"""Dead letters per task (the documents, 003_660b7a57af9440c3.txt, lines 3665-3672): a
transform file, a template YAML and a sink each name their own dead-letter topic; the
others use ``errors.dead_letter_topic``. One real worker on the test broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from etl.errors import TransformLoadError
from etl.ops.render import pipeline_table
from etl.testing.kafka import create_topic, produce, read_all, wait_count
from etl.testing.worker import WorkerProcess, write_config
from etl.transforms.loader import compile_transform
from tests.etl.test_pipeline_e2e import ERRORS
from tests.sinks_http.conftest import serving

pytestmark = pytest.mark.kafka


def failing(source: str, target: str, dead_letter_topic: str = "") -> str:
    """A transform that fails on the value ``boom`` (``ERRORS``), with its own topic."""
    extra = f"DEAD_LETTER_TOPIC = {dead_letter_topic}\n" if dead_letter_topic else ""
    return ERRORS.format(source=source, target=target) + extra


def test_each_task_dead_letters_to_its_own_topic(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    default = f"dlq-{uid}"
    own, templated, sink_dlq = f"own-dlq-{uid}", f"tmpl-dlq-{uid}", f"sink-dlq-{uid}"
    transforms = tmp_path / "transforms"
    transforms.mkdir()
    (transforms / "own.py").write_text(failing(f"own-in-{uid}", f"own-out-{uid}", repr(own)))
    (transforms / "plain.py").write_text(failing(f"plain-in-{uid}", f"plain-out-{uid}"))
    (transforms / "tmpl.yaml").write_text(
        yaml.safe_dump(
            {
                "template": "json_fields",
                "source_topic": f"tmpl-in-{uid}",
                "target_topic": f"tmpl-out-{uid}",
                "start_offset": "earliest",
                "dead_letter_topic": templated,
                "params": {"drop": ["secret"]},  # a value that is not JSON is an error
            }
        )
    )
    hooked = f"hooked-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, hooked))
    with serving() as server:
        server.default = 400  # every request is refused: its records are dead letters
        sink = {
            "name": "hook",
            "type": "http",
            "topics": [hooked],
            "url": server.url,
            "start_offset": "earliest",
            "linger_ms": 100,
            "dead_letter_topic": sink_dlq,
        }
        path = write_config(
            tmp_path,
            kafka_bootstrap,
            kafka={"group_prefix": f"t{uid}"},
            errors={"dead_letter_topic": default},
            sinks=[sink],
        )
        with WorkerProcess(path) as worker:
            worker.wait_running("own", "plain", "tmpl", "hook")
            for name in ("own", "plain"):
                items = [(b"a", b"fine"), (b"b", b"boom")]
                asyncio.run(produce(kafka_bootstrap, f"{name}-in-{uid}", items))
            items = [(b"c", b'{"x": 1, "secret": 2}'), (b"d", b"not json")]
            asyncio.run(produce(kafka_bootstrap, f"tmpl-in-{uid}", items))
            asyncio.run(produce(kafka_bootstrap, hooked, [(b"e", b"refused")]))
            dead = {
                topic: asyncio.run(wait_count(kafka_bootstrap, topic, 1))
                for topic in (own, default, templated, sink_dlq)
            }
            worker.wait_for(
                lambda w: all(
                    (w.pipeline(name) or {}).get("dead_lettered") == 1
                    for name in ("own", "plain", "tmpl", "hook")
                ),
                30,
                "one dead letter each",
            )
            statuses = {name: worker.pipeline(name) or {} for name in ("own", "plain", "tmpl")}
            statuses["hook"] = worker.pipeline("hook") or {}
        assert asyncio.run(read_all(kafka_bootstrap, f"tmpl-out-{uid}"))[0].value == b'{"x":1}'
    pipelines = {
        own: b"own",
        default: b"plain",
        templated: b"tmpl",
        sink_dlq: b"hook",
    }
    for topic, records in dead.items():
        assert [dict(r.headers)["etl.pipeline"] for r in records] == [pipelines[topic]], topic
    assert [r.key for r in dead[own]] == [b"b"], "not in the default topic"
    assert [r.key for r in dead[default]] == [b"b"]
    assert [r.key for r in dead[templated]] == [b"d"]
    assert [r.key for r in dead[sink_dlq]] == [b"e"]
    assert {name: s.get("dead_letter_topic") for name, s in statuses.items()} == {
        "own": own,
        "plain": default,
        "tmpl": templated,
        "hook": sink_dlq,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'in'", "DEAD_LETTER_TOPIC 'in' must differ from the topics"),
        ("'a b'", "DEAD_LETTER_TOPIC 'a b' is not a Kafka topic name"),
        ("3", "DEAD_LETTER_TOPIC 3 is not a Kafka topic name"),
    ],
)
def test_a_bad_dead_letter_topic_is_a_load_error_on_its_line(value: str, message: str) -> None:
    source = failing("in", "out", value)
    with pytest.raises(TransformLoadError) as caught:
        compile_transform(source, Path("t.py"))
    assert message in str(caught.value)
    assert caught.value.line == source.count("\n")


def test_status_shows_the_dead_letter_topic() -> None:
    snapshot = {
        "pipelines": [
            {
                "name": "p",
                "kind": "sink",
                "state": "running",
                "dead_lettered": 2,
                "dead_letter_topic": "p-dlq",
            }
        ]
    }
    console = Console(width=250, record=True)
    console.print(pipeline_table(snapshot))
    assert "p-dlq" in console.export_text()
