"""HTTP API and web console on the worker's Faust web server.

Routes (all JSON unless noted; ``NAME`` is ``kind:name`` or a bare name):

* ``GET /etl/`` - the web console (HTML; its own routes: :mod:`etl.web.console_api`)
* ``GET /etl/status/`` - every pipeline of the cluster with lag per partition and
  its owning worker, and the worker list (``?scope=local``: this worker only)
* ``GET /etl/workers/`` - the cluster's workers
* ``GET /etl/history/?since=EPOCH`` - lag per partition over the last minutes
* ``GET /etl/pipelines/`` and ``GET /etl/pipelines/NAME/`` - list and detail
* ``GET /etl/pipelines/NAME/config/`` - configuration (secrets redacted), file, group
* ``GET /etl/pipelines/NAME/logs/?lines=N`` - this worker's recent lines of it
* ``GET /etl/pipelines/NAME/offsets/`` - committed, log start, end, lag per partition
* ``POST /etl/pipelines/NAME/offsets/`` - reset (body: see :func:`_reset_target`)
* ``POST /etl/pipelines/NAME/pause/``, ``resume/``, ``stop/``, ``restart/`` - on
  every worker of the cluster
* ``GET /metrics`` - Prometheus text format

Every request that changes something passes :mod:`etl.web.guard` first.
"""

from __future__ import annotations

from typing import Any

from faust import web

from etl.ops.history import SAMPLE_INTERVAL, StatusHistory
from etl.ops.metrics import CONTENT_TYPE, render_metrics
from etl.web.body import json_object
from etl.web.console_api import register_console
from etl.web.guard import check_change

STARTING: dict[str, Any] = {"worker": {"state": "starting"}, "workers": [], "pipelines": []}
ACTIONS = ("pause", "resume", "stop", "restart")


