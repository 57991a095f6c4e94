"""A Kafka broker with transactions for tests: ``noida-db start --only kafka``.

The embedded tansu broker has no InitProducerId, so the exactly-once pipelines
are tested on noida-db's Kafka side, started the same way as its Elasticsearch
side (:mod:`etl.testing.search_server`; ``ETL_NOIDA_DB_BIN`` names another
binary). Its consumer groups do not settle with two members and never evict a
member killed with -9: exactly-once pipelines use static membership, which lets
the restarted worker take the dead one's place (docs/transforms.md, "Exactly-once").
"""

from __future__ import annotations

import time

from etl.embedded import port_open
from etl.testing.search_server import SearchServer


class NoidaKafka(SearchServer):
    """``noida-db start --only kafka`` on 127.0.0.1:<free port> with its own data dir."""

    service = "kafka"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return port_open("127.0.0.1", self.port)


def produce_sequences(
    bootstrap: str, topic: str, keys: int, start: int, count: int, partitions: int = 4
) -> None:
    """``count`` records ``key:n`` round-robin over ``keys`` keys, ``n`` counting per key.

    Record ``i`` (from ``start``) has key ``k<i % keys>`` and ``n = i // keys``, so that
    the values of one key are 0, 1, 2, ... in the order produced. Creates the topic.
    """
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    if start == 0:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
            future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for i in range(start, start + count):
        while True:
            try:
                key = f"k{i % keys}"
                producer.produce(topic, f"{key}:{i // keys}".encode(), key.encode())
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(30):
        raise AssertionError("source records not acknowledged")


def read_topic(
    bootstrap: str, topic: str, *, committed: bool = True, timeout: float = 30.0
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of ``topic`` as ``(partition, offset, key, value)``, to its current end.

    ``committed``: read as a ``read_committed`` consumer (aborted and open
    transactions invisible); else ``read_uncommitted`` (everything written).
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "etl-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "fetch.wait.max.ms": 50,
            # This broker may start a partition past 0 (after an aborted first
            # transaction); offset 0 then resets to the start, not the end.
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[tuple[int, int, bytes | None, bytes | None]] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(10000, 0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition() or 0)
                        continue
                    raise AssertionError(f"read failed: {error.str()}")
                where = (message.partition() or 0, message.offset() or 0)
                out.append((*where, message.key(), message.value()))
        if len(done) < len(partitions):
            raise AssertionError(f"{topic}: not read to the end in {timeout}s")
        return out
    finally:
        consumer.close()


class OpenTransactions:
    """Tells whether a topic holds outputs of a transaction not yet committed or aborted.

    A partition's last stable offset (what a ``read_committed`` reader may reach)
    below its high watermark means an open transaction wrote records there.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.topic = topic

    def seen(self) -> bool:
        from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        try:
            metadata = self.admin.list_topics(self.topic, timeout=5)
            parts = metadata.topics[self.topic].partitions
            if not parts:
                return False
            wanted = {TopicPartition(self.topic, p): OffsetSpec.latest() for p in parts}
            stable = self.admin.list_offsets(wanted, isolation_level=IsolationLevel.READ_COMMITTED)
            ends = self.admin.list_offsets(wanted, isolation_level=IsolationLevel.READ_UNCOMMITTED)
            return any(stable[tp].result().offset < ends[tp].result().offset for tp in wanted)
        except (KafkaException, KeyError):
            return False
