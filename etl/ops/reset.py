"""``etl offsets``: show and move a pipeline's committed offsets (chapter 3.1 of the documents).

Rules kept here:

* offsets move only while the pipeline runs nowhere: its desired state is
  ``stopped``, no live worker reports it running, and its consumer group has no
  members. Otherwise the reset is refused with the workers that run it, unless
  asked to stop it first (``--stop``): then the stop goes through the control
  topic and the reset waits until every worker has let go of the group;
* a target is clamped to what the log holds (``[log start, end]``), and the
  answer shows every partition before and after, also for ``--dry-run``;
* ``--to-time`` is the first offset whose timestamp is at or after the time
  (the end when there is none); brokers without a time index are scanned.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition as AioTopicPartition

from etl.config import ETLSettings
from etl.control.plane import ControlPlane
from etl.ops.messages import TopicReader
from etl.ops.offsets import TP, KafkaOffsets, OffsetsError, group_offsets, tp_text

#: How long ``--stop`` waits for every worker to leave the group.
STOP_WAIT_S = 60.0


class ResetRefused(Exception):
    """The offsets cannot be moved now (the pipeline runs, or the target is invalid)."""


@dataclass
class ResetTarget:
    """Where to move: earliest, latest, a time (epoch ms) or offsets per partition."""

    kind: str  # earliest | latest | time | offsets
    time_ms: int | None = None
    offsets: dict[TP, int] = field(default_factory=dict)

    @classmethod
    def parse_offsets(cls, specs: list[str], topics: list[str]) -> ResetTarget:
        """``P:O`` (the pipeline's only topic) or ``TOPIC:P:O``, one per partition."""
        out: dict[TP, int] = {}
        for spec in specs:
            parts = spec.rsplit(":", 2)
            try:
                if len(parts) == 2:
                    if len(topics) != 1:
                        raise ResetRefused(
                            f"{spec!r}: the pipeline reads {', '.join(topics)}; "
                            "give TOPIC:PARTITION:OFFSET"
                        )
                    topic, partition, offset = topics[0], int(parts[0]), int(parts[1])
                elif len(parts) == 3:
                    topic, partition, offset = parts[0], int(parts[1]), int(parts[2])
                else:
                    raise ValueError
            except ValueError:
                raise ResetRefused(
                    f"{spec!r}: expected PARTITION:OFFSET or TOPIC:PARTITION:OFFSET"
                ) from None
            if topic not in topics:
                raise ResetRefused(f"{spec!r}: the pipeline does not read topic {topic!r}")
            out[(topic, partition)] = offset
        return cls("offsets", offsets=out)

    def describe(self) -> str:
        if self.kind == "time":
            return f"time {self.time_ms}"
        if self.kind == "offsets":
            return ", ".join(f"{tp_text(tp)}@{o}" for tp, o in sorted(self.offsets.items()))
        return self.kind


def pipeline_item(control: ControlPlane, key: str) -> dict[str, Any]:
    """What the control table knows of a pipeline: its group and topics."""
    table = control.table
    for worker in table.live_workers().values():
        item = (worker.get("pipelines") or {}).get(key)
        if item:
            return dict(item)
    details = table.details.get(key)
    if details:
        return dict(details)
    raise ResetRefused(f"no pipeline {key!r} is known to the cluster (no live worker reports it)")


def runners(control: ControlPlane, key: str) -> list[str]:
    """The live workers that run ``key`` (not stopped), as ``id (host pid)``."""
    out = []
    for wid, worker in sorted(control.table.live_workers().items()):
        item = (worker.get("pipelines") or {}).get(key)
        if item and str(item.get("state")) not in ("stopped", "finished", "load_error"):
            out.append(f"{wid} ({worker.get('host')} pid {worker.get('pid')})")
    return out


async def show_offsets(settings: ETLSettings, control: ControlPlane, key: str) -> dict[str, Any]:
    """The pipeline's partitions: committed, log start, end, lag."""
    item = pipeline_item(control, key)
    group, topics = _group_and_topics(key, item)
    reader = KafkaOffsets(settings.kafka)
    try:
        rows = (await asyncio.to_thread(group_offsets, reader, {group: topics}))[group]
    finally:
        reader.close()
    return {
        "pipeline": key,
        "group_id": group,
        "topics": topics,
        "desired": control.table.desired_state(key),
        "running_on": runners(control, key),
        "partitions": {tp_text(tp): row.to_dict() for tp, row in sorted(rows.items())},
    }


def _group_and_topics(key: str, item: dict[str, Any]) -> tuple[str, list[str]]:
    kind = key.split(":", 1)[0]
    group = str(item.get("group_id") or "")
    topics = [t for t in str(item.get("source") or "").split(",") if t]
    if kind not in ("transform", "sink") or not group or not topics:
        raise ResetRefused(
            f"{key} has no consumer group (sources keep a position of their own: "
            "see `etl offsets reset --help` for a source's position)"
        )
    return group, topics


async def reset_offsets(
    settings: ETLSettings,
    control: ControlPlane,
    key: str,
    target: ResetTarget,
    *,
    dry_run: bool = False,
    stop: bool = False,
) -> dict[str, Any]:
    """Move the group's offsets to ``target``; the before/after of every partition."""
    item = pipeline_item(control, key)
    group, topics = _group_and_topics(key, item)
    reader = KafkaOffsets(settings.kafka)
    try:
        notes: list[str] = []
        busy = await _busy(reader, control, key, group)
        if busy and control.table.desired_state(key) == "stopped":
            # Stopped already: the workers' heartbeats may still be older than the stop.
            busy = await _settled_stop(lambda: _busy(reader, control, key, group), control)
        if busy and not dry_run:
            if not stop:
                raise ResetRefused(
                    f"{key} is running on {'; '.join(busy)}: offsets move only while it runs "
                    f"nowhere. Stop it first (`etl stop {key}`, or add --stop), then reset, "
                    f"then `etl resume {key}`"
                )
            await control.set_desired(key, "stopped")
            notes.append(f"stopped {key} on every worker first")
            await _wait_released(reader, control, key, group)
        elif busy:
            notes.append(f"{key} runs on {'; '.join(busy)}: stop it before a real reset")
        rows = (await asyncio.to_thread(group_offsets, reader, {group: topics}))[group]
        wanted = await _targets(settings, target, rows)
        changes: dict[TP, int] = {}
        partitions: dict[str, dict[str, Any]] = {}
        for tp, row in sorted(rows.items()):
            after = wanted.get(tp)
            if after is None:
                after = row.committed
            else:
                clamped = min(max(after, row.log_start), row.end)
                if clamped != after:
                    notes.append(
                        f"{tp_text(tp)}: {after} is outside {row.log_start}-{row.end}, "
                        f"using {clamped}"
                    )
                after = clamped
                if after != row.committed:
                    changes[tp] = after
            partitions[tp_text(tp)] = {
                "before": row.committed,
                "after": after,
                "log_start": row.log_start,
                "end": row.end,
                "lag_after": None if after is None else row.end - after,
            }
        missing = sorted(set(wanted) - set(rows))
        if missing:
            raise ResetRefused(f"no such partition: {', '.join(tp_text(tp) for tp in missing)}")
        if changes and not dry_run:
            await asyncio.to_thread(reader.alter, group, changes)
        return {
            "pipeline": key,
            "group_id": group,
            "target": target.describe(),
            "dry_run": dry_run,
            "changed": 0 if dry_run else len(changes),
            "desired": control.table.desired_state(key),
            "partitions": partitions,
            "notes": notes,
        }
    except OffsetsError as exc:
        raise ResetRefused(str(exc)) from None
    finally:
        reader.close()


async def _busy(reader: KafkaOffsets, control: ControlPlane, key: str, group: str) -> list[str]:
    busy = runners(control, key)
    info = (await asyncio.to_thread(reader.describe, [group])).get(group)
    if info is not None and info.active and not busy:
        members = ", ".join(m["client_id"] for m in info.members) or info.state
        busy.append(f"consumer group {group} ({members})")
    return busy


async def _settled_stop(busy: Any, control: ControlPlane) -> list[str]:
    """``busy()`` once the workers had time to report a stop already asked for."""
    wait = 3 * control.settings.control.heartbeat_seconds + 2
    deadline = time.monotonic() + wait
    found: list[str] = await busy()
    while found and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        found = await busy()
    return found


async def _wait_released(reader: KafkaOffsets, control: ControlPlane, key: str, group: str) -> None:
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        if not await _busy(reader, control, key, group):
            return
        await asyncio.sleep(0.5)
    raise ResetRefused(
        f"{key} was asked to stop, but after {STOP_WAIT_S:.0f}s it still runs on "
        f"{'; '.join(await _busy(reader, control, key, group))}; nothing was reset"
    )


async def _targets(
    settings: ETLSettings, target: ResetTarget, rows: dict[TP, Any]
) -> dict[TP, int]:
    if target.kind == "earliest":
        return {tp: row.log_start for tp, row in rows.items()}
    if target.kind == "latest":
        return {tp: row.end for tp, row in rows.items()}
    if target.kind == "offsets":
        return dict(target.offsets)
    if target.kind == "time" and target.time_ms is not None:
        out: dict[TP, int] = {}
        for topic in sorted({tp[0] for tp in rows}):
            out.update(await offsets_at_time(settings, topic, target.time_ms))
        return out
    raise ResetRefused(f"unknown reset target {target.kind!r}")


async def offsets_at_time(settings: ETLSettings, topic: str, ms: int) -> dict[TP, int]:
    """Per partition: the first offset with a timestamp at or after ``ms`` (else the end)."""
    async with TopicReader(settings.kafka, topic) as reader:
        await reader.open()
        starts = await reader.offsets_for_time(ms)
        found: dict[AioTopicPartition, int] = {}

        def handle(record: Any) -> bool:
            tp = AioTopicPartition(record.topic, record.partition)
            if record.timestamp >= ms and tp not in found:
                found[tp] = record.offset
                return True
            return False

        await reader.read(starts, dict(reader.end), handle)
        return {(tp.topic, tp.partition): found.get(tp, reader.end[tp]) for tp in reader.partitions}


# ---- sources: their saved position ------------------------------------------------------


def _source_config(settings: ETLSettings, key: str, known: Any = None) -> Any:
    """The source's configuration: ``known`` (a worker's running one), else etl.yaml's
    sources, else its file in ``connectors/``."""
    if known is not None:
        return known
    import os

    from etl.connectors.files import ConnectorFileError, is_connector_file, load_connector_file

    name = key.split(":", 1)[-1]
    for config in settings.source_configs():
        if config.name == name:
            return config
    directory = settings.connectors_dir
    for path in sorted(directory.glob(f"{name}.*")) if directory.is_dir() else []:
        if not is_connector_file(path):
            continue
        try:
            spec = load_connector_file(path, dict(os.environ))
        except ConnectorFileError as exc:
            raise ResetRefused("; ".join(exc.problems)) from None
        if spec.kind == "source":
            return spec.config
    raise ResetRefused(
        f"{key} is not in this configuration's sources or connectors/ files: run the "
        "reset with the etl.yaml the workers use (--config), or through a worker's "
        "HTTP API (POST /etl/pipelines/NAME/offsets/), which knows connectors created "
        "through the API"
    )


async def source_position(
    settings: ETLSettings, key: str, config: Any = None
) -> dict[str, Any] | None:
    """The position a source saved last (None: it never saved one)."""
    from etl.sources.position import PositionStore

    config = _source_config(settings, key, config)
    return await PositionStore(settings, config.name, None).load_state()


async def reset_source_position(
    settings: ETLSettings,
    control: ControlPlane,
    key: str,
    spec: str | None,
    *,
    dry_run: bool = False,
    stop: bool = False,
    config: Any = None,
) -> dict[str, Any]:
    """Move a source's saved position to ``spec`` (the source's own syntax), or forget it
    (``spec=None``: the next run begins as configured by ``start``/``snapshot``).
    ``config``: the source's configuration when the caller runs it (a worker)."""
    from etl.plugins import plugin_factory
    from etl.runtime.native import NativeProducer
    from etl.sources.position import PositionStore

    config = _source_config(settings, key, config)
    before = await source_position(settings, key, config)
    after: dict[str, Any] | None = None
    if spec is not None:
        source_class = plugin_factory("source", config.type)
        position_for = getattr(source_class, "position_for", None)
        if position_for is None:
            raise ResetRefused(
                f"the {config.type} source cannot be set to a position; --forget makes it "
                "begin as configured"
            )
        try:
            after = await asyncio.to_thread(position_for, config, spec)
        except ValueError as exc:
            raise ResetRefused(str(exc)) from None
    notes: list[str] = []
    busy = runners(control, key)
    if busy and control.table.desired_state(key) == "stopped":

        async def still() -> list[str]:
            return runners(control, key)

        busy = await _settled_stop(still, control)
    if busy and not dry_run:
        if not stop:
            raise ResetRefused(
                f"{key} is running on {'; '.join(busy)}: stop it first (`etl stop {key}`, "
                f"or add --stop), then reset, then `etl resume {key}`"
            )
        await control.set_desired(key, "stopped")
        notes.append(f"stopped {key} on every worker first")
        deadline = time.monotonic() + STOP_WAIT_S
        while runners(control, key):
            if time.monotonic() > deadline:
                raise ResetRefused(f"{key} still runs on {'; '.join(runners(control, key))}")
            await asyncio.sleep(0.5)
    if not dry_run:
        producer = NativeProducer(settings.kafka, name=f"reset-{config.name}")
        await producer.start()
        try:
            store = PositionStore(settings, config.name, producer)
            if after is None:
                future = await producer.send(store.topic, None, config.name.encode())
                await future
            else:
                await store.save_state(after)
        finally:
            await producer.stop()
    return {
        "pipeline": key,
        "target": spec or "forget (begin as configured)",
        "dry_run": dry_run,
        "desired": control.table.desired_state(key),
        "before": before,
        "after": after,
        "notes": notes,
    }
