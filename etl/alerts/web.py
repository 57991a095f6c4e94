"""``GET /etl/alerts/``: the rules and every alert's state, from any worker."""

from __future__ import annotations

import time
from typing import Any

from faust import web


def register_alert_views(app: Any) -> None:
    """Add ``/etl/alerts/`` to the app's web server."""

    @app.page("/etl/alerts/", name="etl_alerts")
    class AlertsView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            from etl.alerts.evaluator import alerts_view

            sup = getattr(app, "etl_supervisor", None)
            if sup is None:
                return self.error(503, "the worker is starting")
            evaluator = getattr(sup, "alerts", None)
            if evaluator is not None:
                return self.json(evaluator.status())
            view = alerts_view(sup.settings, sup.control.table, time.time())
            view.update(this_worker=sup.worker_id, evaluating=False)
            return self.json(view)
