"""The connectors REST API, shaped after Kafka Connect's (docs/connectors.md).

``/connectors``, ``/connectors/{name}[/config|/status|/restart|/pause|/resume|/stop]``
and ``/connector-plugins[/{type}/config[/validate]]`` on every worker. A connector
created here is stored in the control topic (secrets sealed), so every worker
runs it and it survives restarts; connectors of etl.yaml and ``connectors/``
files are listed and operated, but changed where they are defined.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from faust import web

from etl.connectors.secrets import SEALED, SecretsRefused, seal, shown
from etl.connectors.spec import ConnectorSpec, kind_of, parse_connector
from etl.control.plane import requester
from etl.plugins import UnknownPluginError, known_types, plugin_config_model
from etl.redact import MASK, Redactor

#: Kafka Connect's connector states for ours.
CONNECT_STATES = {
    "running": "RUNNING",
    "paused": "PAUSED",
    "stopped": "STOPPED",
    "failed": "FAILED",
    "halted": "FAILED",
    "load_error": "FAILED",
    "starting": "UNASSIGNED",
    "unassigned": "UNASSIGNED",
    "finished": "UNASSIGNED",
}
DELETE_WAIT_S = 60.0


def _version() -> str:
    try:
        return version("faust-etl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def register_connector_views(app: Any, supervisor: Any, refusal: Any) -> None:
    """Add the routes; ``supervisor()`` gives the running supervisor (or None)."""

    def sup() -> Any:
        found = supervisor()
        if found is None or not found.control.started:
            raise ApiError(503, "the worker is starting (it reads the control topic first)")
        return found

    async def body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None

    def handled(method: Any) -> Any:
        async def run(view: web.View, request: web.Request, **kwargs: Any) -> web.Response:
            if request.method not in ("GET", "HEAD"):
                denied = refusal(view, request)
                if denied is not None:
                    return denied
            try:
                return await method(view, request, **kwargs)  # type: ignore[no-any-return]
            except ApiError as exc:
                return view.json(
                    {"error_code": exc.status, "message": exc.message, **exc.extra},
                    status=exc.status,
                )

        return run

    # ---- lookups ----------------------------------------------------------------------

    def cluster_connectors() -> dict[str, dict[str, Any]]:
        """name -> the cluster status item of every sink and source."""
        out: dict[str, dict[str, Any]] = {}
        for item in sup().cluster_snapshot()["pipelines"]:
            if item["kind"] in ("sink", "source"):
                out.setdefault(item["name"], item)
        return out

    def names() -> list[str]:
        s = sup()
        found = set(s.connectors.specs) | set(s.control.table.connectors)
        found |= set(cluster_connectors())
        return sorted(found)

    def origin_of(name: str) -> str | None:
        s = sup()
        spec = s.connectors.specs.get(name)
        if spec is not None:
            return str(spec.origin)
        if name in s.control.table.connectors:
            return "api"
        if name in cluster_connectors():
            return "another worker's etl.yaml or connectors/"
        return None

    def redacted(value: Any, s: Any) -> Any:
        if isinstance(value, dict):
            return {k: redacted(v, s) for k, v in value.items()}
        if isinstance(value, list):
            return [redacted(v, s) for v in value]
        if isinstance(value, str):
            return Redactor(s.redact.secrets)(value)
        return value

    def config_of(name: str) -> tuple[str, dict[str, Any]]:
        """(kind, the configuration with secrets as ***) of a connector."""
        s = sup()
        stored = s.control.table.connectors.get(name)
        spec = s.connectors.specs.get(name)
        if stored is not None and (spec is None or spec.origin == "api"):
            config = dict(stored.get("config") or {})
            kind, _ = kind_of(config)
            model = _model(kind, config.get("type"))
            return str(kind or config.get("kind") or "sink"), redacted(shown(config, model), s)
        if spec is not None:
            raw = {"name": spec.name, **spec.raw, "kind": spec.kind}
            return spec.kind, redacted(shown(raw, type(spec.config)), s)
        item = cluster_connectors().get(name)
        if item is None:
            raise ApiError(404, f"Connector {name} not found")
        details = s.control.table.details.get(item["key"]) or {}
        return item["kind"], dict(details.get("config") or {"name": name})

    def info(name: str) -> dict[str, Any]:
        kind, config = config_of(name)
        return {"name": name, "config": config, "tasks": [], "type": kind}

    def status(name: str) -> dict[str, Any]:
        kind, _config = config_of(name)
        item = next(
            (
                i
                for i in sup().cluster_snapshot()["pipelines"]
                if i["name"] == name and i["kind"] == kind
            ),
            None,
        )
        if item is None:
            problem = sup().connectors.problems.get(name)
            trace = "; ".join(problem[1]) if problem else None
            return {
                "name": name,
                "connector": {"state": "FAILED" if trace else "UNASSIGNED", "worker_id": None},
                "tasks": [],
                "type": kind,
                **({"trace": trace} if trace else {}),
            }
        state = CONNECT_STATES.get(str(item["state"]), "UNASSIGNED")
        workers = item.get("workers") or []
        tasks = [
            {"id": index, "state": state, "worker_id": worker, "trace": item.get("error")}
            for index, worker in enumerate(workers)
        ]
        return {
            "name": name,
            "connector": {
                "state": state,
                "worker_id": workers[0] if workers else None,
                **({"trace": item["error"]} if item.get("error") else {}),
            },
            "tasks": tasks,
            "type": kind,
        }

    # ---- create / update -----------------------------------------------------------------

    async def store(name: str, config: dict[str, Any], *, replace: bool) -> tuple[bool, Any]:
        """Validate, seal and write ``config`` as API connector ``name``; (created, answer)."""
        s = sup()
        if not isinstance(config, dict):
            raise ApiError(400, "config must be a JSON object of the connector's options")
        if config.get("name") not in (None, name):
            raise ApiError(400, f"config.name {config['name']!r} is not {name!r}")
        origin = origin_of(name)
        if origin is not None and origin != "api":
            raise ApiError(409, f"connector {name} is defined in {origin}: change it there")
        if origin == "api" and not replace:
            raise ApiError(409, f"Connector {name} already exists")
        previous = (s.control.table.connectors.get(name) or {}).get("config") or {}
        config = _keep_masked(dict(config), previous)
        spec, problems = _validate(name, config)
        if spec is None:
            raise ApiError(400, "invalid configuration: " + "; ".join(problems), problems=problems)
        key = s.settings.control.secrets_key
        try:
            sealed = seal(
                {**_without_name(config), "kind": spec.kind},
                type(spec.config),
                key.get_secret_value() if key else None,
            )
        except SecretsRefused as exc:
            raise ApiError(400, str(exc), fields=exc.fields) from None
        await s.control.put_connector(
            name, {"config": sealed, "at": time.time(), "by": requester()}
        )
        return origin is None, info(name)

    # ---- routes ------------------------------------------------------------------------------

    @app.page("/connectors", name="connect_connectors")
    class Connectors(web.View):
        @handled
        async def get(self, request: web.Request) -> web.Response:
            expand = request.query.getall("expand", []) if hasattr(request.query, "getall") else []
            if not expand:
                return self.json(names())
            out: dict[str, Any] = {}
            for name in names():
                entry: dict[str, Any] = {}
                if "status" in expand:
                    entry["status"] = status(name)
                if "info" in expand:
                    entry["info"] = info(name)
                out[name] = entry
            return self.json(out)

        @handled
        async def post(self, request: web.Request) -> web.Response:
            data = await body(request)
            name = data.get("name") if isinstance(data, dict) else None
            if not name:
                raise ApiError(400, 'give {"name": ..., "config": {...}}')
            _created, answer = await store(str(name), data.get("config") or {}, replace=False)
            return self.json(answer, status=201)

    @app.page("/connectors/{name}", name="connect_connector")
    class Connector(web.View):
        @handled
        async def get(self, request: web.Request, name: str) -> web.Response:
            return self.json(info(name))

        @handled
        async def delete(self, request: web.Request, name: str) -> web.Response:
            return await _delete(self, request, name)

    async def _delete(view: web.View, request: web.Request, name: str) -> web.Response:
        from etl.connectors.purge import plan_purge, run_purge
        from etl.ops.reset import runners

        s = sup()
        origin = origin_of(name)
        if origin is None:
            raise ApiError(404, f"Connector {name} not found")
        if origin != "api":
            raise ApiError(
                409, f"connector {name} is defined in {origin}: remove it there (on every worker)"
            )
        purge = request.query.get("purge") in ("true", "1")
        dry_run = request.query.get("dry_run") in ("true", "1")
        data = request.query.get("data") in ("true", "1")
        spec = s.connectors.specs.get(name)
        items = []
        if purge:
            if spec is None:
                raise ApiError(409, f"connector {name} does not run here; nothing to purge from")
            others = [i for i in s.cluster_snapshot()["pipelines"] if i["key"] != spec.key]
            items = await plan_purge(s.settings, spec, others=others, data=data)
        if dry_run:
            return view.json({"name": name, "purge": [i.to_dict() for i in items]})
        await s.control.put_connector(name, None)
        if items and spec is not None:
            deadline = time.monotonic() + DELETE_WAIT_S
            while runners(s.control, spec.key) and time.monotonic() < deadline:
                await s.sleep(0.5)
            if runners(s.control, spec.key):
                raise ApiError(
                    409,
                    f"connector {name} was deleted but still runs on "
                    f"{'; '.join(runners(s.control, spec.key))}: nothing purged",
                )
            await run_purge(s.settings, spec, items)
            return view.json({"name": name, "purged": [i.to_dict() for i in items]})
        return view.bytes(b"", status=204)

    @app.page("/connectors/{name}/config", name="connect_config")
    class ConnectorConfig(web.View):
        @handled
        async def get(self, request: web.Request, name: str) -> web.Response:
            return self.json(config_of(name)[1])

        @handled
        async def put(self, request: web.Request, name: str) -> web.Response:
            created, answer = await store(name, await body(request), replace=True)
            return self.json(answer, status=201 if created else 200)

    @app.page("/connectors/{name}/status", name="connect_status")
    class ConnectorStatus(web.View):
        @handled
        async def get(self, request: web.Request, name: str) -> web.Response:
            return self.json(status(name))

    def action(verb: str, status_code: int) -> type[web.View]:
        class ConnectorAction(web.View):
            async def _act(self, request: web.Request, name: str) -> web.Response:
                kind, _config = config_of(name)
                await sup().request(f"{kind}:{name}", verb)
                return self.bytes(b"", status=status_code)

            @handled
            async def put(self, request: web.Request, name: str) -> web.Response:
                return await self._act(request, name)

            @handled
            async def post(self, request: web.Request, name: str) -> web.Response:
                return await self._act(request, name)

        ConnectorAction.__name__ = f"Connector{verb.title()}"
        return ConnectorAction

    for verb, code in (("pause", 202), ("resume", 202), ("stop", 202), ("restart", 204)):
        app.page(f"/connectors/{{name}}/{verb}", name=f"connect_{verb}")(action(verb, code))

    @app.page("/connector-plugins", name="connect_plugins")
    class Plugins(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json(
                [
                    {"class": t, "type": kind, "version": _version()}
                    for kind in ("sink", "source")
                    for t in known_types(kind)  # type: ignore[arg-type]
                ]
            )

    @app.page("/connector-plugins/{type_name}/config", name="connect_plugin_config")
    class PluginConfig(web.View):
        @handled
        async def get(self, request: web.Request, type_name: str) -> web.Response:
            kind = request.query.get("kind") or _only_kind(type_name)
            model = _model(kind, type_name)
            if model is None:
                raise ApiError(404, f"no {kind or 'connector'} type {type_name!r}")
            return self.json(
                {
                    "type": type_name,
                    "kind": kind,
                    "definitions": [_definition(n, f) for n, f in model.model_fields.items()],
                    "schema": model.model_json_schema(),
                }
            )

    @app.page("/connector-plugins/{type_name}/config/validate", name="connect_validate")
    class Validate(web.View):
        @handled
        async def put(self, request: web.Request, type_name: str) -> web.Response:
            config = await body(request)
            if not isinstance(config, dict):
                raise ApiError(400, "the body must be a JSON object of options")
            return self.json(validation_answer(type_name, config))


def _without_name(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "name"}


def _keep_masked(config: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """A secret sent back as ``***`` (read, edited, written) keeps its stored value."""
    out = {}
    for key, value in config.items():
        if value == MASK and key in previous:
            out[key] = previous[key]
        elif isinstance(value, dict) and isinstance(previous.get(key), dict):
            out[key] = _keep_masked(value, previous[key])
        else:
            out[key] = value
    return out


def _validate(name: str, config: dict[str, Any]) -> tuple[ConnectorSpec | None, list[str]]:
    import os

    from etl.config import substitute_env

    def sealed_to_placeholder(value: Any) -> Any:
        if isinstance(value, dict) and SEALED in value:
            return "sealed-secret"
        if isinstance(value, dict):
            return {k: sealed_to_placeholder(v) for k, v in value.items()}
        return value

    data, problems = substitute_env(sealed_to_placeholder(config), dict(os.environ))
    if problems:
        return None, problems
    return parse_connector(data, name=name, origin="api")


def _only_kind(type_name: str) -> str | None:
    kinds = [k for k in ("sink", "source") if type_name in known_types(k)]  # type: ignore[arg-type]
    return kinds[0] if len(kinds) == 1 else None


def _model(kind: str | None, type_name: Any) -> Any:
    if not kind or not type_name:
        return None
    try:
        return plugin_config_model(kind, str(type_name))  # type: ignore[arg-type]
    except UnknownPluginError:
        return None


def _definition(name: str, field: Any) -> dict[str, Any]:
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if hasattr(default, "get_secret_value"):
        default = None
    return {
        "name": name,
        "type": str(field.annotation).replace("typing.", ""),
        "required": field.is_required(),
        "default_value": default
        if isinstance(default, str | int | float | bool | None)
        else (json.loads(json.dumps(default, default=str))),
        "documentation": field.description or "",
    }


def validation_answer(type_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Kafka Connect's validate answer: every option with its value and problems."""
    data = {**config, "type": config.get("type", type_name)}
    kind, problem = kind_of(data)
    model = _model(kind, type_name)
    if model is None:
        message = problem or f"unknown type {type_name!r}"
        return {
            "name": type_name,
            "error_count": 1,
            "groups": ["common"],
            "configs": [
                {
                    "definition": {"name": "type"},
                    "value": {"name": "type", "value": type_name, "errors": [message]},
                }
            ],
        }
    _spec, problems = _validate(str(data.get("name") or "validate"), data)
    by_field: dict[str, list[str]] = {}
    for line in problems:
        where, _, message = line.partition(": ")
        field = where.split(".", 1)[0].split("[", 1)[0] or "<root>"
        by_field.setdefault(field, []).append(message or line)
    shown_values = shown(_without_name(data), model)
    configs = []
    for name, field in model.model_fields.items():
        configs.append(
            {
                "definition": _definition(name, field),
                "value": {
                    "name": name,
                    "value": shown_values.get(name),
                    "recommended_values": [],
                    "errors": by_field.pop(name, []),
                    "visible": True,
                },
            }
        )
    for name, errors in sorted(by_field.items()):
        configs.append(
            {
                "definition": {"name": name},
                "value": {"name": name, "value": shown_values.get(name), "errors": errors},
            }
        )
    return {
        "name": type_name,
        "error_count": sum(len(c["value"]["errors"]) for c in configs),
        "groups": ["common"],
        "configs": configs,
    }
