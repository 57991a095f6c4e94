"""Settings for a pipeline started inside a test (or a benchmark) on a test broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from etl.config import ETLSettings


def pipeline_settings(
    bootstrap: str,
    tag: str | None = None,
    *,
    data_dir: Path | str | None = None,
    prefix: str = "t",
    **overrides: Any,
) -> ETLSettings:
    """Settings for pipelines on the test broker at ``bootstrap``.

    Idempotence is off (a single-node test broker may not grant producer ids), group
    sessions are short so a rebalance takes a second, and the consumer groups
    (``<prefix><tag>-...``) and the dead-letter topic (``dlq-<tag>``) belong to this
    test alone; ``tag`` defaults to a random one. ``overrides`` are top-level settings;
    a ``kafka`` or ``errors`` mapping among them is merged into the defaults.
    """
    tag = tag or uuid.uuid4().hex[:8]
    kafka: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": False,
        "group_prefix": f"{prefix}{tag}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        **overrides.pop("kafka", {}),
    }
    errors: dict[str, Any] = {"dead_letter_topic": f"dlq-{tag}", **overrides.pop("errors", {})}
    data: dict[str, Any] = {"kafka": kafka, "errors": errors, "web": {"enabled": False}}
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    data.update(overrides)
    return ETLSettings.model_validate(data)
