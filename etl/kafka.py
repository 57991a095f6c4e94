"""Kafka clients built from :class:`~etl.config.KafkaSettings`.

Every client (producer, consumers, admin) gets the same connection and security
options. The producer always uses ``acks=all`` and is idempotent unless the
settings turn that off (brokers without InitProducerId).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from etl.config import KafkaSettings

log = logging.getLogger("etl.kafka")


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL/SASL_SSL, with the configured CA and client cert."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile:
        context.load_cert_chain(
            str(settings.ssl_certfile),
            str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            settings.ssl_password.get_secret_value() if settings.ssl_password else None,
        )
    return context


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security keyword arguments shared by all aiokafka clients."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """The shared producer: ``acks=all``, idempotent unless disabled."""
    options = client_options(settings)
    options.update(
        acks="all",
        enable_idempotence=settings.enable_idempotence,
        linger_ms=settings.linger_ms,
        max_request_size=settings.max_request_size,
        compression_type=settings.compression_type,
        max_batch_size=max(16384, min(settings.max_request_size, 1048576)),
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    start_offset: str = "latest",
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer that never commits on its own: the pipeline commits after delivery."""
    options = client_options(settings)
    options.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=start_offset,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_poll_records=settings.max_batch_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_wait_ms=100,
        isolation_level="read_committed",
    )
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    """An admin client with the shared connection options."""
    options = client_options(settings)
    options.pop("client_id", None)
    return AIOKafkaAdminClient(client_id=f"{settings.client_id}-admin", **options)


def describe_error(exc: BaseException) -> str:
    """A one-line description of a client error, without a traceback."""
    name = exc.__class__.__name__
    text = str(exc) or name
    # aiokafka's errors already start with their class name: say it once.
    while text.startswith(f"{name}: {name}"):
        text = text[len(name) + 2 :]
    return text if text.startswith(name) else f"{name}: {text}"


async def wait_for_broker(
    settings: KafkaSettings,
    *,
    attempts: int | None = None,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> None:
    """Block until the cluster answers, logging one line per failed attempt.

    Retries with exponential backoff; ``attempts`` bounds the tries (None = forever).
    """
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        admin = make_admin(settings)
        try:
            await admin.start()
            await admin.close()
            if attempt > 1:
                log.info("kafka broker reachable bootstrap=%s", settings.bootstrap_servers)
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            try:
                await admin.close()
            except Exception:
                pass
            if attempts is not None and attempt >= attempts:
                raise KafkaConnectionError(
                    f"kafka broker unreachable at {settings.bootstrap_servers}: "
                    f"{describe_error(exc)}"
                ) from None
            log.error(
                "kafka broker unreachable bootstrap=%s attempt=%d error=%r retry_in=%.0fs",
                settings.bootstrap_servers,
                attempt,
                describe_error(exc),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def topic_partitions(settings: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """Partition counts of the topics that exist (missing ones are left out)."""
    # Asking for all topics (not by name) never auto-creates one on the broker.
    admin = make_admin(settings)
    await admin.start()
    try:
        wanted = set(topics)
        described = await admin.describe_topics(None)
        out: dict[str, int] = {}
        for item in described:
            if item["topic"] in wanted and item.get("error_code", 0) == 0:
                out[item["topic"]] = len(item.get("partitions") or [])
        return out
    finally:
        await admin.close()


async def ensure_topics(
    settings: KafkaSettings,
    wanted: Mapping[str, int],
    *,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics of ``wanted`` (name -> partitions) that do not exist yet.

    ``configs`` are topic settings for the created topics (``cleanup.policy``...).
    Returns the names created. Does nothing when ``auto_create_topics`` is off.
    """
    if not settings.auto_create_topics or not wanted:
        return []
    existing = await topic_partitions(settings, wanted)
    missing = {name: parts for name, parts in wanted.items() if name not in existing}
    if not missing:
        return []
    admin = make_admin(settings)
    await admin.start()
    created = []
    try:
        for name, partitions in missing.items():
            try:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=dict(configs or {}),
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                continue
            for error in getattr(response, "topic_errors", ()):
                code = error[1]
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = error[2] if len(error) > 2 else ""
                    raise KafkaError(f"cannot create topic {name!r}: error {code} {message}")
            created.append(name)
            log.info("created topic topic=%s partitions=%d", name, partitions)
    finally:
        await admin.close()
    return created
