"""A real HTTP(S) front for the test server, for what it cannot do on demand.

noida-db has no security layer and is never too busy, so this proxy, an aiohttp
server in the test's event loop, adds what a production cluster does: it asks for
credentials (401 with OpenSearch's ``security_exception`` body), serves TLS with
a certificate of our own, and answers ``429`` for some bulk items
(``es_rejected_execution_exception``) or for whole requests. Everything else is
forwarded to the real server, whose answers come back unchanged.
"""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import aiohttp
from aiohttp import web

from etl.testing.ports import reserve_port


def _unauthorized(reason: str) -> web.Response:
    body = {
        "error": {
            "root_cause": [{"type": "security_exception", "reason": reason}],
            "type": "security_exception",
            "reason": reason,
        },
        "status": 401,
    }
    return web.json_response(body, status=401)


def split_bulk(body: bytes) -> list[list[bytes]]:
    """NDJSON bulk body -> operations, each [action line] or [action line, source line]."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    ops: list[list[bytes]] = []
    index = 0
    while index < len(lines):
        action = json.loads(lines[index])
        if "delete" in action:
            ops.append([lines[index]])
            index += 1
        else:
            ops.append([lines[index], lines[index + 1]])
            index += 2
    return ops


class SearchProxy:
    """Forwards to ``upstream``; optionally checks credentials, serves TLS, throttles."""

    def __init__(
        self,
        upstream: str,
        *,
        basic_auth: tuple[str, str] | None = None,
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        throttle_requests: int = 0,
        busy_requests: int = 0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.basic_auth = basic_auth
        self.api_key = api_key
        self.ssl_context = ssl_context
        #: The first N bulk requests get 429 for every second item (not forwarded).
        self.throttle_requests = throttle_requests
        #: The first N bulk requests get a whole-request 429.
        self.busy_requests = busy_requests
        self.port = reserve_port()
        self.bulk_requests = 0
        self.throttled_items = 0
        self.seen_authorization: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://localhost:{self.port}"

    async def start(self) -> SearchProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> SearchProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _authorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        self.seen_authorization.append(header)
        if self.basic_auth is not None:
            user, password = self.basic_auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            if header != f"Basic {token}":
                return _unauthorized("unable to authenticate user")
        if self.api_key is not None and header != f"ApiKey {self.api_key}":
            return _unauthorized("unable to authenticate with provided credentials")
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        body = await request.read()
        if request.path.endswith("/_bulk"):
            self.bulk_requests += 1
            if self.bulk_requests <= self.busy_requests:
                reason = "rejected execution of coordinating operation"
                return web.json_response(
                    {"error": {"type": "es_rejected_execution_exception", "reason": reason}},
                    status=429,
                )
            if self.bulk_requests <= self.throttle_requests:
                return await self._throttled_bulk(request, body)
        status, payload = await self._forward(request, body)
        return web.Response(body=payload, status=status, content_type="application/json")

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as response:
            return response.status, await response.read()

    async def _throttled_bulk(self, request: web.Request, body: bytes) -> web.Response:
        ops = split_bulk(body)
        kept = [op for position, op in enumerate(ops) if position % 2 == 0]
        forwarded = b"".join(line + b"\n" for op in kept for line in op)
        status, payload = await self._forward(request, forwarded)
        if status != 200:
            return web.Response(body=payload, status=status, content_type="application/json")
        upstream_items = iter(json.loads(payload)["items"])
        items: list[dict[str, Any]] = []
        for position, op in enumerate(ops):
            if position % 2 == 0:
                items.append(next(upstream_items))
                continue
            self.throttled_items += 1
            verb, meta = next(iter(json.loads(op[0]).items()))
            error = {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of primary operation",
            }
            items.append({verb: {**meta, "status": 429, "error": error}})
        return web.json_response({"took": 1, "errors": True, "items": items})
