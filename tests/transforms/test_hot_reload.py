"""Hot reload on a real broker with a real ``etl worker`` subprocess.

Messages flow continuously while files are edited, added and deleted; every
message is numbered, so the checks are exact: none missing, none twice, and per
key every message handled by an older version comes before every message handled
by a newer one.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from time import time

import pytest

from etl.testing.flow import Arrival, MessageFlow
from etl.testing.kafka import create_topic, produce, read_all, wait_count
from etl.testing.worker import WorkerProcess, write_config
from etl.transforms.loader import load_any

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def suffix_yaml(source: str, target: str, suffix: object) -> str:
    return (
        "template: add_prefix_suffix\n"
        f"source_topic: {source}\n"
        f"target_topic: {target}\n"
        "start_offset: earliest\n"
        "params:\n"
        f"  value_suffix: {suffix}\n"
    )


def copy_py(source: str, target: str, tag: str = "") -> str:
    return (
        f"SOURCE_TOPIC = {source!r}\n"
        f"TARGET_TOPIC = {target!r}\n"
        'START_OFFSET = "earliest"\n\n\n'
        "def deal_message(message):\n"
        f"    message['value'] = message['value'] + {tag!r}\n"
        "    return message\n"
    )


def create_topics(bootstrap: str, partitions: int, *topics: str) -> None:
    for topic in topics:
        asyncio.run(create_topic(bootstrap, topic, partitions))


def error_of(worker: WorkerProcess, name: str) -> str:
    item = worker.pipeline(name) or {}
    return item.get("error") or ""


def assert_exactly_once(values: list[str], expected: set[str]) -> None:
    counts = Counter(values)
    doubled = sorted(v for v, n in counts.items() if n > 1)
    missing = sorted(expected - set(counts))
    assert not doubled, f"{len(doubled)} handled twice, e.g. {doubled[:5]}"
    assert not missing, f"{len(missing)} missing, e.g. {missing[:5]}"
    assert set(counts) == expected


def per_key_in_order(arrivals: list[Arrival]) -> dict[str | None, list[Arrival]]:
    """Arrivals grouped by key, each group in its target partition's offset order."""
    groups: dict[str | None, list[Arrival]] = defaultdict(list)
    for arrival in sorted(arrivals, key=lambda a: (a.topic, a.partition, a.offset)):
        groups[arrival.key].append(arrival)
    return groups


