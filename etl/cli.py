"""The ``etl`` command: worker, dev, test-transform, send, consume."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from etl.alerts.cli import alerts_group
from etl.cli_cluster import offsets_group  # noqa: F401  (adds its commands)
from etl.cli_common import CONFIG_OPTION, error_line, fail
from etl.cli_common import settings_or_exit as _settings
from etl.cli_connectors import connectors_group  # noqa: F401  (adds its commands)
from etl.cli_ops import OPS_COMMANDS
from etl.cli_templates import templates_group
from etl.config import ETLSettings
from etl.errors import TransformLoadError


def _bootstrap_configured(settings: ETLSettings) -> bool:
    """True when etl.yaml or ETL_KAFKA__BOOTSTRAP_SERVERS names the broker explicitly."""
    return "bootstrap_servers" in settings.kafka.model_fields_set


def port_in_use(host: str, port: int) -> bool:
    """True when a server cannot bind host:port (another process listens there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the web server binds: an old connection in TIME_WAIT does not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def choose_web_port(settings: ETLSettings, *, move: bool) -> None:
    """Make sure the web server can bind; with ``move``, take a free port instead.

    Without ``move`` (``etl worker``) a taken port is a one-line error naming the
    setting to change; ``etl dev`` moves to a free port and says where.
    """
    from etl.embedded import free_port

    web = settings.web
    if not web.enabled:
        return
    if web.port == 0:
        web.port = free_port(web.host)
        return
    if not port_in_use(web.host, web.port):
        return
    if not move:
        fail(
            f"web.port {web.port} on {web.host} is in use (another worker? "
            "`etl status --url http://HOST:PORT` shows which); "
            "set web.port in etl.yaml or ETL_WEB__PORT (0 = any free port)"
        )
    taken = web.port
    web.port = free_port(web.host)
    click.echo(f"web port {taken} is in use; this worker's web server is on port {web.port}")


@click.group()
@click.version_option(package_name="faust-etl")
def main() -> None:
    """Stream ETL on Faust: transforms between topics, sinks and sources."""


def run_worker(settings: ETLSettings, loglevel: str | None = None) -> None:
    """Run the Faust worker for these settings until it is stopped."""
    import faulthandler
    import signal

    from etl.app import ETLWorker, create_app
    from etl.ops.client import web_url

    # `kill -USR1 PID` prints every thread's stack to the worker's stderr (a stuck
    # worker can be diagnosed without stopping it).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app = create_app(settings)
    if settings.web.enabled:
        url = web_url(settings.web.host, settings.web.port)
        click.echo(f"worker web server (status, pause/resume): {url}/etl/")
    worker = ETLWorker(
        app, loglevel=loglevel or settings.log_level, quiet=True, redirect_stdouts=False
    )
    worker.execute_from_commandline()


@main.command()
@CONFIG_OPTION
@click.option("--loglevel", "-l", default=None, help="debug, info, warning or error.")
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes in the same consumer groups (default: `processes` in etl.yaml, 1).",
)
def worker(config: str | None, loglevel: str | None, processes: int | None) -> None:
    """Run the worker: every transform, sink and source of the configuration."""
    settings = _settings(config)
    count = processes or settings.processes
    if count > 1:
        import logging

        from etl.processes import ProcessSupervisor

        logging.basicConfig(
            level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s %(message)s"
        )
        click.echo(
            f"starting {count} worker processes; web ports {settings.web.port}.."
            f"{settings.web.port + count - 1}, files in {settings.data_dir}/process-N"
        )
        raise SystemExit(ProcessSupervisor(settings, count, loglevel).run())
    choose_web_port(settings, move=False)
    run_worker(settings, loglevel)


@main.command()
@CONFIG_OPTION
@click.option("--port", default=9092, show_default=True, help="Port of the embedded broker.")
@click.option("--loglevel", "-l", default=None)
def dev(config: str | None, port: int, loglevel: str | None) -> None:
    """Run the worker on transforms/ with an embedded broker.

    The embedded broker runs unless a broker address is set explicitly
    (``kafka.bootstrap_servers`` in etl.yaml or ETL_KAFKA__BOOTSTRAP_SERVERS). A
    taken broker or web port moves to a free one, and the output says where.
    """
    from etl.embedded import EmbeddedBroker, free_port, port_open

    settings = _settings(config)
    choose_web_port(settings, move=True)
    broker = None
    if not _bootstrap_configured(settings):
        if port_open("127.0.0.1", port):
            port = free_port()
        broker = EmbeddedBroker(port=port, log_path=settings.data_dir / "embedded-broker.log")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        broker.start()
        settings.kafka.bootstrap_servers = broker.bootstrap_servers
        settings.kafka.enable_idempotence = False
    _print_dev_help(settings, embedded=broker is not None)
    try:
        run_worker(settings, loglevel)
    finally:
        if broker is not None:
            broker.stop()


