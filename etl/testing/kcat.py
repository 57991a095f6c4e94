"""Run Debian's ``kcat`` (librdkafka) as an independent Kafka client in tests.

Debian's kcat links librdkafka 2.0.2, which cannot parse the ApiVersions v3
answer of the embedded test broker; when the ``confluent-kafka`` wheel is
installed its newer librdkafka is put first on ``LD_LIBRARY_PATH`` for kcat.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path


@cache
def _library_dir() -> str | None:
    try:
        import confluent_kafka
    except ImportError:
        return None
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs.glob("librdkafka*.so*")) if libs.is_dir() else []
    if not candidates:
        return None
    target = Path(tempfile.mkdtemp(prefix="etl-rdkafka-"))
    (target / "librdkafka.so.1").symlink_to(candidates[0])
    return str(target)


def kcat_env() -> dict[str, str]:
    """Environment for kcat subprocesses."""
    env = dict(os.environ)
    lib = _library_dir()
    if lib:
        env["LD_LIBRARY_PATH"] = lib + (
            ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
        )
    return env


def kcat_path() -> str:
    """The kcat binary, or an error saying how to install it."""
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        raise RuntimeError("kcat is not installed (Debian package 'kcat')")
    return path


def kcat_produce(
    bootstrap: str,
    topic: str,
    lines: Iterable[str],
    *,
    key_delimiter: str = "\t",
    partition: int | None = None,
    timeout: float = 120,
    compression: str | None = None,
) -> None:
    """Produce ``key<TAB>value`` lines with kcat (``-K``); waits for delivery."""
    argv = [kcat_path(), "-b", bootstrap, "-P", "-t", topic, "-K", key_delimiter, "-X", "acks=all"]
    if partition is not None:
        argv += ["-p", str(partition)]
    if compression is not None:
        argv += ["-z", compression]
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    subprocess.run(
        argv, input=data, env=kcat_env(), check=True, timeout=timeout, capture_output=True
    )


def kcat_consume(
    bootstrap: str,
    topic: str,
    *,
    count: int | None = None,
    timeout: float = 60,
    fmt: str = "%k\t%s\t%p\t%o\n",
) -> list[list[str]]:
    """Read the topic from the beginning to its end (or ``count`` messages) with kcat."""
    argv = [
        kcat_path(),
        "-b",
        bootstrap,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        fmt,
        "-Z",
    ]
    if count is not None:
        argv += ["-c", str(count)]
    out = subprocess.run(
        argv, env=kcat_env(), check=True, timeout=timeout, capture_output=True
    ).stdout.decode("utf-8", "backslashreplace")
    rows = [line.split("\t") for line in out.splitlines() if line]
    return rows
