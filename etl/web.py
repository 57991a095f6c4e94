"""HTTP views on the worker's Faust web server."""

from __future__ import annotations

from typing import Any

from faust import web


def register_views(app: Any) -> None:
    """Add ``/etl/status/`` (JSON) to the app's web server."""

    @app.page("/etl/status/")
    class StatusView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            supervisor = getattr(app, "etl_supervisor", None)
            if supervisor is None:
                return self.json({"worker": {"state": "starting"}, "pipelines": []})
            return self.json(supervisor.snapshot())
