"""Transform files: the contract, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.errors import TransformLoadError
from etl.transforms.loader import discover_transforms, load_transform_file

GOOD = """
SOURCE_TOPIC = "in"
TARGET_TOPIC = "out"
START_OFFSET = "earliest"
ON_ERROR = "stop"

def deal_message(message):
    return message
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file(tmp_path: Path) -> None:
    spec = load_transform_file(write(tmp_path, "good.py", GOOD))
    assert (spec.name, spec.source_topic, spec.target_topic) == ("good", "in", "out")
    assert (spec.start_offset, spec.on_error) == ("earliest", "stop")
    assert len(spec.version) == 12
    assert spec.deal_message({"value": "x"}) == {"value": "x"}


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        (
            "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\ndef deal_message(m)\n    return m\n",
            "syntax error",
            3,
        ),
        (
            "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\nimport no_such_module_xyz\n"
            "def deal_message(m):\n    return m\n",
            "ModuleNotFoundError",
            3,
        ),
        ("SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\n", "no deal_message", None),
        (
            "TARGET_TOPIC = 'b'\ndef deal_message(m):\n    return m\n",
            "SOURCE_TOPIC is not set",
            None,
        ),
        (
            "SOURCE_TOPIC = 'same'\nTARGET_TOPIC = 'same'\ndef deal_message(m):\n    return m\n",
            "must differ",
            2,
        ),
        (
            "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\nSTART_OFFSET = 'middle'\n"
            "def deal_message(m):\n    return m\n",
            "START_OFFSET must be one of",
            3,
        ),
        ("SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\ndeal_message = 5\n", "not a function", 3),
        (
            "SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\nx = 1 / 0\n"
            "def deal_message(m):\n    return m\n",
            "ZeroDivisionError",
            3,
        ),
    ],
)
def test_bad_files_name_file_and_line(
    tmp_path: Path, text: str, fragment: str, line: int | None
) -> None:
    path = write(tmp_path, "bad.py", text)
    with pytest.raises(TransformLoadError) as info:
        load_transform_file(path)
    assert fragment in str(info.value)
    assert info.value.path == str(path)
    assert info.value.line == line
    if line:
        assert str(info.value).startswith(f"{path}:{line}: ")


def test_discover_skips_bad_and_private_files(tmp_path: Path) -> None:
    write(tmp_path, "good.py", GOOD)
    write(tmp_path, "broken.py", "def (:\n")
    write(tmp_path, "_helper.py", "x = 1\n")
    write(tmp_path, "notes.txt", "hello\n")
    specs, errors = discover_transforms(tmp_path)
    assert [s.name for s in specs] == ["good"]
    assert [Path(e.path).name for e in errors] == ["broken.py"]