def _print_dev_help(settings: ETLSettings, embedded: bool) -> None:
    from etl.transforms.loader import discover_transforms

    specs, errors = discover_transforms(settings.transforms_dir)
    env = ""
    if embedded:
        env = (
            f"ETL_KAFKA__BOOTSTRAP_SERVERS={settings.kafka.bootstrap_servers} "
            "ETL_KAFKA__ENABLE_IDEMPOTENCE=false "
        )
        click.echo(f"embedded broker (tansu, in memory) on {settings.kafka.bootstrap_servers}")
    else:
        click.echo(
            f"broker {settings.kafka.bootstrap_servers} (set by kafka.bootstrap_servers or "
            "ETL_KAFKA__BOOTSTRAP_SERVERS; without it `etl dev` starts an embedded broker)"
        )
    click.echo(f"transforms in {settings.transforms_dir}: {len(specs)} ok, {len(errors)} broken")
    for spec in specs:
        click.echo(f"  {spec.name}: {spec.source_topic} -> {spec.target_topic}")
    if specs:
        spec = specs[0]
        click.echo("\nIn another terminal:")
        click.echo(
            f'  send:  {env}etl send {spec.source_topic} --key demo --value \'{{"key": "test"}}\''
        )
        click.echo(f"  see:   {env}etl consume {spec.target_topic} --from-beginning")
    click.echo("")


@main.command("test-transform")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", default=None, help="Message key (text).")
@click.option("--value", default=None, help="Message value (text).")
@click.option("--topic", default=None, help="Source topic to show the function (default: its own).")
@click.option("--header", "headers", multiple=True, help="NAME=VALUE, repeatable.")
def test_transform(
    path: str, key: str | None, value: str | None, topic: str | None, headers: tuple[str, ...]
) -> None:
    """Run a transform's deal_message on one message locally and print the result."""
    from etl.message import make_message, normalize_result
    from etl.transforms.loader import load_any

    try:
        spec = load_any(Path(path))
    except TransformLoadError as exc:
        fail(str(exc))
    message = make_message(
        key, value, topic=topic or spec.source_topic, headers=_parse_pairs(headers)
    )
    from etl.config import ETLSettings
    from etl.runtime.usercode import call_once

    timeout = spec.timeout or ETLSettings.model_fields["transform_timeout"].default
    try:
        result = call_once(spec.deal_message, message, timeout)
        normalize_result(result)
    except (Exception, SystemExit) as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        where = f"{path}:{frames[-1].lineno}: " if frames else f"{path}: "
        fail(f"{where}{type(exc).__name__}: {exc}")
    if result is None:
        click.echo(f"filtered out (deal_message returned None); target {spec.target_topic}")
        return
    click.echo(json.dumps(result, ensure_ascii=False, indent=2, default=_bytes_repr))


def _bytes_repr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE")
        out[name] = value
    return out


@main.command()
@CONFIG_OPTION
@click.argument("topic")
@click.option("--key", default=None)
@click.option("--value", default=None)
@click.option("--partition", type=int, default=None)
@click.option("--header", "headers", multiple=True, help="NAME=VALUE, repeatable.")
def send(
    config: str | None,
    topic: str,
    key: str | None,
    value: str | None,
    partition: int | None,
    headers: tuple[str, ...],
) -> None:
    """Produce one test message to TOPIC."""
    settings = _settings(config)
    header_list = [(k, v.encode()) for k, v in _parse_pairs(headers).items()]

    async def go() -> Any:
        from etl.kafka import make_producer, wait_for_broker

        await wait_for_broker(settings.kafka, attempts=3)
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            return await producer.send_and_wait(
                topic,
                value=value.encode() if value is not None else None,
                key=key.encode() if key is not None else None,
                partition=partition,
                headers=header_list or None,
            )
        finally:
            await producer.stop()

    try:
        meta = asyncio.run(go())
    except Exception as exc:
        fail(error_line(exc))
    click.echo(f"sent to {meta.topic} partition {meta.partition} offset {meta.offset}")


@main.command()
@CONFIG_OPTION
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after N messages.")
@click.option("--timeout", type=float, default=None, help="Stop after S idle seconds.")
@click.option("--headers", "show_headers", is_flag=True, help="Include each message's headers.")
def consume(
    config: str | None,
    topic: str,
    from_beginning: bool,
    max_messages: int | None,
    timeout: float | None,
    show_headers: bool,
) -> None:
    """Print the messages of TOPIC (one JSON line each) without joining a group.

    Runs until Ctrl-C, --max N messages or --timeout S idle seconds.
    """
    settings = _settings(config)
    if max_messages is None and timeout is None:
        start = "the first message" if from_beginning else "new messages only"
        click.echo(
            f"reading {topic} ({start}) until Ctrl-C; --max N or --timeout S stop earlier",
            err=True,
        )

    async def go() -> None:
        from etl.kafka import make_consumer, wait_for_broker

        await wait_for_broker(settings.kafka, attempts=3)
        consumer = make_consumer(
            settings.kafka,
            topic,
            group_id=None,
            start_offset="earliest" if from_beginning else "latest",
        )
        await consumer.start()
        seen = 0
        idle = 0.0
        try:
            while max_messages is None or seen < max_messages:
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    idle += 0.5
                    if timeout is not None and idle >= timeout:
                        return
                    continue
                idle = 0.0
                for records in batch.values():
                    for rec in records:
                        line = {
                            "partition": rec.partition,
                            "offset": rec.offset,
                            "timestamp": rec.timestamp,
                            "key": _text(rec.key),
                            "value": _text(rec.value),
                        }
                        if show_headers:
                            line["headers"] = header_dict(rec.headers)
                        click.echo(json.dumps(line, ensure_ascii=False))
                        seen += 1
                        if max_messages is not None and seen >= max_messages:
                            return
        finally:
            await consumer.stop()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        fail(error_line(exc))


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "backslashreplace")


def header_dict(headers: Any) -> dict[str, str | None]:
    """Headers as name -> text (not UTF-8 bytes escaped); a repeated name keeps the last."""
    return {name: _text(value) for name, value in headers or ()}


main.add_command(templates_group)
main.add_command(alerts_group)
for _command in OPS_COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
