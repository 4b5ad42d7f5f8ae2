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


def _template() -> dict[str, str]:
    """The scripts' broker settings (infra/kafka/server.properties.template)."""
    text = (REPO_ROOT / "infra" / "kafka" / "server.properties.template").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def _scripts_principals() -> tuple[list[str], str]:
    """The principals scripts/kafka.sh creates, and its admin (super user)."""
    script = (REPO_ROOT / "scripts" / "kafka.sh").read_text()
    listed = re.search(r"^PRINCIPALS=\(([^)]*)\)", script, re.M)
    admin = re.search(r"^KAFKA_ADMIN_USER=(\S+)", script, re.M)
    assert listed is not None and admin is not None
    return listed[1].split(), admin[1]


def _service_principals() -> dict[str, str]:
    """The principal each service logs in as under scripts/services.sh (module -> principal)."""
    script = (REPO_ROOT / "scripts" / "services.sh").read_text()
    entries = re.findall(r'^\s*"[a-z_]+\|([a-z_.]+)\|[^|]*\|([a-z-]+)"', script, re.M)
    assert len(entries) == 4
    return dict(entries)


def test_kafka_requires_sasl_scram_and_acls_like_the_scripts_broker(
    compose: dict[str, Any],
) -> None:
    env = environment(compose["services"]["kafka"])
    template = _template()
    _, admin = _scripts_principals()
    protocols = dict(
        pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}

    # Every listener authenticates: none is PLAINTEXT (or SSL without a login).
    assert set(protocols) == listeners
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    # The listeners clients reach (the containers' and the host's) speak the scripts' SCRAM.
    clients = listeners - {
        env["KAFKA_CONTROLLER_LISTENER_NAMES"],
        env["KAFKA_INTER_BROKER_LISTENER_NAME"],
    }
    assert clients
    for name in clients:
        assert (
            env[f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS"]
            == (template["listener.name.client.sasl.enabled.mechanisms"])
        )
    # The same authoriser, the same default deny, the scripts' admin among the super users.
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == template["authorizer.class.name"]
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == template["allow.everyone.if.no.acl.found"]
    assert f"User:{admin}" in env["KAFKA_SUPER_USERS"].split(";")


@pytest.mark.parametrize(
    "module",
    ["services.commands", "services.dispatcher", "services.delivery", "services.projections"],
)
def test_each_service_logs_in_as_the_principal_the_scripts_give_it(
    compose: dict[str, Any], module: str
) -> None:
    [service] = [
        s for s in compose["services"].values() if s.get("command") == ["python", "-m", module]
    ]
    env = environment(service)

    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
    assert env["KAFKA_USERNAME"] == _service_principals()[module]
    assert env["KAFKA_PASSWORD"]
    assert service["depends_on"]["kafka-setup"] == {"condition": "service_completed_successfully"}


def test_the_setup_creates_the_scripts_scram_users_and_applies_the_service_acls(
    compose: dict[str, Any],
) -> None:
    setup = compose["services"]["kafka-setup"]
    env = environment(setup)
    principals, _ = _scripts_principals()
    users = [line.split()[0] for line in env["SCRAM_USERS"].splitlines()]
    script = " ".join(setup["command"])

    # Every SCRAM user of the scripts (the controller logs in with PLAIN, as in the scripts).
    assert sorted(users) == sorted(p for p in principals if p != "controller")
    assert "services.common.kafka_admin upsert-scram-users" in script
    assert "services.common.kafka_admin apply-service-acls" in script
