"""The intake relay: integrating services' commands, checked, onto the commands topic
(docs/architecture.md, "The command topic's trust boundary"; docs/integrators.md).

An integrator's principal may write only `<prefix>.intake.<principal>` (an ACL on the broker),
so the topic of a record names who wrote it. The relay, a task of the dispatcher process (whose
principal writes the commands and results topics), reads every intake topic in the consumer group
`<prefix>-intake` with read_committed and, for each batch of one intake partition, in ONE Kafka
transaction together with the batch's input offsets:

* forwards each command the rule admits (core/trust.py: an account granted to the principal in
  Postgres `integrator_accounts`; never delivery outcomes) to `<prefix>.commands`, keyed and
  partitioned by its message id, acting as the principal;
* answers each refused one with a rejected `CommandResult` (code `forbidden`, `decided: false`)
  on the principal's own answers topic `<prefix>.intake-results.<principal>`; a forwarded
  command carries the principal in a header, and the processor writes its result there too, so
  an integrator reads the answers to its own commands and never the results topic, which holds
  every account's;
* dead-letters what does not decode (answered too when its ids can be read).

A batch that fails (Kafka, Postgres) is aborted and read again from the committed offset by a new
producer. A forward that is repeated (a zombie relay after a rebalance: the transactional id is
per process, not per partition) is harmless: the processor answers a repeated command id with
its first result and decides nothing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from core.trust import Admitted, admit
from schemas.wire import CommandRecord, CommandResult, DeadLetter, Rejection, decode_input
from services.commands.integrators import accounts_of
from services.common.kafka import client_options
from services.common.kafka_admin import create_intake_topic
from services.common.settings import Settings
from services.common.topics import Topics
from services.dispatcher.decider import (
    INTAKE_HEADER,
    dead_letter_result,
    key_of,
    partition_of,
)

log = structlog.get_logger(__name__)

#: How often the relay's consumer looks for new intake topics (a new integrator).
DISCOVERY_MS = 5_000

#: The pause after a failed batch before it is read again (Postgres or Kafka away).
RETRY_S = 1.0

#: The pause before the relay starts again after it failed as a whole.
RESTART_S = 5.0


class NotACommandError(ValueError):
    """Raised when an intake record is a tick or a copied event: an intake carries commands."""


def principal_of(topics: Topics, topic: str) -> str:
    """The principal whose intake `topic` is (the broker lets only it write there)."""
    return topic.removeprefix(f"{topics.prefix}.intake.")


def refusal(item: CommandRecord, reason: str, field: str) -> CommandResult:
    command = item.command
    return CommandResult(
        command_id=command.command_id,
        message_id=command.message_id,
        command_type=command.type,
        correlation_id=item.correlation_id,
        outcome="rejected",
        rejection=Rejection(code="forbidden", message=reason, field=field),
        decided=False,
    )


class IntakeRelay:
    """Reads every intake topic and forwards or answers each command (see the module)."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.group = f"{topics.prefix}-intake"
        instance = settings.dispatcher_instance_id or uuid.uuid4().hex[:12]
        self.transactional_id = f"{topics.prefix}-intake-{instance}"
        self.running = False
        self.error: str | None = None
        self.forwarded = 0
        self.refused = 0
        self._db: asyncpg.Pool | None = None
        # Principals whose answers topic is known to exist (created if missing, see _relay).
        self._answerable: set[str] = set()
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop`. A failure of the relay itself (its group not authorised, Kafka
        gone) never ends the process: the processor beside it goes on deciding the service's
        own commands; /health shows the relay red with the reason, and it starts again."""
        while not stop.is_set():
            try:
                await self._consume(stop)
            except Exception as error:
                self.error = f"{type(error).__name__}: {error}"
                log.exception("intake relay failed; restarting it", retry_in_s=RESTART_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESTART_S)

    async def _consume(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=DISCOVERY_MS,
            max_partition_fetch_bytes=self.settings.max_record_bytes,
        )
        consumer.subscribe(pattern=f"^{re.escape(self.topics.prefix)}\\.intake\\..+")
        try:
            await consumer.start()
            self.running = True
            self.error = None
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batches.items():
                    try:
                        await self._relay(tp, records)
                    except Exception:
                        # Aborted (or never begun): nothing of the batch exists. Read it again
                        # from the committed offset, with a new producer.
                        log.exception("intake batch failed; reading it again", topic=tp.topic)
                        await self._drop_producer()
                        committed = await consumer.committed(tp)
                        if committed is None:
                            await consumer.seek_to_beginning(tp)
                        else:
                            consumer.seek(tp, committed)
                        await asyncio.sleep(RETRY_S)
        finally:
            self.running = False
            await self._drop_producer()
            with contextlib.suppress(Exception):
                await consumer.stop()
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_options(self.settings),
                transactional_id=self.transactional_id,
                max_request_size=self.settings.max_record_bytes,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def _accounts(self, principal: str) -> frozenset[str]:
        # Read for every batch: a grant or a revoke holds from the next batch on.
        if self._db is None:
            self._db = await asyncpg.create_pool(self.settings.database_url, min_size=0, max_size=2)
        async with self._db.acquire() as conn:
            return await accounts_of(conn, principal)

    async def _relay(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        principal = principal_of(self.topics, tp.topic)
        accounts = await self._accounts(principal)
        if principal not in self._answerable:
            # Before the first forward: the processor answers on this topic in its own
            # transaction, where a missing topic would fail every batch of its partition.
            await create_intake_topic(self.settings, principal)
            self._answerable.add(principal)
        producer = await self._producer_ready()
        async with producer.transaction():
            for record in records:
                await self._one(producer, principal, accounts, record)
            await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, self.group)

    async def _one(
        self,
        producer: AIOKafkaProducer,
        principal: str,
        accounts: frozenset[str],
        record: ConsumerRecord[Any, Any],
    ) -> None:
        try:
            item = decode_input(record.value)
            if not isinstance(item, CommandRecord):
                raise NotACommandError(f"an intake carries commands, not a {item.type}")
        except (ValidationError, ValueError) as error:
            await self._dead_letter(producer, record, error)
            return
        verdict = admit(item, principal, accounts)
        key = key_of(item.command.message_id)
        partition = partition_of(key, self.settings.kafka_partitions)
        bound = log.bind(
            principal=principal,
            account_id=item.actor.account_id,
            command_id=str(item.command.command_id),
            command_type=item.command.type,
        )
        if isinstance(verdict, Admitted):
            await producer.send(
                self.topics.commands,
                value=verdict.record.model_dump_json().encode(),
                key=key,
                partition=partition,
                headers=[(INTAKE_HEADER, principal.encode())],
            )
            self.forwarded += 1
            bound.info("intake command forwarded")
            return
        result = refusal(item, verdict.reason, verdict.field)
        await producer.send(
            self.topics.intake_results(principal),
            value=result.model_dump_json().encode(),
            key=key,
            partition=partition,
            headers=[("command_id", str(result.command_id).encode())],
        )
        self.refused += 1
        bound.warning("intake command refused", reason=verdict.reason)

    async def _dead_letter(
        self, producer: AIOKafkaProducer, record: ConsumerRecord[Any, Any], error: Exception
    ) -> None:
        letter = DeadLetter.of(record, error)
        await producer.send(
            self.topics.dead_letter,
            value=letter.model_dump_json().encode(),
            key=record.key,
            partition=record.partition % self.settings.kafka_partitions,
        )
        result = dead_letter_result(record.value, letter, error)
        if result is not None:
            key = key_of(result.message_id)
            await producer.send(
                self.topics.intake_results(principal_of(self.topics, record.topic)),
                value=result.model_dump_json().encode(),
                key=key,
                partition=partition_of(key, self.settings.kafka_partitions),
                headers=[("command_id", str(result.command_id).encode())],
            )
        log.warning("intake record sent to the dead-letter topic", topic=record.topic)

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "error": self.error,
            "forwarded": self.forwarded,
            "refused": self.refused,
        }

    async def check(self) -> None:
        if not self.running:
            raise RuntimeError(f"the intake relay is not consuming: {self.error or 'starting'}")
