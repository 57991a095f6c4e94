"""How far behind the server's binlog a source is, in bytes (the status ``lag``).

Positions become byte offsets from the start of the oldest binlog file the server
keeps (``SHOW BINARY LOGS``, read every few seconds): ``position`` is what the
reader has read, ``committed`` what is saved, ``end`` what the server has written.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pymysql

from etl.errors import ETLError
from etl.runtime.status import PartitionProgress
from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import connect
from etl.sources.mysql_binlog.position import BinlogPosition, file_index
from etl.sources.mysql_binlog.preflight import binary_logs

#: Seconds between two ``SHOW BINARY LOGS``.
REFRESH_INTERVAL = 5.0


class BinlogProgress:
    """Keeps one ``PartitionProgress`` (named ``binlog``) up to date."""

    def __init__(self, config: MySQLBinlogSourceConfig, progress: PartitionProgress) -> None:
        self.config = config
        self.progress = progress
        self.binlogs: list[tuple[str, int]] = []
        self._refreshed_at = 0.0
        self._task: asyncio.Future[Any] | None = None

    def offset(self, position: BinlogPosition | None) -> int | None:
        """A position as bytes from the start of the oldest binlog file still kept."""
        if position is None:
            return None
        base = 0
        for name, size in self.binlogs:
            if name == position.file:
                return base + position.pos
            base += size
        if self.binlogs and file_index(position.file) > file_index(self.binlogs[-1][0]):
            return base + position.pos
        return None

    def update(self, read: BinlogPosition | None, saved: BinlogPosition | None) -> None:
        """Set read and saved offsets; refresh the server's list in the background when due."""
        now = time.monotonic()
        if now - self._refreshed_at >= REFRESH_INTERVAL and (
            self._task is None or self._task.done()
        ):
            self._refreshed_at = now
            self._task = asyncio.ensure_future(self._refresh())
        self.progress.position = self.offset(read)
        self.progress.committed = self.offset(saved)

    async def _refresh(self) -> None:
        def fetch() -> list[tuple[str, int]]:
            connection = connect(self.config)
            try:
                with connection.cursor() as cursor:
                    return binary_logs(cursor)
            finally:
                connection.close()

        try:
            self.binlogs = await asyncio.to_thread(fetch)
        except (pymysql.err.MySQLError, OSError, ETLError):
            return
        self.progress.end = sum(size for _, size in self.binlogs)
