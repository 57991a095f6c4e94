"""The supervisor: starts one pipeline per transform file, sink and source.

It runs inside the Faust app as a service. Each pipeline is its own child
service, so one that fails to load, crashes or is halted by its policy never
takes the others down. The supervisor also publishes the worker's status (a
JSON file in the data directory and the web endpoint ``/etl/status/``).

It talks to every pipeline (transform, sink, source, a plugin's) through one
typed protocol, :class:`Pipeline`, and the hot reload talks to it through its
operations (``transform_pipelines``, ``start_transform``, ``restart_transform``,
``stop_pipeline``, ``report_load_error``, ``forget_load_errors``), never its dicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from mode import Service

from etl.config import ETLSettings
from etl.errors import TransformLoadError
from etl.kafka import describe_error, wait_for_broker
from etl.ops.pause_store import PauseStore
from etl.plugins import plugin_factory
from etl.redact import Redactor
from etl.runtime.status import PipelineStatus, State
from etl.runtime.transform import TransformPipeline, ensure_dead_letter_topic
from etl.transforms.loader import TransformSpec, discover_transforms
from etl.transforms.reload import TransformWatcher

log = logging.getLogger("etl.supervisor")

STATUS_INTERVAL = 1.0


@runtime_checkable
class Pipeline(Protocol):
    """What the supervisor needs of a pipeline; a plugin's factory returns one.

    A :class:`mode.Service` (started and stopped as a child of the supervisor) with a
    status, pause/resume, and lag refreshed before each status publication.
    """

    status: PipelineStatus

    async def start(self) -> None:
        """Start running (the supervisor adds it as a runtime dependency)."""

    async def stop(self) -> None:
        """Stop, committing what is safe."""

    def pause(self) -> None:
        """Stop fetching; progress and group membership stay."""

    def resume(self) -> None:
        """Fetch again after :meth:`pause`."""

    def clear_halts(self) -> list[str]:
        """Resume the partitions the ``stop`` policy halted, from their committed offsets;
        their ``topic/partition`` keys ([] for a source or a pipeline whose clients are
        closed: those are restarted instead)."""

    async def refresh_progress(self) -> None:
        """Update committed and end offsets for the status (lag)."""


#: ``factory(config, settings=..., redact=..., loop=..., beacon=...)`` -> a Pipeline.
PipelineFactory = Callable[..., Pipeline]


class PipelineSupervisor(Service):
    """Owns every pipeline of this worker."""

    def __init__(self, settings: ETLSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.redact = Redactor(settings.secret_values())
        self.pipelines: dict[str, Pipeline] = {}
        self.load_errors: dict[str, PipelineStatus] = {}
        self.started_at = time.time()
        self.broker_ready = asyncio.Event()
        self.status_path = settings.data_dir / "status.json"
        self._status_lock = asyncio.Lock()
        self.watcher: TransformWatcher | None = None
        #: Pipelines the operator paused; they stay paused across restarts until resumed.
        self.paused = PauseStore(settings.data_dir / "paused.json")

    async def on_start(self) -> None:
        self.add_future(self._boot())

    async def _boot(self) -> None:
        settings = self.settings
        log.info(
            "worker starting bootstrap=%s transforms_dir=%s",
            settings.kafka.bootstrap_servers,
            settings.transforms_dir,
        )
        self.add_future(self._publish_status_forever())
        await wait_for_broker(settings.kafka)
        self.broker_ready.set()
        await self._ensure_dead_letter_topic(settings.errors.dead_letter_topic)
        specs, errors = discover_transforms(settings.transforms_dir)
        for error in errors:
            self.report_load_error(error)
        for spec in specs:
            await self.start_transform(spec)
        for sink in settings.sink_configs():
            await self._start_plugin("sink", sink)
        for source in settings.source_configs():
            await self._start_plugin("source", source)
        if not self.pipelines and not self.load_errors:
            log.warning(
                "no pipelines: put transform files in %s or add sinks/sources to the config",
                settings.transforms_dir,
            )
        # Started after the initial load; it first catches up with edits made meanwhile.
        self.watcher = TransformWatcher(
            self, settings.transforms_dir, loop=self.loop, beacon=self.beacon
        )
        await self.add_runtime_dependency(self.watcher)

    # ---- pipelines --------------------------------------------------------------

    def report_load_error(self, error: TransformLoadError) -> None:
        """Log a transform file that cannot be used and show it in the status."""
        name = Path(error.path).stem
        where = f"{error.path}:{error.line}" if error.line else error.path
        log.error(
            "transform skipped file=%s line=%s error=%r", error.path, error.line, error.message
        )
        status = PipelineStatus(name=name, kind="transform", path=where)
        status.fail(State.LOAD_ERROR, str(error))
        self.load_errors[error.path] = status

    async def _ensure_dead_letter_topic(self, topic: str) -> None:
        try:
            await ensure_dead_letter_topic(self.settings, topic)
        except Exception as exc:
            # Not fatal for the worker: the pipelines still start; one that needs the
            # topic and cannot write a dead letter halts before that message.
            log.error(
                "cannot create the dead-letter topic topic=%s error=%r",
                topic,
                self.redact(describe_error(exc)),
            )

    async def start_transform(self, spec: TransformSpec) -> TransformPipeline:
        """Start a pipeline for a loaded transform."""
        self.load_errors.pop(str(spec.path), None)
        if spec.dead_letter_topic:
            await self._ensure_dead_letter_topic(spec.dead_letter_topic)
        pipeline = TransformPipeline(
            spec, settings=self.settings, redact=self.redact, loop=self.loop, beacon=self.beacon
        )
        await self._add(f"transform:{spec.name}", pipeline)
        return pipeline

    async def restart_transform(self, spec: TransformSpec) -> TransformPipeline:
        """Stop a transform's pipeline (committing its progress) and start ``spec`` in its place."""
        await self.stop_pipeline(f"transform:{spec.name}")
        return await self.start_transform(spec)

    async def _start_plugin(self, kind: str, config: Any) -> None:
        key = f"{kind}:{config.name}"
        try:
            factory = cast(PipelineFactory, plugin_factory(kind, config.type))  # type: ignore[arg-type]
            pipeline = factory(
                config,
                settings=self.settings,
                redact=self.redact,
                loop=self.loop,
                beacon=self.beacon,
            )
            if not isinstance(pipeline, Pipeline):
                raise TypeError(
                    f"the {config.type!r} plugin made a {type(pipeline).__name__}, which lacks "
                    "status, pause, resume, clear_halts or refresh_progress of "
                    "etl.supervisor.Pipeline"
                )
        except Exception as exc:
            text = self.redact(describe_error(exc))
            log.error("%s failed to start name=%s error=%r", kind, config.name, text)
            status = PipelineStatus(name=config.name, kind=kind)
            status.fail(State.FAILED, text)
            self.load_errors[key] = status
            return
        await self._add(key, pipeline)

    async def _add(self, key: str, pipeline: Pipeline) -> None:
        if key in self.paused:
            pipeline.pause()
            log.info("pipeline starts paused pipeline=%s", key)
        self.pipelines[key] = pipeline
        await self.add_runtime_dependency(cast(Service, pipeline))

    async def stop_pipeline(self, key: str) -> None:
        """Stop a pipeline (committing its progress) and forget it."""
        pipeline = self.pipelines.pop(key, None)
        if pipeline is not None:
            await pipeline.stop()
            self._children = [c for c in self._children if c is not pipeline]

    def transform_pipelines(self) -> list[TransformPipeline]:
        """The running transform pipelines."""
        return [p for p in self.pipelines.values() if isinstance(p, TransformPipeline)]

    def transform_pipeline(self, name: str) -> TransformPipeline | None:
        """The transform pipeline called ``name``, if one runs."""
        pipeline = self.pipelines.get(f"transform:{name}")
        return pipeline if isinstance(pipeline, TransformPipeline) else None

    def load_error_paths(self) -> list[str]:
        """Paths of the transform files that could not be loaded (and plugin keys)."""
        return list(self.load_errors)

    def forget_load_errors(self, file_name: str) -> None:
        """Forget the load errors of transform files called ``file_name`` (any directory)."""
        for key in [k for k in self.load_errors if Path(k).name == file_name]:
            del self.load_errors[key]

    def find(self, name: str) -> Pipeline | None:
        """A pipeline by ``kind:name`` or bare name."""
        if name in self.pipelines:
            return self.pipelines[name]
        for key, pipeline in self.pipelines.items():
            if key.split(":", 1)[1] == name:
                return pipeline
        return None

    def key_of(self, name: str) -> str:
        """The ``kind:name`` key of a pipeline given by key or bare name; KeyError if none."""
        if name in self.pipelines:
            return name
        keys = [key for key in self.pipelines if key.split(":", 1)[1] == name]
        if len(keys) == 1:
            return keys[0]
        if keys:
            raise KeyError(f"{name!r} is ambiguous: use one of {', '.join(sorted(keys))}")
        raise KeyError(f"no pipeline {name!r} in this worker")

    def pause(self, name: str) -> str:
        """Pause a pipeline (by key or name) and remember it across restarts; returns its key."""
        key = self.key_of(name)
        self.pipelines[key].pause()
        self.paused.add(key)
        log.info("pipeline paused pipeline=%s", key)
        return key

    def resume(self, name: str) -> str:
        """Resume a paused pipeline (by key or name); returns its key."""
        key = self.key_of(name)
        self.pipelines[key].resume()
        self.pipelines[key].clear_halts()
        self.paused.discard(key)
        log.info("pipeline resumed pipeline=%s", key)
        return key

    # ---- status -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The worker's status as a JSON-ready dict."""
        items = [p.status.to_dict() for p in self.pipelines.values()]
        items += [s.to_dict() for s in self.load_errors.values()]
        return {
            "worker": {
                "pid": os.getpid(),
                "app_id": self.settings.app_id,
                "bootstrap_servers": self.settings.kafka.bootstrap_servers,
                "broker_ready": self.broker_ready.is_set(),
                "started_at": self.started_at,
                "updated_at": time.time(),
                "transforms_dir": str(self.settings.transforms_dir),
            },
            "pipelines": sorted(items, key=lambda item: (item["kind"], item["name"])),
        }

    async def _publish_status_forever(self) -> None:
        while not self.should_stop:
            try:
                await self.publish_status()
            except Exception as exc:
                log.debug("status publish failed error=%r", exc)
            await self.sleep(STATUS_INTERVAL)

    async def publish_status(self) -> None:
        """Refresh lag and write ``status.json`` atomically."""
        for pipeline in list(self.pipelines.values()):
            await pipeline.refresh_progress()
        # File I/O off the event loop (a slow disk must not stall the pipelines).
        async with self._status_lock:
            text = json.dumps(self.snapshot(), indent=1, default=str)
            await asyncio.to_thread(self._write_status, text)

    def _write_status(self, text: str) -> None:
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.status_path)

    async def on_stop(self) -> None:
        try:
            await self.publish_status()
        except Exception:
            pass
