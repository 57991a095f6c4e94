"""The console's transform files: test a transform on one message, save it, delete it.

Rules kept here:

* a file is only ever read, written or removed inside ``transforms_dir``: the
  name is one plain file name (no path), ends in ``.py``/``.yaml``/``.yml``, is
  not hidden, and must resolve to a file directly in that directory;
* nothing is written that would not load: the text is compiled (a ``.py``) or
  validated and rendered (a template ``.yaml``) first, and a problem comes back
  with its line; the file is written whole and renamed into place, so the
  worker's hot reload never sees half a file;
* a test runs the transform as ``etl test-transform`` does
  (:func:`etl.runtime.usercode.call_once`: a thread of its own, the time limit,
  ``async def`` supported), never on the worker's event loop; loading the module
  (its top-level code) runs on a thread too, under the same limit.

The version a save returns is the one the pipeline's status reports once the
worker runs the file (``TransformSpec.version``), so the page can say when the
saved version is live.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from etl.errors import TransformLoadError
from etl.transforms.loader import TransformSpec, compile_transform, content_version
from etl.transforms.templates import (
    TemplateFile,
    UnknownTemplateError,
    get_template,
    load_template_file,
    validation_problems,
)

#: A transform file name: letters, digits, ``.``, ``_``, ``-``; one of the loaders' suffixes.
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.(py|yaml|yml)$")
TRANSFORM_SUFFIXES = (".py", ".yaml", ".yml")
#: Most bytes of a transform file the console writes.
MAX_FILE_BYTES = 1024 * 1024


class ConsoleRequestError(Exception):
    """A request the console cannot carry out: the HTTP status and what to do."""

    def __init__(
        self, status: int, message: str, *, problems: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.problems:
            out["problems"] = self.problems
        return out


def transform_path(directory: Path, file_name: str) -> Path:
    """``directory/file_name``, refused unless it is a transform file directly in it."""
    if not FILE_NAME.match(file_name) or ".." in file_name:
        raise ConsoleRequestError(
            400,
            f"{file_name!r} is not a transform file name: use letters, digits, '.', '_' or "
            "'-', ending in .py (code) or .yaml (a template), e.g. orders_clean.py",
        )
    root = directory.resolve()
    path = (root / file_name).resolve()
    if path.parent != root:
        raise ConsoleRequestError(400, f"{file_name!r} is not inside {root}")
    return path


def list_files(directory: Path) -> list[dict[str, Any]]:
    """The transform files of the directory: name, kind, size, version."""
    out: list[dict[str, Any]] = []
    if not directory.is_dir():
        return out
    for path in sorted(directory.iterdir()):
        if not path.is_file() or not FILE_NAME.match(path.name):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out.append(
            {
                "file": path.name,
                "name": path.stem,
                "kind": "python" if path.suffix == ".py" else "template",
                "size": len(text.encode()),
                "file_version": content_version(text),
            }
        )
    return out


def read_file(directory: Path, file_name: str) -> dict[str, Any]:
    """A transform file's text (and, for a template, its parsed content)."""
    path = transform_path(directory, file_name)
    if not path.is_file():
        raise ConsoleRequestError(404, f"no transform file {file_name} in {directory}")
    text = path.read_text(encoding="utf-8")
    out: dict[str, Any] = {
        "file": path.name,
        "name": path.stem,
        "path": str(path),
        "kind": "python" if path.suffix == ".py" else "template",
        "text": text,
        "file_version": content_version(text),
    }
    if path.suffix != ".py":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        out["template"] = data if isinstance(data, dict) else None
    return out


# ---- turning a request into transform source ----------------------------------------------


def template_yaml(data: Mapping[str, Any]) -> str:
    """The ``transforms/*.yaml`` text of a template form (empty options left out)."""
    order = ("template", "source_topic", "target_topic", "params", "start_offset", "on_error")
    doc: dict[str, Any] = {}
    for name in (*order, *sorted(set(data) - set(order))):
        value = data.get(name)
        if value is None or value == "":
            continue
        doc[name] = value
    doc.setdefault("params", {})
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _problem_dicts(problems: list[tuple[tuple[str | int, ...], str]]) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in loc], "field": ".".join(str(p) for p in loc), "message": m}
        for loc, m in problems
    ]


