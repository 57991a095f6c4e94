"""A continuous message flow for end-to-end tests and benchmarks.

:class:`MessageFlow` produces numbered messages (value ``"<prefix><seq>"``, keys spread
over a few values) to a source topic from a background thread, and records
every record that arrives on the target topics, with its arrival time, from
another thread. Tests then check that nothing was lost or doubled and measure
how long a change took to show.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


@dataclass(frozen=True)
class Arrival:
    """One record read from a target topic, with the wall-clock time it was read."""

    received: float
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None


class MessageFlow:
    """Produce ``<prefix>0, <prefix>1, ...`` to ``source`` until stopped; collect ``targets``."""

    def __init__(
        self,
        bootstrap: str,
        source: str,
        targets: list[str],
        *,
        keys: int = 4,
        interval: float = 0.002,
        prefix: str = "",
    ) -> None:
        self.bootstrap = bootstrap
        self.source = source
        self.targets = targets
        self.keys = keys
        self.interval = interval
        self.prefix = prefix
        self.sent = 0
        self._arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._producing = threading.Event()
        self._consuming = threading.Event()
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    # ---- control -----------------------------------------------------------------------

    def start(self) -> MessageFlow:
        """Start reading the targets, then start producing."""
        self._consuming.set()
        self._producing.set()
        ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(self._consume(ready),), daemon=True),
        ]
        self._threads[0].start()
        if not ready.wait(30):
            raise AssertionError("target consumer did not start")
        producer = threading.Thread(target=self._run, args=(self._produce(),), daemon=True)
        self._threads.append(producer)
        producer.start()
        return self

    def stop_producing(self) -> int:
        """Stop producing; returns how many messages were acknowledged."""
        self._producing.clear()
        if len(self._threads) > 1:
            self._threads[1].join(60)
        self._raise_errors()
        return self.sent

    def close(self) -> None:
        """Stop everything."""
        self._producing.clear()
        self._consuming.clear()
        for thread in self._threads:
            thread.join(60)

    def __enter__(self) -> MessageFlow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- results -----------------------------------------------------------------------

    def arrivals(self) -> list[Arrival]:
        """Everything read so far, in arrival order."""
        self._raise_errors()
        with self._lock:
            return list(self._arrivals)

    def wait_for(
        self, predicate: Callable[[list[Arrival]], bool], timeout: float = 60, what: str = ""
    ) -> list[Arrival]:
        """Poll :meth:`arrivals` until ``predicate`` holds; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            arrivals = self.arrivals()
            if predicate(arrivals):
                return arrivals
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what or predicate}; {len(arrivals)} arrived, "
                    f"{self.sent} sent"
                )
            time.sleep(0.02)

    def wait_all(self, count: int, timeout: float = 60) -> list[Arrival]:
        """Until at least ``count`` records arrived."""
        return self.wait_for(lambda a: len(a) >= count, timeout, f"{count} records")

    # ---- threads -----------------------------------------------------------------------

    def _run(self, coro: Any) -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # re-raised in the test thread
            self._errors.append(exc)

    def _raise_errors(self) -> None:
        if self._errors:
            raise AssertionError(f"message flow failed: {self._errors[0]!r}") from self._errors[0]

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=1)
        await producer.start()
        pending: list[asyncio.Future[Any]] = []
        seq = 0
        try:
            while self._producing.is_set():
                key = f"k{seq % self.keys}".encode()
                value = f"{self.prefix}{seq}".encode()
                pending.append(await producer.send(self.source, value, key))
                seq += 1
                if len(pending) >= 200:
                    await asyncio.gather(*pending)
                    self.sent += len(pending)
                    pending = []
                await asyncio.sleep(self.interval)
            await asyncio.gather(*pending)
            self.sent += len(pending)
        finally:
            await producer.stop()

    async def _consume(self, ready: threading.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            tps = []
            for topic in self.targets:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(topic) or set()
                if not parts:
                    raise AssertionError(f"target topic {topic!r} does not exist")
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ready.set()
            while self._consuming.is_set():
                batch = await consumer.getmany(timeout_ms=50)
                now = time.time()
                found = [
                    Arrival(
                        now,
                        r.topic,
                        r.partition,
                        r.offset,
                        None if r.key is None else r.key.decode(),
                        None if r.value is None else r.value.decode(),
                    )
                    for records in batch.values()
                    for r in records
                ]
                if found:
                    with self._lock:
                        self._arrivals.extend(found)
        finally:
            await consumer.stop()
