"""One worker at a time runs a source: the one holding its lock on the MySQL server.

Every worker with the source in its config asks the server for the named lock
``<group_prefix>-source-<name>`` (``GET_LOCK``, no privilege needed). The holder
reads the binlog; the others retry every few seconds. The server frees the lock
the moment the holder's connection ends (clean stop, crash, kill -9), so another
worker takes over within seconds and resumes from the saved position. The holder
checks its lock connection every few seconds and stops reading if it is gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from typing import Any

import pymysql

from etl.sources.mysql_binlog.config import MySQLBinlogSourceConfig
from etl.sources.mysql_binlog.db import close_quietly, connect

log = logging.getLogger("etl.source.mysql_binlog")

#: Seconds between attempts to take the lock, and between checks that it is held.
LOCK_INTERVAL = 2.0


def lock_name(group_prefix: str, source_name: str) -> str:
    """The lock's name (MySQL allows 64 characters; longer names are shortened by a hash)."""
    name = f"{group_prefix}-source-{source_name}"
    if len(name) <= 64:
        return name
    return name[:47] + "-" + hashlib.sha1(name.encode()).hexdigest()[:16]


class SourceLock:
    """The named lock that elects the worker running a source (a
    :class:`~etl.sources.base.Leadership`; its server calls run in a thread)."""

    check_seconds = LOCK_INTERVAL

    def __init__(self, config: MySQLBinlogSourceConfig, name: str) -> None:
        self.config = config
        self.name = name
        self._connection: Any = None
        self._guard = threading.Lock()

    async def acquire(self) -> bool:
        """Try once, without waiting; True when this worker holds the lock now."""
        return await asyncio.to_thread(self._acquire)

    async def held(self) -> bool:
        """Still holding the lock (False when the connection or the lock is lost)."""
        return await asyncio.to_thread(self._held)

    async def release(self) -> None:
        """Give the lock up (closing the connection frees it)."""
        await asyncio.to_thread(self._release)

    def _acquire(self) -> bool:
        with self._guard:
            try:
                if self._connection is None:
                    self._connection = connect(self.config)
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT GET_LOCK(%s, 0)", (self.name,))
                    row = cursor.fetchone()
            except BaseException:
                self._close()
                raise
            return bool(row and row[0] == 1)

    def _held(self) -> bool:
        with self._guard:
            if self._connection is None:
                return False
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
                    row = cursor.fetchone()
                return bool(row and row[0] == 1)
            except (pymysql.err.MySQLError, OSError) as exc:
                log.warning("source lock check failed lock=%s error=%r", self.name, exc)
                self._close()
                return False

    def _release(self) -> None:
        with self._guard:
            self._close()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        close_quietly(connection)
