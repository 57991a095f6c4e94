"""Configuration: one YAML file validated by pydantic, overridable from the environment.

Order of precedence, highest first: ``ETL_*`` environment variables (nested with
``__``, e.g. ``ETL_KAFKA__BOOTSTRAP_SERVERS``; a value starting with ``[`` or ``{``
is read as JSON), the YAML file, the defaults.
``${VAR}`` (or ``${VAR:-default}``) inside a string of the file is read from the
environment; ``$${`` writes a literal ``${``. Secrets are ``SecretStr``.

Sinks and sources are validated by the config model their ``type`` names in the
plugin registry, so every problem of every entry is reported by its path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from etl.alerts.config import AlertSettings
from etl.errors import ConfigurationError
from etl.validation import validate_together


def _check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


#: An IANA time zone name such as ``UTC`` or ``Asia/Shanghai``.
TimeZoneName = Annotated[str, AfterValidator(_check_time_zone)]
StartOffset = Literal["earliest", "latest"]
ErrorPolicy = Literal["continue", "stop"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster, and producer/consumer tuning."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "faust-etl"
    #: Idempotent producer (needs InitProducerId); set false for brokers without it.
    enable_idempotence: bool = True
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    #: Verify the broker's host name against its certificate (TLS is verified by default).
    ssl_check_hostname: bool = True
    #: Prefix of every consumer group: ``<prefix>-transform-<name>``, ``<prefix>-sink-<name>``.
    group_prefix: str = Field(default="etl", pattern=NAME_PATTERN)
    #: Create missing target and dead-letter topics.
    auto_create_topics: bool = True
    #: Partitions of a created target topic; unset = as many as its source topic.
    target_partitions: int | None = Field(default=None, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    #: Most records one poll hands to a pipeline.
    max_batch_records: int = Field(default=10000, ge=1)
    #: How long one poll waits for records.
    poll_timeout_ms: int = Field(default=200, ge=1)
    linger_ms: int = Field(default=5, ge=0)
    max_request_size: int = Field(default=1048576, ge=1024)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    session_timeout_ms: int = Field(default=10000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3000, ge=100)
    #: Longest a pipeline may take between polls before the group evicts it.
    max_poll_interval_ms: int = Field(default=300000, ge=1000)
    #: ``at_least_once``: a crash can repeat up to one batch in the target topic.
    #: ``exactly_once``: each transform batch (outputs, dead letters and consumed
    #: offsets) is one Kafka transaction; needs a broker with transactions
    #: (docs/transforms.md, "Exactly-once"). A file's ``PROCESSING_GUARANTEE`` overrides it.
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    #: This worker's identity under ``exactly_once``: part of every pipeline's
    #: ``transactional.id`` and ``group.instance.id``, so that a restarted worker
    #: fences its predecessor. Unset = an id kept in ``<data_dir>/worker-id``.
    worker_id: str | None = Field(default=None, pattern=NAME_PATTERN)

    @model_validator(mode="wrap")
    @classmethod
    def _check_security(cls, data: Any, handler: Any) -> Any:
        # Checked on the raw mapping and merged with the field errors, so that every
        # problem is reported at once, not only after the fields are valid.
        return validate_together(data, handler, _security_problems)


def _security_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    protocol = str(data.get("security_protocol") or "PLAINTEXT")
    if protocol.startswith("SASL_"):
        if not data.get("sasl_mechanism"):
            problems.append(f"sasl_mechanism is required with {protocol}")
        if not data.get("sasl_username") or not data.get("sasl_password"):
            problems.append(f"sasl_username and sasl_password are required with {protocol}")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = data.get(name)
        if path and not Path(str(path)).is_file():
            problems.append(f"{name}: file not found: {path}")
    return problems


class ErrorSettings(BaseModel):
    """What happens to a message that a pipeline cannot handle."""

    model_config = ConfigDict(extra="forbid")

    #: continue: log, dead-letter, go on; stop: halt the bad record's partition (a source:
    #: the source), commit nothing past it.
    policy: ErrorPolicy = "continue"
    dead_letter_topic: str = Field(default="etl-dead-letter", pattern=NAME_PATTERN)
    #: Partitions of the dead-letter topic when it is created.
    dead_letter_partitions: int = Field(default=1, ge=1)


class WebSettings(BaseModel):
    """The worker's HTTP server (status, metrics, control API, console)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=6066, ge=0, le=65535)
    #: Bearer token every request that changes something must carry. Required for
    #: those requests when ``host`` is not a loopback address (docs/operations.md).
    token: SecretStr | None = None
    #: Refuse every request that changes something (status and reads only).
    read_only: bool = False


