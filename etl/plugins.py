"""The registry of sink and source types: a short ``type`` name -> config model and class.

Types come from entry points: the group ``faust_etl.sinks`` or ``faust_etl.sources``
of any installed package, the name being the ``type``, the value a :class:`Plugin`
(the built-ins are registered this way too, see :mod:`etl.builtin_plugins`). A
package thus adds a sink or source by being installed, with no edit inside ``etl/``.

Config models live in light modules (no driver imports) so that a configuration
can be validated without the sink's optional dependencies; the class is imported
only when the pipeline starts, and a missing dependency names the extra to install.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel

log = logging.getLogger("etl.plugins")

Kind = Literal["sink", "source"]

#: The entry-point group of each kind.
GROUPS: dict[Kind, str] = {"sink": "faust_etl.sinks", "source": "faust_etl.sources"}


@dataclass(frozen=True)
class Plugin:
    """Where a sink or source type's config model and implementation live."""

    kind: Kind
    type: str
    config: str  # "module:Class" of the pydantic config model
    factory: str  # "module:Class" of the implementation
    #: The faust-etl extra that installs its dependencies ("" for a third-party package,
    #: whose own requirements install them).
    extra: str = ""


_PLUGINS: dict[tuple[Kind, str], Plugin] = {}
#: Entry points that could not be used, with the reason (shown for an unknown type).
_BROKEN: dict[tuple[Kind, str], str] = {}
_loaded = False


def register(plugin: Plugin) -> Plugin:
    """Add (or replace) a sink or source type (tests; packages use entry points)."""
    _PLUGINS[(plugin.kind, plugin.type)] = plugin
    return plugin


def load_plugins() -> None:
    """Register every installed package's types (once; later calls do nothing)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for kind, group in GROUPS.items():
        for point in entry_points(group=group):
            if (kind, point.name) in _PLUGINS:
                continue  # registered explicitly: that one wins
            try:
                plugin = point.load()
            except Exception as exc:
                _broken(kind, point.name, f"{point.value}: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(plugin, Plugin) or (plugin.kind, plugin.type) != (kind, point.name):
                _broken(
                    kind, point.name, f"{point.value} is not a Plugin({kind!r}, {point.name!r})"
                )
                continue
            register(plugin)
    # Running from a source tree without installed metadata: the built-ins directly.
    from etl.builtin_plugins import BUILTIN

    for plugin in BUILTIN:
        _PLUGINS.setdefault((plugin.kind, plugin.type), plugin)


def _broken(kind: Kind, name: str, reason: str) -> None:
    _BROKEN[(kind, name)] = reason
    log.warning("%s type not loaded type=%s group=%s reason=%r", kind, name, GROUPS[kind], reason)


class UnknownPluginError(KeyError):
    """No sink/source of that type; the message lists the known ones."""

    def __init__(self, kind: Kind, type_name: str) -> None:
        known = ", ".join(known_types(kind)) or "none"
        self.text = f"unknown {kind} type {type_name!r}; known types: {known}"
        broken = _BROKEN.get((kind, type_name))
        if broken:
            self.text += f" ({type_name!r} is installed but could not be loaded: {broken})"
        super().__init__(self.text)

    def __str__(self) -> str:
        return self.text


def get_plugin(kind: Kind, type_name: str) -> Plugin:
    """The registered plugin, or :class:`UnknownPluginError`."""
    load_plugins()
    try:
        return _PLUGINS[(kind, type_name)]
    except KeyError:
        raise UnknownPluginError(kind, type_name) from None


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def plugin_config_model(kind: Kind, type_name: str) -> type[BaseModel]:
    """The pydantic model that validates a config entry of this type."""
    model: type[BaseModel] = _import(get_plugin(kind, type_name).config)
    return model


def plugin_factory(kind: Kind, type_name: str) -> Any:
    """The implementation class; raises ``MissingExtraError`` naming the extra."""
    from etl.errors import MissingExtraError

    plugin = get_plugin(kind, type_name)
    try:
        return _import(plugin.factory)
    except ModuleNotFoundError as exc:
        if plugin.extra and exc.name and not exc.name.startswith(("etl", "sinks")):
            raise MissingExtraError(exc.name, plugin.extra) from exc
        raise


def install_command(extra: str) -> str:
    """The pip command that installs ``extra`` into the environment running now."""
    return f"{shlex.quote(sys.executable)} -m pip install 'faust-etl[{extra}]'"


def known_types(kind: Kind) -> list[str]:
    """Registered type names of one kind."""
    load_plugins()
    return sorted(t for k, t in _PLUGINS if k == kind)
