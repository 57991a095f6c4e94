"""Load ``transforms/*.py`` files into :class:`TransformSpec` objects.

A file that fails to compile or import, lacks ``deal_message`` or a topic, or
names the same source and target raises :class:`TransformLoadError` naming the
file and line; :func:`discover_transforms` collects those errors so that the
other files still run.
"""

from __future__ import annotations

import ast
import inspect
import hashlib
import re
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etl.errors import TransformLoadError

START_OFFSETS = ("earliest", "latest")
#: Kafka's legal topic names.
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
TOPIC_NAME = re.compile(TOPIC_PATTERN)
POLICIES = ("continue", "stop")
GUARANTEES = ("at_least_once", "exactly_once")


@dataclass
class TransformSpec:
    """A loaded transform: its topics, options and the function."""

    name: str
    path: Path
    source_topic: str
    target_topic: str
    deal_message: Callable[[dict[str, Any]], Any]
    start_offset: str = "latest"
    on_error: str | None = None
    target_partitions: int | None = None
    #: This transform's dead-letter topic (``DEAD_LETTER_TOPIC``); None = ``errors.dead_letter_topic``.
    dead_letter_topic: str | None = None
    #: Short hash of what was loaded (file text, or rendered template), logged as the version.
    version: str = ""
    #: Seconds one call may take (``TIMEOUT``); None = the ``transform_timeout`` setting.
    timeout: float | None = None
    #: Calls in flight for ``async def deal_message`` (``CONCURRENCY``); None = the setting.
    concurrency: int | None = None
    #: ``PROCESSING_GUARANTEE``; None = ``kafka.processing_guarantee``.
    processing_guarantee: str | None = None
    origin: str = "python"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        """True for ``async def deal_message``."""
        return inspect.iscoroutinefunction(self.deal_message)

    def same_topology(self, other: TransformSpec) -> bool:
        """True when a swap keeps the consumer: same topics and options."""
        return (
            self.source_topic == other.source_topic
            and self.target_topic == other.target_topic
            and self.start_offset == other.start_offset
            and self.target_partitions == other.target_partitions
            and self.dead_letter_topic == other.dead_letter_topic
            and self.processing_guarantee == other.processing_guarantee
        )


