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
    "stopped": "magenta",
    "halted": "bold red",
    "unassigned": "magenta",
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
    for header in ("PIPELINE", "KIND", "STATE", "WORKERS"):
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
            str(len(item["workers"])) if "workers" in item else "-",
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
    for header in ("COMMITTED", "LOG START", "END", "LAG"):
        table.add_column(header, justify="right")
    table.add_column("STATE")
    table.add_column("OWNER", overflow="fold")
    for item in snapshot.get("pipelines", []):
        for tp, progress in item.get("partitions", {}).items():
            state = str(progress.get("state") or "")
            table.add_row(
                item["name"],
                tp,
                _num(progress.get("committed")),
                _num(progress.get("log_start")),
                _num(progress.get("end")),
                _num(progress.get("lag")),
                Text(state, style=STATE_STYLES.get(state, "")),
                owner_text(progress.get("owner")),
            )
    return table


def owner_text(owner: Any) -> str:
    """``worker-id (host pid N)`` of a partition's owner, or ``-``."""
    if not owner:
        return "-"
    return f"{owner.get('worker')} ({owner.get('host')} pid {owner.get('pid')})"


def worker_table(snapshot: dict[str, Any]) -> Table:
    """The cluster's workers: id, host, pid, web address, pipelines, last heartbeat."""
    table = Table(title="Workers", title_justify="left")
    for header in ("WORKER", "HOST", "PID", "WEB", "PIPELINES", "LAST SEEN", "STATE"):
        table.add_column(header)
    now = time.time()
    for worker in snapshot.get("workers", []):
        seen = worker.get("last_seen")
        table.add_row(
            worker.get("id", "-") + (" (this)" if worker.get("this") else ""),
            str(worker.get("host") or "-"),
            str(worker.get("pid") or "-"),
            str(worker.get("url") or "-"),
            str(worker.get("pipelines", 0)),
            f"{now - seen:.0f}s ago" if seen else "-",
            Text("alive", style="green") if worker.get("alive") else Text("lost", style="red"),
        )
    return table


def render_status(snapshot: dict[str, Any], source: str) -> Group:
    """The whole ``etl status`` screen; ``source`` says where the data came from."""
    worker = snapshot.get("worker", {})
    updated = worker.get("updated_at") or snapshot.get("generated_at")
    age = f"{time.time() - updated:.0f}s ago" if updated else "unknown"
    scope = snapshot.get("scope", "worker")
    who = (
        f"worker {worker['id']} pid {worker.get('pid', '-')}"
        if worker.get("id")
        else (f"worker pid {worker.get('pid', '-')}")
    )
    header = Text(
        f"{scope}: {who}  app {worker.get('app_id', '-')}  "
        f"broker {worker.get('bootstrap_servers', '-')}  updated {age}  ({source})",
        style="dim",
    )
    parts: list[Any] = [header, pipeline_table(snapshot)]
    if any(item.get("partitions") for item in snapshot.get("pipelines", [])):
        parts.append(partition_table(snapshot))
    if snapshot.get("workers"):
        parts.append(worker_table(snapshot))
    if not snapshot.get("pipelines"):
        parts.append(Text("no pipelines yet"))
    return Group(*parts)
