"""docker-compose.yml describes the same stack the scripts start: every server and service, the
single-node Kafka settings transactions need, and the same ports and modules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

SERVICE_MODULES = {
    "smtp-sink": "services.smtp_sink",
    "commands": "services.commands",
    "dispatcher": "services.dispatcher",
    "delivery": "services.delivery",
    "projections": "services.projections",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_compose_names_every_server_and_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {"kafka", "postgres", *SERVICE_MODULES}


def test_kafka_runs_in_kraft_mode_with_the_single_node_transaction_settings(
    compose: dict[str, Any],
) -> None:
    env = environment(compose["services"]["kafka"])

    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_kafka_image_is_the_pinned_kafka_version(compose: dict[str, Any]) -> None:
    pom = (REPO_ROOT / "infra" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert match is not None

    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{match[1]}"


def test_postgres_is_version_15_with_the_project_database(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    env = environment(postgres)

    assert postgres["image"] == "postgres:15"
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        "mailctl",
        "mailctl",
        "mailctl",
    )


@pytest.mark.parametrize("name", sorted(SERVICE_MODULES))
def test_each_service_runs_its_module_and_checks_its_health(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]

    assert service["command"] == ["python", "-m", SERVICE_MODULES[name]]
    assert "/health" in " ".join(service["healthcheck"]["test"])
    assert environment(service)["BIND_HOST"] == "0.0.0.0"


def test_published_ports_are_loopback_only_and_match_the_scripts(
    compose: dict[str, Any],
) -> None:
    published = {
        name: [str(p) for p in service.get("ports", [])]
        for name, service in compose["services"].items()
    }

    for ports in published.values():
        assert all(p.startswith("127.0.0.1:") for p in ports), ports
    assert published["kafka"] == ["127.0.0.1:19092:19092"]
    assert published["postgres"] == ["127.0.0.1:15432:5432"]
    assert published["smtp-sink"] == ["127.0.0.1:10025:10025", "127.0.0.1:18025:18025"]
    assert published["commands"] == ["127.0.0.1:8080:8080"]
