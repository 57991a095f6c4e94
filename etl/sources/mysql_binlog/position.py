"""Binlog positions and sequence ids.

The source runner saves the position (:mod:`etl.sources.position`) in
``<group_prefix>-source-<name>-offsets``, keyed by the source name, as JSON::

    {"file": "binlog.000003", "pos": 1234, "gtid": "0-1-42", "source": "shop-cdc",
     "server": "db.example.com:3306", "snapshot": "done", "saved_at": 1700000000000}

It is written only for a transaction end whose messages (and all before them) the
broker has acknowledged, so a restart resumes at a transaction boundary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger("etl.source.mysql_binlog")


def file_index(name: str) -> int:
    """The number at the end of a binlog file name (``binlog.000012`` -> 12)."""
    digits = name.rsplit(".", 1)[-1]
    return int(digits) if digits.isdigit() else 0


def sequence_prefix(file: str, pos: int) -> str:
    """The first 16 digits of the sequence ids of one binlog event."""
    return f"{file_index(file):06d}{pos:010d}"


def sequence_id(file: str, pos: int, index: int) -> str:
    """``<file number:6><event end position:10><message index in the event:9>``.

    Sequence ids only grow along the binlog (compare them as integers; they are also
    fixed-width, so string order agrees until the binlog number passes 999999). A
    message published again after a crash gets the same id, so consumers can skip
    repeats.
    """
    return f"{sequence_prefix(file, pos)}{index:09d}"


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """A point in the binlog between two transactions: the next event starts at ``pos``."""

    file: str
    pos: int
    gtid: str | None = None
    #: "done" once the initial snapshot that started at this position is published.
    snapshot: str | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Sort key along the binlog."""
        return file_index(self.file), self.pos

    @classmethod
    def after_gtid(cls, gtid: str) -> BinlogPosition:
        """Not a file position: the next run begins after the transactions of ``gtid``
        (a GTID set, as ``etl offsets reset --to-position gtid:SET`` saves it)."""
        return cls(file="", pos=0, gtid=gtid)

    @property
    def gtid_only(self) -> bool:
        """A start after a GTID set, with no file position (see :meth:`after_gtid`)."""
        return not self.file and bool(self.gtid)

    def __str__(self) -> str:
        return f"gtid:{self.gtid}" if self.gtid_only else f"{self.file}:{self.pos}"

    def with_gtid(self, gtid: str | None) -> BinlogPosition:
        """The same position with the GTID of the transaction that ended here."""
        return replace(self, gtid=gtid)

    def to_record(self, source: str, server: str) -> dict[str, Any]:
        """The JSON document saved in the position topic."""
        return {
            "file": self.file,
            "pos": self.pos,
            "gtid": self.gtid,
            "source": source,
            "server": server,
            "snapshot": self.snapshot,
            "saved_at": int(time.time() * 1000),
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> BinlogPosition:
        """Read a saved document back; raises ValueError when it is not one."""
        try:
            return cls(
                file=str(data["file"]),
                pos=int(data["pos"]),
                gtid=data.get("gtid"),
                snapshot=data.get("snapshot"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a saved binlog position: {exc!r}") from None
