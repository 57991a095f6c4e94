"""Options of the ``opensearch`` sink (validated without importing opensearch-py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from etl.config import ErrorPolicy, SinkConfigBase
from sinks.opensearch.index_template import IndexTemplate

DocumentShape = Literal["envelope", "value", "flatten"]
IdMode = Literal["key", "coordinates", "auto"]
WriteMethod = Literal["index", "upsert"]
NullValue = Literal["delete", "ignore", "fail"]


class OpenSearchSinkConfig(SinkConfigBase):
    """Writes records to OpenSearch (or an Elasticsearch-compatible server) with bulk requests.

    A write gathers up to ``batch_size`` records, cuts them into bulk requests of at
    most ``bulk_actions`` documents and ``bulk_bytes`` bytes, and keeps at most
    ``max_in_flight`` requests open at once. Operations on one document id are
    applied in offset order.
    """

    type: Literal["opensearch"] = "opensearch"
    #: A rejected document stops the sink before it; ``continue`` dead-letters it,
    #: unset (null) follows ``errors.policy``.
    on_error: ErrorPolicy | None = "stop"
    #: Server URLs, e.g. ``https://search.example.com:9200`` (a comma-separated string works too).
    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"], min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    #: Elasticsearch-style API key: the base64 ``id:key`` token, or ``id:key`` itself.
    api_key: SecretStr | None = None
    #: CA bundle (PEM) that signed the server's certificate; default: the system's CAs.
    ca_certs: Path | None = None
    #: TLS certificates are verified unless this is false (then a warning is logged).
    verify_certs: bool = True
    #: Index name template: ``{topic}``, ``{partition}``, a date such as ``{yyyy.MM.dd}``.
    index: str = "{topic}"
    #: envelope: ``{"msg_body": {key, offset, overflowFlag, partition, timestamp, topic,
    #: value, valueSize}}``; value: the JSON object value; flatten: the JSON object's
    #: fields plus topic, partition, offset, key and timestamp.
    document: DocumentShape = "envelope"
    #: key: the record key; coordinates: ``topic+partition+offset``; auto: generated.
    id: IdMode = "coordinates"
    #: index: replace the document; upsert: merge into it (``doc_as_upsert``).
    write_method: WriteMethod = "index"
    #: A record whose value is null: delete its document, ignore it, or fail (error rules).
    #: Unset: ``delete`` when ``id`` is ``key``, else ``ignore``.
    null_value: NullValue | None = None
    #: Records per write; a write is cut into bulk requests as below.
    batch_size: int = Field(default=5000, ge=1)
    #: Most documents in one bulk request.
    bulk_actions: int = Field(default=1000, ge=1)
    #: Most bytes in one bulk request body.
    bulk_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    #: Most bulk requests open at once.
    max_in_flight: int = Field(default=2, ge=1, le=32)
    #: Seconds one HTTP request may take before it is retried.
    request_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if "://" in host and not host.startswith(("http://", "https://")):
                raise ValueError(f"{host!r}: only http:// and https:// URLs are supported")
            if "@" in host.split("://", 1)[-1].split("/", 1)[0]:
                raise ValueError("put credentials in username/password or api_key, not in hosts")
        return hosts

    @field_validator("index")
    @classmethod
    def _check_index(cls, index: str) -> str:
        IndexTemplate(index)
        return index

    @field_validator("ca_certs")
    @classmethod
    def _check_ca(cls, path: Path | None) -> Path | None:
        if path is not None and not path.exists():
            raise ValueError(f"file not found: {path}")
        return path

    @model_validator(mode="after")
    def _check_combinations(self) -> OpenSearchSinkConfig:
        problems = []
        if self.password is not None and not self.username:
            problems.append("password needs username")
        if self.username and self.password is None:
            problems.append("username needs password")
        if self.api_key is not None and self.username:
            problems.append("use either username/password or api_key, not both")
        if self.null_value is None:
            self.null_value = "delete" if self.id == "key" else "ignore"
        elif self.null_value == "delete" and self.id != "key":
            problems.append(
                "null_value: delete needs id: key (a null value deletes the document of its key)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def index_template(self) -> IndexTemplate:
        """The parsed ``index`` template."""
        return IndexTemplate(self.index)
