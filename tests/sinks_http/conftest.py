"""A real local HTTP(S) server for the HTTP sink tests that answers status codes on cue."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from etl.testing.ports import reserve_port


@dataclass
class Received:
    """One request the server got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def messages(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.body)
        return data


@dataclass
class ScriptedServer:
    """Answers the statuses in ``script`` in turn, then ``default``; records every request."""

    port: int
    scheme: str = "http"
    script: list[int | tuple[int, dict[str, str], str]] = field(default_factory=list)
    default: int = 200
    #: Seconds to wait before answering, per request in turn, then ``default_delay``.
    delays: list[float] = field(default_factory=list)
    default_delay: float = 0.0
    #: Requests being answered right now, and the most there ever were at once.
    open_now: int = 0
    most_open: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ingest"

    def delivered(self) -> list[dict[str, Any]]:
        """Messages of the requests answered with a 2xx."""
        with self.lock:
            return [m for r in self.requests if 200 <= r.status < 300 for m in r.messages]

    def answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], str]:
        with self.lock:
            cue = self.script.pop(0) if self.script else self.default
            delay = self.delays.pop(0) if self.delays else self.default_delay
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        try:
            time.sleep(delay)
        finally:
            with self.lock:
                self.open_now -= 1
                status, extra, text = cue if isinstance(cue, tuple) else (cue, {}, "")
                self.requests.append(Received(path, headers, body, status))
        return status, extra, text

    def start(self, context: ssl.SSLContext | None = None) -> ScriptedServer:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, extra, text = scripted.answer(self.path, dict(self.headers), body)
                payload = (text or "ok").encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                try:
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@contextmanager
def serving(context: ssl.SSLContext | None = None) -> Iterator[ScriptedServer]:
    """A started server on a free port (HTTPS with ``context``), stopped on the way out."""
    server = ScriptedServer(reserve_port(), scheme="https" if context else "http").start(context)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_server() -> Iterator[ScriptedServer]:
    with serving() as server:
        yield server


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[ScriptedServer, Path]]:
    """An HTTPS server with a self-signed certificate, and that certificate's path."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serving(context) as server:
        yield server, cert
