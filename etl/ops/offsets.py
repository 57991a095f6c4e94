"""Offsets read from Kafka itself: committed per group, log start and true end per partition.

This is what the group-wide status, lag and ``etl offsets`` stand on; it needs no
worker, only the cluster. Rules kept here:

* lag = end - committed; a partition with nothing committed counts from the log
  start (what the group would read first), never from 0;
* the end is the *true* end: some brokers answer ListOffsets with the start of
  the last record batch + 1 (tansu), so an end that moved since it was last
  checked is confirmed by fetching the last record, whose fetch response carries
  the real high-water mark; a broker that answers right costs one small fetch
  per partition whose end moved;
* every call is blocking (librdkafka's admin and consumer APIs); callers on an
  event loop use :func:`asyncio.to_thread`. One lock serializes the probe consumer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer as NativeConsumer
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from etl.config import KafkaSettings
from etl.runtime.native import common_config

TP = tuple[str, int]
TIMEOUT = 10.0


class OffsetsError(Exception):
    """Kafka could not answer an offsets question (names the group or topic)."""


@dataclass
class GroupInfo:
    """A consumer group as the broker describes it."""

    group: str
    state: str  # stable, empty, dead, preparing_rebalance, ... (lower case), or unknown
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """True while the group has members (or is rebalancing)."""
        return bool(self.members) or self.state not in ("empty", "dead", "unknown")


def tp_text(tp: TP) -> str:
    """``topic/partition``."""
    return f"{tp[0]}/{tp[1]}"


def parse_tp(text: str) -> TP:
    """``topic/partition`` -> (topic, partition)."""
    topic, _, partition = text.rpartition("/")
    return topic, int(partition)


class KafkaOffsets:
    """Blocking reads (and the one write, :meth:`alter`) of offsets; see the module notes."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        config = common_config(kafka)
        self.admin = AdminClient(config)
        self._probe_config = {
            **config,
            "group.id": f"{kafka.group_prefix}-offsets-probe",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            "isolation.level": "read_uncommitted",
        }
        self._probe: NativeConsumer | None = None
        self._lock = threading.Lock()
        #: (topic, partition) -> (reported end, true end) of the last confirmation.
        self._ends: dict[TP, tuple[int, int]] = {}

    def close(self) -> None:
        with self._lock:
            probe, self._probe = self._probe, None
            if probe is not None:
                probe.close()

    # ---- topics and groups ----------------------------------------------------------

    def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of the topics that exist."""
        wanted = set(topics)
        if not wanted:
            return {}
        try:
            metadata = self.admin.list_topics(timeout=TIMEOUT)
        except KafkaException as exc:
            raise OffsetsError(f"cannot list topics: {_text(exc)}") from None
        return {
            name: len(meta.partitions)
            for name, meta in metadata.topics.items()
            if name in wanted and meta.error is None
        }

    def groups(self) -> list[str]:
        """Every consumer group of the cluster."""
        try:
            result = self.admin.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
        except KafkaException as exc:
            raise OffsetsError(f"cannot list consumer groups: {_text(exc)}") from None
        return sorted(g.group_id for g in result.valid)

    def describe(self, groups: Iterable[str]) -> dict[str, GroupInfo]:
        """State and members (client id, host, assignment) of each group."""
        names = sorted(set(groups))
        if not names:
            return {}
        out: dict[str, GroupInfo] = {}
        futures = self.admin.describe_consumer_groups(names, request_timeout=TIMEOUT)
        for name, future in futures.items():
            try:
                info = future.result(TIMEOUT)
            except KafkaException:
                out[name] = GroupInfo(name, "unknown")
                continue
            state = str(getattr(info.state, "name", info.state)).lower()
            members = []
            for member in info.members or []:
                assignment = getattr(member, "assignment", None)
                parts = getattr(assignment, "topic_partitions", None) or []
                members.append(
                    {
                        "client_id": member.client_id,
                        "host": member.host,
                        "member_id": member.member_id,
                        "partitions": [tp_text((p.topic, p.partition)) for p in parts],
                    }
                )
            out[name] = GroupInfo(name, state, members)
        return out

    def committed(self, groups: Iterable[str]) -> dict[str, dict[TP, int]]:
        """Each group's committed offsets (partitions with nothing committed are absent)."""
        names = sorted(set(groups))
        futures = {
            name: next(
                iter(
                    self.admin.list_consumer_group_offsets(
                        [ConsumerGroupTopicPartitions(name)], request_timeout=TIMEOUT
                    ).values()
                )
            )
            for name in names
        }
        out: dict[str, dict[TP, int]] = {}
        for name, future in futures.items():
            try:
                result = future.result(TIMEOUT)
            except KafkaException as exc:
                if _code(exc) in (KafkaError.GROUP_ID_NOT_FOUND,):
                    out[name] = {}
                    continue
                raise OffsetsError(
                    f"cannot read the offsets of group {name}: {_text(exc)}"
                ) from None
            out[name] = {
                (tp.topic, tp.partition): tp.offset
                for tp in result.topic_partitions or []
                if tp.offset >= 0 and tp.error is None
            }
        return out

    def alter(self, group: str, offsets: Mapping[TP, int]) -> None:
        """Commit ``offsets`` for ``group`` (the group must have no members on most brokers)."""
        parts = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        future = next(
            iter(
                self.admin.alter_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group, parts)], request_timeout=TIMEOUT
                ).values()
            )
        )
        try:
            result = future.result(TIMEOUT)
        except KafkaException as exc:
            raise OffsetsError(f"cannot set the offsets of group {group}: {_text(exc)}") from None
        for tp in result.topic_partitions or []:
            if tp.error is not None:
                raise OffsetsError(
                    f"cannot set the offset of {tp.topic}/{tp.partition} for group {group}: "
                    f"{tp.error.str()}"
                )

    # ---- log start and end ------------------------------------------------------------

    def watermarks(self, tps: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        """(log start, true end) of each partition."""
        wanted = sorted(set(tps))
        if not wanted:
            return {}
        starts = self._list_offsets(wanted, OffsetSpec.earliest())
        reported = self._list_offsets(wanted, OffsetSpec.latest())
        ends = self._confirm_ends(
            {tp: (starts.get(tp, 0), reported[tp]) for tp in wanted if tp in reported}
        )
        return {tp: (starts.get(tp, 0), ends[tp]) for tp in wanted if tp in ends}

    def _list_offsets(self, tps: list[TP], spec: OffsetSpec) -> dict[TP, int]:
        request = {TopicPartition(t, p): spec for t, p in tps}
        try:
            futures = self.admin.list_offsets(request, request_timeout=TIMEOUT)
        except KafkaException as exc:
            raise OffsetsError(f"cannot list offsets: {_text(exc)}") from None
        out: dict[TP, int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = future.result(TIMEOUT).offset
            except KafkaException:
                continue  # a partition that does not exist (yet): left out
        return out

    def _confirm_ends(self, marks: dict[TP, tuple[int, int]]) -> dict[TP, int]:
        ends: dict[TP, int] = {}
        probe: dict[TP, int] = {}
        for tp, (start, reported) in marks.items():
            cached = self._ends.get(tp)
            if reported <= start:
                ends[tp] = reported  # empty: nothing to confirm
            elif cached is not None and cached[0] == reported:
                # A new batch always moves the reported end, so an unchanged answer
                # means an unchanged partition.
                ends[tp] = cached[1]
            else:
                probe[tp] = reported
        if probe:
            found = self._read_ends(probe)
            for tp, reported in probe.items():
                true_end = max(reported, found.get(tp, reported))
                self._ends[tp] = (reported, true_end)
                ends[tp] = true_end
        return ends

    def _read_ends(self, reported: dict[TP, int], timeout: float = 5.0) -> dict[TP, int]:
        """Fetch from each reported end - 1 until end of partition: the fetch high-water mark."""
        with self._lock:
            if self._probe is None:
                self._probe = NativeConsumer(self._probe_config)
            consumer = self._probe
            consumer.assign([TopicPartition(t, p, max(0, o - 1)) for (t, p), o in reported.items()])
            found: dict[TP, int] = {}
            done: set[TP] = set()
            deadline = time.monotonic() + timeout
            try:
                while len(done) < len(reported) and time.monotonic() < deadline:
                    for message in consumer.consume(10000, 0.2):
                        tp = (str(message.topic()), (message.partition() or 0))
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                done.add(tp)
                            continue
                        found[tp] = max(found.get(tp, 0), (message.offset() or 0) + 1)
                for t, p in reported:
                    try:
                        _low, high = consumer.get_watermark_offsets(
                            TopicPartition(t, p), cached=True
                        )
                    except KafkaException:
                        continue
                    if high >= 0:
                        found[(t, p)] = max(found.get((t, p), 0), high)
            finally:
                consumer.unassign()
            return found


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


@dataclass
class PartitionOffsets:
    """One partition of a group: committed, log start, end, and the lag they give."""

    committed: int | None
    log_start: int
    end: int

    @property
    def lag(self) -> int:
        """Messages the group has still to read: end - committed (or - log start)."""
        base = self.committed if self.committed is not None else self.log_start
        return max(0, self.end - max(base, self.log_start))

    def to_dict(self) -> dict[str, Any]:
        return {
            "committed": self.committed,
            "log_start": self.log_start,
            "end": self.end,
            "lag": self.lag,
        }


def group_offsets(
    offsets: KafkaOffsets, groups: Mapping[str, Iterable[str]]
) -> dict[str, dict[TP, PartitionOffsets]]:
    """For each group (-> the topics it reads): every partition's offsets and lag."""
    topics = {topic for names in groups.values() for topic in names}
    counts = offsets.partitions(topics)
    committed = offsets.committed(groups)
    tps = [(topic, p) for topic in counts for p in range(counts[topic])]
    marks = offsets.watermarks(tps)
    out: dict[str, dict[TP, PartitionOffsets]] = {}
    for group, names in groups.items():
        mine = committed.get(group, {})
        rows: dict[TP, PartitionOffsets] = {}
        for topic in names:
            for p in range(counts.get(topic, 0)):
                start, end = marks.get((topic, p), (0, 0))
                rows[(topic, p)] = PartitionOffsets(mine.get((topic, p)), start, end)
        out[group] = rows
    return out
