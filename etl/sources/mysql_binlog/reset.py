"""``etl offsets reset SOURCE --to-position ...`` for the binlog source: where to resume.

``now`` is the server's current binlog end (what ``SHOW MASTER STATUS`` says);
``FILE:POS`` must name a binlog file the server still has. The result is the
document the source saves itself (:meth:`BinlogPosition.to_record`), so the next
run resumes there as after a clean stop. To start from a GTID set, set
``start: gtid:<set>`` and reset with ``--forget`` (the source then begins as
configured).
"""

from __future__ import annotations

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
    """The saved-position document for ``spec`` (``now`` or ``FILE:POS``); blocking."""
    spec = spec.strip()
    connection = open_connection(config, connection_settings(config))
    try:
        with connection.cursor() as cursor:
            files = dict(binary_logs(cursor))
            if spec == "now":
                position = binlog_end(cursor)
                if position is None:
                    raise PositionRefused("the server reports no binlog position")
            else:
                name, _, pos = spec.rpartition(":")
                if not name or not pos.isdigit():
                    raise PositionRefused(
                        f"{spec!r}: expected now or FILE:POS (mysql-bin.000003:4)"
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
