"""The hostile records through a real ``etl worker`` transform (issue: no input can make a
pipeline loop, duplicate or crash).

The transform passes each message through and tags it with its source offset, so
every output can be counted: each hostile record is produced to the target once or
dead-lettered once (with its reason and coordinates), never both, never neither,
and the pipeline never reports ``failed``. The 5 MiB value is larger than the
producer's ``max_request_size`` (1 MiB by default): it cannot be produced, and its
dead letter is too large too, so it is dead-lettered in the reduced form.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from etl.testing.hostile import FIVE_MIB, HOSTILE, HostileRecord, produce_hostile
from etl.testing.kafka import create_topic, read_all
from etl.testing.worker import WorkerProcess, write_config

pytestmark = pytest.mark.kafka

NAME = "hostile"


def tagging_transform(source: str, target: str) -> str:
    """Pass every message through, with header ``hostile.offset`` = its source offset."""
    return (
        f"SOURCE_TOPIC = {source!r}\nTARGET_TOPIC = {target!r}\n"
        'START_OFFSET = "earliest"\nON_ERROR = "continue"\n\n\n'
        "def deal_message(message):\n"
        '    message["headers"]["hostile.offset"] = str(message["offset"])\n'
        "    return message\n"
    )


def run_through_transform(
    tmp_path: Path, bootstrap: str, uid: str, records: list[HostileRecord]
) -> tuple[dict[str, tuple[int, int]], list[Any], set[str]]:
    """Produce ``records``, run them through a worker; per record name (outputs, dead
    letters), the dead letters, and every state the pipeline was seen in."""
    source, target, dlq = f"h-{uid}", f"h-out-{uid}", f"dlq-{uid}"
    asyncio.run(create_topic(bootstrap, source, 1))
    asyncio.run(produce_hostile(bootstrap, source, records))
    (tmp_path / "transforms").mkdir(parents=True, exist_ok=True)
    (tmp_path / "transforms" / f"{NAME}.py").write_text(tagging_transform(source, target))
    config = write_config(
        tmp_path,
        bootstrap,
        kafka={"group_prefix": f"t{uid}"},
        errors={"dead_letter_topic": dlq},
    )
    states: set[str] = set()

    def handled(worker: WorkerProcess) -> bool:
        item = worker.pipeline(NAME) or {}
        state = f"{item.get('state')}: {item.get('error')}"
        states.add(state)
        if state.startswith(("failed", "halted")):
            raise AssertionError(f"the transform must not fail or stop: {state}")
        return all(p.get("committed") == len(records) for p in item.get("partitions", {}).values())

    with WorkerProcess(config) as worker:
        try:
            worker.wait_for(lambda w: bool((w.pipeline(NAME) or {}).get("partitions")), 60)
            worker.wait_for(handled, 40, f"all {len(records)} records handled")
        finally:
            (tmp_path / "status.txt").write_text("\n".join(sorted(states)))
    outputs = asyncio.run(read_all(bootstrap, target))
    dead = asyncio.run(read_all(bootstrap, dlq))
    produced = Counter(int(dict(r.headers)["hostile.offset"]) for r in outputs)
    routed = Counter(int(dict(r.headers)["etl.source.offset"]) for r in dead)
    report = {item.name: (produced[o], routed[o]) for o, item in enumerate(records)}
    return report, dead, states


def assert_once_each(report: dict[str, tuple[int, int]], states: set[str]) -> None:
    for name, (out, sent) in report.items():
        assert out + sent == 1, (name, report)
    assert not any(s.startswith(("failed", "halted")) for s in states), states


def test_the_hostile_set_through_a_transform(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    # The keyless tombstone has a test of its own.
    records = [r for r in HOSTILE if r.name != "keyless-tombstone"]
    report, dead, states = run_through_transform(tmp_path, kafka_bootstrap, uid, records)
    assert_once_each(report, states)
    for name in ("non-utf8-key", "non-utf8-value", "value-5mib"):
        assert report[name] == (0, 1), (name, report)
    stages = {dict(r.headers)["etl.source.offset"]: dict(r.headers) for r in dead}
    big = stages[str(records.index(next(r for r in records if r.name == "value-5mib"))).encode()]
    assert big["etl.truncated"] == b"true"
    assert sorted(h["etl.stage"] for h in stages.values()) == [b"decode", b"decode", b"produce"]


def test_a_keyless_tombstone_through_a_transform(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    records = [r for r in HOSTILE if r.name in ("plain-first", "keyless-tombstone", "plain-last")]
    records = [HostileRecord(r.name, r.key, r.value, n + 1) for n, r in enumerate(records)]
    report, _dead, states = run_through_transform(tmp_path, kafka_bootstrap, uid, records)
    assert_once_each(report, states)
    assert report["plain-first"] == report["plain-last"] == (1, 0)


def test_a_5_mib_value_is_dead_lettered_in_reduced_form_and_nothing_repeats(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    # The case: an output over max_request_size whose dead letter is too large
    # too, between two sentinels of the same batch.
    big = next(r for r in HOSTILE if r.name == "value-5mib")
    records = [
        HostileRecord("sentinel-before", b"s1", b'{"id": 1}', 1),
        HostileRecord("value-5mib", big.key, big.value, 2),
        HostileRecord("sentinel-after", b"s3", b'{"id": 3}', 3),
    ]
    report, dead, states = run_through_transform(tmp_path, kafka_bootstrap, uid, records)
    assert_once_each(report, states)
    assert report == {"sentinel-before": (1, 0), "value-5mib": (0, 1), "sentinel-after": (1, 0)}
    [letter] = dead
    headers = dict(letter.headers)
    assert big.value is not None
    assert headers["etl.truncated"] == b"true"
    assert headers["etl.original.size"] == str(len(big.value)).encode()
    assert headers["etl.original.sha256"] == hashlib.sha256(big.value).hexdigest().encode()
    assert len(letter.value) < 1024 * 1024 < FIVE_MIB
