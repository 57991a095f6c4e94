"""Recent samples of every pipeline's counters and lag: rates and the web page's chart.

The worker samples its status every few seconds and keeps the last minutes in
memory (a bounded deque); nothing is written anywhere, a restart starts empty.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

#: Seconds between samples, and how many are kept (10 minutes at the default).
SAMPLE_INTERVAL = 2.0
MAX_SAMPLES = 300
#: Rates are averaged over this many seconds of samples.
RATE_WINDOW = 10.0


def pipeline_key(item: dict[str, Any]) -> str:
    """``kind:name`` of a pipeline status dict."""
    return f"{item['kind']}:{item['name']}"


def total_lag(item: dict[str, Any]) -> int | None:
    """Sum of the known partition lags of a pipeline status dict (None: none known)."""
    known = [p["lag"] for p in item.get("partitions", {}).values() if p.get("lag") is not None]
    return sum(known) if known else None


class StatusHistory:
    """A ring buffer of ``(time, {key: {consumed, produced, lag per partition}})``."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.samples: deque[tuple[float, dict[str, dict[str, Any]]]] = deque(maxlen=max_samples)

    def add(self, snapshot: dict[str, Any], now: float | None = None) -> None:
        """Record the counters and lags of a supervisor snapshot."""
        entry: dict[str, dict[str, Any]] = {}
        for item in snapshot.get("pipelines", []):
            entry[pipeline_key(item)] = {
                "consumed": item.get("consumed", 0),
                "produced": item.get("produced", 0),
                "lag": {tp: p.get("lag") for tp, p in item.get("partitions", {}).items()},
            }
        self.samples.append((time.time() if now is None else now, entry))

    def rates(self, key: str, window: float = RATE_WINDOW) -> tuple[float | None, float | None]:
        """Messages/s in (consumed) and out (produced) over the last ``window`` seconds."""
        points = [(t, e[key]) for t, e in self.samples if key in e]
        if len(points) < 2:
            return None, None
        last_t, last = points[-1]
        first_t, first = points[0]
        for t, entry in points:
            if last_t - t <= window:
                first_t, first = t, entry
                break
        span = last_t - first_t
        if span <= 0:
            first_t, first = points[-2]
            span = last_t - first_t
        if span <= 0:
            return None, None
        return (
            max(0.0, (last["consumed"] - first["consumed"]) / span),
            max(0.0, (last["produced"] - first["produced"]) / span),
        )

    def enrich(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The snapshot with ``key``, ``rate_in``, ``rate_out`` and ``lag`` per pipeline."""
        items = []
        for item in snapshot.get("pipelines", []):
            key = pipeline_key(item)
            rate_in, rate_out = self.rates(key)
            items.append(
                {
                    **item,
                    "key": key,
                    "rate_in": rate_in,
                    "rate_out": rate_out,
                    "lag": total_lag(item),
                }
            )
        return {**snapshot, "pipelines": items}

    def series(self, since: float = 0.0) -> dict[str, Any]:
        """Lag per partition over time: ``{"times": [...], "pipelines": {key: {tp: [...]}}}``."""
        samples = [(t, e) for t, e in self.samples if t >= since]
        times = [round(t, 3) for t, _ in samples]
        out: dict[str, dict[str, list[int | None]]] = {}
        for index, (_, entry) in enumerate(samples):
            for key, data in entry.items():
                partitions = out.setdefault(key, {})
                for tp, lag in data["lag"].items():
                    series = partitions.setdefault(tp, [None] * len(samples))
                    series[index] = lag
        return {"interval": SAMPLE_INTERVAL, "times": times, "pipelines": out}
