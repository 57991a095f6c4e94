"""Index names from a template: ``logs-{topic}-{yyyy.MM.dd}``.

Placeholders: ``{topic}``, ``{partition}`` and a date pattern made of ``yyyy``,
``yy``, ``MM``, ``dd``, ``HH``, ``mm`` and the separators ``. - _ +``. The date is
the record's Kafka timestamp in UTC (the time of writing when a record has none).
OpenSearch index names are lowercase, so the rendered name is lowercased.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DATE_TOKENS = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M"}
_DATE_PATTERN = re.compile(r"(?:yyyy|yy|MM|dd|HH|mm|[.\-_+])+")
_DATE_TOKEN = re.compile(r"yyyy|yy|MM|dd|HH|mm")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FORBIDDEN = set('\\/*?"<>| ,#:')
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_CACHE_LIMIT = 10_000

Part = tuple[str, str]  # ("text", literal) | ("topic", "") | ("partition", "") | ("date", fmt)


def _date_format(pattern: str) -> str:
    return _DATE_TOKEN.sub(lambda m: _DATE_TOKENS[m.group(0)], pattern)


class IndexTemplate:
    """A parsed index-name template; :meth:`render` is cached per topic, partition and date."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[Part] = []
        self._cache: dict[tuple[str, int, int], str] = {}
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            self._literal(text[position : match.start()])
            name = match.group(1)
            if name in ("topic", "partition"):
                self.parts.append((name, ""))
            elif _DATE_PATTERN.fullmatch(name) and _DATE_TOKEN.search(name):
                self.parts.append(("date", _date_format(name)))
            else:
                raise ValueError(
                    f"unknown placeholder {{{name}}} in index {text!r}; use {{topic}}, "
                    "{partition} or a date pattern such as {yyyy.MM.dd}"
                )
            position = match.end()
        self._literal(text[position:])
        if not self.parts:
            raise ValueError("index must not be empty")
        first = self.parts[0]
        if first[0] == "text" and first[1][:1] in ("-", "_", "+"):
            raise ValueError(f"index {text!r} must not start with '-', '_' or '+'")
        formats = [value for kind, value in self.parts if kind == "date"]
        joined = "".join(formats)
        if "%M" in joined:
            self.bucket_ms: int | None = _MINUTE_MS
        elif "%H" in joined:
            self.bucket_ms = _HOUR_MS
        elif formats:
            self.bucket_ms = _DAY_MS
        else:
            self.bucket_ms = None

    def _literal(self, literal: str) -> None:
        if not literal:
            return
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in index {self.text!r}")
        bad = sorted(set(literal) & _FORBIDDEN)
        if bad:
            raise ValueError(
                f"index {self.text!r} contains {''.join(bad)!r}; index names cannot hold "
                '\\ / * ? " < > | , # : or spaces'
            )
        if literal != literal.lower():
            raise ValueError(f"index {self.text!r} must be lowercase")
        self.parts.append(("text", literal))

    def render(self, topic: str, partition: int, timestamp_ms: int | None) -> str:
        """The index name for one record."""
        if timestamp_ms is None or timestamp_ms < 0:
            timestamp_ms = int(time.time() * 1000)
        bucket = timestamp_ms // self.bucket_ms if self.bucket_ms else 0
        key = (topic, partition, bucket)
        name = self._cache.get(key)
        if name is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            name = self._cache[key] = self._render(topic, partition, timestamp_ms)
        return name

    def _render(self, topic: str, partition: int, timestamp_ms: int) -> str:
        moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
        out = []
        for kind, value in self.parts:
            if kind == "text":
                out.append(value)
            elif kind == "topic":
                out.append(topic)
            elif kind == "partition":
                out.append(str(partition))
            else:
                out.append(moment.strftime(value))
        return "".join(out).lower()
