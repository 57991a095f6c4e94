"""Options of the ``object_store`` replay source (light module: no storage libraries)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import Field, create_model, model_validator

from etl.config import NAME_PATTERN, SourceConfigBase
from sinks.object_store.config import ObjectStoreSinkConfig

#: The options that say where and how the sink wrote; they carry over unchanged
#: (the same fields, defaults and checks as the sink's).
STORAGE_FIELDS = (
    "endpoint_url",
    "access_key",
    "secret_key",
    "session_token",
    "region",
    "addressing_style",
    "verify_tls",
    "ca_bundle",
    "storage_options",
)

if TYPE_CHECKING:
    _StorageOptions = SourceConfigBase
else:
    _StorageOptions = create_model(
        "_StorageOptions",
        __base__=SourceConfigBase,
        **{
            name: (ObjectStoreSinkConfig.model_fields[name].annotation, field)
            for name, field in ObjectStoreSinkConfig.model_fields.items()
            if name in STORAGE_FIELDS
        },
    )


class ObjectStoreSourceConfig(_StorageOptions):
    """Replays archived topics ``{instance_id}/{topic}/...`` back into Kafka.

    Records keep their key, value, timestamp and (when the target has enough
    partitions) partition; within a partition they keep their order.
    """

    #: As the sink's ``url``: ``file:///dir``, a directory, ``s3://bucket/prefix``, ...
    url: str
    #: As the sink: ``endpoint_url``, ``access_key``, ``secret_key``, ``session_token``,
    #: ``region``, ``addressing_style``, ``verify_tls``, ``ca_bundle``, ``storage_options``.
    #: The sink's ``instance_id`` (its ``name`` when it had none).
    instance_id: str = Field(pattern=NAME_PATTERN)
    #: As the sink wrote it; objects are found in every layout, this only documents it.
    path_layout: Literal["none", "YYYY/MM/dd/HH", "YYYY/MM/dd", "YYYYMMddHH", "YYYYMMdd"] = "none"
    format: Literal["jsonl", "parquet"] = "jsonl"
    #: Archived topics to replay.
    topics: list[str] = Field(min_length=1)
    #: Where each topic goes; ``{topic}`` is the archived topic's name.
    target_topic: str = "{topic}-restored"
    #: Partitions of a target topic the source creates; unset = as many as the archive has.
    target_partitions: int | None = Field(default=None, ge=1)
    #: Optional bounds on the record timestamp (inclusive start, exclusive end).
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: Optional bounds on the archived offset (both inclusive), in every partition.
    min_offset: int | None = Field(default=None, ge=0)
    max_offset: int | None = Field(default=None, ge=0)
    #: At (re)start, the target's end offsets count once unchanged for this long: a
    #: write of a worker killed mid-batch can still land after it is gone.
    settle_seconds: float = Field(default=5.0, ge=0, le=300)
    #: Most records published (and acknowledged) before the position is saved.
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)
    #: One worker replays (a lease in ``<group_prefix>-leases``, etl.control.lease):
    #: seconds without renewal before another worker takes over from a dead one.
    lease_seconds: float = Field(default=15.0, ge=3, le=600)

    @model_validator(mode="after")
    def _check(self) -> ObjectStoreSourceConfig:
        if "{topic}" not in self.target_topic and len(self.topics) > 1:
            raise ValueError(
                "target_topic: needs {topic} when several topics are replayed "
                "(they would be mixed in one topic)"
            )
        if self.start_time and self.end_time and self.start_time >= self.end_time:
            raise ValueError("start_time: must be before end_time")
        if self.min_offset is not None and self.max_offset is not None:
            if self.min_offset > self.max_offset:
                raise ValueError("min_offset: must not be above max_offset")
        return self

    def target_for(self, topic: str) -> str:
        """The topic an archived topic is replayed into."""
        return self.target_topic.replace("{topic}", topic)