def content_version(text: str | bytes) -> str:
    """The first 12 hex digits of the SHA-256 of the text."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:12]


def _assignment_lines(tree: ast.Module) -> dict[str, int]:
    lines: dict[str, int] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[node.name] = node.lineno
        for target in targets:
            if isinstance(target, ast.Name):
                lines[target.id] = node.lineno
    return lines


def _error_line(exc: BaseException, filename: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def compile_transform(
    source: str,
    path: Path,
    *,
    name: str | None = None,
    origin: str = "python",
    defaults: dict[str, Any] | None = None,
) -> TransformSpec:
    """Compile and execute transform source text; validate the contract."""
    filename = str(path)
    try:
        tree = ast.parse(source, filename=filename)
        code = compile(tree, filename, "exec")
    except SyntaxError as exc:
        raise TransformLoadError(filename, f"syntax error: {exc.msg}", exc.lineno) from None
    lines = _assignment_lines(tree)
    module = types.ModuleType(f"etl_transform_{path.stem}")
    module.__file__ = filename
    namespace = module.__dict__
    try:
        exec(code, namespace)  # running the user's transform is the product
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise TransformLoadError(filename, f"raised {type(exc).__name__} on import") from None
        raise TransformLoadError(
            filename,
            f"error on import: {type(exc).__name__}: {exc}",
            _error_line(exc, filename),
        ) from None

    defaults = defaults or {}

    def setting(attr: str) -> Any:
        return namespace.get(attr, defaults.get(attr))

    problems: list[tuple[str, int | None]] = []
    source_topic = setting("SOURCE_TOPIC")
    target_topic = setting("TARGET_TOPIC")
    for attr, value in (("SOURCE_TOPIC", source_topic), ("TARGET_TOPIC", target_topic)):
        if value is None:
            problems.append((f"{attr} is not set", None))
        elif not isinstance(value, str) or not value.strip():
            problems.append((f"{attr} must be a non-empty string", lines.get(attr)))
    if isinstance(source_topic, str) and source_topic == target_topic:
        problems.append(
            (
                f"SOURCE_TOPIC and TARGET_TOPIC are both {source_topic!r}; they must differ",
                lines.get("TARGET_TOPIC"),
            )
        )
    func = namespace.get("deal_message")
    if func is None:
        problems.append(("no deal_message(message) function defined", None))
    elif not callable(func):
        problems.append(("deal_message is not a function", lines.get("deal_message")))
    start_offset = setting("START_OFFSET") or "latest"
    if start_offset not in START_OFFSETS:
        problems.append(
            (
                f"START_OFFSET must be one of {', '.join(START_OFFSETS)}, not {start_offset!r}",
                lines.get("START_OFFSET"),
            )
        )
    on_error = setting("ON_ERROR")
    if on_error is not None and on_error not in POLICIES:
        problems.append(
            (
                f"ON_ERROR must be one of {', '.join(POLICIES)}, not {on_error!r}",
                lines.get("ON_ERROR"),
            )
        )
    partitions = setting("TARGET_PARTITIONS")
    if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
        problems.append(
            ("TARGET_PARTITIONS must be a positive int", lines.get("TARGET_PARTITIONS"))
        )
    dead_letter_topic = setting("DEAD_LETTER_TOPIC")
    if dead_letter_topic is not None:
        line = lines.get("DEAD_LETTER_TOPIC")
        if not isinstance(dead_letter_topic, str) or not TOPIC_NAME.match(dead_letter_topic):
            problems.append(
                (f"DEAD_LETTER_TOPIC {dead_letter_topic!r} is not a Kafka topic name", line)
            )
        elif dead_letter_topic in (source_topic, target_topic):
            problems.append(
                (f"DEAD_LETTER_TOPIC {dead_letter_topic!r} must differ from the topics", line)
            )
    timeout = setting("TIMEOUT")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        problems.append(("TIMEOUT must be a positive number of seconds", lines.get("TIMEOUT")))
    concurrency = setting("CONCURRENCY")
    if concurrency is not None and (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= 1024
    ):
        problems.append(("CONCURRENCY must be an int from 1 to 1024", lines.get("CONCURRENCY")))
    guarantee = setting("PROCESSING_GUARANTEE")
    if guarantee is not None and guarantee not in GUARANTEES:
        problems.append(
            (
                f"PROCESSING_GUARANTEE must be one of {', '.join(GUARANTEES)}, not {guarantee!r}",
                lines.get("PROCESSING_GUARANTEE"),
            )
        )
    if problems:
        message = "; ".join(text for text, _ in problems)
        line = next((ln for _, ln in problems if ln), None)
        raise TransformLoadError(filename, message, line)

    return TransformSpec(
        name=name or path.stem,
        path=path,
        source_topic=source_topic,
        target_topic=target_topic,
        deal_message=func,  # type: ignore[arg-type]
        start_offset=start_offset,
        on_error=on_error,
        target_partitions=partitions,
        dead_letter_topic=dead_letter_topic,
        timeout=float(timeout) if timeout is not None else None,
        concurrency=concurrency,
        processing_guarantee=guarantee,
        version=content_version(source),
        origin=origin,
    )


def load_transform_file(path: str | Path) -> TransformSpec:
    """Load one ``.py`` transform file."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TransformLoadError(str(path), f"cannot read: {exc}") from None
    return compile_transform(source, path)


#: Loaders by file suffix; the template loader registers ``.yaml``/``.yml``.
LOADERS: dict[str, Callable[[Path], TransformSpec]] = {".py": load_transform_file}


def is_transform_file(path: Path) -> bool:
    """Files the worker treats as transforms (hidden and ``_private`` files are not)."""
    return path.suffix in LOADERS and not path.name.startswith(("_", "."))


def load_any(path: Path) -> TransformSpec:
    """Load a transform file with the loader for its suffix."""
    return LOADERS[path.suffix](path)


def discover_transforms(
    directory: str | Path,
) -> tuple[list[TransformSpec], list[TransformLoadError]]:
    """Load every transform file of the directory; bad files become errors, not exceptions."""
    directory = Path(directory)
    specs: list[TransformSpec] = []
    errors: list[TransformLoadError] = []
    if not directory.is_dir():
        return specs, errors
    names: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or not is_transform_file(path):
            continue
        try:
            spec = load_any(path)
        except TransformLoadError as exc:
            errors.append(exc)
            continue
        if spec.name in names:
            errors.append(
                TransformLoadError(
                    str(path), f"a transform named {spec.name!r} exists already: {names[spec.name]}"
                )
            )
            continue
        names[spec.name] = path
        specs.append(spec)
    return specs, errors
