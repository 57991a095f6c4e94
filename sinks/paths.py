"""Paths built from data or config, kept below the root they belong to.

A topic name, a key, a template's output or a config value may hold ``/``,
``..``, a NUL byte or be longer than a file system allows (Apache Kafka rejects
``/`` in topic names, other brokers do not). Such text becomes one path segment
by :func:`path_segment`, which *escapes* rather than rejects, so that a record
of an odd topic is still written, in a directory of its own:

* every character but ASCII letters, digits, ``.``, ``_`` and ``-`` is
  percent-encoded as its UTF-8 bytes (``/`` -> ``%2F``, NUL -> ``%00``, ``%`` ->
  ``%25``); names made only of those characters (every Apache Kafka topic name)
  are unchanged;
* ``.`` and ``..`` become ``%2E`` and ``%2E%2E``;
* a segment longer than :data:`MAX_SEGMENT_BYTES` is cut and ends in ``~`` and
  16 hex digits of its SHA-256, so it stays unique and the same on every run;
* an empty segment is rejected (ValueError).

:func:`confined` is the last check before a path is used: it *rejects* (FatalError)
a path whose normal form leaves the root, whatever built it.
"""

from __future__ import annotations

import hashlib
import posixpath
import string

from etl.errors import FatalError

#: Longest file name most file systems allow (bytes).
MAX_SEGMENT_BYTES = 255
_SAFE = frozenset(string.ascii_letters + string.digits + "._-")


def path_segment(text: str) -> str:
    """``text`` as one path segment that cannot leave its directory (see the module)."""
    if not text:
        raise ValueError("an empty name cannot be a path segment")
    if text in (".", ".."):
        return "%2E" * len(text)
    if not all(c in _SAFE for c in text):
        text = "".join(
            c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
            for c in text
        )
    if len(text) > MAX_SEGMENT_BYTES:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        text = f"{text[: MAX_SEGMENT_BYTES - 17]}~{digest}"
    return text


def confined(root: str, path: str) -> str:
    """``path`` when it lies below ``root`` (after resolving ``.``/``..``); else FatalError."""
    base = posixpath.normpath(root or "/").rstrip("/") + "/"
    if "\0" in path or not posixpath.normpath(path).startswith(base):
        raise FatalError(f"path {path!r} leaves the sink's root {root!r}; nothing was written")
    return path
