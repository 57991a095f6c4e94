"""Transforms end to end: kcat -> real `etl worker` process -> kcat, on a real broker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from etl.embedded import EmbeddedBroker
from etl.testing.kafka import create_topic, produce, read_all, wait_count
from etl.testing.kcat import kcat_consume, kcat_produce
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, post_json, suffix_transform, write_config

pytestmark = pytest.mark.kafka


def suffixed(source: str, target: str) -> str:
    return suffix_transform(source, target, "ValueSuffix")


def transform(directory: Path, name: str, text: str) -> Path:
    path = directory / "transforms" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config(tmp_path: Path, bootstrap: str, uid: str, **overrides: Any) -> Path:
    return write_config(
        tmp_path,
        bootstrap,
        kafka={"group_prefix": f"t{uid}", **overrides.pop("kafka", {})},
        errors={"dead_letter_topic": f"dlq-{uid}", **overrides.pop("errors", {})},
        **overrides,
    )


def test_kcat_in_transform_kcat_out_keeps_order_per_key(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"orders-{uid}", f"orders-out-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 3))
    transform(tmp_path, "suffix", suffixed(source, target))
    with WorkerProcess(config(tmp_path, kafka_bootstrap, uid)) as worker:
        worker.wait_running("suffix")
        lines = [f"k{i % 7}\t{i}" for i in range(300)]
        kcat_produce(kafka_bootstrap, source, lines)
        records = asyncio.run(wait_count(kafka_bootstrap, target, 300))
        assert len(records) == 300
        worker.wait_for(
            lambda w: (w.pipeline("suffix") or {}).get("consumed") == 300, 30, "300 consumed"
        )
    rows = kcat_consume(kafka_bootstrap, target)
    assert len(rows) == 300
    by_key: dict[str, list[int]] = {}
    for key, value, _partition, _offset in rows:
        assert value.endswith("ValueSuffix")
        by_key.setdefault(key, []).append(int(value.removesuffix("ValueSuffix")))
    assert sorted(n for seq in by_key.values() for n in seq) == list(range(300))
    for seq in by_key.values():
        assert seq == sorted(seq), "per-key order must be kept"
    # One key -> one target partition.
    partitions_per_key = {key: {p for k, _v, p, _o in rows if k == key} for key in by_key}
    assert all(len(parts) == 1 for parts in partitions_per_key.values())


def test_faust_worker_command_runs_the_same_app(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"faust-{uid}", f"faust-out-{uid}"
    transform(tmp_path, "suffix", suffixed(source, target))
    path = config(tmp_path, kafka_bootstrap, uid)
    with WorkerProcess(path, faust_command=True) as worker:
        worker.wait_running("suffix")
        kcat_produce(kafka_bootstrap, source, ["k\thello"])
        out = asyncio.run(wait_count(kafka_bootstrap, target, 1))
    assert [r.value for r in out] == [b"helloValueSuffix"]


FILTER_FANOUT = """
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"

def deal_message(message):
    value = message["value"]
    if value == "drop":
        return None
    if value.startswith("fan:"):
        n = int(value[4:])
        return [dict(message, value=f"part{{i}}", headers={{"part": str(i)}}) for i in range(n)]
    message["key"] = "rekeyed-" + (message["key"] or "")
    return message
"""


def test_filter_fan_out_and_rekey(tmp_path: Path, kafka_bootstrap: str, uid: str) -> None:
    source, target = f"in-{uid}", f"out-{uid}"
    transform(tmp_path, "ff", FILTER_FANOUT.format(source=source, target=target))
    with WorkerProcess(config(tmp_path, kafka_bootstrap, uid)) as worker:
        worker.wait_running("ff")
        kcat_produce(kafka_bootstrap, source, ["a\tdrop", "b\tfan:3", "c\tkeep", "d\tdrop"])
        records = asyncio.run(wait_count(kafka_bootstrap, target, 4))
        worker.wait_for(lambda w: (w.pipeline("ff") or {}).get("filtered") == 2, 30, "filtered")
    values = sorted(r.value.decode() for r in records)
    assert values == ["keep", "part0", "part1", "part2"]
    keep = next(r for r in records if r.value == b"keep")
    assert keep.key == b"rekeyed-c"
    parts = [r for r in records if r.value.startswith(b"part")]
    assert sorted(dict(r.headers)["part"] for r in parts) == [b"0", b"1", b"2"]


ERRORS = """
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"

def deal_message(message):
    value = message["value"]
    if value == "boom":
        raise ValueError("cannot handle boom")
    if value == "int":
        return 42
    if value == "big":
        message["value"] = "x" * 2_000_000
    return message
