"""``etl offsets reset SOURCE --to-position ...`` for the binlog source: where to resume.

``now`` is the server's current binlog end (what ``SHOW MASTER STATUS`` says);
``FILE:POS`` must name a binlog file the server still has; ``gtid:SET`` begins
after the transactions of a GTID set (MariaDB ``0-1-42``, MySQL
``uuid:1-42``), which must be on the server (MariaDB) or executed by it
(MySQL). The result is the document the source saves itself
(:meth:`BinlogPosition.to_record`), so the next run resumes there as after a
clean stop.
"""

from __future__ import annotations

import re
from typing import Any

from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import (
    close_quietly,
    connection_settings,
    open_connection,
    server_label,
)
from etl.sources.mysql_binlog.position import BinlogPosition
from etl.sources.mysql_binlog.preflight import binary_logs, binlog_end


class PositionRefused(ValueError):
    """The position cannot be used (bad form, or the server no longer has that file)."""


def position_for(config: MySQLBinlogSourceConfig, spec: str) -> dict[str, Any]:
    """The saved-position document for ``spec`` (``now``, ``FILE:POS`` or
    ``gtid:SET``); blocking."""
    spec = spec.strip()
    connection = open_connection(config, connection_settings(config))
    try:
        with connection.cursor() as cursor:
            files = dict(binary_logs(cursor))
            if spec.startswith("gtid:"):
                position = BinlogPosition.after_gtid(_checked_gtid(cursor, spec[5:].strip()))
            elif spec == "now":
                end = binlog_end(cursor)
                if end is None:
                    raise PositionRefused("the server reports no binlog position")
                position = end
            else:
                name, _, pos = spec.rpartition(":")
                if not name or not pos.isdigit():
                    raise PositionRefused(
                        f"{spec!r}: expected now, FILE:POS (mysql-bin.000003:4) or gtid:SET"
                    )
                if name not in files:
                    raise PositionRefused(
                        f"binlog file {name!r} is not on the server (files: "
                        f"{', '.join(files) or 'none'})"
                    )
                if int(pos) > files[name]:
                    raise PositionRefused(f"{spec}: {name} is only {files[name]} bytes long")
                position = BinlogPosition(name, int(pos))
    finally:
        close_quietly(connection)
    return position.to_record(config.name, server_label(config))


_GTID_SET = re.compile(r"^[0-9A-Za-z_:,\-\s]+$")  # MySQL 8.3+ tags: uuid:tag:1-5


def _checked_gtid(cursor: Any, gtid: str) -> str:
    """``gtid`` if the server knows every transaction it names (MariaDB: its binlog
    state covers it; MySQL: it executed it)."""
    if not gtid or not _GTID_SET.match(gtid):
        raise PositionRefused(
            f"gtid:{gtid}: expected a GTID set (MariaDB 0-1-42, MySQL 3E11FA47-...:1-42)"
        )
    gtid = re.sub(r"\s+", "", gtid)
    cursor.execute("SELECT VERSION()")
    (version,) = cursor.fetchone()
    if "mariadb" in str(version).lower():
        cursor.execute("SELECT @@gtid_binlog_state")
        (state,) = cursor.fetchone()
        known = {_domain_server(part): int(part.rsplit("-", 1)[1]) for part in _parts(state)}
        for part in _parts(gtid):
            pieces = part.split("-")
            if len(pieces) != 3 or not all(p.isdigit() for p in pieces):
                raise PositionRefused(f"gtid:{gtid}: {part!r} is not DOMAIN-SERVER-SEQUENCE")
            seen = known.get(_domain_server(part))
            if seen is None or seen < int(pieces[2]):
                raise PositionRefused(
                    f"gtid:{gtid}: the server's binlog has no {part} (its state: "
                    f"{state or 'empty'})"
                )
    else:
        cursor.execute("SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (gtid,))
        (subset,) = cursor.fetchone()
        if not subset:
            raise PositionRefused(f"gtid:{gtid}: not executed by the server (gtid_executed)")
    return gtid


def _parts(gtid: str | None) -> list[str]:
    return [part for part in (gtid or "").split(",") if part]


def _domain_server(part: str) -> str:
    return part.rsplit("-", 1)[0]
