"""Fixtures of the object-store sink tests: an S3 API server (moto) on a free port."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etl.testing.ports import reserve_port

S3_KEY = "test-access-key"
S3_SECRET = "test-secret-key-0123"  # noqa: S105 - moto accepts any credentials
NAME = re.compile(r"^partition_(\d+)_offset_(\d+)_([a-z0-9]{8})(\.parquet)?$")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:P`` of a moto S3 server for this session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=reserve_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 client of the test server (to create buckets and read objects)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )


def local_objects(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by its path relative to it (hidden temp files excluded)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def data_objects(objects: dict[str, bytes]) -> dict[str, bytes]:
    """Only the data objects (not the meta objects)."""
    return {k: v for k, v in objects.items() if NAME.match(k.rsplit("/", 1)[-1])}


def lines_of(objects: dict[str, bytes]) -> list[dict[str, Any]]:
    """Every JSON line of every data object."""
    return [
        json.loads(line)
        for data in data_objects(objects).values()
        for line in data.decode("utf-8").splitlines()
    ]
