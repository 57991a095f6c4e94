"""``run_transform``: a transform's ``deal_message`` on messages, as the worker calls it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from etl.config import ETLSettings
from etl.errors import RecordError
from etl.message import OutRecord, make_message, normalize_result
from etl.runtime.usercode import call_once
from etl.transforms.loader import TransformSpec, load_any


def run_transform(
    transform: str | Path | TransformSpec,
    messages: Iterable[dict[str, Any] | tuple[str | None, str | None] | str],
    *,
    timeout: float | None = None,
) -> list[OutRecord]:
    """What the worker would produce to the transform's target topic, in order.

    ``transform`` is a transform file or a loaded spec; each message is a message
    dict (:func:`etl.message.make_message`), a ``(key, value)`` pair or a value.
    Each call runs off this thread with the transform's time limit, and its result
    is encoded as the worker encodes it. A message the worker would dead-letter
    raises :class:`~etl.errors.RecordError` naming the message's index.
    """
    spec = transform if isinstance(transform, TransformSpec) else load_any(Path(transform))
    limit = timeout or spec.timeout or ETLSettings.model_fields["transform_timeout"].default
    out: list[OutRecord] = []
    for index, item in enumerate(messages):
        if isinstance(item, dict):
            message = item
        else:
            key, value = item if isinstance(item, tuple) else (None, item)
            message = make_message(key, value, topic=spec.source_topic, offset=index)
        try:
            out += normalize_result(call_once(spec.deal_message, message, limit))
        except Exception as exc:
            raise RecordError(
                f"{spec.path}: message {index}: {type(exc).__name__}: {exc}", stage="transform"
            ) from exc
    return out
