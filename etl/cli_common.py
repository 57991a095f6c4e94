"""What every ``etl`` command module shares: the ``--config`` option, loading the
settings, and the one-line error format. Command modules (:mod:`etl.cli_ops`,
:mod:`etl.cli_templates`) import this, never :mod:`etl.cli`; :mod:`etl.cli` attaches
their commands to its group.
"""

from __future__ import annotations

import re
from typing import NoReturn

import click

from etl.config import ETLSettings, load_settings
from etl.errors import ConfigurationError

CONFIG_OPTION = click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: $ETL_CONFIG or ./etl.yaml).",
)


def settings_or_exit(config: str | None) -> ETLSettings:
    """The settings of ``--config``; a configuration error exits 2 with its problems."""
    try:
        return load_settings(config)
    except ConfigurationError as exc:
        click.echo(f"etl: {exc}", err=True)
        raise SystemExit(2) from None


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``etl: MESSAGE`` on stderr and exit: every command's error line looks alike."""
    click.echo(f"etl: {message}", err=True)
    raise SystemExit(code)


_REPEATED_CLASS = re.compile(r"\b([A-Z]\w*(?:Error|Exception)): (?:\1: )+")


def error_line(exc: BaseException) -> str:
    """One line for an exception: class named once, plus the fix when it is a known one.

    aiokafka's errors put their class name into their text and wrappers add it
    again; that repetition is collapsed.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _REPEATED_CLASS.sub(r"\1: ", text)
    text = re.sub(r", <AddressFamily\.\w+: \d+>", "", text)
    name = type(exc).__name__
    text = text.removeprefix(f"{name}: ")
    if text.startswith("kafka broker unreachable"):
        # Our own wording says what happened; the client's class name adds nothing.
        text = text.replace("KafkaConnectionError: ", "")
    else:
        text = f"{name}: {text}"
    if "unreachable" in text or "Unable to bootstrap" in text:
        text += (
            "; is the broker running? Name it with kafka.bootstrap_servers in etl.yaml or "
            "ETL_KAFKA__BOOTSTRAP_SERVERS (`make run` prints its embedded broker's address)"
        )
    return text