def register_views(app: Any) -> None:
    """Add the ETL routes and the status sampler to the app."""
    history = StatusHistory()
    app.etl_history = history
    settings = app.etl_settings

    def supervisor() -> Any:
        return getattr(app, "etl_supervisor", None)

    def snapshot(scope: str = "cluster") -> dict[str, Any]:
        sup = supervisor()
        if sup is None:
            return STARTING
        if scope == "local":
            return dict(sup.snapshot())
        return history.enrich(sup.cluster_snapshot())

    def find(name: str) -> dict[str, Any] | None:
        for item in snapshot()["pipelines"]:
            if name in (item["key"], item["name"]):
                return item
        return None

    def refused(view: web.View, request: web.Request) -> web.Response | None:
        return refusal_response(view, request, settings.web)

    @app.timer(SAMPLE_INTERVAL)
    async def sample_status() -> None:
        sup = supervisor()
        if sup is not None:
            history.add(sup.cluster_snapshot())

    @app.page("/etl/status/", name="etl_status")
    class StatusView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json(snapshot(request.query.get("scope", "cluster")))

    @app.page("/etl/workers/", name="etl_workers")
    class WorkersView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"workers": snapshot().get("workers", [])})

    @app.page("/etl/history/", name="etl_history")
    class HistoryView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            try:
                since = float(request.query.get("since", 0))
            except ValueError:
                return self.error(400, "since: expected epoch seconds")
            return self.json(history.series(since))

    @app.page("/etl/pipelines/", name="etl_pipelines")
    class PipelineList(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"pipelines": snapshot()["pipelines"]})

    @app.page("/etl/pipelines/{name}/", name="etl_pipeline")
    class PipelineDetail(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            item = find(name)
            if item is None:
                return self.error(404, f"no pipeline {name!r} in this cluster")
            lags = history.series()
            return self.json(
                {
                    **item,
                    "history": {
                        "times": lags["times"],
                        "lag": lags["pipelines"].get(item["key"], {}),
                    },
                }
            )

    async def answer(view: web.View, work: Any) -> web.Response:
        """``work(sup)``'s JSON; 503 while starting, 404 for an unknown pipeline."""
        sup = supervisor()
        if sup is None:
            return view.error(503, "the worker is starting")
        try:
            return view.json(await work(sup))
        except KeyError as exc:
            return view.error(404, exc.args[0])
        except ValueError as exc:
            return view.error(400, str(exc))

    @app.page("/etl/pipelines/{name}/config/", name="etl_pipeline_config")
    class PipelineConfig(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            async def work(sup: Any) -> Any:
                return sup.details(name)

            return await answer(self, work)

    @app.page("/etl/pipelines/{name}/logs/", name="etl_pipeline_logs")
    class PipelineLogsView(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            async def work(sup: Any) -> Any:
                key = sup.resolve(name)
                try:
                    lines = int(request.query.get("lines", 100))
                except ValueError:
                    raise ValueError("lines: expected a number") from None
                return {
                    "pipeline": key,
                    "worker": sup.worker_id,
                    "lines": sup.logs.recent(key, lines),
                }

            return await answer(self, work)

    @app.page("/etl/pipelines/{name}/offsets/", name="etl_pipeline_offsets")
    class PipelineOffsets(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            from etl.ops.reset import ResetRefused, runners, show_offsets, source_position

            async def work(sup: Any) -> Any:
                key = sup.resolve(name)
                if key.startswith("source:"):
                    # A source keeps a position of its own instead of a group.
                    return {
                        "pipeline": key,
                        "position": await source_position(
                            sup.settings, key, _running_config(sup, key)
                        ),
                        "desired": sup.control.table.desired_state(key),
                        "running_on": runners(sup.control, key),
                    }
                return await show_offsets(sup.settings, sup.control, key)

            try:
                return await answer(self, work)
            except ResetRefused as exc:
                return self.error(409, str(exc))

        async def post(self, request: web.Request, name: str) -> web.Response:
            from etl.ops.reset import ResetRefused, reset_offsets, reset_source_position

            denied = refused(self, request)
            if denied is not None:
                return denied
            sup = supervisor()
            if sup is None:
                return self.error(503, "the worker is starting")
            try:
                key = sup.resolve(name)
                data = await json_object(request)
                dry_run, stop = bool(data.get("dry_run")), bool(data.get("stop"))
                if key.startswith("source:"):
                    spec = _source_target(data)
                    result = await reset_source_position(
                        sup.settings,
                        sup.control,
                        key,
                        spec,
                        dry_run=dry_run,
                        stop=stop,
                        config=_running_config(sup, key),
                    )
                else:
                    target = _reset_target(data, sup, key)
                    result = await reset_offsets(
                        sup.settings, sup.control, key, target, dry_run=dry_run, stop=stop
                    )
            except KeyError as exc:
                return self.error(404, exc.args[0])
            except (ValueError, ResetRefused) as exc:
                return self.error(409 if isinstance(exc, ResetRefused) else 400, str(exc))
            return self.json(result)

    def control(action: str) -> type[web.View]:
        class PipelineControl(web.View):
            async def post(self, request: web.Request, name: str) -> web.Response:
                denied = refused(self, request)
                if denied is not None:
                    return denied
                sup = supervisor()
                if sup is None or not sup.control.started:
                    return self.error(503, "the worker is starting")
                try:
                    key = await sup.request(name, action)
                except KeyError as exc:
                    return self.error(404, exc.args[0])
                item = find(key) or {}
                return self.json(
                    {
                        "pipeline": key,
                        "action": action,
                        "state": item.get("state"),
                        "desired": item.get("desired"),
                        "workers": item.get("workers", []),
                    }
                )

        PipelineControl.__name__ = f"Pipeline{action.title()}"
        return PipelineControl

    for action in ACTIONS:
        app.page(f"/etl/pipelines/{{name}}/{action}/", name=f"etl_{action}")(control(action))

    from etl.web.connectors_api import register_connector_views

    register_connector_views(
        app, supervisor, lambda view, request: refusal_response(view, request, settings.web)
    )
    register_console(app)

    @app.page("/metrics", name="etl_metrics")
    class MetricsView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            text = render_metrics(snapshot())
            return self.text(text, content_type=CONTENT_TYPE)


def refusal_response(view: web.View, request: web.Request, settings: Any) -> web.Response | None:
    """The error answer for a change :mod:`etl.web.guard` refuses, else None."""
    problem = check_change(
        settings,
        request.method,
        request.headers,
        getattr(request, "scheme", "http"),
        has_body=bool(getattr(request, "body_exists", True)),
    )
    return None if problem is None else view.error(problem.status, problem.message)


def _running_config(sup: Any, key: str) -> Any:
    """The configuration this worker runs ``key`` with (None: it does not run it)."""
    recipe = getattr(sup, "recipes", {}).get(key)
    return getattr(recipe, "config", None)


def _source_target(data: dict[str, Any]) -> str | None:
    """A source's ``{"to_position": "now" | "FILE:POS" | "gtid:SET"}`` or
    ``{"forget": true}`` (None: begin as configured)."""
    if data.get("forget") is True and not data.get("to_position"):
        return None
    position = str(data.get("to_position") or "").strip()
    if not position or data.get("forget"):
        raise ValueError(
            'a source: say where to: {"to_position": "now" | "FILE:POS" | "gtid:SET"} '
            'or {"forget": true}'
        )
    return position


def _reset_target(data: dict[str, Any], sup: Any, key: str) -> Any:
    """``{"to": "earliest" | "latest"}``, ``{"to_time": "..." | epoch_ms}`` or
    ``{"to_offsets": ["P:O" | "TOPIC:P:O", ...]}``, plus ``dry_run`` and ``stop``."""
    from etl.ops.messages import parse_time
    from etl.ops.reset import ResetTarget, pipeline_item

    if data.get("to") in ("earliest", "latest"):
        return ResetTarget(str(data["to"]))
    if data.get("to_time") is not None:
        return ResetTarget("time", time_ms=parse_time(str(data["to_time"])))
    if data.get("to_offsets"):
        topics = [t for t in str(pipeline_item(sup.control, key).get("source", "")).split(",") if t]
        return ResetTarget.parse_offsets([str(s) for s in data["to_offsets"]], topics)
    raise ValueError(
        'say where to: {"to": "earliest"|"latest"}, {"to_time": T} or {"to_offsets": [...]}'
    )
