"""Hot reload: watch ``transforms/`` and apply every change to the running pipelines.

The supervisor starts one :class:`TransformWatcher` after the initial load. For
each changed transform file (``.py``, ``.yaml``, ``.yml``; hidden and ``_``
files are not transforms):

* a new file starts a pipeline;
* an edit that loads is swapped in at the next batch boundary when the topics
  and options are unchanged, so no message is handled by both versions; when
  ``SOURCE_TOPIC``/``TARGET_TOPIC``/``START_OFFSET``/``TARGET_PARTITIONS``
  changed (or the pipeline had stopped), the pipeline is stopped, committing its
  progress, and started again on the new version;
* an edit that does not load (syntax error, import error, missing
  ``deal_message``, bad template params) leaves the running version alone; the
  error is logged with file and line and shown as the pipeline's status error
  until a fixed version is saved;
* a deleted file stops its pipeline after committing its progress.

Whatever the file system reports, the watcher compares the file's content hash
with the version that runs, so a touch or a save without changes does nothing.

Starting or restarting a pipeline costs a consumer-group join (seconds), where a
swap costs nothing. So a change that starts or restarts waits until its file has
been left alone for ``SETTLE_MS``: a user who saves a new file three times while
writing it gets one join, with the last version, not three joins in a row.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mode import Service
from watchfiles import Change, awatch

from etl.errors import TransformLoadError
from etl.runtime.status import State
from etl.transforms.loader import TransformSpec, content_version, is_transform_file, load_any

if TYPE_CHECKING:
    from etl.runtime.transform import TransformPipeline

log = logging.getLogger("etl.reload")

#: After a change, wait until the directory has been quiet this long ...
STEP_MS = 100
#: ... but never gather changes for longer than this.
DEBOUNCE_MS = 800
#: A start or restart (a group join) waits until its file was left alone this long.
SETTLE_MS = 1500
RELOAD_ERROR_PREFIX = "reload failed"
_DEAD_STATES = (State.HALTED, State.FAILED, State.FINISHED)


def file_version(path: Path) -> str | None:
    """The content hash the loaders record for this file, or None if it cannot be read."""
    try:
        return content_version(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return content_version(path.read_bytes())
    except OSError:
        return None


def transform_files(directory: Path) -> set[str]:
    """Names of the transform files in the directory now."""
    return {p.name for p in directory.iterdir() if p.is_file() and is_transform_file(p)}


def spec_file_version(spec: TransformSpec) -> str:
    """The content hash of the file a spec was loaded from."""
    return str(spec.extra.get("file_version", spec.version))


class TransformHost(Protocol):
    """The supervisor's operations the watcher uses (see :mod:`etl.supervisor`)."""

    @property
    def should_stop(self) -> bool: ...

    def transform_pipelines(self) -> list[TransformPipeline]: ...

    def transform_pipeline(self, name: str) -> TransformPipeline | None: ...

    def load_error_paths(self) -> list[str]: ...

    def forget_load_errors(self, file_name: str) -> None: ...

    def report_load_error(self, error: TransformLoadError) -> None: ...

    async def start_transform(self, spec: TransformSpec) -> TransformPipeline: ...

    async def restart_transform(self, spec: TransformSpec) -> TransformPipeline: ...

    async def stop_pipeline(self, key: str) -> None: ...


