"""The ``http`` sink (the documents' function sink): batches of exported messages
POSTed as a JSON list to a URL, or handed to a Python callable.

Delivery per request: a 2xx answer (or a callable that returns) delivers it; a
429 or 5xx answer (or a callable raising ``RetriableError``, ``ConnectionError``
or ``TimeoutError``) is retried ``retries`` times with exponential backoff
(``Retry-After`` is honoured); after that, or at once for any other answer, the
request's records are rejected and go to the error rules (dead-letter topic).
A connection that cannot be made at all is a :class:`RetriableError` of the
whole batch: the pipeline waits and retries and commits nothing meanwhile; the
requests of that batch that were already answered are not sent again.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from etl.errors import FatalError, RecordError, RetriableError
from etl.redact import Redactor
from sinks.base import RecordFailure, Sink, SinkBatch, SinkPipeline
from sinks.exported import encode_message, export_json, exported_message
from sinks.http.config import HttpSinkConfig

log = logging.getLogger("etl.sink.http")

#: (record, message (callables only), encoded message)
Prepared = tuple[Any, dict[str, Any] | None, bytes]
_RETRYABLE_CALLABLE_ERRORS = (RetriableError, ConnectionError, TimeoutError)


class DeliveryError(RecordError):
    """The endpoint refused a request (after the retries, where they apply)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, stage="sink")
        self.status = status


def plan_requests(prepared: list[Prepared], limit: int) -> list[list[Prepared]]:
    """Cut prepared messages, in order, into requests whose JSON list fits ``limit`` bytes.

    A message that alone does not fit is sent by itself without its value and
    with ``overflowFlag`` true (the receiver fetches it by offset if it needs it).
    """
    requests: list[list[Prepared]] = []
    current: list[Prepared] = []
    size = 2  # the brackets of the JSON list
    for item in prepared:
        record, _message, body = item
        if len(body) + 2 > limit:
            if current:
                requests.append(current)
                current, size = [], 2
            overflow = exported_message(record, overflow=True)
            requests.append([(record, overflow, encode_message(overflow))])
            continue
        extra = len(body) + (1 if current else 0)
        if current and size + extra > limit:
            requests.append(current)
            current, size = [], 2
            extra = len(body)
        current.append(item)
        size += extra
    if current:
        requests.append(current)
    return requests


