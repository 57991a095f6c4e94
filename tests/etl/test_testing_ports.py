"""etl.testing.ports: a port reserved by one test process is never handed to another."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from etl.testing.ports import port_range, reserve_port

CHILD = (
    "import sys\nfrom etl.testing.ports import reserve_port\n"
    "print(reserve_port(), flush=True)\nsys.stdin.read()\n"
)


def test_a_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = port_range()
    port = reserve_port()
    assert low <= port <= high
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert port < ephemeral_low
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert reserve_port() != port, "never handed out twice in one process"


def test_another_process_holds_its_port_until_it_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        monkeypatch.setenv("ETL_TEST_PORTS", f"{port}-{port}")
        with pytest.raises(RuntimeError, match="no free test port"):
            reserve_port()
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # no clean-up: the kernel drops the lock
        child.wait()
    assert reserve_port() == port


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("ETL_TEST_PORTS", f"{port}-{port}")
        with pytest.raises(RuntimeError, match="no free test port"):
            reserve_port()
