"""Per-account trust for integrating services, against the real broker, Postgres and processor:
an integrator (a SCRAM principal that may write only its intake topic) acting for an account it
was granted is decided, as that principal; acting for another account, or forging delivery
outcomes, it is answered with a rejected result and nothing is decided
(services/dispatcher/intake.py, core/trust.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from bench.harness.processor import CONTENT, Stack, free_port, ids, record
from bench.harness.spawn import health
from schemas import Actor, CreateDraft, RecordDeliveryOutcomes
from schemas.wire import CommandRecord, CommandResult
from services.commands.integrators import create, grant, revoke
from services.common.kafka import client_options
from services.common.kafka_admin import (
    DISPATCHER,
    Resource,
    create_acls,
    intake_topic,
    service_acls,
)
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.common.reading import read_range
from tests.integration.kafka_env import service_password

GRANTED = "acct-a"


class Integrator:
    def __init__(self, stack: Stack, name: str, password: str) -> None:
        self.name = name
        self.stack = stack
        self.topic = intake_topic(stack.settings.topic_prefix, name)
        self.answers_topic = stack.topics.intake_results(name)
        settings = stack.settings.model_copy(
            update={"kafka_username": name, "kafka_password": SecretStr(password)}
        )
        self.options: dict[str, Any] = client_options(settings)

    async def publish(self, *items: CommandRecord | bytes) -> None:
        producer = AIOKafkaProducer(**self.options, acks="all")
        await producer.start()
        try:
            for item in items:
                value = item if isinstance(item, bytes) else item.model_dump_json().encode()
                await producer.send_and_wait(self.topic, value=value, key=b"any")
        finally:
            await producer.stop()

    async def answer(self, command_id: UUID) -> CommandResult:
        """The answer on the integrator's own answers topic (read as the admin)."""

        async def check() -> CommandResult | None:
            for number in range(self.stack.settings.kafka_partitions):
                async for r in read_range(self.stack.settings, self.answers_topic, number):
                    result = CommandResult.model_validate_json(r.value)
                    if result.command_id == command_id:
                        return result
            return None

        found: CommandResult = await self.stack.wait_for(f"the answer to {command_id}", check)
        return found


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def integrator(stack: Stack, db: asyncpg.Connection) -> Integrator:
    """A new integrator granted acct-a, then the dispatcher (processor and relay)."""
    name = f"itg-{uuid.uuid4().hex[:8]}"
    password, _ = await create(stack.settings, name)
    await grant(db, name, GRANTED)
    stack.spawn()
    return Integrator(stack, name, password)


def acting_for(account: str) -> Actor:
    return Actor(kind="service", account_id=account, service="whatever-it-claims")


async def test_an_integrator_acting_for_a_granted_account_is_decided_as_itself(
    stack: Stack, integrator: Integrator
) -> None:
    """Given an integrator granted acct-a, when it publishes a CreateDraft for acct-a on its
    intake topic, then the command is decided, and the history names the integrator's
    principal as the actor, whatever service name the record claimed."""
    message = ids()
    command = CreateDraft(command_id=ids(), message_id=message, content=CONTENT)

    await integrator.publish(record(command, actor=acting_for(GRANTED)))

    result = await stack.result_of(command.command_id)
    assert result.outcome == "accepted" and result.decided
    # The same result on the integrator's own answers topic.
    assert await integrator.answer(command.command_id) == result
    [created] = await stack.events_of(message)
    assert created.actor == Actor(kind="service", account_id=GRANTED, service=integrator.name)


async def test_an_integrator_acting_for_another_account_is_rejected_with_a_result(
    stack: Stack, integrator: Integrator, db: asyncpg.Connection
) -> None:
    """Given an integrator granted acct-a only, when it publishes a command for acct-b, or
    delivery outcomes for acct-a, or a command for acct-a after its grant was revoked, then
    each is answered rejected (forbidden, with the reason) and nothing is decided; a record
    that does not decode but whose ids can be read is answered too (invalid)."""
    other = CreateDraft(command_id=ids(), message_id=ids(), content=CONTENT)
    forged = RecordDeliveryOutcomes(command_id=ids(), message_id=ids(), delivered=("c1",))
    sloppy = record(
        CreateDraft(command_id=ids(), message_id=ids(), content=CONTENT),
        actor=acting_for(GRANTED),
    ).model_dump(mode="json")
    sloppy["command"]["colour"] = "red"

    await integrator.publish(
        record(other, actor=acting_for("acct-b")),
        record(forged, actor=acting_for(GRANTED)),
        json.dumps(sloppy).encode(),
    )

    refused = await integrator.answer(other.command_id)
    assert refused.outcome == "rejected" and not refused.decided
    assert refused.rejection is not None and refused.rejection.code == "forbidden"
    assert "acct-b" in refused.rejection.message
    assert refused.rejection.field == "actor.account_id"
    outcomes = await integrator.answer(forged.command_id)
    assert outcomes.rejection is not None and outcomes.rejection.code == "forbidden"
    assert "delivery service" in outcomes.rejection.message
    assert await stack.events_of(other.message_id) == []
    invalid = await integrator.answer(UUID(sloppy["command"]["command_id"]))
    assert invalid.rejection is not None and invalid.rejection.code == "invalid"
    assert "colour" in invalid.rejection.message

    await revoke(db, integrator.name, GRANTED)
    late = CreateDraft(command_id=ids(), message_id=ids(), content=CONTENT)
    await integrator.publish(record(late, actor=acting_for(GRANTED)))
    answer = await integrator.answer(late.command_id)
    assert answer.rejection is not None and answer.rejection.code == "forbidden"
    assert await stack.events_of(late.message_id) == []


async def test_a_relay_that_cannot_run_turns_health_red_and_the_processor_goes_on(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """Given the dispatcher running as its own principal on a prefix whose ACLs lack the relay's
    consumer group, and an intake topic to relay, then the relay fails as a whole: /health
    answers 503 with the intake check naming the refusal, while the processor still decides
    the service's own commands."""
    prefix = stack.settings.topic_prefix
    acls = [
        acl
        for acl in service_acls(prefix)
        if not (acl.resource is Resource.GROUP and acl.name == f"{prefix}-intake")
    ]
    await create_acls(stack.settings, acls)
    await create(stack.settings, f"itg-{uuid.uuid4().hex[:8]}")
    port = free_port()
    stack.spawn(
        DISPATCHER_HEALTH_PORT=str(port),
        KAFKA_USERNAME=DISPATCHER,
        KAFKA_PASSWORD=service_password(DISPATCHER),
    )

    command = CreateDraft(command_id=ids(), message_id=ids(), content=CONTENT)
    [result] = await stack.decide(record(command))
    assert result.outcome == "accepted"

    async def relay_red() -> dict[str, Any] | None:
        code, body = await health(f"http://127.0.0.1:{port}/health")
        intake = body.get("checks", {}).get("intake", {})
        return body if code == 503 and intake.get("ok") is False else None

    body = await stack.wait_for("the relay's check to fail", relay_red)
    assert "GroupAuthorizationFailed" in body["checks"]["intake"]["error"]
    assert body["checks"]["processor"]["ok"] is True
