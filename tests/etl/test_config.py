"""Configuration: validation lists every problem by path, env overrides, ${VAR}, secrets."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.config import load_settings
from etl.errors import ConfigurationError
from etl.kafka import client_options
from etl.redact import Redactor


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etl.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.kafka.enable_idempotence is True
    assert settings.errors.policy == "continue"
    assert settings.transforms_dir == tmp_path / "transforms"


def test_every_problem_listed_by_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
kafka:
  bootstrap_servers: 1
  enable_idempotence: maybe
  security_protocol: SASL_SSL
errors:
  policy: sometimes
bogus: 1
sinks:
  - type: postgres_nope
    name: a
    topics: [x]
  - name: b
    topics: [y]
""",
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(path, environ={})
    problems = "\n".join(info.value.problems)
    assert "kafka.bootstrap_servers" in problems
    assert "kafka.enable_idempotence" in problems
    assert "sasl_mechanism is required" in problems
    assert "errors.policy" in problems
    assert "bogus: unknown option" in problems
    assert "sinks[0].type: unknown sink type 'postgres_nope'" in problems
    assert "sinks[1].type: field required" in problems


def test_env_overrides_file_and_var_substitution(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
kafka:
  bootstrap_servers: file:9092
  security_protocol: SASL_PLAINTEXT
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: ${KUSER}
  sasl_password: ${KPASS}
  client_id: ${CLIENT:-etl-default}
errors:
  dead_letter_topic: $${literal}
""",
    )
    env = {
        "KUSER": "alice",
        "KPASS": "s3cr3t-pw",
        "ETL_KAFKA__BOOTSTRAP_SERVERS": "env:9093",
        "ETL_ERRORS__POLICY": "stop",
    }
    with pytest.raises(ConfigurationError) as info:
        load_settings(path, environ=env)
    # "${literal}" is not a valid topic name: the error names the path, not the value.
    assert info.value.problems == [
        "errors.dead_letter_topic: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$'"
    ]
    path.write_text(path.read_text().replace("$${literal}", "dlq"))
    settings = load_settings(path, environ=env)
    assert settings.kafka.bootstrap_servers == "env:9093"
    assert settings.errors.policy == "stop"
    assert settings.kafka.client_id == "etl-default"
    assert settings.kafka.sasl_username == "alice"
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in settings.model_dump_json()
    options = client_options(settings.kafka)
    assert options["sasl_plain_password"] == "s3cr3t-pw"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    redact = Redactor(settings.secret_values())
    assert redact("login failed for s3cr3t-pw") == "login failed for ***"


def test_dsn_passwords_are_secrets(tmp_path: Path) -> None:
    from etl.config import ETLSettings

    settings = ETLSettings(
        sinks=[{"name": "pg", "type": "postgres", "dsn": "postgresql://u:p%40ss-w0rd@db/x"}],
        sources=[{"name": "s", "type": "mysql_binlog", "url": "mysql://r:binlog-pw@h/db"}],
    )
    secrets = settings.secret_values()
    assert "p@ss-w0rd" in secrets
    assert "binlog-pw" in secrets
    redact = Redactor(secrets)
    assert (
        redact("authentication failed: p@ss-w0rd rejected") == "authentication failed: *** rejected"
    )


def test_missing_env_var_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  sasl_password: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path, environ={})
    assert info.value.problems == [
        "kafka.sasl_password: environment variable NOT_SET_ANYWHERE is not set"
    ]


def test_ssl_cafile_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  security_protocol: SSL\n  ssl_cafile: /nonexistent/ca.pem\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path, environ={})
    assert "ssl_cafile: file not found" in info.value.problems[0]


def test_ssl_context_verifies_by_default(tmp_path: Path) -> None:
    import ssl

    path = write(tmp_path, "kafka:\n  security_protocol: SSL\n")
    settings = load_settings(path, environ={})
    context = client_options(settings.kafka)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_servers: [unclosed\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path, environ={})
    assert info.value.problems[0].startswith(f"{path}:")
    assert "invalid YAML" in info.value.problems[0]


def test_worker_with_bad_config_exits_fast_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap_servers: 5\nerrors:\n  policy: never\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "etl.cli", "worker", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "kafka.bootstrap_servers" in result.stderr
    assert "errors.policy" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert elapsed < 30  # generous: "within seconds", on a loaded 2-core machine


def test_faust_entry_point_with_bad_config_exits_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "errors:\n  policy: never\n")
    result = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "etl.app", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "ETL_CONFIG": str(path)},
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "errors.policy" in result.stderr
    assert "Traceback" not in result.stderr


def test_redactor_masks_prefixed_secret_keys_and_url_credentials() -> None:
    redact = Redactor()
    assert redact("sasl_password=hunter22 user=bob") == "sasl_password=*** user=bob"
    assert redact("access_token=abc&x=1") == "access_token=***&x=1"
    assert redact("host=db password=pw1 port=5") == "host=db password=*** port=5"
    assert redact("postgresql://bob:pw1@db/x") == "postgresql://bob:***@db/x"
    assert redact("passwords=3 tokens") == "passwords=3 tokens"
