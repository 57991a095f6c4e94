"""Config checks that report every problem at once.

A pydantic model's field errors and the checks that look at several fields
together (run on the raw mapping) are merged into one ``ValidationError``, so a
bad config lists all of its problems in one go instead of the cross-field ones
only after the fields are fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError


def validate_together(
    data: Any, handler: Any, problems_of: Callable[[dict[str, Any]], list[str]]
) -> Any:
    """For a ``mode="wrap"`` model validator: ``handler(data)`` plus ``problems_of(data)``."""
    problems = problems_of(data) if isinstance(data, dict) else []
    try:
        model = handler(data)
    except ValidationError as exc:
        if not problems:
            raise
        details: list[Any] = [
            {"type": e["type"], "loc": e["loc"], "input": e.get("input"), "ctx": e.get("ctx")}
            if e.get("ctx")
            else {"type": e["type"], "loc": e["loc"], "input": e.get("input")}
            for e in exc.errors()
        ]
        details += [
            {"type": "value_error", "loc": (), "input": data, "ctx": {"error": ValueError(p)}}
            for p in problems
        ]
        raise ValidationError.from_exception_data(exc.title, details) from None
    if problems:
        raise ValueError("; ".join(problems))
    return model
