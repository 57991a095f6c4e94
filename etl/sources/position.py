"""Where a source's resume state is kept: one JSON document in a compacted topic.

``<group_prefix>-source-<name>-offsets`` (one partition, ``cleanup.policy=compact``)
holds, keyed by the source name, the last state the source's reader returned from
``snapshot()``. The runner writes it only after every message before it is
acknowledged by the broker, so a restart resumes after acknowledged messages only.
The source never writes it itself (see :mod:`etl.sources.base`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from etl.config import ETLSettings
from etl.errors import FatalError
from etl.kafka import make_admin, make_consumer, topic_partitions

log = logging.getLogger("etl.source")


def position_topic(settings: ETLSettings, source_name: str) -> str:
    """The compacted topic that holds a source's saved position."""
    return f"{settings.kafka.group_prefix}-source-{source_name}-offsets"


class PositionStore:
    """Loads and saves one source's state (a JSON object) in its compacted topic."""

    def __init__(self, settings: ETLSettings, source_name: str, producer: Any) -> None:
        self.settings = settings
        self.name = source_name
        self.producer = producer
        self.topic = position_topic(settings, source_name)
        #: The document last saved or loaded (None: nothing saved yet).
        self.saved_state: dict[str, Any] | None = None

    async def ensure_topic(self) -> None:
        """Create the position topic (compacted, one partition) if it is missing."""
        kafka = self.settings.kafka
        if await topic_partitions(kafka, [self.topic]):
            return
        if not kafka.auto_create_topics:
            raise FatalError(
                f"position topic {self.topic!r} does not exist and kafka.auto_create_topics "
                "is false: create it (1 partition, cleanup.policy=compact)"
            )
        admin = make_admin(kafka)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        self.topic,
                        num_partitions=1,
                        replication_factor=kafka.replication_factor,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                ]
            )
            log.info("created topic topic=%s partitions=1 cleanup.policy=compact", self.topic)
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def load_state(self) -> dict[str, Any] | None:
        """The last saved document, or None when the source never saved one."""
        consumer = make_consumer(self.settings.kafka, group_id=None, start_offset="earliest")
        await consumer.start()
        found: dict[str, Any] | None = None
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            key = self.name.encode()
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.key != key:
                        continue
                    found = self._parse(record.value, record.offset)
        finally:
            await consumer.stop()
        self.saved_state = found
        return found

    def _parse(self, value: bytes | None, offset: int) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            data = json.loads(value)
        except ValueError as exc:
            data = exc
        if not isinstance(data, dict):
            log.warning("ignored unreadable saved position topic=%s offset=%d", self.topic, offset)
            return None
        return data

    async def save_state(self, state: dict[str, Any]) -> None:
        """Write the document (with ``source`` and ``saved_at``) and wait for the ack."""
        document = {**state, "source": self.name, "saved_at": int(time.time() * 1000)}
        value = json.dumps(document).encode()
        future = await self.producer.send(self.topic, value=value, key=self.name.encode())
        await future
        self.saved_state = document
