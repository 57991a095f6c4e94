"""``etl status`` on a terminal: one table of pipelines, one of partitions (rich)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from etl.ops.history import total_lag

STATE_STYLES = {
    "running": "green",
    "paused": "yellow",
    "starting": "cyan",
    "halted": "bold red",
    "failed": "bold red",
    "load_error": "bold red",
    "finished": "dim",
}


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if digits else f"{int(value):,}"


def pipeline_table(snapshot: dict[str, Any]) -> Table:
    """State, rates, counters, lag and last error of every pipeline."""
    table = Table(title="Pipelines", title_justify="left", expand=False)
    for header in ("PIPELINE", "KIND", "STATE"):
        table.add_column(header)
    for header in ("IN/S", "OUT/S", "CONSUMED", "PRODUCED", "FILTERED", "DEAD-LETTERED", "LAG"):
        table.add_column(header, justify="right")
    table.add_column("DEAD-LETTER TOPIC", overflow="fold", max_width=30)
    table.add_column("LAST ERROR", overflow="fold", max_width=60)
    for item in snapshot.get("pipelines", []):
        lag = total_lag(item)
        table.add_row(
            item["name"],
            item["kind"],
            Text(item["state"], style=STATE_STYLES.get(item["state"], "")),
            _num(item.get("rate_in"), 1),
            _num(item.get("rate_out"), 1),
            _num(item.get("consumed")),
            _num(item.get("produced")),
            _num(item.get("filtered")),
            _num(item.get("dead_lettered")),
            _num(lag),
            item.get("dead_letter_topic") or "-",
            Text(item.get("error") or "", style="red"),
        )
    return table


def partition_table(snapshot: dict[str, Any]) -> Table:
    """Consumption progress: committed offset, end offset and lag per partition."""
    table = Table(title="Consumption progress", title_justify="left")
    table.add_column("PIPELINE")
    table.add_column("TOPIC/PARTITION")
    for header in ("COMMITTED", "END", "LAG"):
        table.add_column(header, justify="right")
    for item in snapshot.get("pipelines", []):
        for tp, progress in item.get("partitions", {}).items():
            table.add_row(
                item["name"],
                tp,
                _num(progress.get("committed")),
                _num(progress.get("end")),
                _num(progress.get("lag")),
            )
    return table


def render_status(snapshot: dict[str, Any], source: str) -> Group:
    """The whole ``etl status`` screen; ``source`` says where the data came from."""
    worker = snapshot.get("worker", {})
    updated = worker.get("updated_at")
    age = f"{time.time() - updated:.0f}s ago" if updated else "unknown"
    header = Text(
        f"worker pid {worker.get('pid', '-')}  app {worker.get('app_id', '-')}  "
        f"broker {worker.get('bootstrap_servers', '-')}  updated {age}  ({source})",
        style="dim",
    )
    parts: list[Any] = [header, pipeline_table(snapshot)]
    if any(item.get("partitions") for item in snapshot.get("pipelines", [])):
        parts.append(partition_table(snapshot))
    if not snapshot.get("pipelines"):
        parts.append(Text("no pipelines yet"))
    return Group(*parts)