class ControlSettings(BaseModel):
    """The cluster's shared control state (pause/resume/stop/restart, worker list)."""

    model_config = ConfigDict(extra="forbid")

    #: Keep the state in a compacted Kafka topic shared by every worker. False: in
    #: this process only (one worker; nothing survives a restart).
    enabled: bool = True
    #: The compacted control topic; unset = ``<kafka.group_prefix>-control``.
    topic: str | None = Field(default=None, pattern=NAME_PATTERN)
    #: How often a worker writes its heartbeat (status of its pipelines).
    heartbeat_seconds: float = Field(default=2.0, ge=0.2, le=60)
    #: Recent log lines of each pipeline go to this topic (``etl logs`` across the
    #: cluster); unset = ``<kafka.group_prefix>-logs``.
    logs_topic: str | None = Field(default=None, pattern=NAME_PATTERN)
    #: Send pipelines' log lines to ``logs_topic`` (they are kept in memory anyway).
    ship_logs: bool = True
    #: Encrypts the secrets of connectors created through the API before they are
    #: stored in the control topic (any long random string; the same on every worker).
    #: Unset: the API takes secrets only as ``${VAR}`` references.
    secrets_key: SecretStr | None = None


class PluginConfigBase(BaseModel):
    """Options every sink and source takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: str
    start_offset: StartOffset = "latest"
    #: Failure policy of this pipeline; unset = ``errors.policy``.
    on_error: ErrorPolicy | None = None
    #: This pipeline's dead-letter topic; unset = ``errors.dead_letter_topic``.
    dead_letter_topic: str | None = Field(default=None, pattern=NAME_PATTERN)


class SinkConfigBase(PluginConfigBase):
    """Options every sink takes; a sink's own model adds its options.

    A record the sink rejects (bad JSON, wrong type, constraint violation) goes,
    as the documents say: to ``runtime_error_topic`` when set; else dropped with a
    log line when ``skip_error`` is true; else to the dead-letter topic (this sink's
    ``dead_letter_topic``, else ``errors.dead_letter_topic``) when this sink's
    ``on_error`` is ``continue``; else the sink stops before that record.
    """

    topics: list[str] = Field(min_length=1)
    skip_error: bool = False
    runtime_error_topic: str | None = Field(default=None, pattern=NAME_PATTERN)
    #: Flush a partition's buffer at this many records ...
    batch_size: int = Field(default=1000, ge=1)
    #: ... or at this many bytes of keys and values ...
    batch_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    #: ... or when its oldest record has waited this long (an idle partition flushes too).
    linger_ms: int = Field(default=1000, ge=0)
    #: Retries of a transient failure (connection lost, deadlock, busy); unset = forever.
    max_retries: int | None = Field(default=None, ge=0)
    retry_backoff_ms: int = Field(default=500, ge=1)
    retry_backoff_max_ms: int = Field(default=30000, ge=1)


class SourceConfigBase(PluginConfigBase):
    """Options every source takes; a source's own model adds its options."""


