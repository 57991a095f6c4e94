"""A compacted, single-partition topic that every worker reads from the start.

The cluster's shared state (who is paused, which workers live, connector
configurations) is a table of ``key -> JSON value`` kept in Kafka itself, so
that no server of our own is needed and nothing is lost when a worker dies.
Rules kept here:

* one partition, so every reader sees every write in the same order: the last
  value of a key wins, and "the first claim after X" means the same to all;
* a write returns once the broker acknowledged it (``acks=all``);
* "read to the end" waits for the partition's end-of-file event, which comes
  from the fetch high-water mark: some brokers report a wrong end offset to
  ListOffsets (the start of the last batch + 1), never to a fetch;
* values are JSON objects; ``None`` is a tombstone (the key is deleted). A value
  that is not JSON is skipped with a warning, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError
from confluent_kafka import TopicPartition as NativeTopicPartition

from etl.config import KafkaSettings
from etl.kafka import ensure_topics
from etl.runtime.native import NativeProducer, common_config

log = logging.getLogger("etl.control")

#: How long the follower waits in one poll: the most a change takes to be seen.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Entry:
    """One record of the log: a key, its value (None: deleted), where and when."""

    key: str
    value: dict[str, Any] | None
    offset: int
    timestamp: float


def _entry(message: Any) -> Entry | None:
    raw_key = message.key()
    if raw_key is None:
        return None
    key = raw_key.decode("utf-8", "replace")
    raw = message.value()
    value: dict[str, Any] | None = None
    if raw is not None:
        try:
            loaded = json.loads(raw)
        except ValueError:
            log.warning("control record skipped (not JSON) key=%s offset=%d", key, message.offset())
            return None
        if not isinstance(loaded, dict):
            log.warning("control record skipped (not an object) key=%s", key)
            return None
        value = loaded
    _kind, stamp = message.timestamp()
    return Entry(key, value, message.offset(), stamp / 1000 if stamp > 0 else time.time())


class ControlLog:
    """Read, follow and write one compacted topic (see the module notes).

    ``start(on_entry)`` reads the topic from the beginning on a thread of its own
    and calls ``on_entry(entry)`` on the event loop for every record, in order;
    it returns once the end of the topic was reached, so the caller starts with
    the whole table. It then keeps following until :meth:`stop`.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, name: str = "control") -> None:
        self.kafka = kafka
        self.topic = topic
        self.name = name
        self.producer: NativeProducer | None = None
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._caught_up = asyncio.Event()
        #: The offset after the last record handed to ``on_entry``.
        self.position = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._last_error = ""

    async def ensure_topic(self) -> None:
        """Create the topic (compacted, one partition) when it does not exist."""
        await ensure_topics(self.kafka, {self.topic: 1}, configs={"cleanup.policy": "compact"})

    async def start(self, on_entry: Callable[[Entry], None], timeout: float = 60.0) -> None:
        """Open the producer and the follower; return once the table is read to its end."""
        self._loop = asyncio.get_running_loop()
        self.producer = NativeProducer(self.kafka, name=self.name, **{"linger.ms": 0})
        await self.producer.start()
        config = common_config(self.kafka)
        config.update(
            {
                # Never joins or commits: a reader of the whole partition.
                "group.id": f"{self.kafka.group_prefix}-{self.name}-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 100,
                "error_cb": self._on_error,
            }
        )
        self._consumer = await self._loop.run_in_executor(None, Consumer, config)
        self._consumer.assign([NativeTopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._thread = threading.Thread(
            target=self._follow, args=(on_entry,), name=f"etl-{self.name}-log", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"could not read the control topic {self.topic!r} within {timeout:.0f}s"
                + (f": {self._last_error}" if self._last_error else "")
            ) from None

    def _on_error(self, error: KafkaError) -> None:
        text = error.str()
        if text != self._last_error:
            self._last_error = text
            log.warning("control topic error topic=%s error=%r", self.topic, text)

    def _follow(self, on_entry: Callable[[Entry], None]) -> None:
        consumer = self._consumer
        loop = self._loop
        assert consumer is not None and loop is not None
        while not self._stopping.is_set():
            try:
                messages = consumer.consume(1000, POLL_SECONDS)
            except Exception as exc:  # closed under us, or the client failed
                if not self._stopping.is_set():
                    log.warning("control topic read failed topic=%s error=%r", self.topic, exc)
                    time.sleep(1)
                continue
            entries: list[Entry] = []
            end: int | None = None
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        end = message.offset()
                    continue
                entry = _entry(message)
                if entry is not None:
                    entries.append(entry)
                end = max(end or 0, (message.offset() or 0) + 1)
            if entries or end is not None:
                try:
                    loop.call_soon_threadsafe(self._deliver, on_entry, entries, end)
                except RuntimeError:  # the loop is closed: the worker is gone
                    return

    def _deliver(self, on_entry: Callable[[Entry], None], entries: list[Entry], end: Any) -> None:
        for entry in entries:
            try:
                on_entry(entry)
            except Exception:
                log.exception("control record handler failed key=%s", entry.key)
            self.position = max(self.position, entry.offset + 1)
        if end is not None:
            self.position = max(self.position, end)
            self._caught_up.set()
        for waiter in [w for w in self._waiters if w[0] <= self.position]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)

    async def put(self, key: str, value: dict[str, Any] | None, *, seen: bool = True) -> int:
        """Write ``key`` (None deletes it); with ``seen``, wait until this worker read it back."""
        if self.producer is None:
            raise RuntimeError("the control log is not started")
        data = None if value is None else json.dumps(value, separators=(",", ":")).encode()
        future = await self.producer.send(self.topic, data, key.encode(), partition=0)
        _topic, _partition, offset = await future
        if seen:
            await self.wait_seen(offset + 1)
        return int(offset)

    async def wait_seen(self, position: int, timeout: float = 30.0) -> None:
        """Return once every record before ``position`` was handed to ``on_entry``."""
        if self.position >= position:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, future))
        await asyncio.wait_for(future, timeout)

    async def stop(self) -> None:
        """Stop following and close the clients."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                pass
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()