"""


def test_errors_go_to_dead_letter_and_the_pipeline_goes_on(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target, dlq = f"in-{uid}", f"out-{uid}", f"dlq-{uid}"
    transform(tmp_path, "errs", ERRORS.format(source=source, target=target))
    path = config(tmp_path, kafka_bootstrap, uid, kafka={"sasl_password": "hunter2-secret"})
    with WorkerProcess(path) as worker:
        worker.wait_running("errs")
        items: list[tuple[bytes, bytes]] = [
            (b"k1", b"ok1"),
            (b"k2", b"boom"),
            (b"k3", b"int"),
            (b"k4", b"big"),
            (b"k5", b"bad\xc3\x28utf8"),
            (b"k6", b"ok2"),
        ]
        asyncio.run(produce(kafka_bootstrap, source, items, headers=[("trace", b"t-1")]))
        out = asyncio.run(wait_count(kafka_bootstrap, target, 2))
        dead = asyncio.run(wait_count(kafka_bootstrap, dlq, 4))
        worker.wait_for(
            lambda w: (w.pipeline("errs") or {}).get("dead_lettered") == 4, 30, "4 dead letters"
        )
        status = worker.pipeline("errs")
        log = worker.log()
    assert sorted(r.value for r in out) == [b"ok1", b"ok2"]
    assert len(dead) == 4
    by_key = {r.key: r for r in dead}
    assert by_key[b"k5"].value == b"bad\xc3\x28utf8", "original bytes are kept"
    assert by_key[b"k4"].value == b"big"
    stages = {k: dict(r.headers)["etl.stage"] for k, r in by_key.items()}
    assert stages == {b"k2": b"transform", b"k3": b"transform", b"k4": b"produce", b"k5": b"decode"}
    headers = dict(by_key[b"k2"].headers)
    assert headers["etl.pipeline"] == b"errs"
    assert headers["etl.source.topic"] == source.encode()
    assert headers["etl.source.partition"] == b"0"
    assert headers["etl.source.offset"] == b"1"
    assert headers["etl.exception.class"] == b"ValueError"
    assert headers["etl.exception.message"] == b"cannot handle boom"
    assert headers["trace"] == b"t-1", "original headers are kept"
    assert dict(by_key[b"k4"].headers)["etl.exception.class"] == b"MessageSizeTooLargeError"
    assert status is not None and status["state"] == "running"
    assert "hunter2-secret" not in log
    assert "hunter2-secret" not in json.dumps([dict(r.headers) for r in dead], default=str)


STOPPER = """
SOURCE_TOPIC = {source!r}
TARGET_TOPIC = {target!r}
START_OFFSET = "earliest"
ON_ERROR = "stop"

def deal_message(message):
    if message["value"] == "poison":
        {on_poison}
    return message