class ETLSettings(BaseModel):
    """The whole configuration (``etl.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    #: Identifies the Faust app (and its data directory).
    app_id: str = Field(default="etl", pattern=NAME_PATTERN)
    transforms_dir: Path = Path("transforms")
    #: One sink or source per YAML file, watched while the worker runs (docs/connectors.md).
    connectors_dir: Path = Path("connectors")
    #: Where the worker keeps local state (status file, Faust data).
    data_dir: Path = Path(".etl-data")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Seconds one ``deal_message`` call may take before it is a failed record (stage
    #: ``timeout``); a transform file's ``TIMEOUT`` overrides it.
    transform_timeout: float = Field(default=30.0, gt=0)
    #: Calls in flight per pipeline for ``async def deal_message`` (file: ``CONCURRENCY``).
    transform_concurrency: int = Field(default=16, ge=1, le=1024)
    #: Worker processes ``etl worker`` runs (``--processes``); each joins the same groups.
    processes: int = Field(default=1, ge=1, le=64)
    kafka: KafkaSettings = KafkaSettings()
    errors: ErrorSettings = ErrorSettings()
    web: WebSettings = WebSettings()
    control: ControlSettings = ControlSettings()
    #: Alert rules and notifiers (docs/alerts.md); more rules in ``alerts.rules_dir``.
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    sinks: list[dict[str, Any]] = Field(default_factory=list)
    sources: list[dict[str, Any]] = Field(default_factory=list)
    #: Set by :func:`load_settings`: the file the settings came from, if any.
    config_path: Path | None = Field(default=None, exclude=True)

    def secret_values(self) -> list[str]:
        """Every secret in the configuration, for redaction of log and error text."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if secret:
                    found.append(secret)
                    found.extend(_url_password(secret))
            elif isinstance(value, BaseModel):
                for item in value.__dict__.values():
                    walk(item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, str) and item:
                        if _looks_secret(str(key)):
                            found.append(item)
                        # A password inside a DSN or URL is a secret on its own too.
                        found.extend(_url_password(item))
                    walk(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)

        walk(self)
        return sorted(set(found), key=len, reverse=True)

    def sink_configs(self) -> list[SinkConfigBase]:
        """The sinks, each validated by its own model (see :func:`load_settings`)."""
        return [validate_plugin("sink", raw)[0] for raw in self.sinks]  # type: ignore[misc]

    def source_configs(self) -> list[SourceConfigBase]:
        """The sources, each validated by its own model."""
        return [validate_plugin("source", raw)[0] for raw in self.sources]  # type: ignore[misc]


_SECRET_WORDS = ("password", "secret", "api_key", "apikey", "token", "access_key", "dsn")