def render_form(data: Mapping[str, Any]) -> str:
    """Python source of a template form (``{"template", "source_topic", ..., "params"}``)."""
    try:
        spec_file = TemplateFile(**dict(data))
    except ValidationError as exc:
        problems = _problem_dicts(validation_problems(exc, dict(data)))
        raise ConsoleRequestError(
            400, "; ".join(f"{p['field']}: {p['message']}" for p in problems), problems=problems
        ) from None
    try:
        get_template(spec_file.template)
    except UnknownTemplateError as exc:
        raise ConsoleRequestError(404, str(exc)) from None
    if spec_file.source_topic == spec_file.target_topic:
        message = f"equals source_topic {spec_file.source_topic!r}; must differ"
        problems = [{"loc": ["target_topic"], "field": "target_topic", "message": message}]
        raise ConsoleRequestError(400, f"target_topic: {message}", problems=problems)
    try:
        return spec_file.render()
    except ValidationError as exc:
        problems = _problem_dicts(validation_problems(exc, spec_file.params, ("params",)))
        raise ConsoleRequestError(
            400, "; ".join(f"{p['field']}: {p['message']}" for p in problems), problems=problems
        ) from None


def _load_error(exc: TransformLoadError, file_name: str) -> ConsoleRequestError:
    where = f"{file_name}:{exc.line}" if exc.line else file_name
    problem: dict[str, Any] = {"loc": [], "field": "", "message": exc.message, "line": exc.line}
    return ConsoleRequestError(400, f"{where}: {exc.message}", problems=[problem])


