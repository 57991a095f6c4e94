"""Where a run of the source begins: saved position, snapshot, or the configured ``start``.

A saved position always wins (``start`` and ``snapshot: initial`` only apply to a
source that never saved one). A saved position whose binlog file the server no
longer has is an error, unless ``snapshot: when_needed`` asks for a new copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from etl.errors import FatalError
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.position import BinlogPosition
from etl.sources.mysql_binlog.preflight import ServerInfo
from etl.sources.mysql_binlog.reader import PositionPurged

log = logging.getLogger("etl.source.mysql_binlog")


@dataclass
class StartPlan:
    """Where a run begins: a position, a GTID set, or a snapshot."""

    resume: BinlogPosition | None = None
    gtid: str | None = None
    snapshot: bool = False
    reason: str = ""

    def __str__(self) -> str:
        if self.resume is not None:
            return str(self.resume)
        return f"gtid:{self.gtid}" if self.gtid else "snapshot"


def plan_start(
    config: MySQLBinlogSourceConfig,
    info: ServerInfo,
    known: list[BinlogPosition],
    *,
    position_topic: str,
    resnapshot: bool = False,
) -> StartPlan:
    """The plan for this run; ``known`` holds the saved and the last acknowledged positions."""
    files = {name: size for name, size in info.binlogs}
    oldest = info.binlogs[0][0] if info.binlogs else "none"
    if resnapshot:
        return StartPlan(snapshot=True, reason="the binlog position was purged")
    # After a handover another worker may have saved a later position than ours.
    resume = max(known, key=lambda p: p.order) if known else None
    if resume is not None:
        if resume.gtid_only:
            return StartPlan(gtid=resume.gtid, reason="saved position: after a GTID set")
        if resume.file in files and resume.pos <= files[resume.file]:
            return StartPlan(resume=resume, reason="saved position")
        problem = (
            f"the saved position {resume} is no longer in the server's binlog (oldest "
            f"file: {oldest}): the changes after it cannot be read"
        )
        if config.snapshot == "when_needed":
            log.error("%s; taking a new snapshot source=%s", problem, config.name)
            return StartPlan(snapshot=True, reason="saved position purged")
        raise PositionPurged(
            f"{problem}. Set snapshot: when_needed to copy the tables again, or delete key "
            f"{config.name!r} from topic {position_topic!r} to start from 'start' "
            f"({config.start})"
        )
    if config.snapshot in ("initial", "when_needed"):
        return StartPlan(snapshot=True, reason="no saved position: snapshot")
    if config.start == "earliest":
        if not info.binlogs:
            raise FatalError("the server lists no binlog files (SHOW BINARY LOGS is empty)")
        return StartPlan(resume=BinlogPosition(oldest, 4), reason="start: earliest")
    if config.start == "latest":
        if info.current is None:
            raise FatalError("the server reports no binlog position (SHOW MASTER STATUS)")
        return StartPlan(resume=info.current, reason="start: latest")
    gtid = config.start_gtid()
    if gtid is not None:
        return StartPlan(gtid=gtid, reason="start: gtid")
    file_pos = config.start_file_position()
    assert file_pos is not None
    if file_pos[0] not in files:
        raise PositionPurged(
            f"start: binlog file {file_pos[0]!r} is not on the server "
            f"(files: {', '.join(files) or 'none'})"
        )
    return StartPlan(resume=BinlogPosition(*file_pos), reason="start: file:position")