def import_callable(ref: str, search_dir: str | None = None) -> Callable[..., Any]:
    """``package.module:function`` -> the function; a clear FatalError if it cannot be had."""
    module_name, _, attr = ref.partition(":")
    try:
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A module next to etl.yaml is found without installing it.
            if search_dir is None or exc.name != module_name.split(".")[0]:
                raise
            if search_dir not in sys.path:
                sys.path.insert(0, search_dir)
            target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:
        raise FatalError(
            f"callable {ref!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(target):
        raise FatalError(f"callable {ref!r} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


class HttpSink(Sink[HttpSinkConfig]):
    """Sends batches to an HTTP endpoint or a Python callable."""

    config_model = HttpSinkConfig

    def __init__(self, config: HttpSinkConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.client: Any = None
        self.function: Callable[..., Any] | None = None
        # Requests of a batch already delivered, so a retried batch does not send them again.
        self._delivered: set[tuple[str, int, int]] = set()
        self.requests_sent = 0

    async def open(self) -> None:
        config = self.config
        if config.callable:
            base = self.settings.config_path.parent if self.settings.config_path else None
            self.function = import_callable(config.callable, str(base) if base else None)
            return
        import httpx

        headers = {"Content-Type": "application/json", **config.headers}
        if config.auth_token is not None:
            headers[config.auth_header] = config.auth_token.get_secret_value()

        def make_client() -> httpx.AsyncClient:
            verify: ssl.SSLContext | bool = config.verify_tls
            if config.ca_bundle:
                verify = ssl.create_default_context(cafile=config.ca_bundle)
            return httpx.AsyncClient(
                verify=verify, timeout=config.timeout, headers=headers, follow_redirects=False
            )

        # Loading the CA certificates reads files: not on the event loop.
        self.client = await asyncio.to_thread(make_client)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    @property
    def target(self) -> str:
        """The URL or callable, for messages (credentials redacted)."""
        return self.redact(self.config.url or f"callable {self.config.callable}")

    async def write(self, batch: SinkBatch) -> Sequence[RecordFailure]:
        failures: list[RecordFailure] = []
        prepared: list[Prepared] = []
        for record in batch.records:
            if (record.topic, record.partition, record.offset) in self._delivered:
                continue
            try:
                if self.function is None:
                    prepared.append((record, None, export_json(record)))
                else:
                    message = exported_message(record)
                    prepared.append((record, message, encode_message(message)))
            except RecordError as exc:
                failures.append(RecordFailure(record, exc))
        # Under the stop rule nothing after a partition's first rejected record is sent.
        halt = getattr(batch, "halt_on_failure", False)
        halt_at: dict[tuple[str, int], int] = {}
        if halt:
            _note_rejected(halt_at, [f.record for f in failures])
        for request in plan_requests(prepared, self.config.request_limit):
            if halt_at:
                request = [item for item in request if not _beyond(halt_at, item[0])]
                if not request:
                    continue
            error = await self._deliver(request)
            if error is None:
                self._delivered.update((r.topic, r.partition, r.offset) for r, _m, _b in request)
                continue
            failures.extend(RecordFailure(record, error) for record, _m, _b in request)
            if halt:
                _note_rejected(halt_at, [record for record, _m, _b in request])
        self._delivered.clear()
        return failures

    async def _deliver(self, request: list[Prepared]) -> BaseException | None:
        """Send one request with the 429/5xx retries; the error that rejects it, or None."""
        config = self.config
        delay = config.retry_backoff_ms / 1000
        attempt = 0
        while True:
            self.requests_sent += 1
            if self.function is not None:
                error, retry_after = await self._call(request)
            else:
                error, retry_after = await self._post(request, attempt)
            if error is None:
                return None
            if retry_after is None or attempt >= config.retries:
                return error
            attempt += 1
            wait = min(max(retry_after, delay), config.retry_backoff_max_ms / 1000)
            log.warning(
                "request retrying sink=%s target=%s attempt=%d error=%r retry_in=%.2fs",
                config.name,
                self.target,
                attempt,
                self.redact(str(error)),
                wait,
            )
            await self.wait_or_stop(wait)
            delay = min(delay * 2, config.retry_backoff_max_ms / 1000)

    async def _post(
        self, request: list[Prepared], attempt: int
    ) -> tuple[BaseException | None, float | None]:
        """(error, seconds to wait before a retry or None when not retryable)."""
        import httpx

        body = b"[" + b",".join(item[2] for item in request) + b"]"
        assert self.client is not None and self.config.url is not None
        try:
            response = await self.client.post(self.config.url, content=body)
        except httpx.TransportError as exc:
            raise RetriableError(f"POST {self.target} failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return None, None
        text = response.text[:300].strip()
        error = DeliveryError(
            f"POST {self.target} answered {status} {response.reason_phrase}"
            + (f" after {attempt} retries" if attempt else "")
            + (f": {text}" if text else ""),
            status,
        )
        if status == 429 or status >= 500:
            return error, _retry_after(response.headers.get("Retry-After"))
        return error, None

    async def _call(self, request: list[Prepared]) -> tuple[BaseException | None, float | None]:
        function = self.function
        assert function is not None
        messages = [item[1] for item in request]
        try:
            if inspect.iscoroutinefunction(function):
                await function(messages)
            else:
                result = await asyncio.to_thread(function, messages)
                if inspect.isawaitable(result):
                    await _awaited(result)
        except _RETRYABLE_CALLABLE_ERRORS as exc:
            return exc, 0.0
        except Exception as exc:
            return exc, None
        return None, None


def _note_rejected(halt_at: dict[tuple[str, int], int], records: list[Any]) -> None:
    for record in records:
        tp = (record.topic, record.partition)
        halt_at[tp] = min(halt_at.get(tp, record.offset), record.offset)


def _beyond(halt_at: dict[tuple[str, int], int], record: Any) -> bool:
    first = halt_at.get((record.topic, record.partition))
    return first is not None and record.offset > first


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (0 when absent or an HTTP date)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


class HttpSinkPipeline(SinkPipeline):
    """The pipeline of an ``http`` sink (the plugin factory)."""

    sink_class = HttpSink

    def __init__(self, config: HttpSinkConfig, *, redact: Redactor, **kwargs: Any) -> None:
        if config.auth_token is not None:
            # Keep the token out of logs and dead letters even if it came from elsewhere.
            redact = Redactor([*redact.secrets, config.auth_token.get_secret_value()])
        super().__init__(config, redact=redact, **kwargs)
