"""HTTP API and status page on the worker's Faust web server.

Routes (all JSON unless noted):

* ``GET /etl/`` - the status page (HTML, draws lag charts from the two routes below)
* ``GET /etl/status/`` - worker and every pipeline, with rates and lag
* ``GET /etl/history/?since=EPOCH`` - lag per partition over the last minutes
* ``GET /etl/pipelines/`` and ``GET /etl/pipelines/{name}/`` - list and detail
* ``POST /etl/pipelines/{name}/pause/`` and ``.../resume/``
* ``GET /metrics`` - Prometheus text format
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from faust import web

from etl.ops.history import SAMPLE_INTERVAL, StatusHistory
from etl.ops.metrics import CONTENT_TYPE, render_metrics

STARTING: dict[str, Any] = {"worker": {"state": "starting"}, "pipelines": []}


def status_page() -> str:
    """The HTML of the status page (shipped in the package)."""
    return resources.files("etl.web").joinpath("status.html").read_text(encoding="utf-8")


def register_views(app: Any) -> None:
    """Add the ETL routes and the status sampler to the app."""
    history = StatusHistory()
    app.etl_history = history

    def supervisor() -> Any:
        return getattr(app, "etl_supervisor", None)

    def snapshot() -> dict[str, Any]:
        sup = supervisor()
        return STARTING if sup is None else history.enrich(sup.snapshot())

    def find(name: str) -> dict[str, Any] | None:
        for item in snapshot()["pipelines"]:
            if name in (item["key"], item["name"]):
                return item
        return None

    @app.timer(SAMPLE_INTERVAL)
    async def sample_status() -> None:
        sup = supervisor()
        if sup is not None:
            history.add(sup.snapshot())

    @app.page("/etl/", name="etl_page")
    class StatusPage(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.html(status_page())

    @app.page("/etl/status/", name="etl_status")
    class StatusView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json(snapshot())

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
                return self.error(404, f"no pipeline {name!r} in this worker")
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

    def control(action: str) -> type[web.View]:
        class PipelineControl(web.View):
            async def post(self, request: web.Request, name: str) -> web.Response:
                sup = supervisor()
                if sup is None:
                    return self.error(503, "the worker is starting")
                try:
                    key = getattr(sup, action)(name)
                except KeyError as exc:
                    return self.error(404, exc.args[0])
                item = find(key) or {}
                return self.json({"pipeline": key, "action": action, "state": item.get("state")})

        PipelineControl.__name__ = f"Pipeline{action.title()}"
        return PipelineControl

    for action in ("pause", "resume"):
        app.page(f"/etl/pipelines/{{name}}/{action}/", name=f"etl_{action}")(control(action))

    @app.page("/metrics", name="etl_metrics")
    class MetricsView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            sup = supervisor()
            text = render_metrics(STARTING if sup is None else sup.snapshot())
            return self.text(text, content_type=CONTENT_TYPE)
