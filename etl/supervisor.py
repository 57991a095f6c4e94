"""The supervisor: starts one pipeline per transform file, sink and source.

It runs inside the Faust app as a service. Each pipeline is its own child
service, so one that fails to load, crashes or is halted by its policy never
takes the others down. The supervisor also publishes the worker's status (a
JSON file in the data directory and the web endpoint ``/etl/status/``).

It talks to every pipeline (transform, sink, source, a plugin's) through one
typed protocol, :class:`Pipeline`, and the hot reload talks to it through its
operations (``transform_pipelines``, ``start_transform``, ``restart_transform``,
``stop_pipeline``, ``report_load_error``, ``forget_load_errors``), never its dicts.

Operators' requests (pause, resume, stop, restart) go through the cluster's
control topic (:mod:`etl.control`), never straight to a pipeline: every worker,
this one included, applies them when it reads them back, so all workers obey
and a worker that starts later obeys too. A pipeline stopped by an operator is
kept (state ``stopped``, consumer closed, out of its group) with what it takes
to start it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast, runtime_checkable

from mode import Service

from etl.alerts.evaluator import AlertEvaluator
from etl.config import ETLSettings
from etl.connectors.files import ConnectorWatcher
from etl.connectors.manager import ConnectorManager
from etl.connectors.spec import ConnectorSpec
from etl.control.plane import ControlPlane, migrate_pause_file
from etl.control.state import CONNECTOR, DESIRED, RESTART, DesiredState
from etl.errors import TransformLoadError
from etl.kafka import describe_error, ensure_topics, wait_for_broker
from etl.ops.cluster import ClusterView
from etl.ops.logs import LOG_PARTITIONS, RETENTION_MS, PipelineLogs, logs_topic, ship_forever
from etl.plugins import plugin_factory
from etl.redact import Redactor
from etl.runtime.consumer import worker_identity
from etl.runtime.status import PipelineStatus, State
from etl.runtime.transform import TransformPipeline, ensure_dead_letter_topic
from etl.transforms.loader import TransformSpec, discover_transforms
from etl.transforms.reload import TransformWatcher

log = logging.getLogger("etl.supervisor")

STATUS_INTERVAL = 1.0
#: How often the group-wide offsets (committed, log start, true end) are read.
CLUSTER_INTERVAL = 2.0


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

    async def refresh_progress(self) -> None:
        """Update committed and end offsets for the status (lag)."""


#: ``factory(config, settings=..., redact=..., loop=..., beacon=...)`` -> a Pipeline.
PipelineFactory = Callable[..., Pipeline]


@dataclass
class Recipe:
    """What it takes to start a pipeline again (after a stop or for a restart)."""

    kind: str  # transform | sink | source
    spec: TransformSpec | None = None
    config: Any = None


class UnknownPipeline(KeyError):
    """No pipeline of that name in the cluster (or the name fits several)."""


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
        #: How to start each pipeline of this worker again, by key.
        self.recipes: dict[str, Recipe] = {}
        self.worker_id = worker_identity(settings)
        self.hostname = socket.gethostname()
        #: The cluster's shared requests and heartbeats (pause/resume/stop/restart).
        self.control = ControlPlane(
            settings, worker_id=self.worker_id, on_change=self._on_control, heartbeat=self.heartbeat
        )
        #: Kafka's offsets for every pipeline of the cluster (lag, log start, true end).
        self.cluster = ClusterView(settings.kafka, lambda: self.control.table)
        self._control_lock = asyncio.Lock()
        #: Sinks and sources from etl.yaml, ``connectors/`` and the API (docs/connectors.md).
        self.connectors = ConnectorManager(self)
        self.connector_watcher: ConnectorWatcher | None = None
        #: Alert rules: evaluated here while this worker is the cluster's evaluator.
        alerts = settings.alerts
        self.alerts = AlertEvaluator(self) if alerts.enabled and alerts.rules else None
        #: Recent log lines per pipeline (``etl logs``), also sent to the logs topic.
        self.logs = PipelineLogs(self._keys_named, self.redact, worker=self.worker_id)
        self._rates: dict[str, tuple[float, int, int]] = {}
        self._rate_values: dict[str, tuple[float | None, float | None]] = {}

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
        logging.getLogger().addHandler(self.logs)
        await wait_for_broker(settings.kafka)
        self.broker_ready.set()
        await self._start_control()
        await self._ensure_dead_letter_topic(settings.errors.dead_letter_topic)
        specs, errors = discover_transforms(settings.transforms_dir)
        for error in errors:
            self.report_load_error(error)
        for spec in specs:
            await self.start_transform(spec)
        declared: list[tuple[Literal["sink", "source"], Any]] = [
            *(("sink", c) for c in settings.sink_configs()),
            *(("source", c) for c in settings.source_configs()),
        ]
        for kind, config in declared:
            raw = config.model_dump(mode="json")
            await self.connectors.apply(ConnectorSpec(config.name, kind, config, raw, "etl.yaml"))
        for name, record in sorted(self.control.table.connectors.items()):
            await self.connectors.on_stored(name, record)
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
        self.connector_watcher = ConnectorWatcher(
            settings.connectors_dir,
            apply=self.connectors.apply,
            remove=self.connectors.remove,
            report=self.connectors.report,
            environ=lambda: dict(os.environ),
            loop=self.loop,
            beacon=self.beacon,
        )
        await self.add_runtime_dependency(self.connector_watcher)
        self.add_future(self._refresh_cluster_forever())
        if self.alerts is not None:
            self.add_future(self.alerts.run(lambda: self.should_stop))

    async def _start_control(self) -> None:
        """Read the control topic (every request so far) before any pipeline starts."""
        while not self.should_stop:
            try:
                await self.control.start()
                break
            except Exception as exc:
                log.error(
                    "control topic not readable, retrying error=%r",
                    self.redact(describe_error(exc)),
                )
                await self.sleep(2.0)
        await self._start_log_shipping()
        for key in migrate_pause_file(self.settings):
            if self.control.table.desired_state(key) == "running":
                log.info("pause kept from paused.json pipeline=%s", key)
                await self.control.set_desired(key, "paused", by="paused.json")

    async def _start_log_shipping(self) -> None:
        control = self.settings.control
        producer = self.control.log.producer if self.control.log is not None else None
        if not control.ship_logs or producer is None:
            return
        topic = logs_topic(self.settings)
        try:
            await ensure_topics(
                self.settings.kafka,
                {topic: LOG_PARTITIONS},
                configs={"retention.ms": str(RETENTION_MS)},
            )
        except Exception as exc:
            log.warning("logs topic not created topic=%s error=%r", topic, describe_error(exc))
            return
        self.add_future(ship_forever(self.logs, producer, topic, lambda: self.should_stop))

    def _keys_named(self, name: str) -> list[str]:
        if name in self.recipes:
            return [name]
        return [key for key in self.recipes if key.split(":", 1)[-1] == name]

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
        key = f"transform:{spec.name}"
        self.recipes[key] = Recipe("transform", spec=spec)
        await self._add(key, pipeline)
        return pipeline

    async def restart_transform(self, spec: TransformSpec) -> TransformPipeline:
        """Stop a transform's pipeline (committing its progress) and start ``spec`` in its place."""
        await self.stop_pipeline(f"transform:{spec.name}")
        return await self.start_transform(spec)

    async def start_connector(self, kind: str, config: Any) -> None:
        """Start a sink or source pipeline for a validated config (as the cluster wants it)."""
        await self._start_plugin(kind, config)

    async def reconfigure(self, key: str, config: Any, *, reopen: bool) -> bool:
        """Give a running sink a new configuration without leaving its group (see
        ``SinkPipeline.reconfigure``); False when it is not a running sink."""
        pipeline = self.pipelines.get(key)
        change = getattr(pipeline, "reconfigure", None)
        if pipeline is None or change is None or pipeline.status.state == State.STOPPED:
            return False
        await change(config, reopen=reopen)
        recipe = self.recipes.get(key)
        if recipe is not None:
            recipe.config = config
        self._publish_details(key, pipeline)
        return True

    async def _start_plugin(self, kind: str, config: Any) -> None:
        key = f"{kind}:{config.name}"
        self.recipes[key] = Recipe(kind, config=config)
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
                    "status, pause, resume or refresh_progress of etl.supervisor.Pipeline"
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
        """Run ``pipeline`` as ``key`` as the cluster wants it: running, paused or stopped."""
        desired = self.control.table.desired_state(key)
        self.pipelines[key] = pipeline
        self._publish_details(key, pipeline)
        if desired == "stopped":
            pipeline.status.state = State.STOPPED
            log.info("pipeline stays stopped (etl resume starts it) pipeline=%s", key)
            return
        if desired == "paused":
            pipeline.pause()
            log.info("pipeline starts paused pipeline=%s", key)
        await self.add_runtime_dependency(cast(Service, pipeline))

    async def stop_pipeline(self, key: str) -> None:
        """Stop a pipeline (committing its progress) and forget it."""
        self.recipes.pop(key, None)
        pipeline = self.pipelines.pop(key, None)
        if pipeline is not None:
            await self._stop_instance(pipeline)
        await self._forget_details(key)

    async def _forget_details(self, key: str) -> None:
        """Drop ``pipeline/<key>`` from the control topic; a worker that still runs it
        writes it again with its next heartbeat (:meth:`heartbeat`)."""
        if key not in self.control.table.details:
            return
        try:
            await self.control.forget_details(key)
        except Exception as exc:
            log.warning("pipeline details not removed pipeline=%s error=%r", key, str(exc))

    async def _stop_instance(self, pipeline: Pipeline) -> None:
        if pipeline.status.state != State.STOPPED or cast(Service, pipeline)._started.is_set():
            await pipeline.stop()
        self._children = [c for c in self._children if c is not pipeline]

    def _relaunch_recipe(self, key: str) -> Recipe | None:
        recipe = self.recipes.get(key)
        current = self.pipelines.get(key)
        if recipe is not None and isinstance(current, TransformPipeline):
            # Hot reload swaps specs into the instance: start the newest one.
            recipe.spec = getattr(current, "_next_spec", None) or current.spec
        return recipe

    async def _launch(self, key: str) -> None:
        """Start ``key`` afresh from its recipe (its old instance is stopped first)."""
        recipe = self._relaunch_recipe(key)
        if recipe is None:
            return
        old = self.pipelines.pop(key, None)
        if old is not None:
            await self._stop_instance(old)
        if recipe.kind == "transform" and recipe.spec is not None:
            await self.start_transform(recipe.spec)
        else:
            await self._start_plugin(recipe.kind, recipe.config)

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

    # ---- operators' requests (through the control topic) -------------------------

    def known_keys(self) -> set[str]:
        """Every pipeline key of this worker and of the cluster's live workers."""
        return set(self.pipelines) | set(self.recipes) | self.control.table.pipeline_keys()

    def resolve(self, name: str) -> str:
        """The ``kind:name`` key of a pipeline of the cluster, by key or bare name."""
        keys = self.known_keys()
        if name in keys:
            return name
        matches = sorted(k for k in keys if k.split(":", 1)[-1] == name)
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownPipeline(f"{name!r} is ambiguous: use one of {', '.join(matches)}")
        raise UnknownPipeline(f"no pipeline {name!r} in this cluster")

    def key_of(self, name: str) -> str:
        """Kept for callers of the earlier API: :meth:`resolve`."""
        return self.resolve(name)

    async def request(self, name: str, action: str, by: str | None = None) -> str:
        """pause | resume | stop | restart a pipeline on every worker; returns its key.

        ``resume`` also restarts a halted or failed pipeline from its committed offset
        (halted partitions resume; a failed pipeline starts again).
        """
        key = self.resolve(name)
        control = self.control
        if action == "pause":
            await control.set_desired(key, "paused", by)
        elif action == "stop":
            await control.set_desired(key, "stopped", by)
        elif action == "resume":
            await control.set_desired(key, "running", by)
            await control.request_restart(key, broken_only=True, by=by)
        elif action == "restart":
            await control.set_desired(key, "running", by)
            await control.request_restart(key, broken_only=False, by=by)
        else:
            raise ValueError(f"unknown action {action!r}: pause, resume, stop or restart")
        log.info("pipeline %s requested pipeline=%s", action, key)
        return key

    async def pause(self, name: str) -> str:
        """Pause a pipeline on every worker (it stays paused across restarts)."""
        return await self.request(name, "pause")

    async def resume(self, name: str) -> str:
        """Resume a paused, halted or failed pipeline on every worker."""
        return await self.request(name, "resume")

    async def _on_control(self, section: str, key: str) -> None:
        """A request read back from the control topic: apply it to this worker's instance."""
        if section == CONNECTOR:
            async with self._control_lock:
                await self.connectors.on_stored(key, self.control.table.connectors.get(key))
            return
        if key not in self.recipes:
            return  # not a pipeline of this worker
        async with self._control_lock:
            if section == DESIRED:
                await self._apply_desired(key, self.control.table.desired_state(key))
            elif section == RESTART:
                await self._apply_restart(key, self.control.table.restarts.get(key) or {})

    async def _apply_desired(self, key: str, desired: DesiredState) -> None:
        pipeline = self.pipelines.get(key)
        if pipeline is None:
            await self._launch(key)
            return
        stopped = pipeline.status.state == State.STOPPED
        if desired == "stopped":
            if not stopped:
                log.info("pipeline stopping on request pipeline=%s", key)
                await self._stop_instance(pipeline)
                pipeline.status.state = State.STOPPED
                pipeline.status.error = None
                # Out of the group: it owns no partition any more.
                pipeline.status.partitions.clear()
            return
        if stopped:
            log.info("pipeline starting on request pipeline=%s", key)
            await self._launch(key)
            return
        if desired == "paused":
            pipeline.pause()
            log.info("pipeline paused pipeline=%s", key)
        else:
            pipeline.resume()
            log.info("pipeline resumed pipeline=%s", key)
        # The request is answered once the consumer itself has stopped (or resumed)
        # fetching, not only the pipeline's flag.
        settled = getattr(getattr(pipeline, "consumer", None), "settled", None)
        if settled is not None:
            try:
                await asyncio.wait_for(settled(), 10)
            except Exception as exc:
                log.warning("consumer pause/resume not confirmed pipeline=%s error=%r", key, exc)

    async def _apply_restart(self, key: str, request: dict[str, Any]) -> None:
        pipeline = self.pipelines.get(key)
        if pipeline is None or pipeline.status.state == State.STOPPED or not request:
            return
        if request.get("broken_only"):
            clear = getattr(pipeline, "clear_halts", None)
            resumed = clear() if callable(clear) else []
            if resumed:
                log.info("halted partitions resumed pipeline=%s partitions=%s", key, resumed)
            if str(pipeline.status.state) not in ("failed", "halted") or resumed:
                return
        log.info("pipeline restarting on request pipeline=%s", key)
        await self._launch(key)

    # ---- status -------------------------------------------------------------------

    def worker_info(self) -> dict[str, Any]:
        """Who this worker is (the ``worker`` part of every status)."""
        from etl.ops.client import web_url

        web = self.settings.web
        return {
            "id": self.worker_id,
            "host": self.hostname,
            "pid": os.getpid(),
            "url": web_url(web.host, web.port) if web.enabled else None,
            "app_id": self.settings.app_id,
            "bootstrap_servers": self.settings.kafka.bootstrap_servers,
            "broker_ready": self.broker_ready.is_set(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "transforms_dir": str(self.settings.transforms_dir),
            "client_id": self.settings.kafka.client_id,
        }

    def local_items(self) -> list[dict[str, Any]]:
        """This worker's pipelines (and load errors) as status dicts, with Kafka's lag."""
        items = []
        for key, pipeline in self.pipelines.items():
            item = pipeline.status.to_dict()
            item["key"] = key
            items.append(item)
        for status in self.load_errors.values():
            item = status.to_dict()
            item["key"] = f"{status.kind}:{status.name}"
            items.append(item)
        for item in items:
            self._with_kafka_offsets(item)
        return sorted(items, key=lambda item: (item["kind"], item["name"]))

    def _with_kafka_offsets(self, item: dict[str, Any]) -> None:
        """Committed offset and true end from Kafka itself (right while paused or halted)."""
        offsets = self.cluster.offsets.get(item.get("group_id") or "")
        if not offsets:
            return
        for text, row in item.get("partitions", {}).items():
            topic, _, part = text.rpartition("/")
            numbers = offsets.get((topic, int(part))) if part.isdigit() else None
            if numbers is not None:
                row.update(numbers.to_dict())

    def snapshot(self) -> dict[str, Any]:
        """This worker's status as a JSON-ready dict (``GET /etl/status/?scope=local``)."""
        return {"scope": "worker", "worker": self.worker_info(), "pipelines": self.local_items()}

    def cluster_snapshot(self) -> dict[str, Any]:
        """Every pipeline of the cluster (``GET /etl/status/``, ``etl status``)."""
        if not self.control.started:
            return self.snapshot()
        snapshot = self.cluster.snapshot(me=self.worker_info())
        # This worker's own pipelines as they are now, not as of its last heartbeat.
        mine = {item["key"]: item for item in self.local_items()}
        for item in snapshot["pipelines"]:
            local = mine.get(item["key"])
            if local is not None and item.get("workers") == [self.worker_id]:
                for name in ("consumed", "produced", "filtered", "dead_lettered", "error"):
                    item[name] = local.get(name)
        return snapshot

    def heartbeat(self) -> dict[str, Any]:
        """What this worker tells the cluster about itself (see :mod:`etl.control.state`)."""
        now = time.time()
        pipelines = {}
        for item in self.local_items():
            key = item["key"]
            rate_in, rate_out = self._rate(key, now, item["consumed"], item["produced"])
            pipelines[key] = {**item, "rate_in": rate_in, "rate_out": rate_out}
        for key, pipeline in self.pipelines.items():
            if key not in self.control.table.details:
                self._publish_details(key, pipeline)
        info = self.worker_info()
        if self.alerts is not None:
            info["alerts"] = self.alerts.heartbeat_fields()
        return {**info, "pipelines": pipelines}

    def _rate(self, key: str, now: float, consumed: int, produced: int) -> tuple[Any, Any]:
        previous = self._rates.get(key)
        if previous is not None and now - previous[0] >= 0.5:
            elapsed = now - previous[0]
            self._rate_values[key] = (
                round(max(0, consumed - previous[1]) / elapsed, 2),
                round(max(0, produced - previous[2]) / elapsed, 2),
            )
        if previous is None or now - previous[0] >= 0.5:
            self._rates[key] = (now, consumed, produced)
        return self._rate_values.get(key, (None, None))

    def _publish_details(self, key: str, pipeline: Pipeline) -> None:
        details = pipeline_details(key, pipeline, self.recipes.get(key), self.redact)
        self.add_future(self._write_details(key, details))

    async def _write_details(self, key: str, details: dict[str, Any]) -> None:
        try:
            await self.control.publish_details(key, details)
        except Exception as exc:
            log.warning("pipeline details not published pipeline=%s error=%r", key, str(exc))

    def details(self, name: str) -> dict[str, Any]:
        """A pipeline's configuration (secrets redacted), file, version, group, topics."""
        key = self.resolve(name)
        pipeline = self.pipelines.get(key)
        if pipeline is not None:
            return pipeline_details(key, pipeline, self.recipes.get(key), self.redact)
        found = self.control.table.details.get(key)
        if found is None:
            raise UnknownPipeline(f"no details of {key!r}: no live worker runs it")
        return {k: v for k, v in found.items() if k != "_offset"}

    async def _refresh_cluster_forever(self) -> None:
        while not self.should_stop:
            try:
                await self.cluster.refresh()
            except Exception as exc:
                log.debug("cluster refresh failed error=%r", exc)
            await self.sleep(CLUSTER_INTERVAL)

    async def _publish_status_forever(self) -> None:
        while not self.should_stop:
            try:
                await self.publish_status()
            except Exception as exc:
                log.debug("status publish failed error=%r", exc)
            await self.sleep(STATUS_INTERVAL)

    async def publish_status(self, *, refresh: bool = True) -> None:
        """Refresh lag (unless ``refresh`` is off) and write ``status.json`` atomically."""
        for pipeline in list(self.pipelines.values()) if refresh else []:
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
            # No broker round trips on the way out (a rebalance may hold them up).
            await self.publish_status(refresh=False)
        except Exception:
            pass
        logging.getLogger().removeHandler(self.logs)
        if self.alerts is not None:
            await self.alerts.stop()
        await self.control.stop()
        self.cluster.close()


def pipeline_details(
    key: str, pipeline: Pipeline, recipe: Recipe | None, redact: Redactor
) -> dict[str, Any]:
    """What ``etl show`` prints: the effective configuration with secrets redacted."""
    from etl.redact import redacted_config

    status = pipeline.status
    details: dict[str, Any] = {
        "key": key,
        "name": status.name,
        "kind": status.kind,
        "group_id": status.group_id,
        "source": status.source,
        "target": status.target,
        "path": status.path,
        "version": status.version,
        "dead_letter_topic": status.dead_letter_topic,
    }
    if recipe is not None and recipe.spec is not None:
        spec = recipe.spec
        details["config"] = {
            "source_topic": spec.source_topic,
            "target_topic": spec.target_topic,
            "start_offset": spec.start_offset,
            "on_error": spec.on_error,
            **{
                name: value
                for name, value in (
                    ("dead_letter_topic", spec.dead_letter_topic),
                    ("target_partitions", spec.target_partitions),
                    ("processing_guarantee", spec.processing_guarantee),
                )
                if value is not None
            },
        }
        details["file"] = str(spec.path)
    elif recipe is not None and recipe.config is not None:
        details["config"] = redacted_config(recipe.config, redact)
    return details
