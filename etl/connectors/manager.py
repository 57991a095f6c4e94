"""Applies connector changes - from etl.yaml, ``connectors/`` files and the API - to pipelines.

Rules kept here:

* a connector's name is unique across etl.yaml, the files and the API; a second
  definition is refused and reported, the first one keeps running;
* a new connector starts; a removed one stops after committing what it wrote;
* a changed one commits what it wrote and runs with the new configuration, in
  place whenever it can: batching and retry options simply apply; any other sink
  option (table, URL, format, credentials...) writes and commits what is buffered,
  closes the destination and opens it again with the new options - the consumer
  keeps its group, partitions and position, so nothing is read twice or skipped;
  only a change of topics, error handling or type (and any change of a source)
  restarts the pipeline, which resumes from the committed offsets;
* a configuration that does not validate (or whose secrets cannot be read) keeps
  the running version and is reported with every problem, in the log and in the
  pipeline's status;
* API connectors live in the control topic (``connector/<name>``), so every
  worker applies the same create, edit and delete, and they survive restarts of
  every worker; their secrets are sealed (:mod:`etl.connectors.secrets`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from etl.config import substitute_env
from etl.connectors.secrets import SecretsUnavailable, secret_values, unseal
from etl.connectors.spec import ConnectorSpec, parse_connector
from etl.runtime.status import PipelineStatus, State

if TYPE_CHECKING:
    from etl.supervisor import PipelineSupervisor

log = logging.getLogger("etl.connectors")

CONFIG_NOT_APPLIED = "configuration not applied"


def describe_origin(origin: str) -> str:
    if origin.startswith("file:"):
        return f"the file {origin[5:]}"
    return {"api": "the API (control topic)", "etl.yaml": "etl.yaml"}.get(origin, origin)


class ConnectorManager:
    """The connectors of one worker, by name (see the module notes)."""

    def __init__(self, supervisor: PipelineSupervisor) -> None:
        self.supervisor = supervisor
        self.specs: dict[str, ConnectorSpec] = {}
        #: Connectors whose definition could not be used: name -> (origin, problems).
        self.problems: dict[str, tuple[str, list[str]]] = {}

    # ---- from etl.yaml, files and the control topic ------------------------------------

    async def apply(self, spec: ConnectorSpec) -> None:
        """Start, reconfigure or restart ``spec``'s connector."""
        current = self.specs.get(spec.name)
        if current is not None and current.origin != spec.origin:
            self.report(
                spec.name,
                spec.origin,
                [
                    f"a connector named {spec.name!r} is defined in "
                    f"{describe_origin(current.origin)} already; rename one of them"
                ],
            )
            return
        self._forget_problem(spec.name, spec.origin)
        sup = self.supervisor
        if current is None:
            log.info(
                "connector starting connector=%s kind=%s type=%s from=%s",
                spec.name,
                spec.kind,
                spec.type,
                describe_origin(spec.origin),
            )
            self.specs[spec.name] = spec
            await sup.start_connector(spec.kind, spec.config)
            return
        if current.kind != spec.kind:
            await sup.stop_pipeline(current.key)
            self.specs[spec.name] = spec
            await sup.start_connector(spec.kind, spec.config)
            return
        changed = spec.changes(current)
        if not changed:
            self.specs[spec.name] = spec
            return
        in_place = spec.in_place(current)
        if (in_place or spec.reopens(current)) and await sup.reconfigure(
            spec.key, spec.config, reopen=not in_place
        ):
            log.info(
                "connector reconfigured in place connector=%s changed=%s%s",
                spec.name,
                ",".join(sorted(changed)),
                "" if in_place else " (destination reopened, group kept)",
            )
            self.specs[spec.name] = spec
            return
        log.info(
            "connector restarting with its new configuration connector=%s changed=%s",
            spec.name,
            ",".join(sorted(changed)),
        )
        self.specs[spec.name] = spec
        await sup.stop_pipeline(current.key)
        await sup.start_connector(spec.kind, spec.config)

    async def remove(self, name: str, origin: str) -> None:
        """The definition from ``origin`` is gone: stop the connector after committing."""
        self._forget_problem(name, origin)
        current = self.specs.get(name)
        if current is None or current.origin != origin:
            return
        log.info("connector removed, stopping connector=%s from=%s", name, describe_origin(origin))
        del self.specs[name]
        await self.supervisor.stop_pipeline(current.key)

    def report(self, name: str, origin: str, problems: list[str]) -> None:
        """A definition that cannot be used: shown on the running version, or as a load error."""
        text = f"{CONFIG_NOT_APPLIED} ({describe_origin(origin)}): " + "; ".join(problems)
        text = self.supervisor.redact(text)
        self.problems[name] = (origin, problems)
        current = self.specs.get(name)
        pipeline = self.supervisor.pipelines.get(current.key) if current is not None else None
        if pipeline is not None:
            pipeline.status.error = text + " (the running version stays)"
            pipeline.status.error_at = time.time()
            return
        status = PipelineStatus(name=name, kind="sink", path=origin.removeprefix("file:"))
        status.fail(State.LOAD_ERROR, text)
        self.supervisor.load_errors[f"connector:{name}"] = status

    def _forget_problem(self, name: str, origin: str) -> None:
        found = self.problems.get(name)
        if found is not None and found[0] == origin:
            del self.problems[name]
            self.supervisor.load_errors.pop(f"connector:{name}", None)
            current = self.specs.get(name)
            pipeline = self.supervisor.pipelines.get(current.key) if current else None
            if pipeline is not None and (pipeline.status.error or "").startswith(
                CONFIG_NOT_APPLIED
            ):
                pipeline.status.error = None

    # ---- API connectors (the control topic) -----------------------------------------

    def parse_stored(self, name: str, record: dict[str, Any]) -> ConnectorSpec:
        """An API connector's stored record as a spec; ValueError listing every problem."""
        settings = self.supervisor.settings
        key = settings.control.secrets_key
        try:
            raw = unseal(dict(record.get("config") or {}), key.get_secret_value() if key else None)
        except SecretsUnavailable as exc:
            raise ValueError(str(exc)) from None
        data, problems = substitute_env(raw, dict(os.environ))
        if problems:
            raise ValueError("; ".join(problems))
        spec, problems = parse_connector(
            data, name=name, origin="api", version=str(record.get("_offset", ""))
        )
        if spec is None:
            raise ValueError("; ".join(problems))
        model = type(spec.config)
        self.supervisor.redact.add(secret_values(data, model))
        return spec

    async def on_stored(self, name: str, record: dict[str, Any] | None) -> None:
        """The control topic's ``connector/<name>`` changed (created, edited or deleted)."""
        if record is None:
            await self.remove(name, "api")
            return
        try:
            spec = self.parse_stored(name, record)
        except ValueError as exc:
            log.error("API connector not applied connector=%s error=%r", name, str(exc))
            self.report(name, "api", [str(exc)])
            return
        await self.apply(spec)
