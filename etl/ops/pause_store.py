"""Which pipelines the operator paused, kept in a small JSON file in the data directory.

A paused pipeline stays paused across a worker restart until it is resumed, so
the set is written to disk on every change (atomically: a crash mid-write
leaves the previous file).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("etl.ops")


class PauseStore:
    """The set of paused pipeline keys (``kind:name``), persisted in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._paused: dict[str, float] = self._load()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # An unreadable file must not keep the worker from starting; say so loudly.
            log.error("pause state unreadable, starting unpaused path=%s error=%r", self.path, exc)
            return {}
        paused = data.get("paused", {}) if isinstance(data, dict) else {}
        return {str(k): float(v) for k, v in paused.items()} if isinstance(paused, dict) else {}

    def __contains__(self, key: object) -> bool:
        return key in self._paused

    def keys(self) -> list[str]:
        """The paused pipeline keys, sorted."""
        return sorted(self._paused)

    def paused_at(self, key: str) -> float | None:
        """When ``key`` was paused (epoch seconds), or None."""
        return self._paused.get(key)

    def add(self, key: str) -> None:
        """Remember ``key`` as paused."""
        if key not in self._paused:
            self._paused[key] = time.time()
            self._save()

    def discard(self, key: str) -> None:
        """Forget ``key`` (it was resumed)."""
        if self._paused.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"paused": self._paused}, indent=1), encoding="utf-8")
        tmp.replace(self.path)
