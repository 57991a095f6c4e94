"""The registry of sink and source types: a short ``type`` name -> config model and class.

Config models live in light modules (no driver imports) so that a configuration
can be validated without the sink's optional dependencies; the class is imported
only when the pipeline starts, and a missing dependency names the extra to install.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

Kind = Literal["sink", "source"]


@dataclass(frozen=True)
class Plugin:
    """Where a sink or source type's config model and implementation live."""

    kind: Kind
    type: str
    config: str  # "module:Class" of the pydantic config model
    factory: str  # "module:Class" of the implementation
    extra: str  # the pip extra that installs its dependencies


_PLUGINS: dict[tuple[Kind, str], Plugin] = {}


def register(plugin: Plugin) -> Plugin:
    """Add (or replace) a sink or source type."""
    _PLUGINS[(plugin.kind, plugin.type)] = plugin
    return plugin


class UnknownPluginError(KeyError):
    """No sink/source of that type; the message lists the known ones."""

    def __init__(self, kind: Kind, type_name: str) -> None:
        known = ", ".join(sorted(t for k, t in _PLUGINS if k == kind)) or "none"
        self.text = f"unknown {kind} type {type_name!r}; known types: {known}"
        super().__init__(self.text)

    def __str__(self) -> str:
        return self.text


def get_plugin(kind: Kind, type_name: str) -> Plugin:
    """The registered plugin, or :class:`UnknownPluginError`."""
    try:
        return _PLUGINS[(kind, type_name)]
    except KeyError:
        raise UnknownPluginError(kind, type_name) from None


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def plugin_config_model(kind: Kind, type_name: str) -> type[BaseModel]:
    """The pydantic model that validates a config entry of this type."""
    import etl.builtin_plugins  # noqa: F401 - registers the built-in types

    model: type[BaseModel] = _import(get_plugin(kind, type_name).config)
    return model


def plugin_factory(kind: Kind, type_name: str) -> Any:
    """The implementation class; raises ``MissingExtraError`` naming the extra."""
    import etl.builtin_plugins  # noqa: F401
    from etl.errors import MissingExtraError

    plugin = get_plugin(kind, type_name)
    try:
        return _import(plugin.factory)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith(("etl", "sinks")):
            raise MissingExtraError(exc.name, plugin.extra) from exc
        raise


def install_command(extra: str) -> str:
    """The pip command that installs ``extra`` into the environment running now."""
    return f"{shlex.quote(sys.executable)} -m pip install 'faust-etl[{extra}]'"


def known_types(kind: Kind) -> list[str]:
    """Registered type names of one kind."""
    return sorted(t for k, t in _PLUGINS if k == kind)
