"""Each pipeline's recent log lines: in memory per worker, and across the cluster in a topic.

A logging handler picks the lines that name a pipeline (``pipeline=NAME``,
``sink=NAME``, ``source=NAME``, or a transform's ``file=``) and keeps the last
:data:`KEEP_LINES` of each in memory (``GET /etl/pipelines/NAME/logs/``). The
worker also sends them to the logs topic (``control.logs_topic``, by default
``<group_prefix>-logs``), keyed by pipeline, so ``etl logs NAME`` shows the lines
of every worker that ran it, also of workers that are gone. Secrets are redacted
before a line is kept. The topic keeps lines for :data:`RETENTION_MS`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from etl.config import ETLSettings
from etl.redact import Redactor

KEEP_LINES = 500
#: Lines waiting to be sent are capped (a broker outage must not grow memory).
OUTBOX_LINES = 10_000
LOG_PARTITIONS = 3
RETENTION_MS = 7 * 24 * 3600 * 1000

_NAMED = re.compile(r"\b(pipeline|sink|source)=(?P<name>[A-Za-z0-9][A-Za-z0-9._:-]*)")
_FILE = re.compile(r"\bfile=(?P<path>\S+\.(?:py|ya?ml))\b")


def logs_topic(settings: ETLSettings) -> str:
    """``control.logs_topic``, else ``<group_prefix>-logs``."""
    return settings.control.logs_topic or f"{settings.kafka.group_prefix}-logs"


def log_partition(key: str) -> int:
    """The partition of the logs topic that holds ``key``'s lines."""
    return zlib.crc32(key.encode()) % LOG_PARTITIONS


class PipelineLogs(logging.Handler):
    """Keeps recent lines per pipeline key; ``resolve(name)`` maps a logged name to keys."""

    def __init__(
        self, resolve: Callable[[str], list[str]], redact: Redactor, worker: str = ""
    ) -> None:
        super().__init__(logging.INFO)
        self.resolve = resolve
        self.redact = redact
        self.worker = worker
        self.lines: dict[str, deque[dict[str, Any]]] = {}
        self.outbox: deque[tuple[str, dict[str, Any]]] = deque(maxlen=OUTBOX_LINES)

    def keys_of(self, message: str) -> list[str]:
        keys: list[str] = []
        for match in _NAMED.finditer(message):
            name = match.group("name")
            for key in self.resolve(name):
                if key not in keys:
                    keys.append(key)
        for match in _FILE.finditer(message):
            key = f"transform:{PurePath(match.group('path')).stem}"
            if key not in keys:
                keys.append(key)
        return keys

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            keys = self.keys_of(message)
            if not keys:
                return
            line = {
                "at": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": self.redact(message),
                "worker": self.worker,
            }
            for key in keys:
                self.lines.setdefault(key, deque(maxlen=KEEP_LINES)).append(line)
                self.outbox.append((key, line))
        except Exception:  # a log handler never raises
            self.handleError(record)

    def recent(self, key: str, lines: int = 100) -> list[dict[str, Any]]:
        """The last ``lines`` lines of ``key`` seen by this worker."""
        kept = list(self.lines.get(key, ()))
        return kept[-lines:] if lines > 0 else kept

    def take_outbox(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self.outbox:
            out.append(self.outbox.popleft())
        return out


async def ship_forever(
    logs: PipelineLogs, producer: Any, topic: str, stopping: Callable[[], bool]
) -> None:
    """Send the outbox to the logs topic every second (lines are dropped, never retried)."""
    while not stopping():
        await asyncio.sleep(1.0)
        for key, line in logs.take_outbox():
            try:
                await producer.send(
                    topic,
                    json.dumps(line, separators=(",", ":")).encode(),
                    key.encode(),
                    partition=log_partition(key),
                )
            except Exception:
                break  # the broker is away: these lines stay in memory only


def read_cluster_logs(
    settings: ETLSettings,
    key: str,
    lines: int = 100,
    *,
    follow: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> list[dict[str, Any]]:
    """The last ``lines`` lines of ``key`` from the logs topic; with ``follow``, keep reading.

    Blocking (librdkafka); ``follow(line)`` gets every new line until ``stop()``.
    """
    from confluent_kafka import Consumer, TopicPartition

    from etl.ops.offsets import KafkaOffsets
    from etl.runtime.native import common_config

    topic = logs_topic(settings)
    partition = log_partition(key)
    offsets = KafkaOffsets(settings.kafka)
    try:
        marks = offsets.watermarks([(topic, partition)])
    finally:
        offsets.close()
    start, end = marks.get((topic, partition), (0, 0))
    consumer = Consumer(
        {
            **common_config(settings.kafka),
            "group.id": f"{settings.kafka.group_prefix}-logs-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    wanted = key.encode()
    found: list[dict[str, Any]] = []
    try:
        window = max(2000, lines * 20)
        begin = max(start, end - window)
        while True:
            found = _scan(consumer, topic, partition, begin, end, wanted) + found
            if len(found) >= lines or begin <= start:
                break
            end, begin = begin, max(start, begin - window)
        found = found[-lines:] if lines > 0 else found
        if follow is not None:
            for line in found:
                follow(line)
            consumer.assign(
                [TopicPartition(topic, partition, marks.get((topic, partition), (0, 0))[1])]
            )
            while not stop():
                for message in consumer.consume(500, 0.5):
                    if message.error() is None and message.key() == wanted:
                        parsed = _parse(message.value())
                        if parsed is not None:
                            follow(parsed)
        return found
    finally:
        consumer.close()


def _scan(consumer: Any, topic: str, partition: int, begin: int, end: int, key: bytes) -> list[Any]:
    from confluent_kafka import KafkaError, TopicPartition

    if begin >= end:
        return []
    consumer.assign([TopicPartition(topic, partition, begin)])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        messages = consumer.consume(1000, 0.5)
        done = False
        for message in messages:
            error = message.error()
            if error is not None:
                done = done or error.code() == KafkaError._PARTITION_EOF
                continue
            if message.offset() >= end:
                done = True
                break
            if message.key() == key:
                line = _parse(message.value())
                if line is not None:
                    out.append(line)
        if done:
            break
    consumer.unassign()
    return out


def _parse(value: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
