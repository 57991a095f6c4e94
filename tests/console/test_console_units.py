"""The console's backend rules without a server: confinement, validation, test runs, searches."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from etl.config import WebSettings
from etl.ops.search import keyword_matcher
from etl.transforms.loader import load_any
from etl.web.console_search import SearchRequestError, parse_search
from etl.web.console_transforms import (
    ConsoleRequestError,
    TrialMessage,
    delete_file,
    load_text,
    render_form,
    run_trial,
    save_file,
    transform_path,
)
from etl.web.guard import check_change, check_same_site
from tests.console.conftest import run_async

CODE = """\
SOURCE_TOPIC = "a"
TARGET_TOPIC = "b"


def deal_message(message):
    if message["value"] == "boom":
        raise RuntimeError("boom")
    if message["value"] == "drop":
        return None
    message["value"] = message["value"] + "!"
    return message
"""


@pytest.mark.parametrize(
    "name", ["../x.py", "a/b.py", ".hidden.py", "x.txt", "x", "..py", "/etc/x.py", "x.py/"]
)
def test_only_plain_transform_file_names_inside_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConsoleRequestError) as refused:
        transform_path(tmp_path, name)
    assert refused.value.status == 400


def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = tmp_path / "transforms"
    inside.mkdir()
    (inside / "link.py").symlink_to(outside / "target.py")
    with pytest.raises(ConsoleRequestError):
        transform_path(inside, "link.py")
    assert transform_path(inside, "ok_name-1.py") == (inside / "ok_name-1.py").resolve()


def test_save_writes_what_loads_and_returns_the_version_the_worker_reports(
    tmp_path: Path,
) -> None:
    saved = run_async(
        lambda: save_file(tmp_path, "shout.py", {"text": CODE, "create": True}, timeout=5)
    )
    path = tmp_path / "shout.py"
    assert path.read_text() == CODE
    assert saved["version"] == load_any(path).version and saved["key"] == "transform:shout"
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert not leftovers  # the temporary file was renamed into place
    with pytest.raises(ConsoleRequestError) as exists:
        run_async(
            lambda: save_file(tmp_path, "shout.py", {"text": CODE, "create": True}, timeout=5)
        )
    assert exists.value.status == 409
    form = {"template": "add_prefix_suffix", "source_topic": "a", "target_topic": "b"}
    with pytest.raises(ConsoleRequestError) as sibling:
        run_async(
            lambda: save_file(
                tmp_path,
                "shout.yaml",
                {"template": {**form, "params": {"key_prefix": "x"}}},
                timeout=5,
            )
        )
    assert sibling.value.status == 409 and "shout.py exists" in sibling.value.message


def test_a_template_form_saves_yaml_with_the_rendered_version(tmp_path: Path) -> None:
    form = {
        "template": "add_prefix_suffix",
        "source_topic": "a",
        "target_topic": "b",
        "params": {"value_suffix": "-x"},
        "on_error": None,
    }
    saved = run_async(lambda: save_file(tmp_path, "suffixed.yaml", {"template": form}, timeout=5))
    path = tmp_path / "suffixed.yaml"
    data = yaml.safe_load(path.read_text())
    assert data == {
        "template": "add_prefix_suffix",
        "source_topic": "a",
        "target_topic": "b",
        "params": {"value_suffix": "-x"},
    }
    assert saved["version"] == load_any(path).version


def test_template_problems_name_their_field() -> None:
    base = {"template": "filter_prefix_suffix", "source_topic": "a", "target_topic": "b"}
    with pytest.raises(ConsoleRequestError) as bad:
        render_form({**base, "params": {"field": "body", "prefix": "E"}})
    assert bad.value.problems[0]["loc"] == ["params", "field"]
    with pytest.raises(ConsoleRequestError) as same:
        render_form({**base, "target_topic": "a", "params": {"prefix": "E"}})
    assert same.value.problems[0]["field"] == "target_topic"
    assert "def deal_message" in render_form({**base, "params": {"prefix": "E"}})


def test_broken_code_is_refused_with_its_line_and_nothing_is_written(tmp_path: Path) -> None:
    broken = CODE.replace('    message["value"] = ', '    message["value"] = = ')
    with pytest.raises(ConsoleRequestError) as refused:
        run_async(lambda: save_file(tmp_path, "bad.py", {"text": broken}, timeout=5))
    assert refused.value.problems[0]["line"] == 10
    assert refused.value.message.startswith("bad.py:10: syntax error")
    assert not (tmp_path / "bad.py").exists()


def test_a_trial_runs_like_test_transform(tmp_path: Path) -> None:
    spec = run_async(lambda: load_text(tmp_path, "shout.py", CODE, timeout=5))
    ok = run_async(lambda: run_trial(spec, TrialMessage(key="k", value="hi"), 5))
    assert ok["ok"] and ok["records"] == [{"key": "k", "value": "hi!", "headers": {}}]
    assert ok["input"]["topic"] == "a"
    failed = run_async(lambda: run_trial(spec, TrialMessage(key=None, value="boom"), 5))
    assert not failed["ok"] and failed["line"] == 7
    assert failed["error"] == "shout.py:7: RuntimeError: boom"
    dropped = run_async(lambda: run_trial(spec, TrialMessage(key=None, value="drop"), 5))
    assert dropped["ok"] and dropped["filtered"]


def test_a_trial_keeps_the_time_limit_and_runs_async_code(tmp_path: Path) -> None:
    slow = CODE.replace('    if message["value"] == "boom":', "    time.sleep(5)\n    if False:")
    spec = run_async(lambda: load_text(tmp_path, "slow.py", "import time\n" + slow, timeout=5))
    started = time.monotonic()
    answer = run_async(lambda: run_trial(spec, TrialMessage(key=None, value="x"), 0.3))
    assert not answer["ok"] and answer["exception"] == "TransformTimeout"
    assert time.monotonic() - started < 3
    asynchronous = (
        'SOURCE_TOPIC = "a"\nTARGET_TOPIC = "b"\nimport asyncio\n\n'
        "async def deal_message(message):\n    await asyncio.sleep(0)\n"
        '    message["value"] = "async " + message["value"]\n    return message\n'
    )
    spec = run_async(lambda: load_text(tmp_path, "later.py", asynchronous, timeout=5))
    answer = run_async(lambda: run_trial(spec, TrialMessage(key=None, value="x"), 5))
    assert answer["ok"] and answer["is_async"] and answer["records"][0]["value"] == "async x"


def test_a_module_that_never_finishes_loading_is_given_up(tmp_path: Path) -> None:
    with pytest.raises(ConsoleRequestError) as refused:
        run_async(
            lambda: load_text(tmp_path, "stuck.py", "import time\ntime.sleep(2)\n", timeout=0.3)
        )
    assert "did not finish within 0.3s" in refused.value.message


def test_delete_lists_then_removes_the_file(tmp_path: Path) -> None:
    (tmp_path / "old.py").write_text(CODE)
    plan = delete_file(tmp_path, "old.py", dry_run=True)
    assert plan["would_remove"] == [str((tmp_path / "old.py").resolve())]
    assert (tmp_path / "old.py").exists()
    done = delete_file(tmp_path, "old.py", dry_run=False)
    assert done["removed"] == plan["would_remove"] and not (tmp_path / "old.py").exists()
    with pytest.raises(ConsoleRequestError) as gone:
        delete_file(tmp_path, "old.py", dry_run=False)
    assert gone.value.status == 404


def test_search_requests_are_checked() -> None:
    topic, query = parse_search(
        {"topic": "t", "offsets": "5-25", "keys": ["user-1*"], "values": "disk", "limit": 3}
    )
    assert (topic, query.first_offset, query.last_offset, query.keys, query.values) == (
        "t",
        5,
        25,
        ["user-1*"],
        ["disk"],
    )
    for body, says in (
        ({}, "topic"),
        ({"topic": "t", "offsets": "9-2"}, "offsets"),
        ({"topic": "t", "limit": 1000}, "limit"),
        ({"topic": "t", "since": "tomorrow"}, "since"),
        ({"topic": "t", "since": "2024-01-02", "until": "2024-01-01"}, "since is after until"),
    ):
        with pytest.raises(SearchRequestError, match=says):
            parse_search(body)


def test_a_wildcard_keyword_cannot_stall_a_scan() -> None:
    match = keyword_matcher("*a*a*a*a*a*a*a*a*a*b")
    started = time.monotonic()
    assert not match("a" * 200_000)
    assert time.monotonic() - started < 1
    assert keyword_matcher("AliKafkaTe*")("xx alikafkatest001qaz")
    assert keyword_matcher("id=4?7")("id=407") and not keyword_matcher("id=4?7")("id=47")
    assert keyword_matcher("b*a")("bxa") and not keyword_matcher("b*a")("ab")


def test_reading_posts_need_the_same_site_but_no_token() -> None:
    json_post = {"Host": "127.0.0.1:6066", "Content-Type": "application/json"}
    assert check_same_site(json_post) is None
    cross = check_same_site({**json_post, "Origin": "https://evil.example"})
    assert cross is not None and cross.status == 403
    form = check_same_site({"Host": "127.0.0.1:6066", "Content-Type": "text/plain"})
    assert form is not None and form.status == 415
    # A change still needs everything else.
    read_only = check_change(WebSettings(read_only=True), "POST", json_post)
    assert read_only is not None and read_only.status == 403
