"""The OpenSearch sink: opensearch-py's AsyncOpenSearch, bulk writes, error mapping.

Errors of a whole request are mapped for the pipeline: unreachable, timed out
and 5xx are :class:`~etl.errors.RetriableError` (the write is retried with
backoff, and since every document has a fixed id the retry overwrites); 429 (the
server is overloaded) is a :class:`~etl.errors.BackpressureError`: the pipeline
pauses, then writes the batch again, without counting a retry; bad credentials
(401), missing permission (403), a TLS failure and other 4xx are
:class:`~etl.errors.FatalError` with one line that says what to fix.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator, Sequence
from typing import Any

from etl.errors import BackpressureError, FatalError, MissingExtraError, RetriableError
from etl.redact import Redactor
from sinks.base import RecordFailure, Sink, SinkBatch, record_failure, sink_pipeline_factory
from sinks.opensearch.bulk import BulkWriter, RequestTooLarge
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.documents import BulkOp, DocumentBuilder

try:
    from aiohttp import ClientSSLError
    from opensearchpy import AsyncOpenSearch
    from opensearchpy.exceptions import (
        ConnectionError as SearchConnectionError,
    )
    from opensearchpy.exceptions import (
        ConnectionTimeout,
        ImproperlyConfigured,
        SSLError,
        TransportError,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise MissingExtraError(exc.name or "opensearch-py", "opensearch") from exc


def api_key_header(api_key: str) -> str:
    """``Authorization`` value for an API key given as a base64 token or as ``id:key``."""
    token = api_key
    if ":" in api_key:
        token = base64.b64encode(api_key.encode()).decode()
    return f"ApiKey {token}"


def server_reason(exc: TransportError) -> str:
    """The server's own words for a failed request, when it gave any."""
    info = exc.info
    if isinstance(info, dict):
        error = info.get("error")
        if isinstance(error, dict):
            return f"{error.get('type', 'error')}: {error.get('reason', '')}"
        if error:
            return str(error)
    return str(exc.error)


