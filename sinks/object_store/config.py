"""Options of the ``object_store`` sink (light module: no storage libraries imported)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from etl.config import NAME_PATTERN, ErrorPolicy, SinkConfigBase, TimeZoneName
from sinks.object_store.lake import LakeOptions

MIB = 1024 * 1024

PathLayout = Literal["none", "YYYY/MM/dd/HH", "YYYY/MM/dd", "YYYYMMddHH", "YYYYMMdd"]
ObjectFormat = Literal["jsonl", "parquet", "raw"]


class ObjectStoreSinkConfig(SinkConfigBase):
    """Writes each partition's records into objects ``{instance_id}/{topic}/[time dirs]/...``.

    An object is closed when it reaches ``batch_size_mb`` or when its first record
    has waited ``batch_window_minutes``, whichever comes first; a meta object per
    partition records what is written, so a restart writes nothing twice.
    """

    #: As the documents (failure policy ``log``): a rejected record is dead-lettered, the
    #: partition goes on.
    on_error: ErrorPolicy | None = "continue"
    #: ``file:///dir``, a plain directory path, ``s3://bucket/prefix`` or any fsspec URL;
    #: unset = the ``object-store`` directory inside the worker's ``data_dir``.
    url: str | None = None
    #: S3 API endpoint of a non-AWS store (MinIO, Aliyun OSS, ...).
    endpoint_url: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str | None = None
    #: S3 addressing: ``virtual`` for Aliyun OSS, ``path`` for most MinIO setups.
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    #: Verify the store's TLS certificate (against ``ca_bundle`` when set).
    verify_tls: bool = True
    ca_bundle: str | None = None
    #: Further fsspec options for other stores (no secrets here: use the fields above).
    storage_options: dict[str, Any] = Field(default_factory=dict)
    #: First path level; unset = the sink's ``name``.
    instance_id: str | None = Field(default=None, pattern=NAME_PATTERN)
    path_layout: PathLayout = "none"
    #: Which time picks the time directories: the record's timestamp or the wall clock.
    path_time: Literal["record", "wall_clock"] = "record"
    #: Time zone of the time directories (IANA name).
    timezone: TimeZoneName = "UTC"
    #: Close an object at this size (MiB of encoded output, uncompressed for parquet).
    batch_size_mb: int = Field(default=5, ge=1, le=128)
    #: ... or when its first record has waited this long (an idle partition is flushed too).
    batch_window_minutes: float = Field(default=1.0, gt=0, le=24 * 60)
    #: Most records in one object.
    batch_size: int = Field(default=500_000, ge=1)
    format: ObjectFormat = "jsonl"
    #: Appended to data object names; unset = none for jsonl/raw (as the documents),
    #: ``.parquet`` for parquet.
    object_suffix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]*$")
    parquet_compression: Literal["none", "snappy", "gzip", "zstd", "lz4", "brotli"] = "snappy"
    #: fsync local files and their directory before the offsets are committed.
    fsync: bool = True
    #: Table-per-topic Parquet lake with Hive-style time partitions (see sinks.object_store.lake).
    lake: LakeOptions | None = None

    @model_validator(mode="after")
    def _derive_batching(self) -> ObjectStoreSinkConfig:
        # The pipeline's generic batching knobs follow this sink's documented options,
        # so one flush of a partition is one object (or a few, see the sink).
        batch_bytes = self.batch_size_mb * MIB
        linger_ms = int(self.batch_window_minutes * 60_000)
        given = {
            name
            for name, derived in (("batch_bytes", batch_bytes), ("linger_ms", linger_ms))
            if name in self.model_fields_set and getattr(self, name) != derived
        }
        if given:
            raise ValueError(
                f"{', '.join(sorted(given))}: not used by object_store; "
                "set batch_size_mb and batch_window_minutes"
            )
        self.batch_bytes = batch_bytes
        self.linger_ms = linger_ms
        return self

    @model_validator(mode="after")
    def _check_lake(self) -> ObjectStoreSinkConfig:
        if self.lake is None:
            return self
        if self.format != "parquet":
            raise ValueError("lake: needs format: parquet")
        unused = {"path_layout", "instance_id"} & self.model_fields_set
        if unused:
            raise ValueError(
                f"{', '.join(sorted(unused))}: not used with lake "
                "(objects go to [database/]table/; set lake.partition_by)"
            )
        return self

    @property
    def suffix(self) -> str:
        """The data object name suffix."""
        if self.object_suffix is not None:
            return self.object_suffix
        return ".parquet" if self.format == "parquet" else ""
