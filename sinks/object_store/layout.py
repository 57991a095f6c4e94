"""Where objects go: ``{instance_id}/{topic}/[time dirs]/partition_{p}_offset_{o}_{random}``.

The instance id and the topic are each one path segment (:func:`sinks.paths.path_segment`
escapes ``/``, ``..``, NUL and the like), and every path is checked to stay below the
root (:func:`sinks.paths.confined`).
"""

from __future__ import annotations

import secrets
import string
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sinks.paths import confined, path_segment

#: strftime patterns of the documented layouts.
LAYOUT_PATTERNS = {
    "none": "",
    "YYYY/MM/dd/HH": "%Y/%m/%d/%H",
    "YYYY/MM/dd": "%Y/%m/%d",
    "YYYYMMddHH": "%Y%m%d%H",
    "YYYYMMdd": "%Y%m%d",
}
META_PREFIX = "oss_meta_file_partition_"
_ALPHABET = string.ascii_lowercase + string.digits
# Every time zone's offset is a multiple of 15 minutes, so one quarter hour maps to
# one directory in any zone: cache by quarter hour instead of formatting each record.
_QUARTER_MS = 15 * 60 * 1000


def random_suffix(length: int = 8) -> str:
    """``length`` random lowercase letters and digits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def data_object_name(partition: int, first_offset: int, suffix: str = "") -> str:
    """``partition_{p}_offset_{smallest offset}_{8 random characters}{suffix}``."""
    return f"partition_{partition}_offset_{first_offset}_{random_suffix()}{suffix}"


def meta_object_name(partition: int) -> str:
    """``oss_meta_file_partition_{p}``."""
    return f"{META_PREFIX}{partition}"


class PathLayout:
    """Maps a record to its directory below ``root``."""

    def __init__(
        self, root: str, instance_id: str, layout: str, *, time_source: str, timezone: str
    ) -> None:
        self.root = root.rstrip("/")
        # Empty for a layout without the instance level (the lake layout).
        self.instance_id = path_segment(instance_id) if instance_id else ""
        self.pattern = LAYOUT_PATTERNS[layout]
        self.wall_clock = time_source == "wall_clock"
        self.zone = ZoneInfo(timezone)
        self._cache: dict[int, str] = {}

    def topic_dir(self, topic: str) -> str:
        """``root/instance_id/topic``: the meta objects live here."""
        return f"{self.root}/{self.instance_id}/{path_segment(topic)}"

    def meta_path(self, topic: str, partition: int) -> str:
        """The partition's meta object."""
        return confined(self.root, f"{self.topic_dir(topic)}/{meta_object_name(partition)}")

    def time_dir(self, record: Any) -> str:
        """The time directories of a record ("" for layout none)."""
        if not self.pattern:
            return ""
        stamp = record.timestamp
        if self.wall_clock or stamp is None or stamp < 0:
            stamp = int(time.time() * 1000)
        quarter = stamp // _QUARTER_MS
        found = self._cache.get(quarter)
        if found is None:
            moment = datetime.fromtimestamp(quarter * _QUARTER_MS / 1000, self.zone)
            found = self._cache[quarter] = moment.strftime(self.pattern)
            if len(self._cache) > 4096:
                self._cache.clear()
        return found

    def object_path(self, topic: str, time_dir: str, name: str) -> str:
        """Full path of a data object."""
        base = self.topic_dir(topic)
        return confined(self.root, f"{base}/{time_dir}/{name}" if time_dir else f"{base}/{name}")
