"""The JSON body of an API request."""

from __future__ import annotations

import json
from typing import Any

from faust import web


class BadBody(ValueError):
    """The request's body is not a JSON object (the message says what is wrong)."""


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadBody(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadBody("the body must be a JSON object")
    return data
