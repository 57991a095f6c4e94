"""The watcher's decisions (start, swap, restart, keep, stop) against a recording supervisor.

The supervisor here is a stand-in that records calls; the real one, with real
pipelines on a real broker, is exercised in test_hot_reload.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from etl.errors import TransformLoadError
from etl.runtime.status import PipelineStatus, State
from etl.transforms.loader import TransformSpec, load_any
from etl.transforms.reload import TransformWatcher

PY = "SOURCE_TOPIC = {src!r}\nTARGET_TOPIC = {dst!r}\n\ndef deal_message(m):\n    return {body}\n"


def py(path: Path, src: str = "a", dst: str = "b", body: str = "m") -> Path:
    path.write_text(PY.format(src=src, dst=dst, body=body))
    return path


class RecordingPipeline:
    def __init__(self, spec: TransformSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.status = PipelineStatus(name=spec.name, kind="transform", state=State.RUNNING)
        self.status.version = spec.version
        self.consumer: Any = object()
        self.swapped: list[TransformSpec] = []

    def swap(self, spec: TransformSpec) -> None:
        self.swapped.append(spec)


class RecordingSupervisor:
    """The operations of :class:`etl.transforms.reload.TransformHost`, recorded."""

    def __init__(self) -> None:
        self.should_stop = False
        self.pipelines: dict[str, Any] = {}
        self.load_errors: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []

    async def start_transform(self, spec: TransformSpec) -> RecordingPipeline:
        self.calls.append(("start", spec.name))
        self.load_errors.pop(str(spec.path), None)
        pipeline = self.pipelines[f"transform:{spec.name}"] = RecordingPipeline(spec)
        return pipeline

    async def restart_transform(self, spec: TransformSpec) -> RecordingPipeline:
        self.calls.append(("restart", spec.name))
        pipeline = self.pipelines[f"transform:{spec.name}"] = RecordingPipeline(spec)
        return pipeline

    async def stop_pipeline(self, key: str) -> None:
        self.calls.append(("stop", key))
        self.pipelines.pop(key, None)

    def report_load_error(self, error: TransformLoadError) -> None:
        self.calls.append(("load_error", Path(error.path).name))
        self.load_errors[error.path] = error

    def transform_pipelines(self) -> list[Any]:
        return [p for key, p in self.pipelines.items() if key.startswith("transform:")]

    def transform_pipeline(self, name: str) -> Any:
        return self.pipelines.get(f"transform:{name}")

    def load_error_paths(self) -> list[str]:
        return list(self.load_errors)

    def forget_load_errors(self, file_name: str) -> None:
        for key in [k for k in self.load_errors if Path(k).name == file_name]:
            del self.load_errors[key]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, RecordingSupervisor, TransformWatcher]:
    supervisor = RecordingSupervisor()
    return tmp_path, supervisor, TransformWatcher(supervisor, tmp_path)


async def test_new_edit_same_topics_swaps_and_touch_does_nothing(setup: Any) -> None:
    directory, supervisor, watcher = setup
    path = py(directory / "t.py")
    await watcher.reload_file(path)
    assert supervisor.calls == [("start", "t")]
    pipeline = supervisor.pipelines["transform:t"]
    path.touch()
    await watcher.reload_file(path)
    assert supervisor.calls == [("start", "t")] and pipeline.swapped == []
    py(path, body="None")
    await watcher.reload_file(path)
    assert [s.version for s in pipeline.swapped] == [load_any(path).version]
    assert supervisor.calls == [("start", "t")]


async def test_topic_change_restarts(setup: Any) -> None:
    directory, supervisor, watcher = setup
    path = py(directory / "t.py")
    await watcher.reload_file(path)
    py(path, dst="c")
    await watcher.reload_file(path)
    assert supervisor.calls == [("start", "t"), ("restart", "t")]
    assert supervisor.pipelines["transform:t"].spec.target_topic == "c"


async def test_broken_edit_keeps_running_version_and_fix_clears_error(setup: Any) -> None:
    directory, supervisor, watcher = setup
    path = py(directory / "t.py")
    await watcher.reload_file(path)
    pipeline = supervisor.pipelines["transform:t"]
    path.write_text("SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\ndef deal_message(m)\n    return m\n")
    await watcher.reload_file(path)
    assert supervisor.calls == [("start", "t")] and pipeline.swapped == []
    assert pipeline.status.state == State.RUNNING
    assert pipeline.status.error.startswith(f"reload failed (version {pipeline.spec.version}")
    assert f"{path}:3: syntax error" in pipeline.status.error
    # Reverting to the running text clears the error without a swap.
    py(path)
    await watcher.reload_file(path)
    assert pipeline.status.error is None and pipeline.swapped == []
    path.write_text("SOURCE_TOPIC = 'a'\nTARGET_TOPIC = 'b'\n")
    await watcher.reload_file(path)
    assert "no deal_message(message) function defined" in pipeline.status.error
    py(path, body="[m, m]")
    await watcher.reload_file(path)
    assert pipeline.status.error is None and len(pipeline.swapped) == 1


async def test_delete_stops_and_broken_new_file_is_a_load_error(setup: Any) -> None:
    directory, supervisor, watcher = setup
    path = py(directory / "t.py")
    await watcher.reload_file(path)
    path.unlink()
    await watcher.reload_file(path)
    assert supervisor.calls == [("start", "t"), ("stop", "transform:t")]
    bad = directory / "u.py"
    bad.write_text("import not_a_module_anywhere\n")
    await watcher.reload_file(bad)
    assert supervisor.calls[-1] == ("load_error", "u.py")
    assert "No module named 'not_a_module_anywhere'" in str(supervisor.load_errors[str(bad)])
    py(bad)
    await watcher.reload_file(bad)
    assert supervisor.calls[-1] == ("start", "u") and not supervisor.load_errors
    bad.unlink()
    await watcher.reload_file(bad)
    assert supervisor.calls[-1] == ("stop", "transform:u")


async def test_stopped_pipeline_is_restarted_by_a_save(setup: Any) -> None:
    directory, supervisor, watcher = setup
    path = py(directory / "t.py")
    await watcher.reload_file(path)
    pipeline = supervisor.pipelines["transform:t"]
    pipeline.status.state, pipeline.consumer = State.HALTED, None
    path.touch()
    await watcher.reload_file(path)
    assert supervisor.calls == [("start", "t"), ("restart", "t")]


async def test_ejected_py_takes_over_when_yaml_is_deleted(setup: Any) -> None:
    directory, supervisor, watcher = setup
    yaml_path = directory / "t.yaml"
    yaml_path.write_text(
        "template: add_prefix_suffix\nsource_topic: a\ntarget_topic: b\nparams: {value_suffix: x}\n"
    )
    await watcher.reload_file(yaml_path)
    py_path = py(directory / "t.py")
    await watcher.reload_file(py_path)
    assert supervisor.calls == [("start", "t"), ("load_error", "t.py")]
    yaml_path.unlink()
    await watcher.reload_file(yaml_path)
    assert supervisor.calls[2:] == [("stop", "transform:t"), ("start", "t")]
    assert supervisor.pipelines["transform:t"].spec.path == py_path


async def test_reconcile_catches_up_with_the_directory(setup: Any) -> None:
    directory, supervisor, watcher = setup
    running = py(directory / "old.py")
    await supervisor.start_transform(load_any(running))
    running.unlink()
    py(directory / "new.py")
    (directory / "_helper.py").write_text("X = 1\n")
    (directory / "notes.txt").write_text("not a transform\n")
    await watcher.reconcile()
    assert sorted(supervisor.calls) == [
        ("start", "new"),
        ("start", "old"),
        ("stop", "transform:old"),
    ]


async def test_watcher_service_sees_saves(setup: Any) -> None:
    directory, supervisor, watcher = setup
    await watcher.start()
    try:
        await asyncio.sleep(0.3)  # the watch starts on its own task
        py(directory / "t.py")
        for _ in range(100):
            if supervisor.calls:
                break
            await asyncio.sleep(0.05)
        assert supervisor.calls == [("start", "t")]
        (directory / "t.py").unlink()
        for _ in range(100):
            if len(supervisor.calls) > 1:
                break
            await asyncio.sleep(0.05)
        assert supervisor.calls[1] == ("stop", "transform:t")
    finally:
        await watcher.stop()
