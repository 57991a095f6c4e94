"""JSON as every sink reads a record's key or value: strictly, as JSON is defined.

Python's ``json`` accepts two things no destination can hold, and which then fail
later, for a whole batch, in a driver or an encoder: ``NaN``/``Infinity`` (no SQL
literal; MySQL's driver refuses them) and a lone UTF-16 surrogate escape such as
``"\\ud800"`` (a ``str`` that cannot be encoded as UTF-8: PostgreSQL, MySQL and
Arrow refuse it). :func:`loads` raises ValueError for both, so they are one
rejected record with its reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A surrogate escape (D800-DFFF); only then is the parsed value checked for a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_decode = json.JSONDecoder(parse_constant=_no_constant).decode
_encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def loads(data: bytes | str) -> Any:
    """Parse JSON text (UTF-8 bytes or str); ValueError for invalid JSON, NaN/Infinity,
    or a lone surrogate (UnicodeDecodeError, a ValueError, for bytes not UTF-8)."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    value = _decode(text)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            _encode(value).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a lone UTF-16 surrogate (\\ud800-\\udfff) is not text") from None
    return value
