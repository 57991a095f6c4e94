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

import sys
from typing import Any

import faust
from faust.app.base import BootStrategy

from etl.config import ETLSettings, load_settings
from etl.errors import ConfigurationError
from etl.supervisor import PipelineSupervisor


class ETLBootStrategy(BootStrategy):
    """Start sensors and the web server; the pipelines bring their own Kafka clients."""

    enable_kafka = False


class ETLApp(faust.App):
    """A Faust app that runs the ETL supervisor as a service."""

    BootStrategy = ETLBootStrategy
    etl_settings: ETLSettings
    etl_supervisor: PipelineSupervisor


def create_app(settings: ETLSettings) -> ETLApp:
    """Build the Faust app for these settings."""
    import etl.builtin_plugins  # noqa: F401 - registers the built-in sink/source types

    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
    )
    app.etl_settings = settings

    @app.service
    class Supervisor(PipelineSupervisor):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(settings, **kwargs)
            app.etl_supervisor = self

    from etl.web import register_views

    register_views(app)
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
