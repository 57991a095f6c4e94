"""Ports for the servers a test starts, never handed to two test processes at once.

``etl.embedded.free_port`` (bind to port 0, close, hand the number out) is fine for
one process but races between several: two pytest-xdist workers, or two test runs
on one machine, can be handed the same port before either server has bound it,
and the kernel hands ports of that range to every outgoing connection as well.
:func:`reserve_port` instead picks a port below the kernel's ephemeral range (so
no client connection takes it) and holds an exclusive ``flock`` on a lock file
named after it for as long as this process lives, so every other process that
reserves ports the same way skips it. The kernel drops the lock when the process
ends, however it ends: nothing stale is left to clean up. A port is reserved for
good (a test may stop a server and start it again on the same port).

``ETL_TEST_PORTS=LOW-HIGH`` names the range to pick from instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

#: Lock files, one per reserved port, shared by every test process of this machine.
LOCK_DIR = Path(tempfile.gettempdir()) / "etl-test-ports"

_held: dict[int, int] = {}  # port -> descriptor of its locked file
_lock = threading.Lock()


def port_range() -> tuple[int, int]:
    """``(low, high)``, inclusive: ``ETL_TEST_PORTS``, else the 10000 ports below the
    kernel's ephemeral range."""
    explicit = os.environ.get("ETL_TEST_PORTS")
    if explicit:
        first, _, last = explicit.partition("-")
        return int(first), int(last)
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = max(ephemeral_low - 1, 11023)
    return max(high - 9999, 1024), high


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _try_lock(port: int) -> int | None:
    fd = os.open(LOCK_DIR / f"{port}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def reserve_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and no other test process holds."""
    low, high = port_range()
    if not LOCK_DIR.is_dir():
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(LOCK_DIR, 0o1777)  # other users' test runs lock ports here too
        except OSError:
            pass
    span = high - low + 1
    start = random.randrange(span)
    with _lock:
        for step in range(span):
            port = low + (start + step) % span
            if port in _held:
                continue
            fd = _try_lock(port)
            if fd is None:
                continue
            if not _bindable(port):  # some other program's server, or a closing socket
                os.close(fd)
                continue
            _held[port] = fd
            return port
    raise RuntimeError(f"no free test port in {low}-{high} (ETL_TEST_PORTS names another range)")
