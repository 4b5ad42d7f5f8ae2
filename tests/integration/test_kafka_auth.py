"""The command topic's trust boundary on the broker the scripts run (scripts/kafka.sh): a client
that does not authenticate, or authenticates wrongly, is refused; a principal that is not a
service may not write the commands topic; only the dispatcher writes events, results and sends
(services/common/kafka_admin.py). Each test sets up the service ACLs for a topic prefix of its
own, as the admin principal the tests run as."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from bench.harness.processor import REPO_ROOT
from schemas import Tick
from services.common.kafka import client_options
from services.common.kafka_admin import (
    API,
    DELIVERY,
    DISPATCHER,
    create_acls,
    create_intake_topic,
    intake_topic,
    integrator_acls,
    new_password,
    service_acls,
    upsert_scram_user,
)
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics
from tests.integration.kafka_env import service_password

TICK = Tick(tick_id=uuid.uuid4(), at=datetime(2026, 12, 1, tzinfo=UTC)).model_dump_json().encode()


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[Settings]:
    """The admin's settings (from the environment), on a prefix of the test's own with the
    service ACLs in place."""
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"a{uuid.uuid4().hex[:10]}"
    )
    assert settings.kafka_security_protocol.startswith("SASL_"), (
        "the tests must run against the authenticating broker (scripts/with_env.sh)"
    )
    await ensure_topics(settings)
    await create_acls(settings, service_acls(settings.topic_prefix))
    yield settings


def as_principal(settings: Settings, name: str, password: str) -> Settings:
    return settings.model_copy(
        update={"kafka_username": name, "kafka_password": SecretStr(password)}
    )


async def write(options: dict[str, Any], topic: str, value: bytes = TICK) -> None:
    producer = AIOKafkaProducer(**options, request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=b"tick", partition=0)
    finally:
        await producer.stop()


async def visible_topics(options: dict[str, Any]) -> set[str]:
    """The topics the broker shows this principal (Metadata lists only those it may describe)."""
    consumer = AIOKafkaConsumer(**options, request_timeout_ms=10_000)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def test_an_unauthenticated_producer_is_refused_by_the_broker(admin: Settings) -> None:
    """Given the broker the scripts run, when a producer connects without SASL, or with a wrong
    password, then it cannot even start: nothing reaches the commands topic."""
    topics = Topics(admin.topic_prefix)
    anonymous = {"bootstrap_servers": admin.kafka_bootstrap_servers}
    with pytest.raises(KafkaError):
        await write(anonymous, topics.commands)
    wrong = client_options(as_principal(admin, API, "not-the-password"))
    with pytest.raises(KafkaError):
        await write(wrong, topics.commands)


async def test_a_principal_that_is_not_a_service_cannot_write_the_commands_topic(
    admin: Settings,
) -> None:
    """Given an authenticated integrator (a SCRAM user with its intake topic), when it writes
    the commands topic, then the broker refuses it; it may write its own intake topic only,
    and read its own answers but not the results topic."""
    topics = Topics(admin.topic_prefix)
    name = f"itest-{uuid.uuid4().hex[:8]}"
    password = new_password()
    await upsert_scram_user(admin, name, password)
    await create_intake_topic(admin, name)
    await create_acls(admin, integrator_acls(admin.topic_prefix, name))
    integrator = client_options(as_principal(admin, name, password))

    with pytest.raises(TopicAuthorizationFailedError):
        await write(integrator, topics.commands)
    with pytest.raises(TopicAuthorizationFailedError):
        await write(integrator, intake_topic(admin.topic_prefix, "someone-else"))
    await write(integrator, intake_topic(admin.topic_prefix, name))
    # It sees (and may read) its own answers, not the results of every account.
    visible = await visible_topics(integrator)
    assert topics.intake_results(name) in visible
    assert topics.results not in visible and topics.commands not in visible


async def test_only_the_dispatcher_writes_events_results_and_sends(admin: Settings) -> None:
    """Given the service principals, then the API and the delivery worker may write the
    commands topic but not the events, results, sends or fences, which the dispatcher may
    write."""
    topics = Topics(admin.topic_prefix)
    api = client_options(as_principal(admin, API, service_password(API)))
    delivery = client_options(as_principal(admin, DELIVERY, service_password(DELIVERY)))
    dispatcher = client_options(as_principal(admin, DISPATCHER, service_password(DISPATCHER)))

    await write(api, topics.commands)
    await write(delivery, topics.commands)
    for options in (api, delivery):
        for topic in (topics.events, topics.sends, topics.control):
            with pytest.raises(TopicAuthorizationFailedError):
                await write(options, topic)
    with pytest.raises(TopicAuthorizationFailedError):
        await write(delivery, topics.results)
    for topic in (topics.events, topics.results, topics.sends, topics.control):
        await write(dispatcher, topic)


async def test_the_compose_setup_creates_scram_users_a_client_logs_in_with(
    admin: Settings,
) -> None:
    """docker-compose.yml's kafka-setup feeds `NAME PASSWORD` lines to the admin CLI: each
    user can then log in with SCRAM (here against the scripts' broker, as the admin)."""
    names = [f"ctest-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    passwords = [new_password() for _ in names]
    lines = "# the compose setup's users\n" + "".join(
        f"{n} {p}\n" for n, p in zip(names, passwords, strict=True)
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.common.kafka_admin", "upsert-scram-users"],
        input=lines,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": admin.kafka_bootstrap_servers,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"2 SCRAM users: {', '.join(names)}"
    for name, password in zip(names, passwords, strict=True):
        # Authenticated (no ACL of its own: it sees no topic, but the login succeeds).
        assert await visible_topics(client_options(as_principal(admin, name, password))) == set()
