"""Secrets of connectors created through the API: never shown, never stored in the clear.

An API-given configuration is stored in the control topic (a Kafka topic that
more people may read than the workers' machines). Each secret in it - a
``SecretStr`` option of the type's model, or any option named like a password,
token, key or DSN, at any depth (``headers: {X-Api-Key: ...}``) - is stored:

* as given when it is a ``${VAR}`` reference: every worker reads it from its own
  environment, so the secret never reaches Kafka;
* else encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with ``control.secrets_key``;
  without that key such a configuration is refused, naming the options.

Answers, logs and the status show ``***`` for every secret (a reference is shown
as the reference).
"""

from __future__ import annotations

import base64
import hashlib
import re
import typing
from typing import Any

from pydantic import BaseModel, SecretStr

from etl.redact import MASK

SEALED = "$sealed"
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")
_SECRET_NAME = re.compile(
    r"password|passwd|secret|api[_-]?key|token|access[_-]?key|authorization|credential",
    re.I,
)
_NOT_SECRET = ("_file", "_topic", "_header", "_mode", "_path")
#: A URL or DSN with a password in it is a secret whatever its option is called.
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:[^@/\s]+@", re.I)


class SecretsRefused(ValueError):
    """Secrets given in the clear while no ``control.secrets_key`` is set."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(
            "these options would be stored in the control topic in the clear: "
            f"{', '.join(fields)}; give them as ${{VAR}} references (each worker reads "
            "them from its environment) or set control.secrets_key to store them encrypted"
        )


class SecretsUnavailable(ValueError):
    """A stored secret cannot be decrypted (no key, or another key)."""


def _fernet(key: str) -> Any:
    from cryptography.fernet import Fernet

    # Any passphrase: its SHA-256 is the Fernet key.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def secret_fields(model: type[BaseModel] | None) -> set[str]:
    """Top-level options the model declares as ``SecretStr``."""
    if model is None:
        return set()
    out = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if annotation is SecretStr or SecretStr in typing.get_args(annotation):
            out.add(name)
    return out


def _is_secret(name: str, declared: set[str], top: bool) -> bool:
    if top and name in declared:
        return True
    return bool(_SECRET_NAME.search(name)) and not name.endswith(_NOT_SECRET)


def _walk(value: Any, declared: set[str], visit: Any, path: str = "", top: bool = True) -> Any:
    if isinstance(value, dict):
        if SEALED in value and len(value) == 1:
            return visit(path, value)
        return {
            k: (
                visit(f"{path}{k}", v)
                if isinstance(v, str | dict)
                and (_is_secret(str(k), declared, top) or bool(_URL_PASSWORD.search(str(v))))
                and (isinstance(v, str) or (SEALED in v and len(v) == 1))
                else _walk(v, declared, visit, f"{path}{k}.", top=False)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_walk(v, declared, visit, f"{path}[{i}].", top=False) for i, v in enumerate(value)]
    return value


def seal(raw: dict[str, Any], model: type[BaseModel] | None, key: str | None) -> dict[str, Any]:
    """The configuration as stored: secrets as references or encrypted (see the module notes)."""
    declared = secret_fields(model)
    refused: list[str] = []
    fernet = _fernet(key) if key else None

    def visit(path: str, value: Any) -> Any:
        if isinstance(value, dict) or not value or _REFERENCE.match(value):
            return value
        if fernet is None:
            refused.append(path)
            return value
        return {SEALED: fernet.encrypt(value.encode()).decode()}

    stored = _walk(raw, declared, visit)
    if refused:
        raise SecretsRefused(sorted(refused))
    return stored  # type: ignore[no-any-return]


def unseal(stored: dict[str, Any], key: str | None) -> dict[str, Any]:
    """The configuration a worker runs: encrypted secrets decrypted (references stay)."""
    fernet = _fernet(key) if key else None

    def visit(path: str, value: Any) -> Any:
        if not (isinstance(value, dict) and SEALED in value):
            return value
        if fernet is None:
            raise SecretsUnavailable(
                f"{path or 'a secret'} is stored encrypted and control.secrets_key is not set"
            )
        try:
            return fernet.decrypt(str(value[SEALED]).encode()).decode()
        except Exception:
            raise SecretsUnavailable(
                f"{path or 'a secret'} cannot be decrypted with this control.secrets_key "
                "(it was stored with another key)"
            ) from None

    return _walk(stored, set(), visit)  # type: ignore[no-any-return]


def shown(raw: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """The configuration for an answer: every secret as ``***`` (references as given)."""
    declared = secret_fields(model)

    def visit(path: str, value: Any) -> Any:
        if isinstance(value, str) and (not value or _REFERENCE.match(value)):
            return value
        return MASK

    return _walk(raw, declared, visit)  # type: ignore[no-any-return]


def secret_values(raw: dict[str, Any], model: type[BaseModel] | None) -> list[str]:
    """The clear secret values in a (resolved) configuration, for the log redactor."""
    found: list[str] = []

    def visit(path: str, value: Any) -> Any:
        if isinstance(value, str) and value and not _REFERENCE.match(value):
            found.append(value)
        return value

    _walk(raw, secret_fields(model), visit)
    return found
