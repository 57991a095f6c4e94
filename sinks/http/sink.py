"""The ``http`` sink (the documents' function sink): batches of exported messages
POSTed as a JSON list to a URL, or handed to a Python callable.

Delivery per request: a 2xx answer (or a callable that returns) delivers it; a
429 or 5xx answer, a timeout or a refused connection (or a callable raising
``RetriableError``, ``ConnectionError`` or ``TimeoutError``) is retried
``retries`` times with exponential backoff (``Retry-After`` is honoured); after
that, or at once for any other answer, the request's records are rejected and
go to the error rules (dead-letter topic), as the documents say.

With ``on_unreachable: retry`` a timeout or refused connection (and a TLS
certificate that does not verify, always: that is a setup problem, not a
record's) is instead a :class:`RetriableError` of the whole batch: the pipeline
waits and retries and commits nothing meanwhile; the requests of that batch that
were already answered are not sent again.

Under ``send_mode: async`` with ``max_in_flight`` above 1, the requests of a
flush are sent up to ``max_in_flight`` at a time without waiting for each
answer; the pipeline commits the flush's offsets once every one is answered.
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

from aiokafka import TopicPartition

from etl.errors import FatalError, GaveUp, RecordError, RetriableError
from etl.runtime.policy import Backoff, apply_halt_cut, retry
from sinks.base import RecordFailure, Sink, SinkBatch, record_failure, sink_pipeline_factory
from sinks.exported import encode_message, export_json, exported_message
from sinks.http.config import HttpSinkConfig

log = logging.getLogger("etl.sink.http")

#: (record, message (callables only), encoded message)
Prepared = tuple[Any, dict[str, Any] | None, bytes]
_RETRYABLE_CALLABLE_ERRORS = (RetriableError, ConnectionError, TimeoutError)


class _Refused(RetriableError):
    """A request answered 429/5xx, or not at all: sent again, ``retries`` times."""

    def __init__(self, error: BaseException, retry_after: float) -> None:
        super().__init__(str(error), retry_after=retry_after or None)
        self.error = error


class DeliveryError(RecordError):
    """The endpoint refused a request (after the retries, where they apply)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, stage="sink")
        self.status = status


def plan_requests(prepared: list[Prepared], limit: int, most: int) -> list[list[Prepared]]:
    """Cut prepared messages, in order, into requests of at most ``most`` messages whose
    JSON list fits ``limit`` bytes.

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
        if current and (size + extra > limit or len(current) >= most):
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

    @classmethod
    def secret_values(cls, config: Any) -> list[str]:
        """The auth token stays out of logs and dead letters even if it came from elsewhere."""
        token = getattr(config, "auth_token", None)
        return [token.get_secret_value()] if token is not None else []

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    @property
    def records_per_write(self) -> int:
        """A write holds the requests that may be open at once."""
        return self.config.batch_size * self.config.max_in_flight

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
            except Exception as exc:  # whatever one record's data raises: a record error
                failures.append(record_failure(record, exc))
        # Under the stop rule nothing after a partition's first rejected record is sent.
        halt = getattr(batch, "halt_on_failure", False)
        halt_at: dict[TopicPartition, int] = {}
        if halt:
            apply_halt_cut(halt_at, map(_tp_offset, (f.record for f in failures)))
        requests = plan_requests(prepared, self.config.request_limit, self.config.batch_size)
        if halt or self.config.max_in_flight == 1 or len(requests) == 1:
            for request in requests:
                if halt_at:
                    request = [item for item in request if not _beyond(halt_at, item[0])]
                    if not request:
                        continue
                error = await self._deliver(request)
                self._settle(request, error, failures)
                if error is not None and halt:
                    apply_halt_cut(halt_at, (_tp_offset(record) for record, _m, _b in request))
        else:
            await self._deliver_at_once(requests, failures)
        self._delivered.clear()
        return failures

    def _settle(
        self, request: list[Prepared], error: BaseException | None, failures: list[RecordFailure]
    ) -> None:
        """Note an answered request: delivered, or its records rejected with ``error``."""
        if error is None:
            self._delivered.update((r.topic, r.partition, r.offset) for r, _m, _b in request)
        else:
            failures.extend(RecordFailure(record, error) for record, _m, _b in request)

    async def _deliver_at_once(
        self, requests: list[list[Prepared]], failures: list[RecordFailure]
    ) -> None:
        """Send up to ``max_in_flight`` requests at a time; wait for every answer.

        A request that raises (the batch is to be retried, or cannot be) does not stop
        the others: the answered ones are noted, so the retry does not send them again.
        """
        gate = asyncio.Semaphore(self.config.max_in_flight)

        async def send(request: list[Prepared]) -> tuple[BaseException | None]:
            async with gate:
                return (await self._deliver(request),)

        results = await asyncio.gather(*map(send, requests), return_exceptions=True)
        raised: BaseException | None = None
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, tuple):
                self._settle(request, result[0], failures)
            elif raised is None:
                raised = result
        if raised is not None:
            raise raised

    async def _deliver(self, request: list[Prepared]) -> BaseException | None:
        """Send one request with the 429/5xx retries; the error that rejects it, or None.

        The retries are the runtime's (:func:`etl.runtime.policy.retry`): ``retries``
        of them, ``Retry-After`` honoured; after them the request's records are rejected.
        """
        config = self.config
        backoff = Backoff.for_sink(config)
        backoff.max_retries = config.retries

        async def send() -> BaseException | None:
            self.requests_sent += 1
            if self.function is not None:
                error, retry_after = await self._call(request)
            else:
                error, retry_after = await self._post(request, backoff.attempts)
            if error is None or retry_after is None:
                return error
            raise _Refused(error, retry_after)

        def note(attempt: int, exc: BaseException, delay: float) -> None:
            log.warning(
                "request retrying sink=%s target=%s attempt=%d error=%r retry_in=%.2fs",
                config.name,
                self.target,
                attempt,
                self.redact(str(exc)),
                delay,
            )

        try:
            return await retry(
                send,
                what=f"request to {self.target}",
                backoff=backoff,
                stopping=self.stopping.is_set,
                on_retry=note,
                only=_Refused,
            )
        except GaveUp as exc:
            assert isinstance(exc.__cause__, _Refused)
            return exc.__cause__.error

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
            text = f"POST {self.target} failed: {type(exc).__name__}: {exc}".rstrip(": ")
            if self.config.on_unreachable == "retry" or _certificate_refused(exc):
                raise RetriableError(text) from exc
            # The documents: a failed send is retried, then dead-lettered.
            error = DeliveryError(text + (f" (after {attempt} retries)" if attempt else ""))
            error.__cause__ = exc
            return error, 0.0
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
            if self.config.on_unreachable == "retry" and not isinstance(exc, RetriableError):
                raise RetriableError(
                    f"{self.target} failed: {type(exc).__name__}: {exc}".rstrip(": ")
                ) from exc
            return exc, 0.0
        except Exception as exc:
            return exc, None
        return None, None


def _certificate_refused(exc: BaseException) -> bool:
    """True when a connection failed on the server's TLS certificate (a setup problem)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _tp_offset(record: Any) -> tuple[TopicPartition, int]:
    return TopicPartition(record.topic, record.partition), record.offset


def _beyond(halt_at: dict[TopicPartition, int], record: Any) -> bool:
    first = halt_at.get(TopicPartition(record.topic, record.partition))
    return first is not None and record.offset > first


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (0 when absent or an HTTP date)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


#: The pipeline of an ``http`` sink (the plugin factory).
HttpSinkPipeline = sink_pipeline_factory(HttpSink)