class OpenSearchSink(Sink[OpenSearchSinkConfig]):
    """Writes records as documents with bulk requests (see :mod:`sinks.opensearch`)."""

    config_model = OpenSearchSinkConfig

    def __init__(self, config: OpenSearchSinkConfig, *, settings: Any, redact: Redactor) -> None:
        secrets = list(redact.secrets)
        # The Authorization header carries the secret in base64: keep that out of logs too.
        if config.password is not None and config.username:
            pair = f"{config.username}:{config.password.get_secret_value()}"
            secrets.append(base64.b64encode(pair.encode()).decode())
        if config.api_key is not None:
            secrets.append(api_key_header(config.api_key.get_secret_value()).split(" ", 1)[1])
        super().__init__(config, settings=settings, redact=Redactor(secrets))
        self.client: Any = None
        self.documents = DocumentBuilder(config)
        self.bulk = BulkWriter(config, self._send_bulk, config.name, self.stopping.is_set)
        self.where = ", ".join(config.hosts)

    # ---- connection -------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not any(host.startswith("https://") for host in self.config.hosts):
            return None
        cafile = str(self.config.ca_certs) if self.config.ca_certs else None
        context = ssl.create_default_context(cafile=cafile)
        if not self.config.verify_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.log.warning(
                "TLS certificate verification is off sink=%s hosts=%s",
                self.config.name,
                self.where,
            )
        return context

    def make_client(self) -> Any:
        """The AsyncOpenSearch client (connects lazily)."""
        config = self.config
        options: dict[str, Any] = {
            "timeout": config.request_timeout_s,
            # Our own backoff handles retries; the transport only fails over to another host.
            "max_retries": len(config.hosts) - 1,
            "retry_on_status": (),
            "retry_on_timeout": False,
            "maxsize": config.max_in_flight + 1,
        }
        context = self._ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if config.username and config.password is not None:
            options["http_auth"] = (config.username, config.password.get_secret_value())
        if config.api_key is not None:
            header = api_key_header(config.api_key.get_secret_value())
            options["headers"] = {"authorization": header}
        try:
            return AsyncOpenSearch(hosts=list(config.hosts), **options)
        except (ImproperlyConfigured, ssl.SSLError, OSError) as exc:
            raise FatalError(f"cannot set up the OpenSearch client: {exc}") from None

    async def open(self) -> None:
        if self.client is None:
            # Loading the CA certificates reads files: not on the event loop.
            self.client = await asyncio.to_thread(self.make_client)
        try:
            info = await self.client.info()
        except Exception as exc:
            raise self.translate(exc, "connect") from None
        version = (info.get("version") or {}).get("number", "?")
        self.log.info(
            "opensearch sink connected sink=%s hosts=%s server_version=%s",
            self.config.name,
            self.where,
            version,
        )

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    def translate(self, exc: Exception, what: str) -> Exception:
        """Map a client error to RetriableError / FatalError with one clear line."""
        where = self.where
        if isinstance(exc, SSLError) or (
            isinstance(exc, SearchConnectionError)
            and isinstance(exc.info, ClientSSLError | ssl.SSLError)
        ):
            return FatalError(
                f"TLS failed talking to OpenSearch at {where}: {exc.info}; set ca_certs to the "
                "CA that signed the server's certificate"
            )
        if isinstance(exc, ConnectionTimeout):
            return RetriableError(
                f"OpenSearch at {where} did not answer within {self.config.request_timeout_s}s"
            )
        if isinstance(exc, SearchConnectionError):
            return RetriableError(f"cannot reach OpenSearch at {where}: {exc.info}")
        if isinstance(exc, TransportError):
            status = exc.status_code
            reason = server_reason(exc)
            if status == 401:
                who = f"user {self.config.username!r}" if self.config.username else "the api_key"
                if not self.config.username and self.config.api_key is None:
                    who = "no credentials (set username/password or api_key)"
                return FatalError(
                    f"OpenSearch at {where} refused the credentials ({who}): {reason}"
                )
            if status == 403:
                return FatalError(
                    f"OpenSearch at {where} denied {what} (missing permission): {reason}"
                )
            if status == 429:
                # Overloaded: nothing of this request was written; every document has
                # an id fixed for the run, so writing the batch again is harmless.
                return BackpressureError(self.bulk.pause.next_delay())
            if isinstance(status, int) and status >= 500:
                return RetriableError(f"OpenSearch at {where} is busy ({status}): {reason}")
            return FatalError(f"OpenSearch at {where} refused {what} ({status}): {reason}")
        if isinstance(exc, RetriableError | FatalError):
            return exc
        return RetriableError(f"OpenSearch {what} failed at {where}: {exc!r}")

    async def _send_bulk(self, body: bytes) -> dict[str, Any]:
        try:
            response: dict[str, Any] = await self.client.bulk(body=body)
        except TransportError as exc:
            if exc.status_code == 413:
                raise RequestTooLarge() from None
            raise self.translate(exc, "bulk") from None
        return response

    # ---- writing ----------------------------------------------------------------------

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        failures: list[RecordFailure] = []
        written = await self.bulk.write(self._operations(batch, failures))
        return failures + written

    def _operations(self, batch: SinkBatch, failures: list[RecordFailure]) -> Iterator[BulkOp]:
        """The batch's bulk operations, built as they are sent; bad records go to ``failures``.

        Under halt_on_failure a partition's records after its first bad one stay
        unwritten (read again after the restart). A document the server rejects cannot
        hold back its batch-mates: those are overwritten on redelivery.
        """
        build = self.documents.build
        halted: set[tuple[str, int]] = set()
        for record in batch.records:
            if halted and (record.topic, record.partition) in halted:
                continue
            try:
                op = build(record)
            except Exception as exc:  # whatever one record's data raises: a record error
                failures.append(record_failure(record, exc))
                if batch.halt_on_failure:
                    halted.add((record.topic, record.partition))
                continue
            if op is not None:
                yield op


OpenSearchSinkPipeline = sink_pipeline_factory(OpenSearchSink)
