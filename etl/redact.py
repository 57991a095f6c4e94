"""Keep secrets out of logs, status and dead-letter records."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "***"
# user:password@ in URLs and DSNs, and key=value secrets in connection strings.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I
)
_KV_SECRET = re.compile(
    # ``_`` too: ``sasl_password=``, ``db_password=`` and ``access_token=`` are keys as well.
    r"(?P<key>(?:\b|_)(?:password|passwd|pwd|secret|api_key|token)\s*=\s*)[^\s&;]+",
    re.I,
)


class Redactor:
    """Replaces every known secret value, and credentials in URLs, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        """Redact these too from now on (secrets of a connector created at runtime)."""
        self.secrets = sorted(
            {*self.secrets, *(s for s in secrets if s and len(s) >= 3)}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        return _KV_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)


_SECRET_NAMES = re.compile(
    r"password|passwd|secret|api[_-]?key|token|access[_-]?key|dsn|authorization|credential", re.I
)
#: Names that say secret but hold none (the file a secret is in, a header's name).
_NOT_SECRET_SUFFIXES = ("_file", "_topic", "_header", "_mode", "_path")


def redacted_config(config: Any, redact: Redactor) -> Any:
    """A configuration as JSON-ready data with every secret replaced by ``***``.

    Secrets are the ``SecretStr`` fields, fields whose name says secret (password,
    token, key, DSN), and any known secret value inside other strings.
    """

    def walk(value: Any, name: str = "") -> Any:
        if isinstance(value, SecretStr):
            return MASK if value.get_secret_value() else None
        if isinstance(value, BaseModel):
            return {k: walk(v, k) for k, v in value.__dict__.items()}
        if isinstance(value, dict):
            return {str(k): walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [walk(v, name) for v in value]
        if isinstance(value, str):
            if value and _SECRET_NAMES.search(name) and not name.endswith(_NOT_SECRET_SUFFIXES):
                return MASK
            return redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return redact(str(value))

    return walk(config)
