"""Options of the ``http`` sink (the function sink); light module, no HTTP client imported."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from etl.config import ErrorPolicy, SinkConfigBase

ASYNC_LIMIT = 128 * 1024
SYNC_LIMIT = 6 * 1024 * 1024
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class HttpSinkConfig(SinkConfigBase):
    """POSTs batches of exported messages (a JSON list) to ``url``, or calls ``callable``.

    Records are sent in batches of at most ``batch_size``, cut further so that a
    request stays within the ``send_mode``'s limit (async 128 KB, sync 6 MB); a
    message that alone exceeds it is sent by itself without its value and with
    ``overflowFlag: true``. 429 and 5xx answers, timeouts and refused connections
    are retried ``retries`` times with backoff; then, like any other 4xx, the
    batch's records go to the error rules (the dead-letter topic under
    ``on_error: continue``). ``on_unreachable: retry`` instead retries a timeout or
    refused connection until the endpoint answers. Under ``send_mode: async`` up to
    ``max_in_flight`` requests are open at once.
    """

    #: The endpoint (``https://...``); exactly one of ``url`` and ``callable``.
    url: str | None = None
    #: A Python callable ``"package.module:function"`` given the list of messages.
    callable: str | None = None
    #: As the documents: a request that fails after its retries goes to the dead-letter topic.
    on_error: ErrorPolicy | None = "continue"
    #: Messages per batch (1-5000), as the documents.
    batch_size: int = Field(default=20, ge=1, le=5000)
    #: ``async``: request limit 128 KB; ``sync``: 6 MB (the documents' function sink).
    send_mode: Literal["async", "sync"] = "async"
    #: Retries of a 429 or 5xx answer, timeout or refused connection (1-3) before the
    #: records are dead-lettered.
    retries: int = Field(default=2, ge=1, le=3)
    #: A request that times out or cannot connect: ``dead_letter`` counts it as a failed
    #: attempt like a 5xx (the documents); ``retry`` retries the batch until the endpoint
    #: answers (or ``max_retries``), committing nothing meanwhile.
    on_unreachable: Literal["dead_letter", "retry"] = "dead_letter"
    #: ``async`` only: requests open at once; the offsets are committed after all of a
    #: flush's requests are answered. 1 keeps a partition's records in order.
    max_in_flight: int = Field(default=1, ge=1, le=64)
    #: Extra request headers (not secret; put credentials in ``auth_token``).
    headers: dict[str, str] = Field(default_factory=dict)
    #: Sent as the ``auth_header`` header, e.g. ``Bearer abc``; never logged.
    auth_token: SecretStr | None = None
    auth_header: str = "Authorization"
    #: Seconds to wait for an answer; unset = 30 (async) or 300 (sync).
    timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    #: Verify the server's TLS certificate (against ``ca_bundle`` when set).
    verify_tls: bool = True
    ca_bundle: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("callable")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE.match(value):
            raise ValueError("must be 'package.module:function'")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not _HEADER_NAME.match(name)]
        if bad:
            raise ValueError(f"invalid header name(s): {', '.join(map(repr, bad))}")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> HttpSinkConfig:
        if (self.url is None) == (self.callable is None):
            raise ValueError("set exactly one of url and callable")
        if self.max_in_flight > 1 and self.send_mode == "sync":
            raise ValueError("max_in_flight above 1 needs send_mode async (sync waits for each)")
        return self

    @property
    def request_limit(self) -> int:
        """Largest request body in bytes for the send mode."""
        return SYNC_LIMIT if self.send_mode == "sync" else ASYNC_LIMIT

    @property
    def timeout(self) -> float:
        """Seconds to wait for one answer."""
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        return 300.0 if self.send_mode == "sync" else 30.0
