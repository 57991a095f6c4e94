"""One connector's configuration: where it came from, validated by its type's model.

A connector is a sink or source entry (the options of ``sinks:``/``sources:``)
plus ``kind`` where the type alone does not say it (``object_store`` is both).
Its origin is ``etl.yaml``, a file of ``connectors/``, or the API (the control
topic). Names are unique across all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from etl.config import PluginConfigBase, validate_plugin
from etl.plugins import known_types

Kind = Literal["sink", "source"]

#: Options whose change is applied without leaving the consumer group.
IN_PLACE_OPTIONS = frozenset(
    {
        "batch_size",
        "batch_bytes",
        "linger_ms",
        "max_retries",
        "retry_backoff_ms",
        "retry_backoff_max_ms",
    }
)


#: Options whose change restarts the pipeline (a new consumer in the group).
REJOIN_OPTIONS = frozenset(
    {
        "type",
        "topics",
        "start_offset",
        "on_error",
        "dead_letter_topic",
        "runtime_error_topic",
        "skip_error",
    }
)


@dataclass
class ConnectorSpec:
    """A validated connector: its model instance, the raw options and where it came from."""

    name: str
    kind: Kind
    config: PluginConfigBase
    raw: dict[str, Any]
    origin: str  # "etl.yaml" | "file:<path>" | "api"
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def type(self) -> str:
        return str(self.config.type)

    def changes(self, other: ConnectorSpec) -> set[str]:
        """Options whose validated values differ between the two."""
        mine = self.config.model_dump()
        theirs = other.config.model_dump()
        names = set(mine) | set(theirs)
        changed = {n for n in names if mine.get(n) != theirs.get(n)}
        if self.kind != other.kind:
            changed.add("kind")
        return changed

    def in_place(self, other: ConnectorSpec) -> bool:
        """True when going from ``other`` to this one touches only batching and retries."""
        changed = self.changes(other)
        return bool(changed) and changed <= IN_PLACE_OPTIONS and self.kind == "sink"

    def reopens(self, other: ConnectorSpec) -> bool:
        """True when a sink can take this change by reopening its destination in place
        (the consumer keeps its group and partitions): anything but its topics, its
        error handling and its type."""
        changed = self.changes(other)
        return self.kind == "sink" and bool(changed) and not changed & REJOIN_OPTIONS


def kind_of(raw: dict[str, Any]) -> tuple[Kind | None, str | None]:
    """The connector's kind: ``kind:`` if given, else the only kind its type has."""
    given = raw.get("kind")
    if given is not None:
        if given not in ("sink", "source"):
            return None, f"kind: {given!r} is not one of: sink, source"
        return given, None
    type_name = raw.get("type")
    if not type_name:
        return None, "type: field required"
    kinds = [k for k in ("sink", "source") if type_name in known_types(k)]  # type: ignore[arg-type]
    if len(kinds) == 1:
        return kinds[0], None  # type: ignore[return-value]
    if not kinds:
        sinks, sources = known_types("sink"), known_types("source")
        return None, (
            f"type: unknown type {type_name!r}; sinks: {', '.join(sinks)}; "
            f"sources: {', '.join(sources)}"
        )
    return None, f"kind: field required ({type_name!r} is both a sink and a source type)"


def parse_connector(
    raw: Any, *, name: str | None, origin: str, version: str = ""
) -> tuple[ConnectorSpec | None, list[str]]:
    """Validate a connector; (spec, []) or (None, every problem as ``field: message``)."""
    if not isinstance(raw, dict):
        return None, ["<root>: a connector is a mapping of options"]
    data = dict(raw)
    if name is not None:
        if data.get("name") not in (None, name):
            return None, [f"name: {data['name']!r} does not match the file name {name!r}"]
        data["name"] = name
    kind, problem = kind_of(data)
    if kind is None:
        return None, [problem or "kind: field required"]
    data.pop("kind", None)
    config, problems = validate_plugin(kind, data)
    if config is None:
        return None, problems
    return ConnectorSpec(config.name, kind, config, data, origin, version), []
