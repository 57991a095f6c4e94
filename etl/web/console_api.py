"""The web console: its page and assets, and the routes it needs beyond the cluster API.

The console (``GET /etl/``) is static files shipped in the package
(``etl/web/console/``: HTML, CSS and plain ES modules, no build step, nothing
loaded from elsewhere; the page's Content-Security-Policy allows this server
only). Everything it shows or does goes through the worker's HTTP API: the
cluster routes of :mod:`etl.web`, the connectors API, and these:

* ``GET /etl/info/`` - what the page adapts to: read-only, token, directories
* ``GET /etl/topics/`` - the topics and their partition counts
* ``GET /etl/pipelines/NAME/deadletters/?limit=N`` - the pipeline's recent dead
  letters with their headers (:mod:`etl.ops.deadletters`)
* ``GET /etl/messages/?topic=T[&partition=P][&offset=O | &time=T]`` - at most 10
  messages, keys and values cut at 1 KB (:mod:`etl.ops.query`)
* ``GET /etl/messages/raw/?topic=T&partition=P&offset=O&part=value|key`` - one
  key or value whole, as a download
* ``POST /etl/messages/`` - send a test message ``{"topic", "key", "value",
  "partition", "headers"}``
* ``POST /etl/searches/``, ``GET /etl/searches/ID/``, ``POST /etl/searches/ID/cancel/``
  - a message search as a job (:mod:`etl.web.console_search`)
* ``GET /etl/templates/`` - the shipped transform templates with their params' JSON schema
* ``POST /etl/templates/render/`` - a template form rendered to Python source
* ``GET /etl/transforms/files/``, ``GET``/``PUT``/``DELETE /etl/transforms/files/FILE``
  - the transform files of ``transforms_dir`` (:mod:`etl.web.console_transforms`)
* ``POST /etl/transforms/test/`` - run a transform on one sample message

The connector forms come from the connectors API itself (``GET /connector-plugins``,
``GET /connector-plugins/TYPE/config``: the config model's JSON schema).

Requests that change something (send, save, delete, test: a test runs code) pass
:func:`etl.web.guard.check_change`; the POSTs that only read (search, render)
pass :func:`etl.web.guard.check_same_site`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from faust import web

from etl.ops.messages import DISPLAY_LIMIT, MessageLookupError, parse_time
from etl.web.body import BadBody, json_object
from etl.web.console_search import MAX_LIMIT, SearchJobs, SearchRequestError, parse_search
from etl.web.console_transforms import (
    ConsoleRequestError,
    TrialMessage,
    delete_file,
    list_files,
    load_text,
    read_file,
    render_form,
    run_trial,
    save_file,
    source_of,
)
from etl.web.guard import Refusal, check_change, check_same_site, is_loopback

log = logging.getLogger("etl.web")

#: Messages one query shows at most (as the documents' console).
QUERY_LIMIT = 10
ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$")
CONTENT_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "html": "text/html; charset=utf-8",
}
#: The page may load and call this server only: no CDN, no font service, no beacon.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Handler = Callable[[], Awaitable[web.Response]]


def console_asset(name: str) -> bytes:
    """A file of ``etl/web/console`` (shipped as package data)."""
    return resources.files("etl.web").joinpath("console", name).read_bytes()


def _package_version() -> str:
    try:
        return version("faust-etl")
    except PackageNotFoundError:
        return "unknown"


def register_console(app: Any) -> None:
    """Add the console page, its assets and its routes to the app."""
    settings = app.etl_settings
    searches = SearchJobs(settings.kafka)
    app.etl_searches = searches

    def supervisor() -> Any:
        sup = getattr(app, "etl_supervisor", None)
        if sup is None:
            raise ConsoleRequestError(503, "the worker is starting: try again in a few seconds")
        return sup

    def refusal_response(view: web.View, problem: Refusal | None) -> web.Response | None:
        return None if problem is None else view.error(problem.status, problem.message)

    def change_refused(view: web.View, request: web.Request) -> web.Response | None:
        scheme = getattr(request, "scheme", "http")
        return refusal_response(
            view, check_change(settings.web, request.method, request.headers, scheme)
        )

    def cross_site(view: web.View, request: web.Request) -> web.Response | None:
        return refusal_response(
            view, check_same_site(request.headers, getattr(request, "scheme", "http"))
        )

    async def answer(
        view: web.View, handler: Handler, denied: web.Response | None = None
    ) -> web.Response:
        """Run a handler unless the request was refused (``denied``); a known
        problem becomes a JSON error that says what to do."""
        if denied is not None:
            return denied
        try:
            return await handler()
        except ConsoleRequestError as exc:
            return view.json(exc.to_dict(), status=exc.status)
        except (SearchRequestError, MessageLookupError) as exc:
            status = 404 if "does not exist" in str(exc) else 400
            return view.error(status, str(exc))
        except BadBody as exc:
            return view.error(400, str(exc))
        except Exception as exc:
            log.exception("console request failed path=%s", getattr(view, "path", ""))
            return view.error(
                500, f"{type(exc).__name__}: {exc} (the worker's log has the details)"
            )

    def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConsoleRequestError(400, f"{name}: expected a number, not {raw!r}") from None

    def query_text(request: web.Request, name: str) -> str:
        raw = (request.query.get(name) or "").strip()
        if not raw:
            raise ConsoleRequestError(400, f"{name}: required")
        return raw

    # ---- the page -----------------------------------------------------------------------

    @app.page("/etl/", name="etl_page")
    class ConsolePage(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.bytes(
                console_asset("index.html"),
                headers={**SECURITY_HEADERS, "Content-Type": CONTENT_TYPES["html"]},
            )

    @app.page("/etl/console/{asset}", name="etl_console_asset")
    class ConsoleAsset(web.View):
        async def get(self, request: web.Request, asset: str) -> web.Response:
            if not ASSET_NAME.match(asset):
                return self.error(404, f"no console file {asset!r}")
            try:
                data = console_asset(asset)
            except (FileNotFoundError, OSError):
                return self.error(404, f"no console file {asset!r}")
            # aiohttp refuses a charset in content_type=; the header carries it.
            content_type = CONTENT_TYPES[asset.rsplit(".", 1)[1]]
            return self.bytes(data, headers={**SECURITY_HEADERS, "Content-Type": content_type})

    @app.page("/etl/info/", name="etl_info")
    class InfoView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            web_settings = settings.web
            token = web_settings.token is not None and bool(web_settings.token.get_secret_value())
            sup = getattr(app, "etl_supervisor", None)
            if web_settings.read_only:
                changes = "read_only"
            elif token:
                changes = "token"
            elif is_loopback(web_settings.host):
                changes = "open"
            else:
                changes = "refused"
            return self.json(
                {
                    "version": _package_version(),
                    "read_only": web_settings.read_only,
                    "token_required": token,
                    "changes": changes,
                    "worker": getattr(sup, "worker_id", None),
                    "transforms_dir": str(settings.transforms_dir),
                    "dead_letter_topic": settings.errors.dead_letter_topic,
                    "transform_timeout_s": settings.transform_timeout,
                    "bootstrap_servers": settings.kafka.bootstrap_servers,
                    "limits": {
                        "query": QUERY_LIMIT,
                        "display_bytes": DISPLAY_LIMIT,
                        "search": MAX_LIMIT,
                    },
                }
            )

    # ---- topics and messages ----------------------------------------------------------------

    @app.page("/etl/topics/", name="etl_topics")
    class TopicsView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            async def run() -> web.Response:
                return self.json({"topics": await list_topics(settings.kafka)})

            return await answer(self, run)

    @app.page("/etl/messages/", name="etl_messages")
    class MessagesView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            from etl.ops.query import query_by_offset, query_by_time, query_newest

            async def run() -> web.Response:
                topic = query_text(request, "topic")
                partition = query_int(request, "partition")
                offset = query_int(request, "offset")
                limit = query_int(request, "limit", QUERY_LIMIT) or QUERY_LIMIT
                if not 1 <= limit <= QUERY_LIMIT:
                    raise ConsoleRequestError(400, f"limit: from 1 to {QUERY_LIMIT}")
                at = (request.query.get("time") or "").strip()
                if offset is not None:
                    if partition is None:
                        raise ConsoleRequestError(
                            400, "a query by offset needs the partition: choose one"
                        )
                    result = await query_by_offset(settings.kafka, topic, partition, offset, limit)
                    mode = "offset"
                elif at:
                    try:
                        at_ms = parse_time(at)
                    except ValueError as exc:
                        raise ConsoleRequestError(400, f"time: {exc}") from None
                    result = await query_by_time(settings.kafka, topic, at_ms, partition, limit)
                    mode = "time"
                else:
                    result = await query_newest(settings.kafka, topic, partition, limit)
                    mode = "newest"
                return self.json(
                    {"topic": topic, "mode": mode, "limit": limit, **result.to_dict(DISPLAY_LIMIT)}
                )

            return await answer(self, run)

        async def post(self, request: web.Request) -> web.Response:
            async def run() -> web.Response:
                data = await json_object(request)
                return self.json(await send_message(settings.kafka, data))

            return await answer(self, run, denied=change_refused(self, request))

    @app.page("/etl/messages/raw/", name="etl_message_raw")
    class RawMessageView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            from etl.ops.query import query_by_offset

            async def run() -> web.Response:
                topic = query_text(request, "topic")
                partition = query_int(request, "partition")
                offset = query_int(request, "offset")
                part = request.query.get("part", "value")
                if partition is None or offset is None or part not in ("key", "value"):
                    raise ConsoleRequestError(
                        400, "say which message: topic, partition, offset and part=key|value"
                    )
                result = await query_by_offset(settings.kafka, topic, partition, offset, 1)
                found = [m for m in result.messages if m.offset == offset]
                if not found:
                    raise ConsoleRequestError(
                        404, f"no message at {topic}/{partition}@{offset} (deleted by retention?)"
                    )
                data = found[0].key if part == "key" else found[0].value
                if data is None:
                    raise ConsoleRequestError(404, f"that message has no {part} (null)")
                stem = re.sub(r"[^A-Za-z0-9._-]", "_", topic)
                name = f"{stem}-{partition}-{offset}.{part}"
                return self.bytes(
                    data,
                    content_type="application/octet-stream",
                    headers={
                        "Content-Disposition": f'attachment; filename="{name}"',
                        "X-Content-Type-Options": "nosniff",
                    },
                )

            return await answer(self, run)

    # ---- searches ---------------------------------------------------------------------------

    @app.page("/etl/searches/", name="etl_searches")
    class SearchStart(web.View):
        async def post(self, request: web.Request) -> web.Response:
            async def run() -> web.Response:
                topic, query = parse_search(await json_object(request))
                job = searches.start(topic, query)
                return self.json(job.to_dict(), status=202)

            return await answer(self, run, denied=cross_site(self, request))

    @app.page("/etl/searches/{job_id}/", name="etl_search")
    class SearchPoll(web.View):
        async def get(self, request: web.Request, job_id: str) -> web.Response:
            job = searches.get(job_id)
            if job is None:
                return self.error(404, f"no search {job_id!r} (finished searches are kept 10 min)")
            return self.json(job.to_dict())

    @app.page("/etl/searches/{job_id}/cancel/", name="etl_search_cancel")
    class SearchCancel(web.View):
        async def post(self, request: web.Request, job_id: str) -> web.Response:
            denied = cross_site(self, request)
            if denied is not None:
                return denied
            job = searches.get(job_id)
            if job is None:
                return self.error(404, f"no search {job_id!r}")
            job.cancel()
            return self.json(job.to_dict(), status=202)

    # ---- dead letters -------------------------------------------------------------------

    @app.page("/etl/pipelines/{name}/deadletters/", name="etl_pipeline_deadletters")
    class DeadLettersView(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            from etl.ops.deadletters import read_dead_letters

            async def run() -> web.Response:
                sup = supervisor()
                try:
                    key = sup.resolve(name)
                except KeyError as exc:
                    raise ConsoleRequestError(404, str(exc.args[0])) from None
                limit = query_int(request, "limit", 20) or 20
                if not 1 <= limit <= 200:
                    raise ConsoleRequestError(400, "limit: from 1 to 200")
                topic = (request.query.get("topic") or "").strip() or dead_letter_topic(sup, key)
                try:
                    letters, matched = await read_dead_letters(settings.kafka, topic, key, limit)
                except MessageLookupError:
                    return self.json(
                        {
                            "pipeline": key,
                            "topic": topic,
                            "matched": 0,
                            "letters": [],
                            "note": f"topic {topic} does not exist yet: nothing was dead-lettered",
                        }
                    )
                return self.json(
                    {
                        "pipeline": key,
                        "topic": topic,
                        "matched": matched,
                        "letters": [letter.to_dict(DISPLAY_LIMIT) for letter in letters],
                    }
                )

            return await answer(self, run)

    def dead_letter_topic(sup: Any, key: str) -> str:
        for item in sup.cluster_snapshot().get("pipelines", []):
            if item.get("key") == key and item.get("dead_letter_topic"):
                return str(item["dead_letter_topic"])
        try:
            details = sup.details(key)
        except KeyError:
            details = {}
        return str(details.get("dead_letter_topic") or settings.errors.dead_letter_topic)

    # ---- templates and transform files ------------------------------------------------------

    @app.page("/etl/templates/", name="etl_templates")
    class TemplatesView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            from etl.transforms.templates import list_templates

            return self.json(
                {
                    "templates": [
                        {
                            "name": t.name,
                            "description": t.description,
                            "schema": t.params.model_json_schema(),
                        }
                        for t in list_templates()
                    ]
                }
            )

    @app.page("/etl/templates/render/", name="etl_template_render")
    class TemplateRender(web.View):
        async def post(self, request: web.Request) -> web.Response:
            async def run() -> web.Response:
                return self.json({"text": render_form(await json_object(request))})

            return await answer(self, run, denied=cross_site(self, request))

    @app.page("/etl/transforms/files/", name="etl_transform_files")
    class TransformFiles(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json(
                {
                    "directory": str(settings.transforms_dir),
                    "files": list_files(settings.transforms_dir),
                }
            )

    @app.page("/etl/transforms/files/{file_name}", name="etl_transform_file")
    class TransformFile(web.View):
        async def get(self, request: web.Request, file_name: str) -> web.Response:
            async def run() -> web.Response:
                return self.json(read_file(settings.transforms_dir, file_name))

            return await answer(self, run)

        async def put(self, request: web.Request, file_name: str) -> web.Response:
            async def run() -> web.Response:
                data = await json_object(request)
                saved = await save_file(
                    settings.transforms_dir, file_name, data, timeout=settings.transform_timeout
                )
                log.info(
                    "transform saved from the console file=%s version=%s",
                    saved["path"],
                    saved["version"],
                )
                return self.json(saved, status=201 if saved["created"] else 200)

            return await answer(self, run, denied=change_refused(self, request))

        async def delete(self, request: web.Request, file_name: str) -> web.Response:
            async def run() -> web.Response:
                dry_run = request.query.get("dry_run", "").lower() in ("1", "true", "yes")
                out = delete_file(settings.transforms_dir, file_name, dry_run=dry_run)
                if not dry_run:
                    log.info("transform deleted from the console file=%s", out["removed"][0])
                return self.json(out)

            return await answer(self, run, denied=change_refused(self, request))

    @app.page("/etl/transforms/test/", name="etl_transform_test")
    class TransformTest(web.View):
        async def post(self, request: web.Request) -> web.Response:
            async def run() -> web.Response:
                data = await json_object(request)
                file_name = str(data.get("file") or "console_test.py")
                if isinstance(data.get("template"), dict) and not data.get("file"):
                    file_name = "console_test.yaml"
                timeout = settings.transform_timeout
                spec = await load_text(
                    settings.transforms_dir, file_name, source_of(data), timeout=timeout
                )
                sample = TrialMessage.from_body(data.get("message"))
                return self.json(await run_trial(spec, sample, timeout))

            return await answer(self, run, denied=change_refused(self, request))


async def list_topics(kafka: Any) -> list[dict[str, Any]]:
    """Every topic but the broker's internal ones, with its partition count."""
    from etl.kafka import make_admin

    admin = make_admin(kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(None)
    finally:
        await admin.close()
    topics = [
        {"name": item["topic"], "partitions": len(item.get("partitions") or [])}
        for item in described
        if item.get("error_code", 0) == 0 and not str(item["topic"]).startswith("__")
    ]
    return sorted(topics, key=lambda t: t["name"])


async def send_message(kafka: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Produce one test message (``etl send``): where it went."""
    from etl.kafka import make_producer, topic_partitions

    topic = str(data.get("topic") or "").strip()
    if not topic:
        raise ConsoleRequestError(400, "topic: say which topic to send to")
    counts = await topic_partitions(kafka, [topic])
    if topic not in counts:
        raise ConsoleRequestError(
            404, f"topic {topic!r} does not exist: create it first (or check the name)"
        )
    partition = data.get("partition")
    if partition in (None, ""):
        partition = None
    else:
        try:
            partition = int(partition)
        except (TypeError, ValueError):
            raise ConsoleRequestError(400, "partition: expected a number") from None
        if not 0 <= partition < counts[topic]:
            raise ConsoleRequestError(
                400, f"topic {topic!r} has partitions 0-{counts[topic] - 1}, not {partition}"
            )
    key = data.get("key")
    value = data.get("value")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConsoleRequestError(400, "headers: expected an object of NAME: TEXT")
    producer = make_producer(kafka)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic,
            value=None if value is None else str(value).encode(),
            key=None if key in (None, "") else str(key).encode(),
            partition=partition,
            headers=[(str(k), str(v).encode()) for k, v in headers.items()] or None,
        )
    finally:
        await producer.stop()
    log.info(
        "test message sent from the console topic=%s partition=%s offset=%s",
        meta.topic,
        meta.partition,
        meta.offset,
    )
    return {
        "topic": meta.topic,
        "partition": meta.partition,
        "offset": meta.offset,
        "timestamp": meta.timestamp,
    }
