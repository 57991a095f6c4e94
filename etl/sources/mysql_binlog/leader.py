"""One worker at a time runs a source: the one that owns its position topic's partition.

Every worker with the source in its config joins the consumer group
``<group_prefix>-source-<name>`` on the one-partition position topic. Kafka gives
that partition to exactly one member; that member reads the binlog, the others
wait. When it leaves or dies, the group hands the partition (and the source) to
another worker, which resumes from the saved position. A worker giving up the
partition first stops its reader at a transaction end and saves the position.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener

from etl.config import ETLSettings
from etl.kafka import make_consumer

log = logging.getLogger("etl.source.mysql_binlog")


class _Listener(ConsumerRebalanceListener):
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked and self.leadership.elected.is_set():
            self.leadership.elected.clear()
            log.info("source leadership lost group=%s", self.leadership.group)
            await self.leadership.on_lost()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            log.info("source leadership won group=%s", self.leadership.group)
            self.leadership.elected.set()


class Leadership:
    """Membership in the source's group; ``elected`` is set while this worker runs it."""

    def __init__(
        self,
        settings: ETLSettings,
        source_name: str,
        topic: str,
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = f"{settings.kafka.group_prefix}-source-{source_name}"
        self.on_lost = on_lost
        self.elected = asyncio.Event()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the group (the election happens in the background)."""
        consumer = make_consumer(self.settings.kafka, group_id=self.group, start_offset="latest")
        consumer.subscribe(topics=[self.topic], listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        # Polling keeps the membership alive; the records themselves are not needed.
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000, max_records=100)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("source group poll failed group=%s error=%r", self.group, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Leave the group (another worker takes over)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # pragma: no cover - best effort on the way out
                log.warning("source group leave failed group=%s error=%r", self.group, exc)
        self.elected.clear()
