"""The control API refuses cross-site and untokened changes (unit rules + a real worker)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from etl.config import WebSettings
from etl.testing.ports import reserve_port
from etl.testing.worker import WorkerProcess, post_json, write_config
from etl.web.guard import check_change, is_loopback

JSON = {"Host": "127.0.0.1:6066", "Content-Type": "application/json"}


def test_reads_are_never_refused() -> None:
    assert check_change(WebSettings(host="0.0.0.0"), "GET", {}) is None


def test_a_loopback_api_takes_json_changes_without_a_token() -> None:
    assert check_change(WebSettings(), "POST", JSON) is None


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ({**JSON, "Origin": "https://evil.example"}, 403, "cross-site"),
        ({**JSON, "Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
        ({"Host": "127.0.0.1:6066", "Content-Type": "application/x-www-form-urlencoded"}, 415, ""),
        ({"Host": "127.0.0.1:6066", "Content-Type": "text/plain"}, 415, "application/json"),
        ({"Host": "127.0.0.1:6066"}, 415, "application/json"),
        ({**JSON, "Host": "rebound.example:6066"}, 403, "loopback"),
    ],
)
def test_cross_site_and_form_posts_are_refused(
    headers: dict[str, str], status: int, says: str
) -> None:
    refusal = check_change(WebSettings(), "POST", headers)
    assert refusal is not None and refusal.status == status and says in refusal.message


def test_the_same_origin_is_accepted() -> None:
    headers = {**JSON, "Origin": "http://127.0.0.1:6066", "Sec-Fetch-Site": "same-origin"}
    assert check_change(WebSettings(), "POST", headers) is None


def test_off_loopback_a_token_is_required_and_checked() -> None:
    open_api = WebSettings(host="0.0.0.0")
    refusal = check_change(open_api, "POST", {**JSON, "Host": "10.0.0.5:6066"})
    assert refusal is not None and refusal.status == 403 and "web.token" in refusal.message
    guarded = WebSettings(host="0.0.0.0", token=SecretStr("s3cret-token"))
    wrong = check_change(guarded, "POST", {**JSON, "Authorization": "Bearer nope"})
    assert wrong is not None and wrong.status == 401
    right = {**JSON, "Host": "10.0.0.5:6066", "Authorization": "Bearer s3cret-token"}
    assert check_change(guarded, "DELETE", right) is None


def test_read_only_refuses_every_change() -> None:
    refusal = check_change(WebSettings(read_only=True), "PUT", JSON)
    assert refusal is not None and "read-only" in refusal.message


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", ""))


def _status(url: str, **kwargs: Any) -> int:
    try:
        post_json(url, **kwargs)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


@pytest.mark.kafka
def test_a_worker_on_all_interfaces_wants_its_token(
    tmp_path: Path, kafka_bootstrap: str, uid: str
) -> None:
    port = reserve_port()
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "t.py").write_text(
        f'SOURCE_TOPIC = "g-src-{uid}"\nTARGET_TOPIC = "g-dst-{uid}"\n\n'
        "def deal_message(message):\n    return message\n"
    )
    config = write_config(
        tmp_path,
        kafka_bootstrap,
        kafka={"group_prefix": f"g{uid}"},
        web={"enabled": True, "host": "0.0.0.0", "port": port, "token": "tok-" + uid},
    )
    base = f"http://127.0.0.1:{port}"
    with WorkerProcess(config) as worker:
        worker.wait_running("t")
        pause = f"{base}/etl/pipelines/t/pause/"
        assert _status(pause) == 401
        assert _status(pause, token="wrong") == 401
        form = urllib.request.Request(
            pause,
            data=b"a=1",
            headers={"Authorization": f"Bearer tok-{uid}"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(form, timeout=10)
        assert caught.value.code == 415
        cross = urllib.request.Request(
            pause,
            data=b"{}",
            headers={
                "Authorization": f"Bearer tok-{uid}",
                "Content-Type": "application/json",
                "Origin": "http://attacker.example",
            },
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(cross, timeout=10)
        assert caught.value.code == 403
        with urllib.request.urlopen(f"{base}/etl/status/", timeout=10) as response:
            assert json.loads(response.read())["pipelines"][0]["state"] == "running"
        assert post_json(pause, token=f"tok-{uid}")["desired"] == "paused"
        # The token is a secret: never in the log or the status.
        assert f"tok-{uid}" not in worker.log()
        with urllib.request.urlopen(f"{base}/etl/status/", timeout=10) as response:
            assert f"tok-{uid}" not in response.read().decode()
