"""``etl search --index SINK``: ask the index an OpenSearch sink writes instead of scanning.

Needs the sink's ``document: envelope`` (each document carries the message's
topic, partition, offset, timestamp, key and value under ``msg_body``). Keywords
follow the server's text analysis here: a phrase matches whole words, and ``*``
/ ``?`` match within one word, case-insensitively; other conditions are exact.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from etl.errors import MissingExtraError
from etl.ops.messages import FoundMessage, MessageLookupError
from etl.ops.search import SearchQuery, SearchResult

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def index_pattern(template: str, topic: str, partition: int | None = None) -> str:
    """The sink's index template as a search pattern: ``logs-{topic}-{yyyy.MM}`` -> ``logs-t-*``."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "topic":
            return topic
        if name == "partition" and partition is not None:
            return str(partition)
        return "*"

    return _PLACEHOLDER.sub(fill, template).lower()


def _keyword_clause(field: str, keyword: str) -> dict[str, Any]:
    if "*" in keyword or "?" in keyword:
        return {"wildcard": {field: {"value": keyword.lower(), "case_insensitive": True}}}
    return {"match_phrase": {field: keyword}}


def build_query(topic: str, query: SearchQuery) -> dict[str, Any]:
    """The search body: every condition as a filter, hits in partition/offset order."""
    body = "msg_body."
    clauses: list[dict[str, Any]] = [{"match_phrase": {body + "topic": topic}}]
    if query.partition is not None:
        clauses.append({"term": {body + "partition": query.partition}})
    for field, low, high in (
        ("offset", query.first_offset, query.last_offset),
        ("timestamp", query.since_ms, query.until_ms),
    ):
        bounds = {op: v for op, v in (("gte", low), ("lte", high)) if v is not None}
        if bounds:
            clauses.append({"range": {body + field: bounds}})
    clauses += [_keyword_clause(body + "key", k) for k in query.keys]
    clauses += [_keyword_clause(body + "value", v) for v in query.values]
    return {
        "query": {"bool": {"filter": clauses}},
        "sort": [{body + "partition": "asc"}, {body + "offset": "asc"}],
        # Room for hits of other topics whose names analyse alike; dropped below.
        "size": query.limit * 2,
        "track_total_hits": True,
    }


def client_options(sink: Any) -> dict[str, Any]:
    """Connection options for opensearch-py from the sink's validated config."""
    options: dict[str, Any] = {
        "hosts": list(sink.hosts),
        "verify_certs": getattr(sink, "verify_certs", True),
        "timeout": getattr(sink, "request_timeout_s", 30.0),
    }
    if getattr(sink, "ca_certs", None):
        options["ca_certs"] = str(sink.ca_certs)
    if getattr(sink, "username", None):
        options["http_auth"] = (sink.username, sink.password.get_secret_value())
    api_key = getattr(sink, "api_key", None)
    if api_key is not None:
        token = api_key.get_secret_value()
        if ":" in token:
            token = base64.b64encode(token.encode()).decode()
        options["headers"] = {"Authorization": f"ApiKey {token}"}
    return options


def _hit_to_message(source: dict[str, Any]) -> FoundMessage | None:
    body = source.get("msg_body")
    if not isinstance(body, dict):
        return None
    key, value = body.get("key"), body.get("value")
    return FoundMessage(
        topic=str(body.get("topic")),
        partition=int(body.get("partition", -1)),
        offset=int(body.get("offset", -1)),
        timestamp=int(body.get("timestamp") or -1),
        key=None if key is None else str(key).encode(),
        value=None if value is None else str(value).encode(),
    )


def search_index(sink: Any, topic: str, query: SearchQuery) -> SearchResult:
    """Run the search on the sink's index (blocking)."""
    if getattr(sink, "document", "envelope") != "envelope":
        raise MessageLookupError(
            f"sink {sink.name!r} writes document: {sink.document}; searching its index needs "
            "document: envelope (the only shape that keeps each message's coordinates)"
        )
    try:
        from opensearchpy import OpenSearch
        from opensearchpy.exceptions import NotFoundError, OpenSearchException
    except ImportError:
        raise MissingExtraError("opensearch-py", "opensearch") from None
    index = index_pattern(sink.index, topic, query.partition)
    client = OpenSearch(**client_options(sink))
    try:
        response = client.search(
            index=index, body=build_query(topic, query), params={"ignore_unavailable": "true"}
        )
    except NotFoundError:
        raise MessageLookupError(f"index {index!r} of sink {sink.name!r} does not exist") from None
    except OpenSearchException as exc:
        raise MessageLookupError(f"search on index {index!r} failed: {exc}") from None
    finally:
        client.close()
    hits = response.get("hits", {})
    messages = [_hit_to_message(hit.get("_source", {})) for hit in hits.get("hits", [])]
    found = [m for m in messages if m is not None and m.topic == topic][: query.limit]
    total = hits.get("total", {})
    matched = total.get("value", len(found)) if isinstance(total, dict) else int(total or 0)
    return SearchResult(
        messages=found,
        scanned=matched,
        to_scan=matched,
        limit_reached=matched > len(found),
        source=f"index {index}",
    )
