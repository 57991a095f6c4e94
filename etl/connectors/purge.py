"""What ``etl connectors delete NAME --purge`` removes, listed first.

Only what belongs to that connector alone:

* a sink's consumer group ``<group_prefix>-sink-<name>`` (its committed offsets);
  a source's position topic ``<group_prefix>-source-<name>-offsets``;
* its own error and dead-letter topics (``runtime_error_topic``,
  ``dead_letter_topic``), never the shared ``errors.dead_letter_topic`` nor a
  topic another pipeline also names;
* for the object-store sink, its meta objects (``oss_meta_file_partition_*``)
  of every partition of its topics; its data objects only with ``data=True``.

Nothing is removed while the connector still runs anywhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from etl.config import ETLSettings
from etl.connectors.spec import ConnectorSpec


@dataclass(frozen=True)
class PurgeItem:
    """One thing to remove: ``group``, ``topic`` or ``object`` (a path), with why."""

    kind: str
    name: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "why": self.why}


def _shared_topics(settings: ETLSettings, others: list[dict[str, Any]]) -> set[str]:
    shared = {settings.errors.dead_letter_topic}
    for item in others:
        for name in ("dead_letter_topic", "target"):
            if item.get(name):
                shared.add(str(item[name]))
        shared.update(t for t in str(item.get("source") or "").split(",") if t)
    return shared


async def plan_purge(
    settings: ETLSettings,
    spec: ConnectorSpec,
    *,
    others: list[dict[str, Any]],
    data: bool = False,
) -> list[PurgeItem]:
    """Everything that belongs to ``spec`` alone (``others``: the cluster's other pipelines)."""
    from etl.ops.offsets import KafkaOffsets

    prefix = settings.kafka.group_prefix
    config = spec.config
    items: list[PurgeItem] = []
    reader = KafkaOffsets(settings.kafka)
    try:
        if spec.kind == "sink":
            group = f"{prefix}-sink-{spec.name}"
            if group in await asyncio.to_thread(reader.groups):
                items.append(PurgeItem("group", group, "its consumer group (committed offsets)"))
        else:
            topic = f"{prefix}-source-{spec.name}-offsets"
            if await asyncio.to_thread(reader.partitions, [topic]):
                items.append(PurgeItem("topic", topic, "its saved position"))
        shared = _shared_topics(settings, others)
        own = [
            getattr(config, "runtime_error_topic", None),
            getattr(config, "dead_letter_topic", None),
        ]
        existing = await asyncio.to_thread(reader.partitions, [t for t in own if t])
        for topic in dict.fromkeys(t for t in own if t):
            if topic in existing and topic not in shared:
                items.append(PurgeItem("topic", topic, "its own error/dead-letter topic"))
        topics = list(getattr(config, "topics", []) or [])
        counts = await asyncio.to_thread(reader.partitions, topics)
    finally:
        reader.close()
    if spec.kind == "sink" and spec.type == "object_store":
        items += await _object_store_items(settings, spec, counts, data)
    return items


async def _object_store_items(
    settings: ETLSettings, spec: ConnectorSpec, counts: dict[str, int], data: bool
) -> list[PurgeItem]:
    from etl.redact import Redactor
    from sinks.object_store.sink import ObjectStoreSink

    sink = ObjectStoreSink(spec.config, settings=settings, redact=Redactor())  # type: ignore[arg-type]
    await sink.open()
    items = []
    assert sink.layout is not None and sink.store is not None
    try:
        for topic, count in sorted(counts.items()):
            for partition in range(count):
                path = sink.layout.meta_path(topic, partition)
                if await sink.store.exists(path):
                    items.append(PurgeItem("object", path, "its meta object (what was written)"))
            if data:
                items.append(
                    PurgeItem("objects", sink.layout.topic_dir(topic), "its data objects (all)")
                )
    finally:
        await sink.close()
    return items


async def run_purge(settings: ETLSettings, spec: ConnectorSpec, items: list[PurgeItem]) -> None:
    """Remove ``items`` (as listed by :func:`plan_purge`)."""
    from confluent_kafka.admin import AdminClient

    from etl.runtime.native import common_config

    admin = AdminClient(common_config(settings.kafka))
    groups = [i.name for i in items if i.kind == "group"]
    topics = [i.name for i in items if i.kind == "topic"]

    def kafka_part() -> None:
        for future in (admin.delete_consumer_groups(groups) if groups else {}).values():
            future.result(30)
        for future in (admin.delete_topics(topics) if topics else {}).values():
            future.result(30)

    await asyncio.to_thread(kafka_part)
    objects = [i for i in items if i.kind in ("object", "objects")]
    if objects:
        from etl.redact import Redactor
        from sinks.object_store.sink import ObjectStoreSink

        sink = ObjectStoreSink(spec.config, settings=settings, redact=Redactor())  # type: ignore[arg-type]
        await sink.open()
        assert sink.store is not None
        try:
            for item in objects:
                await sink.store.delete(item.name, tree=item.kind == "objects")
        finally:
            await sink.close()
