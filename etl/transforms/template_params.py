"""The params model of every shipped transform template (one pydantic model each).

A model validates what a ``transforms/*.yaml`` file (or ``etl templates render
--param``) gives, with a clear message per param, and turns it into the values
the jinja2 template renders as Python literals (:meth:`TemplateParams.render_context`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

OnInvalid = Literal["error", "drop", "keep"]
ON_INVALID_HELP = (
    "when the value is not a JSON object: error (the error policy applies: dead letter "
    "or stop), drop (filter the message out) or keep (forward it unchanged)"
)


def split_path(path: str) -> list[str]:
    """``a.b.0`` -> ``["a", "b", "0"]`` (a digit segment indexes a list)."""
    return path.split(".")


def _check_json_path(path: str) -> str:
    if not path or any(not part for part in split_path(path)):
        raise ValueError(f"{path!r} is not a dotted JSON path such as 'user.email'")
    return path


def _check_field(field: str) -> str:
    if field in ("key", "value"):
        return field
    if field.startswith("value."):
        _check_json_path(field.removeprefix("value."))
        return field
    raise ValueError(f"{field!r} must be 'key', 'value' or 'value.<json path>' (e.g. value.level)")


JsonPath = Annotated[str, AfterValidator(_check_json_path)]
FieldRef = Annotated[str, AfterValidator(_check_field)]


def field_context(field: str) -> dict[str, Any]:
    """How a template reaches a field: ``kind`` key/value/json and the JSON path."""
    if field.startswith("value."):
        return {"kind": "json", "path": split_path(field.removeprefix("value."))}
    return {"kind": field, "path": []}


class TemplateParams(BaseModel):
    """Base of the params models: unknown params are errors."""

    model_config = ConfigDict(extra="forbid")

    def render_context(self) -> dict[str, Any]:
        """The values the template renders (plain data only)."""
        return self.model_dump()


class AddPrefixSuffixParams(TemplateParams):
    """``add_prefix_suffix``: strings added around the key and the value (null stays null)."""

    key_prefix: str = Field(default="", description="text put before the key")
    key_suffix: str = Field(default="", description="text put after the key")
    value_prefix: str = Field(default="", description="text put before the value")
    value_suffix: str = Field(default="", description="text put after the value")

    @model_validator(mode="after")
    def _something_to_add(self) -> AddPrefixSuffixParams:
        if not (self.key_prefix or self.key_suffix or self.value_prefix or self.value_suffix):
            raise ValueError(
                "set at least one of key_prefix, key_suffix, value_prefix, value_suffix"
            )
        return self


def _strings(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class FilterPrefixSuffixParams(TemplateParams):
    """``filter_prefix_suffix``: keep or drop messages by how a field starts or ends."""

    field: FieldRef = Field(
        default="value", description="key, value, or value.<json path> (e.g. value.level)"
    )
    prefix: str | list[str] | None = Field(
        default=None, description="matches when the field starts with (one of) these"
    )
    suffix: str | list[str] | None = Field(
        default=None, description="matches when the field ends with (one of) these"
    )
    keep: bool = Field(default=True, description="true keeps matching messages, false drops them")
    ignore_case: bool = Field(default=False, description="compare case-insensitively")
    on_invalid: OnInvalid = Field(default="error", description=ON_INVALID_HELP)

    @model_validator(mode="after")
    def _something_to_match(self) -> FilterPrefixSuffixParams:
        if not _strings(self.prefix) and not _strings(self.suffix):
            raise ValueError("set prefix, suffix or both")
        return self

    def render_context(self) -> dict[str, Any]:
        prefixes, suffixes = _strings(self.prefix), _strings(self.suffix)
        if self.ignore_case:
            prefixes = [p.casefold() for p in prefixes]
            suffixes = [s.casefold() for s in suffixes]
        return {
            "field": field_context(self.field),
            "prefixes": prefixes,
            "suffixes": suffixes,
            "keep": self.keep,
            "ignore_case": self.ignore_case,
            "on_invalid": self.on_invalid,
        }


class JsonFieldsParams(TemplateParams):
    """``json_fields``: pick, then drop, then rename fields of a JSON object value."""

    pick: list[JsonPath] | None = Field(
        default=None, description="keep only these paths (unset: keep all)"
    )
    drop: list[JsonPath] = Field(default_factory=list, description="remove these paths")
    rename: dict[JsonPath, JsonPath] = Field(
        default_factory=dict, description="move old path -> new path"
    )
    on_invalid: OnInvalid = Field(default="error", description=ON_INVALID_HELP)

    @model_validator(mode="after")
    def _something_to_do(self) -> JsonFieldsParams:
        if self.pick is None and not self.drop and not self.rename:
            raise ValueError("set pick, drop, rename or a combination")
        return self

    def render_context(self) -> dict[str, Any]:
        return {
            "pick": None if self.pick is None else [split_path(p) for p in self.pick],
            "drop": [split_path(p) for p in self.drop],
            "rename": [[split_path(old), split_path(new)] for old, new in self.rename.items()],
            "on_invalid": self.on_invalid,
        }


class MaskFieldsParams(TemplateParams):
    """``mask_fields``: hide sensitive fields of a JSON object value."""

    paths: list[JsonPath] = Field(default_factory=list, description="mask these paths")
    names: list[str] = Field(
        default_factory=list,
        description="mask every field with one of these names, at any depth (case-insensitive)",
    )
    style: Literal["fixed", "partial", "sha256"] = Field(
        default="fixed",
        description="fixed: replace with mask; partial: keep the last show_last characters; "
        "sha256: hex digest (joins stay possible)",
    )
    mask: str = Field(default="****", description="the text of style fixed")
    mask_char: str = Field(
        default="*", min_length=1, max_length=1, description="the character of style partial"
    )
    show_last: int = Field(default=4, ge=0, description="characters style partial leaves visible")
    on_invalid: OnInvalid = Field(default="error", description=ON_INVALID_HELP)

    @model_validator(mode="after")
    def _something_to_mask(self) -> MaskFieldsParams:
        if not self.paths and not self.names:
            raise ValueError("set paths, names or both")
        if any(not name for name in self.names):
            raise ValueError("names must not contain an empty name")
        return self

    def render_context(self) -> dict[str, Any]:
        return {
            "paths": [split_path(p) for p in self.paths],
            "names": sorted({name.casefold() for name in self.names}),
            "style": self.style,
            "mask": self.mask,
            "mask_char": self.mask_char,
            "show_last": self.show_last,
            "on_invalid": self.on_invalid,
        }


REGEX_FLAGS = {"ignorecase": "IGNORECASE", "multiline": "MULTILINE", "dotall": "DOTALL"}


class RegexReplaceParams(TemplateParams):
    """``regex_replace``: ``re.sub`` on the key, the value or a JSON string field."""

    field: FieldRef = Field(
        default="value", description="key, value, or value.<json path> (e.g. value.msg)"
    )
    pattern: str = Field(min_length=1, description="Python regular expression")
    replacement: str = Field(default="", description=r"replacement text (\1, \g<name> allowed)")
    count: int = Field(default=0, ge=0, description="most replacements per message (0: all)")
    flags: list[Literal["ignorecase", "multiline", "dotall"]] = Field(
        default_factory=list, description="regular-expression flags"
    )
    on_invalid: OnInvalid = Field(default="error", description=ON_INVALID_HELP)

    @model_validator(mode="after")
    def _compiles(self) -> RegexReplaceParams:
        flags = 0
        for name in self.flags:
            flags |= getattr(re, REGEX_FLAGS[name])
        try:
            compiled = re.compile(self.pattern, flags)
        except re.error as exc:
            raise ValueError(
                f"pattern {self.pattern!r} is not a valid regular expression: {exc}"
            ) from None
        try:
            # re parses the replacement before searching, so bad group references show here.
            compiled.sub(self.replacement, "")
        except (re.error, IndexError) as exc:
            raise ValueError(f"replacement {self.replacement!r} is invalid: {exc}") from None
        return self

    def render_context(self) -> dict[str, Any]:
        return {
            "field": field_context(self.field),
            "pattern": self.pattern,
            "replacement": self.replacement,
            "count": self.count,
            "flags": [REGEX_FLAGS[name] for name in self.flags],
            "on_invalid": self.on_invalid,
        }
