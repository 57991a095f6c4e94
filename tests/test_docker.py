"""The compose file and Dockerfile for users: load and check them (CI has no Docker engine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from etl.config import load_settings
from etl.transforms.loader import discover_transforms

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def test_compose_file_has_the_stack() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "opensearch", "postgres", "mysql", "worker"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft, no ZooKeeper"
    assert services["mysql"]["image"].startswith("mysql:8")
    flags = services["mysql"]["command"]
    for flag in ("--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL"):
        assert flag in flags
    assert services["opensearch"]["image"].startswith("opensearchproject/opensearch:")
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    # Secrets come from the environment, never written down.
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for port in service.get("ports", []):
            # Published on the host's loopback only, on ports no local server uses.
            host, published, _ = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} on every interface"
            assert int(published) not in (5432, 3306, 9200, 9092, 6066), (name, port)
    assert {name for name in services if name != "worker"} <= set(worker["depends_on"])
    assert all(c["condition"] == "service_healthy" for c in worker["depends_on"].values())


def test_compose_files_exist_and_the_worker_config_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mounted etl.yaml passes the project's own loader and runs one transform and
    every sink type; everything the compose file mounts or builds exists."""
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    mounted: dict[str, Path] = {}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert (DOCKER / source).exists(), f"compose mounts missing {source}"
            mounted[target] = (DOCKER / source).resolve()
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    worker = compose["services"]["worker"]
    config = mounted[worker["environment"]["ETL_CONFIG"]]
    for name in ("POSTGRES_PASSWORD", "MYSQL_PASSWORD"):
        monkeypatch.setenv(name, "from-compose")
    for name in [n for n in os.environ if n.startswith("ETL_")]:
        monkeypatch.delenv(name)
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert {sink.type for sink in settings.sink_configs()} == {
        "postgres",
        "mysql",
        "opensearch",
        "object_store",
        "http",
    }
    assert [s.type for s in settings.source_configs()] == ["mysql_binlog"]
    # The transforms directory resolves beside etl.yaml in the repository and in the
    # container alike, and holds exactly one transform that loads.
    assert mounted["/app/compose/transforms"] == settings.transforms_dir
    specs, errors = discover_transforms(settings.transforms_dir)
    assert not errors and [s.name for s in specs] == ["orders_clean"]
    hosts = {"kafka", "postgres", "mysql", "opensearch", "receiver"}
    assert hosts <= set(compose["services"])
    assert settings.web.host == "0.0.0.0" and worker["ports"] == ["127.0.0.1:16066:6066"]
    # Off loopback, no change goes through without the token (etl.web.guard).
    from etl.web.guard import check_change

    assert worker["environment"]["ETL_WEB_TOKEN"] == "${ETL_WEB_TOKEN:-}"
    headers = {"Host": "127.0.0.1:16066", "Content-Type": "application/json"}
    refusal = check_change(settings.web, "POST", headers)
    assert refusal is not None and "token" in refusal.message
    monkeypatch.setenv("ETL_WEB_TOKEN", "compose-token")
    guarded = load_settings(config).web
    assert check_change(guarded, "POST", headers) is not None
    ok = {**headers, "Authorization": "Bearer compose-token"}
    assert check_change(guarded, "POST", ok) is None


def test_dockerfile_runs_the_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("# The worker image")
    assert 'CMD ["etl", "worker"' in text
    assert "USER etl" in text