def _url_password(text: str) -> list[str]:
    if "://" not in text or "@" not in text:
        return []
    try:
        password = urlsplit(text).password
    except ValueError:
        return []
    return [unquote(password), password] if password else []


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(data: Any, environ: dict[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; return (data, problems)."""
    problems: list[str] = []
    if isinstance(data, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _VAR.sub(repl, data), problems
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out[key], sub = substitute_env(value, environ, _join(path, str(key)))
            problems += sub
        return out, problems
    if isinstance(data, list):
        items = []
        for index, value in enumerate(data):
            item, sub = substitute_env(value, environ, f"{path}[{index}]")
            items.append(item)
            problems += sub
        return items, problems
    return data, problems


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def format_error_location(prefix: str, loc: tuple[Any, ...]) -> str:
    """``("sinks", 0, "table")`` -> ``sinks[0].table``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _join(out, str(part))
    return out or "<root>"


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The option names of the (nested) model that holds ``loc``'s last part."""
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return list(model.model_fields) if model is not None else []


def unknown_option_message(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """``unknown option``, with the closest known option when one is close."""
    import difflib

    known = _fields_at(model, loc)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6) if loc else []
    return f"unknown option; did you mean {close[0]!r}?" if close else "unknown option"


def validation_problems(
    error: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> list[str]:
    """One line per pydantic error: ``path: message`` (input values never shown).

    With ``model`` (the validated class), an unknown option names the closest known one.
    """
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"]
        if item["type"] == "missing":
            message = "field required"
        elif item["type"] == "extra_forbidden":
            message = unknown_option_message(model, tuple(item["loc"]))
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        lines.append(f"{format_error_location(prefix, tuple(item['loc']))}: {message}")
    return lines


def validate_plugin(
    kind: Literal["sink", "source"], raw: Any, prefix: str = ""
) -> tuple[PluginConfigBase | None, list[str]]:
    """Validate one sink/source entry with the model its ``type`` names."""
    from etl.plugins import UnknownPluginError, plugin_config_model

    if not isinstance(raw, dict):
        return None, [f"{prefix or '<root>'}: must be a mapping"]
    type_name = raw.get("type")
    if not type_name:
        return None, [f"{_join(prefix, 'type')}: field required"]
    try:
        model = plugin_config_model(kind, str(type_name))
    except UnknownPluginError as exc:
        return None, [f"{_join(prefix, 'type')}: {exc}"]
    try:
        validated: PluginConfigBase = model.model_validate(raw)  # type: ignore[assignment]
        return validated, []
    except ValidationError as exc:
        return None, validation_problems(exc, prefix, model)


ENV_PREFIX = "ETL_"


def merge_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Apply ``ETL_A__B=value`` as ``data["a"]["b"] = value`` (JSON for lists/mappings)."""
    out: dict[str, Any] = {**data}
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == "ETL_CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path or path[0] not in ETLSettings.model_fields:
            continue
        parsed: Any = value
        if value[:1] in "[{":
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
        node = out
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = parsed
    return out


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config`` first, then ``ETL_CONFIG``, then ``./etl.yaml`` if it exists."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ETL_CONFIG")
    if env:
        return Path(env)
    default = Path("etl.yaml")
    return default if default.is_file() else None


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> ETLSettings:
    """Read, substitute and validate the configuration; raise with every problem listed."""
    environ = dict(os.environ if environ is None else environ)
    config_path = find_config_file(path)
    data: dict[str, Any] = {}
    problems: list[str] = []
    if config_path is not None:
        try:
            text = config_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError([f"{config_path}: cannot read: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{config_path}:{mark.line + 1}:{mark.column + 1}" if mark else str(config_path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigurationError([f"{where}: invalid YAML: {problem}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigurationError([f"{config_path}: the top level must be a mapping"])
        data, problems = substitute_env(loaded, environ)

    data = merge_env_overrides(data, environ)
    settings: ETLSettings | None = None
    try:
        settings = ETLSettings.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, model=ETLSettings)
    if settings is not None:
        base_dir = config_path.parent if config_path is not None else Path.cwd()
        problems += settings.alerts.load_rule_files(base_dir, environ)

    for kind, key in (("sink", "sinks"), ("source", "sources")):
        entries = data.get(key) if settings is None else getattr(settings, key)
        names: set[str] = set()
        for index, raw in enumerate(entries or []):
            prefix = f"{key}[{index}]"
            model, sub = validate_plugin(kind, raw, prefix)  # type: ignore[arg-type]
            problems += sub
            if model is not None:
                if model.name in names:
                    problems.append(f"{prefix}.name: duplicate {kind} name {model.name!r}")
                names.add(model.name)

    if problems or settings is None:
        raise ConfigurationError(problems or ["<root>: invalid configuration"])

    settings.config_path = config_path
    base = config_path.parent if config_path is not None else Path.cwd()
    if not settings.transforms_dir.is_absolute():
        settings.transforms_dir = (base / settings.transforms_dir).resolve()
    if not settings.connectors_dir.is_absolute():
        settings.connectors_dir = (base / settings.connectors_dir).resolve()
    if not settings.data_dir.is_absolute():
        settings.data_dir = (base / settings.data_dir).resolve()
    return settings
