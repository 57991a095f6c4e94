"""Options, path layouts and object names of the object-store sink (no servers)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from etl.config import validate_plugin
from sinks.object_store.config import ObjectStoreSinkConfig
from sinks.object_store.layout import PathLayout, data_object_name
from sinks.object_store.store import FsspecStore, LocalStore, make_store

# 2024-03-05 23:40:00 UTC
STAMP = 1709682000000


def raw(**options: object) -> dict[str, object]:
    return {"name": "lake", "type": "object_store", "topics": ["orders"], **options}


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("none", "root/inst/orders/partition"),
        ("YYYY/MM/dd/HH", "root/inst/orders/2024/03/05/23/partition"),
        ("YYYY/MM/dd", "root/inst/orders/2024/03/05/partition"),
        ("YYYYMMddHH", "root/inst/orders/2024030523/partition"),
        ("YYYYMMdd", "root/inst/orders/20240305/partition"),
    ],
)
def test_documented_layouts_from_record_time(layout: str, expected: str) -> None:
    paths = PathLayout("root", "inst", layout, time_source="record", timezone="UTC")
    record = SimpleNamespace(timestamp=STAMP)
    assert paths.object_path("orders", paths.time_dir(record), "partition") == expected


def test_time_zone_with_a_half_hour_offset() -> None:
    paths = PathLayout("r", "i", "YYYY/MM/dd/HH", time_source="record", timezone="Asia/Kolkata")
    # 23:40 UTC is 05:10 the next day in India (+05:30); 23:20 UTC is 04:50.
    assert paths.time_dir(SimpleNamespace(timestamp=STAMP)) == "2024/03/06/05"
    assert paths.time_dir(SimpleNamespace(timestamp=STAMP - 20 * 60_000)) == "2024/03/06/04"


def test_wall_clock_layout_ignores_the_record_time() -> None:
    paths = PathLayout("r", "i", "YYYYMMdd", time_source="wall_clock", timezone="UTC")
    before = time.strftime("%Y%m%d", time.gmtime())
    found = paths.time_dir(SimpleNamespace(timestamp=0))
    assert found in (before, time.strftime("%Y%m%d", time.gmtime()))  # midnight may pass


def test_object_names() -> None:
    name = data_object_name(3, 1200)
    assert re.fullmatch(r"partition_3_offset_1200_[a-z0-9]{8}", name)
    assert data_object_name(3, 1200) != name
    assert data_object_name(0, 0, ".parquet").endswith(".parquet")
    paths = PathLayout("root", "inst", "none", time_source="record", timezone="UTC")
    assert paths.meta_path("orders", 2) == "root/inst/orders/oss_meta_file_partition_2"


def test_batching_follows_size_and_window() -> None:
    config = ObjectStoreSinkConfig.model_validate(raw(batch_size_mb=8, batch_window_minutes=2))
    assert config.batch_bytes == 8 * 1024 * 1024 and config.linger_ms == 120_000
    assert ObjectStoreSinkConfig.model_validate(config.model_dump()) == config


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"batch_size_mb": 0},
            "sinks[0].batch_size_mb: Input should be greater than or equal to 1",
        ),
        (
            {"batch_size_mb": 129},
            "sinks[0].batch_size_mb: Input should be less than or equal to 128",
        ),
        ({"path_layout": "YYYY-MM"}, "sinks[0].path_layout: Input should be 'none'"),
        ({"format": "csv"}, "sinks[0].format: Input should be 'jsonl', 'parquet' or 'raw'"),
        ({"timezone": "Mars/Olympus"}, "sinks[0].timezone: unknown time zone"),
        ({"linger_ms": 5}, "linger_ms: not used by object_store; set batch_size_mb"),
        ({"bucket": "x"}, "sinks[0].bucket: unknown option"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], problem: str) -> None:
    model, problems = validate_plugin("sink", raw(**options), "sinks[0]")
    assert model is None
    assert any(line.startswith(problem) or problem in line for line in problems), problems


def test_url_forms(tmp_path: Path) -> None:
    def store(url: str | None) -> object:
        config = ObjectStoreSinkConfig.model_validate(raw(url=url))
        return make_store(config, tmp_path / "default", tmp_path / "base")

    default = store(None)
    assert isinstance(default, LocalStore) and default.root == str(tmp_path / "default")
    assert store(f"file://{tmp_path}/a").root == f"{tmp_path}/a"  # type: ignore[attr-defined]
    assert store("relative/dir").root == f"{tmp_path}/base/relative/dir"  # type: ignore[attr-defined]
    s3 = store("s3://bucket/some/prefix")
    assert isinstance(s3, FsspecStore) and s3.root == "bucket/some/prefix"