async def _in_thread(fn: Any, *args: Any, timeout: float, what: str) -> Any:
    """``fn(*args)`` on a daemon thread of its own, waited for at most ``timeout``.

    Not the loop's default executor: a module stuck at import (a loop at its top)
    would hold that executor, and the worker's exit, forever; a daemon thread is
    left behind instead, as ``call_once`` leaves a stuck call.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def target() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=target, name="etl-console-load", daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise ConsoleRequestError(
            400, f"{what} did not finish within {timeout:g}s (a loop at the top of the file?)"
        ) from None


async def load_text(directory: Path, file_name: str, text: str, *, timeout: float) -> TransformSpec:
    """Load ``text`` as the transform ``directory/file_name`` would load (nothing written)."""
    path = transform_path(directory, file_name)
    if path.suffix == ".py":
        try:
            spec: TransformSpec = await _in_thread(
                compile_transform, text, path, timeout=timeout, what="loading the module"
            )
        except TransformLoadError as exc:
            raise _load_error(exc, file_name) from None
        return spec
    try:
        spec = await _in_thread(
            _load_template_text, path, text, timeout=timeout, what="loading the template"
        )
    except TransformLoadError as exc:
        raise _load_error(exc, file_name) from None
    return spec


def _load_template_text(path: Path, text: str) -> TransformSpec:
    # Validated and rendered by the loader itself, from a scratch directory with the
    # same file name (so the rendered source, and its version, are the ones the
    # worker will load).
    with tempfile.TemporaryDirectory(prefix="etl-console-") as scratch:
        scratch_path = Path(scratch) / path.name
        scratch_path.write_text(text, encoding="utf-8")
        spec = load_template_file(scratch_path)
    # Tracebacks of a test name the file the module was compiled from.
    spec.extra["compiled_as"] = str(scratch_path)
    spec.path = path
    return spec


def source_of(body: Mapping[str, Any]) -> str:
    """The file text a request carries: ``text``, or a ``template`` form as YAML."""
    if isinstance(body.get("template"), Mapping):
        return template_yaml(body["template"])
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConsoleRequestError(
            400, 'send the transform as {"text": "<python source>"} or {"template": {...}}'
        )
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ConsoleRequestError(413, f"a transform file may have at most {MAX_FILE_BYTES} bytes")
    return text


# ---- test ----------------------------------------------------------------------------------


@dataclass
class TrialMessage:
    """The sample message a test runs on (as ``etl test-transform --key/--value``)."""

    key: str | None
    value: str | None
    topic: str | None = None
    partition: int = 0
    offset: int = 0
    timestamp: int | None = None
    headers: dict[str, str] | None = None

    @classmethod
    def from_body(cls, data: Any) -> TrialMessage:
        if not isinstance(data, Mapping):
            data = {}
        headers = data.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConsoleRequestError(400, "message.headers: expected an object of NAME: TEXT")

        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        try:
            timestamp = data.get("timestamp")
            return cls(
                key=text("key"),
                value=text("value"),
                topic=text("topic") or None,
                partition=int(data.get("partition") or 0),
                offset=int(data.get("offset") or 0),
                timestamp=None if timestamp in (None, "") else int(timestamp),
                headers={str(k): str(v) for k, v in headers.items()},
            )
        except (TypeError, ValueError):
            raise ConsoleRequestError(
                400, "message.partition, .offset and .timestamp must be numbers"
            ) from None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=_bytes_text))


def _bytes_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


async def run_trial(spec: TransformSpec, sample: TrialMessage, timeout: float) -> dict[str, Any]:
    """Run ``spec`` on the sample message: the output records, or the error with its line."""
    from etl.message import make_message, normalize_result
    from etl.runtime.usercode import call_once

    message = make_message(
        sample.key,
        sample.value,
        topic=sample.topic or spec.source_topic,
        partition=sample.partition,
        offset=sample.offset,
        timestamp=sample.timestamp,
        headers=sample.headers,
    )
    limit = spec.timeout or timeout
    loop = asyncio.get_running_loop()
    started = loop.time()
    base: dict[str, Any] = {
        "name": spec.name,
        "source_topic": spec.source_topic,
        "target_topic": spec.target_topic,
        "version": spec.version,
        "is_async": spec.is_async,
        "time_limit_s": limit,
        "input": _jsonable(message),
    }
    try:
        # call_once starts the call's own thread (or event loop, for async def); it
        # waits for it, so it runs off the worker's loop as well.
        result = await asyncio.to_thread(call_once, spec.deal_message, message, limit)
        records = normalize_result(result)
    except (Exception, SystemExit) as exc:
        compiled_as = str(spec.extra.get("compiled_as", spec.path))
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == compiled_as]
        line = frames[-1].lineno if frames else None
        where = f"{spec.path.name}:{line}" if line else spec.path.name
        return {
            **base,
            "ok": False,
            "error": f"{where}: {type(exc).__name__}: {exc}",
            "exception": type(exc).__name__,
            "line": line,
            "elapsed_ms": round((loop.time() - started) * 1000, 1),
        }
    return {
        **base,
        "ok": True,
        "filtered": not records,
        "output": _jsonable(result),
        "records": [
            {
                "key": None if r.key is None else r.key.decode("utf-8", "backslashreplace"),
                "value": None if r.value is None else r.value.decode("utf-8", "backslashreplace"),
                "headers": {
                    name: None if data is None else data.decode("utf-8", "backslashreplace")
                    for name, data in (r.headers or [])
                },
            }
            for r in records
        ],
        "elapsed_ms": round((loop.time() - started) * 1000, 1),
    }


# ---- save and delete ----------------------------------------------------------------------


def _siblings(path: Path) -> list[Path]:
    """Other transform files of the same name (``x.py`` beside ``x.yaml`` cannot both run)."""
    return [
        path.with_suffix(suffix)
        for suffix in TRANSFORM_SUFFIXES
        if suffix != path.suffix and path.with_suffix(suffix).exists()
    ]


def write_file(path: Path, text: str) -> None:
    """Write whole, then rename into place (the watcher never loads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.console-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def save_file(
    directory: Path, file_name: str, body: Mapping[str, Any], *, timeout: float
) -> dict[str, Any]:
    """Validate and write a transform file; what was written and the version to expect."""
    path = transform_path(directory, file_name)
    text = source_of(body)
    existed, siblings = await asyncio.to_thread(lambda: (path.exists(), _siblings(path)))
    if body.get("create") and existed:
        raise ConsoleRequestError(
            409, f"{file_name} exists already in {directory}: open it to edit, or pick another name"
        )
    if siblings:
        raise ConsoleRequestError(
            409,
            f"{siblings[0].name} exists already: a transform named {path.stem!r} cannot have "
            "two files; edit that one, or delete it first",
        )
    spec = await load_text(directory, file_name, text, timeout=timeout)
    await asyncio.to_thread(write_file, path, text)
    return {
        "file": path.name,
        "path": str(path),
        "created": not existed,
        "name": spec.name,
        "key": f"transform:{spec.name}",
        "source_topic": spec.source_topic,
        "target_topic": spec.target_topic,
        "version": spec.version,
        "file_version": content_version(text),
    }


def delete_file(directory: Path, file_name: str, *, dry_run: bool) -> dict[str, Any]:
    """Remove a transform file (the hot reload stops its pipeline after committing)."""
    path = transform_path(directory, file_name)
    if not path.is_file():
        raise ConsoleRequestError(404, f"no transform file {file_name} in {directory}")
    out: dict[str, Any] = {
        "file": path.name,
        "pipeline": f"transform:{path.stem}",
        "dry_run": dry_run,
        "would_remove" if dry_run else "removed": [str(path)],
    }
    if not dry_run:
        path.unlink()
    return out
