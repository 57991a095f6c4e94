"""The Faust app: ``faust -A etl.app worker -l info`` (or ``etl worker``).

Faust owns the app, the worker command, the web server, sensors and the
lifecycle. The pipelines do not use Faust streams: each drives its own aiokafka
batch consumer inside the app as a service (see ``etl/runtime``), because the
per-event stream path moves a fraction of what a batch loop moves. Faust's own
Kafka consumer and producer are therefore not started.

The configuration is read when ``app`` is first used: ``ETL_CONFIG`` or
``./etl.yaml``; a bad configuration prints every problem and exits with code 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy

from etl.config import ETLSettings, load_settings
from etl.errors import ConfigurationError
from etl.ops.client import WORKER_FILE, web_url
from etl.plugins import load_plugins
from etl.supervisor import PipelineSupervisor


class ETLBootStrategy(BootStrategy):
    """Start sensors and the web server; the pipelines bring their own Kafka clients."""

    enable_kafka = False


class ETLApp(faust.App):
    """A Faust app that runs the ETL supervisor as a service."""

    BootStrategy = ETLBootStrategy
    etl_settings: ETLSettings
    etl_supervisor: PipelineSupervisor


class ETLWorker(faust.Worker):
    """Faust's worker without its terminal spinner, recording where it listens.

    With the spinner on (``log_level: warning`` or ``error``), Faust sets the root
    logger to DEBUG and adds a DEBUG handler that turns the spinner on every log
    record: every ``log.debug`` call of aiokafka then builds a record (the worker
    runs slower than at ``info``) and spinner characters end up in redirected
    output. Without it the root logger stays at the configured level.

    On start it writes ``<data_dir>/worker.json`` (pid, web address, config) so that
    ``etl status``/``pause``/``resume`` find this project's worker, not whatever
    listens on the configured port; on stop it removes the file again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        settings = getattr(self.app, "etl_settings", None)
        if settings is not None:
            write_worker_file(settings)

    def on_worker_shutdown(self) -> None:
        super().on_worker_shutdown()
        settings = getattr(self.app, "etl_settings", None)
        if settings is not None:
            remove_worker_file(settings)


def write_worker_file(settings: ETLSettings) -> Path:
    """Record this process as the project's worker (``<data_dir>/worker.json``)."""
    path = settings.data_dir / WORKER_FILE
    info = {
        "pid": os.getpid(),
        "url": web_url(settings.web.host, settings.web.port) if settings.web.enabled else None,
        "config": str(settings.config_path.resolve()) if settings.config_path else None,
        "transforms_dir": str(settings.transforms_dir),
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "started_at": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{WORKER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def remove_worker_file(settings: ETLSettings) -> None:
    """Remove ``worker.json`` if it names this process."""
    path = settings.data_dir / WORKER_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def create_app(settings: ETLSettings) -> ETLApp:
    """Build the Faust app for these settings."""
    load_plugins()  # the sink/source types of every installed package (entry points)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.web.enabled and settings.web.port == 0:
        # Chosen here, not by the server, so that worker.json can say where it is.
        from etl.embedded import free_port

        settings.web.port = free_port(settings.web.host)
    app = ETLApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers.split(',')[0]}",
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        web_enabled=settings.web.enabled,
        web_host=settings.web.host,
        web_port=settings.web.port,
        web_bind=settings.web.host,
        autodiscover=False,
        Worker=ETLWorker,
    )
    app.etl_settings = settings

    @app.service
    class Supervisor(PipelineSupervisor):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(settings, **kwargs)
            app.etl_supervisor = self

    from etl.alerts.web import register_alert_views
    from etl.web import register_views

    register_views(app)
    register_alert_views(app)
    return app


def app_from_environment(config: str | None = None) -> ETLApp:
    """Load the configuration (``config``, ``ETL_CONFIG`` or ``./etl.yaml``) and build the app."""
    try:
        settings = load_settings(config)
    except ConfigurationError as exc:
        print(f"etl: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app(settings)


_app: ETLApp | None = None


def __getattr__(name: str) -> Any:
    # ``faust -A etl.app`` looks up ``app``: build it on first use, not on import.
    global _app
    if name == "app":
        if _app is None:
            _app = app_from_environment()
        return _app
    raise AttributeError(name)