"""


def stopper(source: str, target: str, *, fixed: bool = False) -> str:
    on_poison = 'message["value"] = "cured"' if fixed else 'raise RuntimeError("poison message")'
    return STOPPER.format(source=source, target=target, on_poison=on_poison)


def halts_logged(worker: WorkerProcess) -> int:
    return worker.log().count("partition halted by policy pipeline=stopper")


def test_stop_policy_halts_the_partition_of_the_bad_message_and_the_others_go_on(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"in-{uid}", f"out-{uid}"
    other_source, other_target = f"other-{uid}", f"other-out-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 3))
    path = transform(tmp_path, "stopper", stopper(source, target))
    transform(tmp_path, "healthy", suffixed(other_source, other_target))
    port = reserve_port()
    web = {"web": {"enabled": True, "host": "127.0.0.1", "port": port}}
    resume_url = f"http://127.0.0.1:{port}/etl/pipelines/stopper/resume/"

    def send(partition: int, values: list[str]) -> None:
        kcat_produce(
            kafka_bootstrap, source, [f"k{partition}\t{v}" for v in values], partition=partition
        )

    def halted_at(worker: WorkerProcess) -> dict[str, Any] | None:
        status = worker.pipeline("stopper") or {}
        return status if status.get("state") == "halted" and status.get("halted") else None

    with WorkerProcess(config(tmp_path, kafka_bootstrap, uid, **web)) as worker:
        worker.wait_running("stopper", "healthy")
        send(0, ["a0", "a1", "a2"])
        send(1, ["b0", "b1", "poison", "b3", "b4"])
        send(2, ["c0", "c1", "c2"])
        worker.wait_for(lambda w: halted_at(w) is not None, 30, "partition 1 halted")
        status = worker.pipeline("stopper")
        assert status is not None
        assert list(status["halted"]) == [f"{source}/1"]
        assert status["halted"][f"{source}/1"]["offset"] == 2
        assert "poison message" in status["error"] and f"{source}/1@2" in status["error"]
        # The other partitions keep flowing while partition 1 waits at its bad record.
        send(0, ["a3", "a4"])
        send(2, ["c3", "c4"])
        out = asyncio.run(wait_count(kafka_bootstrap, target, 12))

        def committed(w: WorkerProcess) -> dict[str, Any]:
            parts = (w.pipeline("stopper") or {}).get("partitions", {})
            return {tp: part["committed"] for tp, part in parts.items()}

        wanted = {f"{source}/0": 5, f"{source}/1": 2, f"{source}/2": 5}
        worker.wait_for(lambda w: committed(w) == wanted, 30, "the others committed")
        assert (worker.pipeline("stopper") or {})["state"] == "halted"
        # The other pipeline keeps running.
        kcat_produce(kafka_bootstrap, other_source, ["a\tx", "b\ty"])
        other = asyncio.run(wait_count(kafka_bootstrap, other_target, 2))
        assert sorted(r.value for r in other) == [b"xValueSuffix", b"yValueSuffix"]
        assert halts_logged(worker) == 1
        # A resume reads the partition again from the bad record: still bad, halted again.
        assert post_json(resume_url)["pipeline"] == "transform:stopper"
        worker.wait_for(lambda w: halts_logged(w) == 2, 30, "halted again after the resume")
        assert "halts cleared pipeline=stopper" in worker.log()
        worker.wait_for(lambda w: halted_at(w) is not None, 30, "the status says halted again")
        assert (halted_at(worker) or {})["partitions"][f"{source}/1"]["committed"] == 2
    out = asyncio.run(read_all(kafka_bootstrap, target))
    values = [r.value.decode() for r in out]
    assert sorted(values) == sorted(
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1"] + [f"c{i}" for i in range(5)]
    )

    # A restarted worker (a new owner) halts at the same record again.
    with WorkerProcess(config(tmp_path, kafka_bootstrap, uid, **web), name="again") as worker:
        worker.wait_for(lambda w: halted_at(w) is not None, 60, "halted again after a restart")
        status = halted_at(worker) or {}
        assert status["halted"][f"{source}/1"]["offset"] == 2
        # The fix, saved: the halted partition is read again by the new version.
        path.write_text(stopper(source, target, fixed=True))
        asyncio.run(wait_count(kafka_bootstrap, target, 15))
        worker.wait_for(
            lambda w: (w.pipeline("stopper") or {}).get("state") == "running", 30, "running"
        )
        assert (worker.pipeline("stopper") or {})["halted"] == {}
    out = asyncio.run(read_all(kafka_bootstrap, target))
    counts = Counter(r.value.decode() for r in out)
    assert set(counts.values()) == {1}, "each message exactly once"
    assert sorted(counts) == sorted(
        [f"a{i}" for i in range(5)]
        + ["b0", "b1", "cured", "b3", "b4"]
        + [f"c{i}" for i in range(5)]
    )
    by_key: dict[bytes, list[str]] = {}
    for r in out:
        by_key.setdefault(r.key, []).append(r.value.decode())
    assert by_key[b"k1"] == ["b0", "b1", "cured", "b3", "b4"], "per-key order kept"


def test_bad_transform_files_are_reported_and_the_rest_run(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"in-{uid}", f"out-{uid}"
    transform(tmp_path, "good", suffixed(source, target))
    transform(tmp_path, "syntax", "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\ndef deal_message(m)\n")
    transform(tmp_path, "nofunc", "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\n")
    transform(
        tmp_path,
        "same",
        "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'a'\ndef deal_message(m):\n  return m\n",
    )
    with WorkerProcess(config(tmp_path, kafka_bootstrap, uid)) as worker:
        worker.wait_running("good")
        kcat_produce(kafka_bootstrap, source, ["k\tv"])
        assert len(asyncio.run(wait_count(kafka_bootstrap, target, 1))) == 1
        states = {p["name"]: p for p in worker.status()["pipelines"]}
        log = worker.log()
    assert states["syntax"]["state"] == "load_error"
    assert states["syntax"]["path"].endswith("syntax.py:3")
    assert "syntax error" in states["syntax"]["error"]
    assert "no deal_message" in states["nofunc"]["error"]
    assert "must differ" in states["same"]["error"]
    assert "syntax.py line=3" in log
    assert "Traceback" not in log


def test_unreachable_broker_gives_one_line_per_retry_then_connects(
    tmp_path: Path, uid: str
) -> None:
    port = reserve_port()
    bootstrap = f"127.0.0.1:{port}"
    source, target = f"in-{uid}", f"out-{uid}"
    transform(tmp_path, "suffix", suffixed(source, target))
    with WorkerProcess(config(tmp_path, bootstrap, uid)) as worker:
        worker.wait_for(
            lambda w: w.log().count("kafka broker unreachable") >= 2, 60, "two retry lines"
        )
        assert "Traceback" not in worker.log()
        with EmbeddedBroker(port=port):
            worker.wait_running("suffix", timeout=90)
            asyncio.run(produce(bootstrap, source, [(b"k", b"v")]))
            out = asyncio.run(wait_count(bootstrap, target, 1))
            assert [r.value for r in out] == [b"vValueSuffix"]
        worker.kill()
    assert "Traceback" not in worker.log()


@pytest.mark.serial  # the kill must land mid-stream
@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing(tmp_path: Path, kafka_bootstrap: str, uid: str) -> None:
    source, target = f"seq-{uid}", f"seq-out-{uid}"
    total, batch = 20_000, 1000
    asyncio.run(create_topic(kafka_bootstrap, source, 4))
    # A slow function (0.3 ms a message) so that the kill lands mid-stream.
    slow = suffix_transform(source, target, ":done", delay_s=0.0003)
    transform(tmp_path, "seq", slow)
    path = config(tmp_path, kafka_bootstrap, uid, kafka={"max_batch_records": batch})
    kcat_produce(kafka_bootstrap, source, [f"k{i % 50}\t{i}" for i in range(total)])
    worker = WorkerProcess(path).start()
    try:
        worker.wait_for(
            lambda w: (w.pipeline("seq") or {}).get("consumed", 0) >= 4000, 120, "4000 consumed"
        )
        worker.kill()
        consumed_before_kill = (worker.pipeline("seq") or {})["consumed"]
        assert consumed_before_kill < total, "the kill must land mid-stream"
    finally:
        worker.stop()
    with WorkerProcess(path, name="restarted") as again:
        records = asyncio.run(wait_count(kafka_bootstrap, target, total, timeout=180))
        again.wait_for(
            lambda w: all(
                p["lag"] == 0
                for p in (w.pipeline("seq") or {"partitions": {"x": {"lag": 1}}})[
                    "partitions"
                ].values()
            ),
            120,
            "lag 0",
        )
        records = asyncio.run(read_all(kafka_bootstrap, target))
    counts = Counter(int(r.value.decode().removesuffix(":done")) for r in records)
    assert set(counts) == set(range(total)), "nothing lost"
    duplicates = sum(n - 1 for n in counts.values())
    # At most the batch in flight when the worker died (one poll of <= `batch` records).
    assert duplicates <= batch, duplicates


@pytest.mark.slow
def test_two_workers_split_partitions_and_take_over(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    source, target = f"split-{uid}", f"split-out-{uid}"
    asyncio.run(create_topic(kafka_bootstrap, source, 4))
    transforms_dir = tmp_path / "shared"
    transform(transforms_dir, "split", suffix_transform(source, target, ":done"))
    paths = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        paths.append(
            config(
                directory, kafka_bootstrap, uid, transforms_dir=str(transforms_dir / "transforms")
            )
        )
    first, second = WorkerProcess(paths[0], "a").start(), WorkerProcess(paths[1], "b").start()
    try:

        def split(_: WorkerProcess) -> bool:
            a, b = first.pipeline("split"), second.pipeline("split")
            return bool(a and b and len(a["partitions"]) == 2 and len(b["partitions"]) == 2)

        first.wait_for(split, 90, "2 + 2 partitions")
        kcat_produce(kafka_bootstrap, source, [f"k{i}\t{i}" for i in range(2000)])
        asyncio.run(wait_count(kafka_bootstrap, target, 2000))
        first.kill()
        second.wait_for(
            lambda w: len((w.pipeline("split") or {}).get("partitions", {})) == 4,
            90,
            "all 4 partitions on the survivor",
        )
        kcat_produce(kafka_bootstrap, source, [f"k{i}\t{i}" for i in range(2000, 4000)])
        records = asyncio.run(wait_count(kafka_bootstrap, target, 4000, timeout=120))
    finally:
        first.stop()
        second.stop()
    values = {int(r.value.decode().removesuffix(":done")) for r in records}
    assert values == set(range(4000))
