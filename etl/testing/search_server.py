"""An Elasticsearch-compatible server for tests: ``noida-db`` from its PyPI wheel.

``noida-db start --only elasticsearch`` serves the REST API opensearch-py speaks
(bulk, index, get, search, count, refresh) and, from 0.2.3 on, rejects a
document that conflicts with the index mapping as a real server does. On glibc
older than 2.39 the 0.2.3 binary prints "weak version `GLIBC_2.39' not found":
that is a warning about two optional symbols, the server runs.
``ETL_NOIDA_DB_BIN`` names another binary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from etl.testing.ports import reserve_port


class SearchServerUnavailable(RuntimeError):
    """The server binary is missing or cannot run on this machine; says why."""


def noida_binary() -> str:
    """Path of the noida-db binary (``ETL_NOIDA_DB_BIN`` overrides the wheel's)."""
    explicit = os.environ.get("ETL_NOIDA_DB_BIN")
    if explicit:
        return explicit
    try:
        from importlib.resources import files

        path = files("noida_db").joinpath("noida-db")
    except ModuleNotFoundError:
        raise SearchServerUnavailable("noida-db is not installed: pip install noida-db") from None
    if not path.is_file():
        raise SearchServerUnavailable(f"noida-db binary not found at {path}")
    binary = str(path)
    os.chmod(binary, 0o755)
    return binary


def check_binary(binary: str) -> str:
    """The binary's version line; raises SearchServerUnavailable when it cannot run here."""
    try:
        done = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=20, check=False
        )
    except OSError as exc:
        raise SearchServerUnavailable(f"{binary} cannot run: {exc}") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise SearchServerUnavailable(f"{binary} cannot run here: {output[:300]}")
    return next((line for line in output.splitlines() if line.startswith("noida")), output)


def http_get(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    """GET a JSON document; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, object] = json.loads(response.read() or b"{}")
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


class SearchServer:
    """``noida-db start --only elasticsearch`` on 127.0.0.1:<port> with its own data dir.

    ``stop()`` ends it (SIGTERM: it saves its data), ``start()`` again serves the same
    data on the same port; ``pause()``/``resume()`` freeze it (SIGSTOP/SIGCONT).
    A subclass serves another noida-db service by overriding ``service`` and ``ready``.
    """

    service = "elasticsearch"

    def __init__(self, port: int | None = None, base: Path | None = None) -> None:
        self.port = port or reserve_port()
        self.base = Path(base or tempfile.mkdtemp(prefix="etl-search-"))
        self._own_base = base is None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.binary = noida_binary()
        self.version = check_binary(self.binary)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "noida-db.log"

    def start(self, timeout: float = 30) -> SearchServer:
        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "start",
                "--only",
                self.service,
                f"--{self.service}-port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(data),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SearchServerUnavailable(
                    f"noida-db exited ({self.process.returncode}): {self._tail()}"
                )
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise SearchServerUnavailable(f"noida-db did not answer in {timeout}s: {self._tail()}")

    def ready(self) -> bool:
        """True once the service answers."""
        return http_get(self.url + "/", timeout=0.5) is not None

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def remove(self) -> None:
        """Stop and delete the data directory (when this object created it)."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> SearchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextmanager
def search_server_url() -> Iterator[str]:
    """``ETL_TEST_OPENSEARCH``, or a fresh noida-db for the duration of the block.

    Raises :class:`SearchServerUnavailable` (with the reason) when neither is there.
    """
    external = os.environ.get("ETL_TEST_OPENSEARCH")
    if external:
        yield external.rstrip("/")
        return
    with SearchServer() as server:
        yield server.url