def test_template_edits_swap_at_batch_boundaries_under_flow(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    source, target = f"hr-src-{uid}", f"hr-dst-{uid}"
    create_topics(kafka_bootstrap, 2, source, target)
    config = write_config(tmp_path, kafka_bootstrap)
    path = tmp_path / "transforms" / "suffix.yaml"
    path.write_text(suffix_yaml(source, target, "'|v0'"))
    latencies: list[float] = []
    with WorkerProcess(config) as worker, MessageFlow(kafka_bootstrap, source, [target]) as flow:
        worker.wait_running("suffix")
        flow.wait_for(lambda a: any(x.value.endswith("|v0") for x in a), 60, "v0 output")
        for version in range(1, 6):
            suffix = f"|v{version}"
            saved = time()
            path.write_text(suffix_yaml(source, target, f"'{suffix}'"))
            arrivals = flow.wait_for(
                lambda a, s=suffix: any(x.value.endswith(s) for x in a), 60, f"{suffix} output"
            )
            latencies.append(min(x.received for x in arrivals if x.value.endswith(suffix)) - saved)
            flow.wait_for(
                lambda a, s=suffix: sum(x.value.endswith(s) for x in a) >= 200, 60, "more output"
            )
            if version == 3:
                # A broken edit: the running version (v3) keeps handling messages.
                path.write_text(suffix_yaml(source, target, "[not, text]"))
                worker.wait_for(
                    lambda w: "reload failed" in error_of(w, "suffix"), 30, "reload error"
                )
                error = error_of(worker, "suffix")
                assert f"{path}:6: params.value_suffix: Input should be a valid string" in error
                assert worker.pipeline("suffix")["state"] == "running"
                assert "transform reload failed" in worker.log()
                seen = time()
                flow.wait_for(lambda a, t=seen: sum(x.received > t for x in a) >= 100, 60, "flow")
                assert all(x.value.endswith("|v3") for x in flow.arrivals() if x.received > seen)
        sent = flow.stop_producing()
        arrivals = flow.wait_all(sent)
        version = load_any(path).version
        worker.wait_for(
            lambda w: (w.pipeline("suffix") or {}).get("version") == version, 30, "live version"
        )
        assert worker.pipeline("suffix")["error"] is None
    assert f"transform swapped pipeline=suffix version={version}" in worker.log()

    values = [a.value for a in arrivals]
    assert_exactly_once([v.split("|")[0] for v in values], {str(i) for i in range(sent)})
    assert {v.split("|")[1] for v in values} == {f"v{i}" for i in range(6)}
    for key, group in per_key_in_order(arrivals).items():
        seqs = [int(a.value.split("|")[0]) for a in group]
        versions = [int(a.value.split("|v")[1]) for a in group]
        assert seqs == sorted(seqs), f"key {key}: order changed"
        assert versions == sorted(versions), f"key {key}: an older version after a newer one"
    median = statistics.median(latencies)
    print(f"\nsave -> new version handling messages: median {median:.3f}s, all {latencies}")


def test_add_delete_readd_fix_and_retarget(kafka_bootstrap: str, uid: str, tmp_path: Path) -> None:
    source = f"hr2-src-{uid}"
    out_a, out_b, out_fixed = f"hr2-a-{uid}", f"hr2-b-{uid}", f"hr2-fixed-{uid}"
    create_topics(kafka_bootstrap, 1, source, out_a, out_b)
    config = write_config(tmp_path, kafka_bootstrap)
    transforms = tmp_path / "transforms"
    broken = transforms / "broken.py"
    broken.write_text(f"SOURCE_TOPIC = {source!r}\nTARGET_TOPIC = {out_fixed!r}\ndef deal(:\n")
    copy = transforms / "copy.py"
    first = [(None, f"m{i}") for i in range(100)]
    second = [(None, f"m{i}") for i in range(100, 200)]
    asyncio.run(produce(kafka_bootstrap, source, first))

    with WorkerProcess(config) as worker:
        # A file broken at start-up is shown with its line and starts once fixed.
        worker.wait_for(
            lambda w: (w.pipeline("broken") or {}).get("state") == "load_error", 60, "load error"
        )
        assert worker.pipeline("broken")["path"] == f"{broken}:3"

        # A new file starts a pipeline.
        copy.write_text(copy_py(source, out_a))
        worker.wait_running("copy")
        assert len(asyncio.run(wait_count(kafka_bootstrap, out_a, 100))) == 100

        # A deleted file stops its pipeline after committing its progress ...
        copy.unlink()
        worker.wait_for(lambda w: w.pipeline("copy") is None, 30, "copy stopped")
        assert "transform stopped pipeline=copy (progress committed)" in worker.log()
        asyncio.run(produce(kafka_bootstrap, source, second))
        # ... so the same file added again resumes where it stopped.
        copy.write_text(copy_py(source, out_a))
        worker.wait_running("copy")
        records = asyncio.run(wait_count(kafka_bootstrap, out_a, 200))
        assert_exactly_once([r.value.decode() for r in records], {f"m{i}" for i in range(200)})

        broken.write_text(copy_py(source, out_fixed, "!"))
        worker.wait_running("broken")
        fixed = asyncio.run(wait_count(kafka_bootstrap, out_fixed, 200))
        assert sorted(r.value.decode() for r in fixed) == sorted(f"m{i}!" for i in range(200))

        # A changed TARGET_TOPIC restarts the pipeline cleanly while messages flow fast.
        flow = MessageFlow(kafka_bootstrap, source, [out_a, out_b], prefix="f", interval=0.0005)
        with flow:
            for target in (out_b, out_a, out_b):
                before = sum(x.topic == target for x in flow.arrivals())
                copy.write_text(copy_py(source, target))
                flow.wait_for(
                    lambda a, t=target, n=before: sum(x.topic == t for x in a) >= n + 200,
                    60,
                    f"output on {target}",
                )
            sent = flow.stop_producing()
            arrivals = flow.wait_for(
                lambda a: sum(x.value[0] == "f" for x in a) >= sent, 60, "every flow message"
            )
        assert "transform restarting file=" in worker.log()
        assert worker.pipeline("copy")["target"] == out_b

    flowed = [a for a in arrivals if a.value.startswith("f")]
    assert_exactly_once([a.value for a in flowed], {f"f{i}" for i in range(sent)})
    # One source partition: each restart splits it at one offset, old target before, new after.
    topics = [a.topic for a in sorted(flowed, key=lambda a: int(a.value[1:]))]
    switches = sum(1 for before, after in pairwise(topics) if before != after)
    assert topics[0] == out_a and switches == 3
    assert len(asyncio.run(read_all(kafka_bootstrap, out_a))) == 200 + sum(
        a.topic == out_a for a in flowed
    )
