"""Talk to a running worker's HTTP API (``etl status``, ``etl pause``, ``etl resume``)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NamedTuple

from etl.config import ETLSettings

#: Overrides the worker address the CLI derives from the configuration.
URL_ENV = "ETL_WORKER_URL"
#: The file in the data directory that says which worker runs this project, and where.
WORKER_FILE = "worker.json"


def web_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a web server bound to host:port."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class WorkerUnreachable(Exception):
    """The worker's web server did not answer."""


class WorkerRequestError(Exception):
    """The worker answered with an error (unknown pipeline, ...)."""


def recorded_worker(settings: ETLSettings) -> dict[str, Any] | None:
    """What ``<data_dir>/worker.json`` says of this project's worker, if that process lives."""
    try:
        info = json.loads((settings.data_dir / WORKER_FILE).read_text(encoding="utf-8"))
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return dict(info)


class WorkerTarget(NamedTuple):
    """Where the CLI finds a worker, and how to name it to the user."""

    url: str | None  # None: that worker's web server is off
    label: str
    #: Only the configured web.host/web.port: whoever listens there may be another
    #: project's worker.
    guessed: bool = False


def find_worker(settings: ETLSettings, explicit: str | None = None) -> WorkerTarget:
    """The worker the CLI talks to: ``--url``, else ``$ETL_WORKER_URL``, else the worker
    recorded in this project's data directory, else web.host/web.port."""
    url = explicit or os.environ.get(URL_ENV)
    if url:
        source = "--url" if explicit else f"${URL_ENV}"
        return WorkerTarget(url.rstrip("/"), f"worker at {url.rstrip('/')} ({source})")
    info = recorded_worker(settings)
    if info is not None:
        where = info.get("url")
        label = f"worker pid {info['pid']} of {settings.data_dir}"
        return WorkerTarget(where, f"{label} at {where}" if where else label)
    if not settings.web.enabled:
        return WorkerTarget(None, "no worker recorded in this project and web.enabled is false")
    url = web_url(settings.web.host, settings.web.port)
    label = f"worker at {url} (web.host/web.port; none recorded in {settings.data_dir})"
    return WorkerTarget(url, label, guessed=True)


#: The token ``etl`` commands send to a worker (else ``web.token`` of the configuration).
TOKEN_ENV = "ETL_WEB_TOKEN"


def worker_token(settings: ETLSettings | None, explicit: str | None = None) -> str | None:
    """``--token``, else ``$ETL_WEB_TOKEN``, else ``web.token`` of the configuration."""
    if explicit:
        return explicit
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if settings is not None and settings.web.token is not None:
        return settings.web.token.get_secret_value() or None
    return None


class WorkerClient:
    """A small JSON client for the worker's ``/etl/...`` routes."""

    def __init__(self, base_url: str, timeout: float = 5.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.base_url + path
        data = None
        headers = {"Accept": "application/json"}
        if method != "GET":
            # The worker refuses changes that are not declared JSON (no cross-site forms).
            data = json.dumps(body if body is not None else {}).encode()
            headers["Content-Type"] = "application/json"
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise WorkerUnreachable(f"{self.base_url}: not an http(s) URL")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read().decode("utf-8")
                return json.loads(raw) if raw.strip() else None
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read().decode("utf-8"))
                reason = answer.get("error") or answer.get("message") or exc.reason
            except (ValueError, AttributeError):
                reason = exc.reason
            raise WorkerRequestError(f"{reason} (HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WorkerUnreachable(f"worker at {self.base_url} unreachable: {reason}") from None

    def status(self, scope: str = "cluster") -> dict[str, Any]:
        """``GET /etl/status/`` (the cluster; ``scope="local"``: that worker only)."""
        suffix = "?scope=local" if scope == "local" else ""
        return dict(self._request("GET", f"/etl/status/{suffix}"))

    def get(self, path: str) -> dict[str, Any]:
        """``GET`` a JSON route of the API."""
        return dict(self._request("GET", path))

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST`` a JSON body to a route of the API."""
        return dict(self._request("POST", path, body))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Any route: the answer's JSON (None for an empty answer)."""
        return self._request(method, path, body)

    def action(self, name: str, action: str) -> dict[str, Any]:
        """``POST /etl/pipelines/NAME/ACTION/`` (pause, resume, stop, restart)."""
        return self.post(f"/etl/pipelines/{urllib.parse.quote(name)}/{action}/")

    def pause(self, name: str) -> dict[str, Any]:
        """``POST /etl/pipelines/NAME/pause/``."""
        return self.action(name, "pause")

    def resume(self, name: str) -> dict[str, Any]:
        """``POST /etl/pipelines/NAME/resume/``."""
        return self.action(name, "resume")
