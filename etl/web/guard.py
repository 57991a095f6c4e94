"""Who may change something through the worker's HTTP API.

Reading (status, metrics, details, logs) is open to whoever reaches the server;
every request that changes something (POST, PUT, DELETE) must pass all of:

* ``web.read_only`` is off;
* it is not cross-site: a browser's ``Origin`` (or ``Sec-Fetch-Site``) must be
  this server itself, and a body must be declared ``application/json`` - a
  plain HTML form cannot send that, and a script on another site cannot either
  without a CORS pre-flight, which this server never grants (a request without
  a body, ``curl -X PUT .../pause``, needs no content type: browsers always send
  ``Origin`` with one, which is checked);
* on a loopback server, the ``Host`` is a loopback name (a web page that
  rebinds its own DNS name to 127.0.0.1 is refused);
* the ``Authorization: Bearer <web.token>`` header matches, when a token is set;
  without a token only a server on a loopback address accepts changes.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from etl.config import WebSettings

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status and a message that says what to do."""

    status: int
    message: str


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of this machine's loopback."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_same_site(
    headers: Mapping[str, str], scheme: str = "http", *, has_body: bool = True
) -> Refusal | None:
    """None when a request is not cross-site and declares its JSON body; else why not.

    Every change passes this (inside :func:`check_change`); so do the POSTs that only
    read (a message search), which need neither a token nor a writable API.
    """
    host = headers.get("Host", "")
    origin = headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() != f"{scheme}://{host}".lower():
        return Refusal(
            403, f"cross-site request refused: Origin {origin} is not this server ({host})"
        )
    if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return Refusal(403, "cross-site request refused (Sec-Fetch-Site)")
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and (has_body or content_type):
        return Refusal(415, "send the request with Content-Type: application/json")
    return None


def check_change(
    web: WebSettings,
    method: str,
    headers: Mapping[str, str],
    scheme: str = "http",
    *,
    has_body: bool = True,
) -> Refusal | None:
    """None when a request that changes something may go on; else why not."""
    if method.upper() in ("GET", "HEAD", "OPTIONS"):
        return None
    if web.read_only:
        return Refusal(403, "this worker's API is read-only (web.read_only: true)")
    cross_site = check_same_site(headers, scheme, has_body=has_body)
    if cross_site is not None:
        return cross_site
    host = headers.get("Host", "")
    bound_loopback = is_loopback(web.host)
    if bound_loopback and not is_loopback(_host_name(host)):
        return Refusal(403, f"refused: Host {host!r} is not a loopback name of this server")
    token = web.token.get_secret_value() if web.token is not None else ""
    if token:
        given = headers.get("Authorization", "")
        scheme_word, _, value = given.partition(" ")
        if scheme_word.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return Refusal(401, "a valid token is required: Authorization: Bearer <web.token>")
        return None
    if not bound_loopback:
        return Refusal(
            403,
            f"changes need a token: this API listens on {web.host}, not on loopback; "
            "set web.token (e.g. ETL_WEB__TOKEN) and send Authorization: Bearer <token>",
        )
    return None
