"""``connectors/*.yaml``: one connector per file, watched while the worker runs.

The file's name (without ``.yaml``/``.yml``) is the connector's name. A new file
starts the connector, an edit applies the new configuration (see
:mod:`etl.connectors.manager`), a deleted file stops it. A file that does not
load keeps the running version and is reported with its line and field. As in
``transforms/``, a file is compared by its content hash, so a touch does nothing;
hidden files and files starting with ``_`` are not connectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from mode import Service
from watchfiles import awatch

from etl.config import substitute_env
from etl.connectors.spec import ConnectorSpec, parse_connector

log = logging.getLogger("etl.connectors")

SUFFIXES = (".yaml", ".yml")


def is_connector_file(path: Path) -> bool:
    return path.suffix in SUFFIXES and not path.name.startswith((".", "_"))


def file_version(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


class ConnectorFileError(Exception):
    """A connector file that cannot be used: every problem as ``file:line: field: message``."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("; ".join(problems))


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _line_of(root: Any, location: str) -> int:
    """The 1-based line of ``location`` (``columns[0].name``) in the YAML node tree."""
    node, line = root, (root.start_mark.line + 1 if root is not None else 1)
    for match in _PART.finditer(location):
        key, index = match.group(1), match.group(2)
        child = None
        if key is not None and isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == key:
                    line = k.start_mark.line + 1
                    child = v
                    break
        elif index is not None and isinstance(node, yaml.SequenceNode):
            items = node.value
            if int(index) < len(items):
                child = items[int(index)]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def load_connector_file(path: Path, environ: dict[str, str]) -> ConnectorSpec:
    """Read and validate one connector file; :class:`ConnectorFileError` with lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectorFileError(path, [f"{path}: cannot read: {exc}"]) from None
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConnectorFileError(path, [f"{where}: invalid YAML: {problem}"]) from None
    data, problems = substitute_env(raw if raw is not None else {}, environ)
    name = path.stem
    spec, invalid = (
        (None, [])
        if problems
        else parse_connector(data, name=name, origin=f"file:{path}", version=file_version(text))
    )
    problems += invalid
    if spec is None:
        lines = []
        for problem in problems or ["<root>: invalid connector"]:
            location = problem.split(":", 1)[0]
            lines.append(f"{path}:{_line_of(root, location)}: {problem}")
        raise ConnectorFileError(path, lines)
    return spec


class ConnectorWatcher(Service):
    """Applies the changes of ``connectors/`` to the connector manager."""

    def __init__(
        self,
        directory: Path,
        *,
        apply: Callable[[ConnectorSpec], Awaitable[None]],
        remove: Callable[[str, str], Awaitable[None]],
        report: Callable[[str, str, list[str]], None],
        environ: Callable[[], dict[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.directory = Path(directory)
        self._apply = apply
        self._remove = remove
        self._report = report
        self._environ = environ
        #: file name -> the version of it that runs (or failed to load).
        self.versions: dict[str, str] = {}
        self._stop_event = asyncio.Event()

    async def on_start(self) -> None:
        self.add_future(self._watch_forever())

    async def on_stop(self) -> None:
        self._stop_event.set()

    async def reconcile(self) -> None:
        """Bring the connectors in line with the directory as it is now."""
        present = (
            {p.name for p in self.directory.iterdir() if p.is_file() and is_connector_file(p)}
            if self.directory.is_dir()
            else set()
        )
        for name in sorted(set(self.versions) - present):
            await self.on_change(self.directory / name)
        for name in sorted(present):
            await self.on_change(self.directory / name)

    async def on_change(self, path: Path) -> None:
        """Apply the current state of one file."""
        name = path.stem
        origin = f"file:{path}"
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            if self.versions.pop(path.name, None) is not None:
                log.info("connector file removed file=%s connector=%s", path, name)
                await self._remove(name, origin)
            return
        except (OSError, UnicodeDecodeError):
            text = ""
        version = file_version(text)
        if self.versions.get(path.name) == version:
            return
        self.versions[path.name] = version
        try:
            spec = await asyncio.to_thread(load_connector_file, path, self._environ())
        except ConnectorFileError as exc:
            for line in exc.problems:
                log.error("connector file not applied (the running version stays) %s", line)
            self._report(name, origin, exc.problems)
            return
        await self._apply(spec)

    async def _watch_forever(self) -> None:
        announced = False
        while not self.should_stop:
            if not self.directory.is_dir():
                if not announced:
                    log.info("connectors directory missing, waiting dir=%s", self.directory)
                    announced = True
                await self.sleep(2.0)
                continue
            announced = False
            try:
                await self.reconcile()
                async for changes in awatch(
                    self.directory,
                    watch_filter=lambda _change, p: is_connector_file(Path(p)),
                    step=100,
                    debounce=800,
                    stop_event=self._stop_event,
                    recursive=False,
                ):
                    for name in sorted({Path(p).name for _c, p in changes}):
                        await self.on_change(self.directory / name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("connector watcher failed, restarting error=%r", exc)
                await self.sleep(1.0)
