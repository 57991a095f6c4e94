"""The compose file and Dockerfile for users: load and check them (CI has no Docker engine)."""

from __future__ import annotations

from pathlib import Path

import yaml

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
    assert worker["environment"]["ETL_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    # Secrets come from the environment, never written down.
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")


def test_dockerfile_runs_the_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("# The worker image")
    assert 'CMD ["etl", "worker"' in text
    assert "USER etl" in text
