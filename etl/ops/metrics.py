"""The worker's status in the Prometheus text exposition format (``GET /metrics``).

Written by hand: a handful of counters and gauges read from the pipelines'
status, so no client library is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from etl.runtime.status import State

#: aiohttp adds "; charset=utf-8" to a text response itself.
CONTENT_TYPE = "text/plain; version=0.0.4"

#: (metric, status field, type, help)
_COUNTERS = [
    ("etl_messages_consumed_total", "consumed", "Messages read from the source topics."),
    ("etl_messages_produced_total", "produced", "Messages written to the target."),
    ("etl_messages_filtered_total", "filtered", "Messages the transform dropped (returned None)."),
    ("etl_messages_dead_lettered_total", "dead_lettered", "Messages sent to a dead-letter topic."),
    ("etl_batches_total", "batches", "Batches handled."),
]


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
    return "{" + inner + "}"


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.name = name

    def add(self, value: float | int, **labels: Any) -> None:
        self.lines.append(f"{self.name}{_labels(**labels)} {_number(value)}")


def render_metrics(snapshot: dict[str, Any]) -> str:
    """Prometheus text for a supervisor snapshot (one sample per pipeline / partition)."""
    pipelines = snapshot.get("pipelines", [])
    families: list[_Family] = []

    up = _Family("etl_pipeline_up", "gauge", "1 while the pipeline runs or is paused, else 0.")
    state = _Family("etl_pipeline_state", "gauge", "1 for the pipeline's current state.")
    families += [up, state]
    for item in pipelines:
        ids = {"pipeline": item["name"], "kind": item["kind"]}
        up.add(int(item["state"] in (State.RUNNING, State.PAUSED)), **ids)
        for name in State:
            state.add(int(item["state"] == name), **ids, state=str(name))

    for metric, field, help_text in _COUNTERS:
        family = _Family(metric, "counter", help_text)
        families.append(family)
        for item in pipelines:
            family.add(int(item.get(field) or 0), pipeline=item["name"], kind=item["kind"])

    latency = _Family(
        "etl_last_batch_duration_seconds", "gauge", "How long the last batch took end to end."
    )
    families.append(latency)
    for item in pipelines:
        latency.add(
            float(item.get("last_batch_ms") or 0.0) / 1000, pipeline=item["name"], kind=item["kind"]
        )

    families += _partition_families(pipelines)
    lines = [line for family in families for line in family.lines]
    return "\n".join(lines) + "\n"


def _partition_families(pipelines: Iterable[dict[str, Any]]) -> list[_Family]:
    lag = _Family("etl_consumer_lag", "gauge", "Messages behind the end of the partition.")
    committed = _Family("etl_committed_offset", "gauge", "Offset committed by the pipeline.")
    end = _Family("etl_end_offset", "gauge", "End offset (high watermark) of the partition.")
    for item in pipelines:
        for tp, progress in item.get("partitions", {}).items():
            topic, _, partition = tp.rpartition("/")
            labels = {
                "pipeline": item["name"],
                "kind": item["kind"],
                "topic": topic,
                "partition": partition,
            }
            for family, field in ((lag, "lag"), (committed, "committed"), (end, "end")):
                if progress.get(field) is not None:
                    family.add(int(progress[field]), **labels)
    return [lag, committed, end]
