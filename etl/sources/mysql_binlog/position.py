"""Binlog positions, sequence ids, and the compacted topic that stores a source's position.

The position is saved in ``<group_prefix>-source-<name>-offsets`` (one partition,
``cleanup.policy=compact``), keyed by the source name, as JSON::

    {"file": "binlog.000003", "pos": 1234, "gtid": "0-1-42", "source": "shop-cdc",
     "server": "db.example.com:3306", "snapshot": "done", "saved_at": 1700000000000}

It is written only for a transaction end whose messages (and all before them) the
broker has acknowledged, so a restart resumes at a transaction boundary.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from etl.config import ETLSettings
from etl.kafka import make_admin, make_consumer, topic_partitions

log = logging.getLogger("etl.source.mysql_binlog")


def file_index(name: str) -> int:
    """The number at the end of a binlog file name (``binlog.000012`` -> 12)."""
    digits = name.rsplit(".", 1)[-1]
    return int(digits) if digits.isdigit() else 0


def sequence_prefix(file: str, pos: int) -> str:
    """The first 16 digits of the sequence ids of one binlog event."""
    return f"{file_index(file):06d}{pos:010d}"


def sequence_id(file: str, pos: int, index: int) -> str:
    """``<file number:6><event end position:10><message index in the event:9>``.

    Sequence ids only grow along the binlog (compare them as integers; they are also
    fixed-width, so string order agrees until the binlog number passes 999999). A
    message published again after a crash gets the same id, so consumers can skip
    repeats.
    """
    return f"{sequence_prefix(file, pos)}{index:09d}"


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """A point in the binlog between two transactions: the next event starts at ``pos``."""

    file: str
    pos: int
    gtid: str | None = None
    #: "done" once the initial snapshot that started at this position is published.
    snapshot: str | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Sort key along the binlog."""
        return file_index(self.file), self.pos

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def with_gtid(self, gtid: str | None) -> BinlogPosition:
        """The same position with the GTID of the transaction that ended here."""
        return replace(self, gtid=gtid)

    def to_record(self, source: str, server: str) -> dict[str, Any]:
        """The JSON document saved in the position topic."""
        return {
            "file": self.file,
            "pos": self.pos,
            "gtid": self.gtid,
            "source": source,
            "server": server,
            "snapshot": self.snapshot,
            "saved_at": int(time.time() * 1000),
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> BinlogPosition:
        """Read a saved document back; raises ValueError when it is not one."""
        try:
            return cls(
                file=str(data["file"]),
                pos=int(data["pos"]),
                gtid=data.get("gtid"),
                snapshot=data.get("snapshot"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a saved binlog position: {exc!r}") from None


def position_topic(settings: ETLSettings, source_name: str) -> str:
    """The compacted topic that holds a source's saved position."""
    return f"{settings.kafka.group_prefix}-source-{source_name}-offsets"


class PositionStore:
    """Loads and saves one source's position in its compacted topic."""

    def __init__(self, settings: ETLSettings, source_name: str, server: str, producer: Any):
        self.settings = settings
        self.name = source_name
        self.server = server
        self.producer = producer
        self.topic = position_topic(settings, source_name)
        self.saved: BinlogPosition | None = None

    async def ensure_topic(self) -> None:
        """Create the position topic (compacted, one partition) if it is missing."""
        kafka = self.settings.kafka
        if await topic_partitions(kafka, [self.topic]):
            return
        if not kafka.auto_create_topics:
            raise RuntimeError(
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

    async def load(self) -> BinlogPosition | None:
        """The last saved position, or None when the source never saved one."""
        consumer = make_consumer(self.settings.kafka, group_id=None, start_offset="earliest")
        await consumer.start()
        found: BinlogPosition | None = None
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
                    if record.value is None:
                        found = None
                        continue
                    try:
                        found = BinlogPosition.from_record(json.loads(record.value))
                    except ValueError as exc:
                        log.warning(
                            "ignored unreadable saved position topic=%s offset=%d error=%r",
                            self.topic,
                            record.offset,
                            str(exc),
                        )
        finally:
            await consumer.stop()
        self.saved = found
        return found

    async def save(self, position: BinlogPosition) -> None:
        """Write the position and wait for the broker's acknowledgement."""
        value = json.dumps(position.to_record(self.name, self.server)).encode()
        future = await self.producer.send(self.topic, value=value, key=self.name.encode())
        await future
        self.saved = position
        log.debug("position saved source=%s position=%s", self.name, position)
