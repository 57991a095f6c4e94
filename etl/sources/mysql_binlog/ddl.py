"""Which tables a DDL statement from the binlog touches.

Only what the source needs: the statement kind, the tables it changes (with the
database when the statement names one) and, for ``CREATE TABLE``, whether it
declares a primary key. Anything else (``CREATE DATABASE``, ``GRANT``, DML written
in statement format) gives None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TableRef = tuple[str | None, str]  # (database or None, table)

_IDENT = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_NAME = rf"(?P<name>{_IDENT}(?:\s*\.\s*{_IDENT})?)"
_NAME_RE = re.compile(rf"{_IDENT}(?:\s*\.\s*{_IDENT})?")

_COMMENT = re.compile(r"/\*(?![!M]).*?\*/|--[^\n]*|#[^\n]*", re.S)
_EXEC_COMMENT = re.compile(r"/\*M?!\d*(.*?)\*/", re.S)

_CREATE = re.compile(
    rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}",
    re.I,
)
_ALTER = re.compile(
    rf"^ALTER\s+(?:ONLINE\s+)?(?:IGNORE\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}", re.I
)
_ALTER_RENAME = re.compile(rf"\bRENAME\s+(?:TO\s+|AS\s+)?{_NAME}", re.I)
_DROP = re.compile(
    r"^DROP\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?(?P<rest>.*)$", re.I | re.S
)
_RENAME = re.compile(r"^RENAME\s+TABLES?\s+(?P<rest>.*)$", re.I | re.S)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?{_NAME}", re.I)
_CREATE_INDEX = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:ONLINE\s+|OFFLINE\s+)?(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?"
    rf"INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?{_IDENT}\s+(?:USING\s+\w+\s+)?ON\s+{_NAME}",
    re.I,
)
_DROP_INDEX = re.compile(rf"^DROP\s+INDEX\s+(?:IF\s+EXISTS\s+)?{_IDENT}\s+ON\s+{_NAME}", re.I)
_PRIMARY_KEY = re.compile(r"\bPRIMARY\s+KEY\b", re.I)
_LIKE_OR_SELECT = re.compile(r"\bLIKE\b|\bSELECT\b", re.I)
_DML = re.compile(r"^(?:INSERT|UPDATE|DELETE|REPLACE|LOAD\s+DATA)\b", re.I)


@dataclass
class DDLChange:
    """What a DDL statement does to which tables."""

    kind: str  # create | alter | drop | rename | truncate | index
    tables: list[TableRef] = field(default_factory=list)
    #: New names (RENAME TABLE, ALTER TABLE ... RENAME TO).
    renamed_to: list[TableRef] = field(default_factory=list)
    #: CREATE TABLE declares a primary key (None: cannot tell, e.g. ``LIKE``/``AS SELECT``).
    primary_key: bool | None = None

    def all_tables(self) -> list[TableRef]:
        """Old and new names."""
        return self.tables + self.renamed_to


def _unquote(ident: str) -> str:
    ident = ident.strip()
    if ident.startswith("`") and ident.endswith("`"):
        return ident[1:-1].replace("``", "`")
    return ident


def split_name(text: str) -> TableRef:
    """```db`.`t``` / ``db.t`` / ``t`` -> (db or None, t)."""
    parts = [p for p in re.findall(_IDENT, text)]
    if len(parts) >= 2:
        return _unquote(parts[0]), _unquote(parts[1])
    return None, _unquote(parts[0])


def strip_comments(query: str) -> str:
    """The statement without comments (the text of ``/*!... */`` comments is kept)."""
    query = _COMMENT.sub(" ", query)
    return _EXEC_COMMENT.sub(lambda m: " " + m.group(1) + " ", query).strip()


def is_dml(query: str) -> bool:
    """A row change written as a statement (binlog_format STATEMENT/MIXED in that session)."""
    return bool(_DML.match(strip_comments(query)))


def parse_ddl(query: str) -> DDLChange | None:
    """The tables a DDL statement changes, or None when it changes no table."""
    sql = strip_comments(query)
    if match := _CREATE.match(sql):
        rest = sql[match.end() :]
        primary: bool | None = True if _PRIMARY_KEY.search(rest) else False
        if not primary and _LIKE_OR_SELECT.search(rest):
            primary = None
        return DDLChange("create", [split_name(match["name"])], primary_key=primary)
    if match := _ALTER.match(sql):
        change = DDLChange("alter", [split_name(match["name"])])
        renamed = _ALTER_RENAME.search(sql[match.end() :])
        if renamed and not re.match(r"(?i)(COLUMN|INDEX|KEY)\b", renamed["name"]):
            change.renamed_to.append(split_name(renamed["name"]))
        return change
    if match := _DROP.match(sql):
        rest = re.sub(r"(?i)\b(RESTRICT|CASCADE|WAIT\s+\d+|NOWAIT)\b", " ", match["rest"])
        names = [split_name(m.group(0)) for m in _NAME_RE.finditer(rest)]
        return DDLChange("drop", names) if names else None
    if match := _RENAME.match(sql):
        rest = re.sub(r"(?i)\b(WAIT\s+\d+|NOWAIT)\b", " ", match["rest"])
        change = DDLChange("rename")
        for pair in rest.split(","):
            sides = re.split(r"(?i)\s+TO\s+", pair.strip(), maxsplit=1)
            if len(sides) == 2:
                change.tables.append(split_name(sides[0]))
                change.renamed_to.append(split_name(sides[1]))
        return change if change.tables else None
    if match := _TRUNCATE.match(sql):
        return DDLChange("truncate", [split_name(match["name"])])
    if match := _CREATE_INDEX.match(sql) or _DROP_INDEX.match(sql):
        return DDLChange("index", [split_name(match["name"])])
    return None
