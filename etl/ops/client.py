"""Talk to a running worker's HTTP API (``etl status``, ``etl pause``, ``etl resume``)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from etl.config import ETLSettings

#: Overrides the worker address the CLI derives from the configuration.
URL_ENV = "ETL_WORKER_URL"


class WorkerUnreachable(Exception):
    """The worker's web server did not answer."""


class WorkerRequestError(Exception):
    """The worker answered with an error (unknown pipeline, ...)."""


def worker_url(settings: ETLSettings, explicit: str | None = None) -> str | None:
    """``--url``, else ``$ETL_WORKER_URL``, else the configured web server (None when off)."""
    url = explicit or os.environ.get(URL_ENV)
    if url:
        return url.rstrip("/")
    if not settings.web.enabled:
        return None
    host = settings.web.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web.port}"


class WorkerClient:
    """A small JSON client for the worker's ``/etl/...`` routes."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str) -> Any:
        url = self.base_url + path
        request = urllib.request.Request(url, method=method)
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise WorkerUnreachable(f"{self.base_url}: not an http(s) URL")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read().decode("utf-8")).get("error") or exc.reason
            except ValueError:
                reason = exc.reason
            raise WorkerRequestError(f"{reason} (HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WorkerUnreachable(f"worker at {self.base_url} unreachable: {reason}") from None

    def status(self) -> dict[str, Any]:
        """``GET /etl/status/``."""
        return dict(self._request("GET", "/etl/status/"))

    def pause(self, name: str) -> dict[str, Any]:
        """``POST /etl/pipelines/NAME/pause/``."""
        return dict(self._request("POST", f"/etl/pipelines/{urllib.parse.quote(name)}/pause/"))

    def resume(self, name: str) -> dict[str, Any]:
        """``POST /etl/pipelines/NAME/resume/``."""
        return dict(self._request("POST", f"/etl/pipelines/{urllib.parse.quote(name)}/resume/"))
