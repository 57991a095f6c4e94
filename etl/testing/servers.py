"""Throwaway PostgreSQL and MariaDB servers for tests (Debian's packages).

Each runs from its own data directory on a free port and is removed on stop.
PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
MariaDB starts with the binlog flags the MySQL source needs (ROW, FULL image,
FULL row metadata).
"""

from __future__ import annotations

import glob
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from etl.embedded import port_open
from etl.testing.ports import reserve_port


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found and not found.startswith("/usr/local/bin"):
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    if found:
        return found
    raise RuntimeError(f"{name} not found: install Debian's 'postgresql' package")


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        if port_open("127.0.0.1", port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} in {timeout}s:\n{log.read_text()[-3000:]}")


class PostgresServer:
    """``initdb`` + ``postgres`` on 127.0.0.1:<free port>, trust auth, database ``postgres``."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="etl-pg-"))
        self.port = reserve_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.user = "postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _demote(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
            return {}
        entry = pwd.getpwnam("postgres")
        shutil.chown(self.base, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 30) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        demote = self._demote()
        data = self.base / "data"
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            **demote,
        )
        self._spawn(timeout)
        return self

    def _spawn(self, timeout: float) -> None:
        """Run ``postgres`` on the data directory and wait until it accepts connections."""
        demote = self._demote()
        log = self.base / "postgres.log"
        argv = [_pg_bin("postgres"), "-D", str(self.base / "data"), "-p", str(self.port)]
        argv += ["-h", "127.0.0.1", "-k", str(self.base)]
        for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
            argv += ["-c", setting]
        argv += ["-c", "max_connections=200"]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **demote
            )
        _wait_port(self.port, self.process, log, timeout)
        # The port opens a moment before connections are accepted.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready")

    def pause(self) -> None:
        """Stop the server (keeping its data) to simulate an outage."""
        self._terminate()

    def resume(self, timeout: float = 30) -> None:
        """Start it again on the same port after :meth:`pause`."""
        self._spawn(timeout)

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """A self-signed CA and a server certificate for ``hosts`` (IP addresses or names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def build(subject: str, issuer: x509.Name | None, key: Any, signer: Any, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("etl test CA", None, ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(hosts[0], ca_cert.subject, key, ca_key, False)
    files = TlsFiles(
        directory / "ca.pem", directory / "server-cert.pem", directory / "server-key.pem"
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return files


class MariaDBServer:
    """``mariadb-install-db`` + ``mariadbd`` with ROW binlog, root without password.

    ``tls=True`` also serves TLS with a certificate of a throwaway CA (``tls_files.ca``).
    """

    def __init__(self, base: Path | None = None, server_id: int = 1, *, tls: bool = False) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="etl-mariadb-"))
        self.port = reserve_port()
        self.server_id = server_id
        self.process: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.user = "root"
        self.password = ""
        self.tls_files = make_tls_files(self.base / "tls") if tls else None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket(self) -> Path:
        return self.base / "mysqld.sock"

    def _argv(self) -> list[str]:
        return [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            "--user=root",
            f"--log-bin={self.data}/binlog",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            f"--server-id={self.server_id}",
            f"--pid-file={self.base}/mysqld.pid",
            "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=200",
            *self._tls_argv(),
        ]

    def _tls_argv(self) -> list[str]:
        files = self.tls_files
        if files is None:
            return []
        return [f"--ssl-ca={files.ca}", f"--ssl-cert={files.cert}", f"--ssl-key={files.key}"]

    def start(self, timeout: float = 60) -> MariaDBServer:
        self.base.mkdir(parents=True, exist_ok=True)
        install = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        self._spawn(timeout)
        return self

    def _spawn(self, timeout: float) -> None:
        log = self.base / "mariadb.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                self._argv(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_port(self.port, self.process, log, timeout)

    def pause(self) -> None:
        """Stop the server (keeping its data) to simulate an outage."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def resume(self, timeout: float = 60) -> None:
        """Start it again on the same port after :meth:`pause`."""
        self._spawn(timeout)

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.base, ignore_errors=True)
