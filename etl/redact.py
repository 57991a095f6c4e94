"""Keep secrets out of logs, status and dead-letter records."""

from __future__ import annotations

import re
from collections.abc import Iterable

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

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        return _KV_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