class TransformWatcher(Service):
    """Applies changes of the transforms directory to the supervisor's pipelines."""

    def __init__(
        self,
        supervisor: TransformHost,
        directory: Path,
        *,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
        settle_ms: int = SETTLE_MS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settle_ms = settle_ms
        #: Starts/restarts waiting for their file to settle, by file name.
        self._settling: dict[str, asyncio.Task[None]] = {}
        self.pipeline_supervisor = supervisor
        self.directory = Path(directory)
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        #: Content hash of the last version handed to each file's pipeline (start or swap).
        self.applied: dict[str, str] = {}
        self._stop_event = asyncio.Event()

    async def on_start(self) -> None:
        # watchfiles logs every batch of changes at INFO; our own lines say what was done.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        self.add_future(self._watch_forever())

    async def on_stop(self) -> None:
        self._stop_event.set()
        for task in self._settling.values():
            task.cancel()
        self._settling.clear()

    # ---- watching ---------------------------------------------------------------------

    @staticmethod
    def _wanted(change: Change, path: str) -> bool:
        return is_transform_file(Path(path))

    async def _watch_forever(self) -> None:
        announced = False
        while not self.should_stop:
            if not self.directory.is_dir():
                if not announced:
                    log.info("transforms directory missing, waiting dir=%s", self.directory)
                    announced = True
                await self.sleep(1.0)
                continue
            announced = False
            try:
                # Catch up with changes made before the watch began (or while it was down).
                await self.reconcile()
                log.info("watching transforms dir=%s", self.directory)
                async for changes in awatch(
                    self.directory,
                    watch_filter=self._wanted,
                    step=self.step_ms,
                    debounce=self.debounce_ms,
                    stop_event=self._stop_event,
                    recursive=False,
                ):
                    names = sorted({Path(path).name for _, path in changes})
                    for name in names:
                        await self.on_change(self.directory / name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("transform watcher failed, restarting error=%r", exc)
                await self.sleep(1.0)

    async def reconcile(self) -> None:
        """Bring the pipelines in line with the directory as it is now."""
        on_disk = transform_files(self.directory)
        for pipeline in list(self._transform_pipelines()):
            if pipeline.spec.path.name not in on_disk:
                await self.reload_file(self.directory / pipeline.spec.path.name)
        failed = {Path(path).name for path in self.pipeline_supervisor.load_error_paths()}
        for name in sorted(on_disk - failed):
            await self.reload_file(self.directory / name)

    async def on_change(self, path: Path) -> None:
        """Apply a change now, or once the file settles if it starts or restarts a pipeline."""
        previous = self._settling.pop(path.name, None)
        if previous is not None:
            previous.cancel()
        if self.settle_ms > 0 and self._needs_join(path):
            log.info(
                "transform changed, starting when the file is left alone for %.1fs file=%s",
                self.settle_ms / 1000,
                path,
            )
            self._settling[path.name] = asyncio.ensure_future(self._apply_settled(path))
            return
        await self.reload_file(path)

    def _needs_join(self, path: Path) -> bool:
        """True when applying the file would start or restart its pipeline."""
        if file_version(path) is None:
            return False
        pipeline = self._pipeline_for(path)
        if pipeline is None or self._is_dead(pipeline):
            return True
        try:
            return not pipeline.spec.same_topology(load_any(path))
        except TransformLoadError:
            return False

    async def _apply_settled(self, path: Path) -> None:
        await asyncio.sleep(self.settle_ms / 1000)
        if self._settling.get(path.name) is asyncio.current_task():
            del self._settling[path.name]
        try:
            await self.reload_file(path)
        except Exception as exc:
            log.error("transform reload failed file=%s error=%r", path, exc)

    # ---- applying one file ----------------------------------------------------------------

    async def reload_file(self, path: Path) -> None:
        """Apply the current state of one transform file."""
        if self.pipeline_supervisor.should_stop:
            return
        pipeline = self._pipeline_for(path)
        version = file_version(path)
        if version is None:
            await self._removed(path, pipeline)
            return
        running = pipeline if pipeline is not None and not self._is_dead(pipeline) else None
        alive = running is not None
        if running is not None and version == self.applied.get(
            path.name, spec_file_version(running.spec)
        ):
            self._clear_reload_error(running)
            return
        try:
            spec = load_any(path)
        except TransformLoadError as exc:
            self._load_failed(exc, running)
            return
        other = self.pipeline_supervisor.transform_pipeline(spec.name)
        if other is not None and other is not pipeline:
            self._load_failed(
                TransformLoadError(
                    str(path), f"a transform named {spec.name!r} exists already: {other.spec.path}"
                ),
                None,
            )
            return
        self.applied[path.name] = spec_file_version(spec)
        if pipeline is None:
            log.info("transform added file=%s version=%s", path, spec.version)
            await self.pipeline_supervisor.start_transform(spec)
        elif not alive or not pipeline.spec.same_topology(spec):
            reason = "pipeline had stopped" if not alive else "topics or options changed"
            log.info(
                "transform restarting file=%s version=%s previous=%s reason=%r",
                path,
                spec.version,
                pipeline.spec.version,
                reason,
            )
            await self.pipeline_supervisor.restart_transform(spec)
        else:
            self._clear_reload_error(pipeline)
            pipeline.swap(spec)
            log.info(
                "transform reload scheduled file=%s version=%s previous=%s "
                "(live from the next batch)",
                path,
                spec.version,
                pipeline.spec.version,
            )

    async def _removed(self, path: Path, pipeline: TransformPipeline | None) -> None:
        self.pipeline_supervisor.forget_load_errors(path.name)
        self.applied.pop(path.name, None)
        if pipeline is None:
            return
        key = f"transform:{pipeline.name}"
        log.info("transform removed file=%s pipeline=%s, stopping it", path, pipeline.name)
        await self.pipeline_supervisor.stop_pipeline(key)
        log.info("transform stopped pipeline=%s (progress committed)", pipeline.name)
        # A file of the same name that could not start beside this one (x.py next to
        # x.yaml, e.g. after ejecting a template) gets its turn now.
        for key in self.pipeline_supervisor.load_error_paths():
            sibling = Path(key)
            if sibling.stem == pipeline.name and sibling.name != path.name:
                await self.reload_file(self.directory / sibling.name)

    def _load_failed(self, exc: TransformLoadError, running: TransformPipeline | None) -> None:
        if running is None:
            self.pipeline_supervisor.report_load_error(exc)
            return
        where = f"{exc.path}:{exc.line}" if exc.line else exc.path
        log.error(
            "transform reload failed, previous version keeps running "
            "file=%s line=%s error=%r running_version=%s",
            exc.path,
            exc.line,
            exc.message,
            running.spec.version,
        )
        running.status.fail(
            running.status.state,
            f"{RELOAD_ERROR_PREFIX} (version {running.spec.version} keeps running): "
            f"{where}: {exc.message}",
        )

    # ---- helpers ----------------------------------------------------------------------------

    def _transform_pipelines(self) -> list[TransformPipeline]:
        return self.pipeline_supervisor.transform_pipelines()

    def _pipeline_for(self, path: Path) -> TransformPipeline | None:
        for pipeline in self._transform_pipelines():
            if pipeline.spec.path.name == path.name:
                return pipeline
        return None

    @staticmethod
    def _is_dead(pipeline: TransformPipeline) -> bool:
        return pipeline.status.state in _DEAD_STATES and pipeline.consumer is None

    @staticmethod
    def _clear_reload_error(pipeline: TransformPipeline) -> None:
        error = pipeline.status.error
        if error and error.startswith(RELOAD_ERROR_PREFIX):
            pipeline.status.error = None
            pipeline.status.error_at = None
