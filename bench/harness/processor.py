"""Drives the real processor (`python -m services.dispatcher`) as a subprocess against the real
Kafka, under a topic prefix of its own, and reads back what it wrote; starts the other services on
the same topics (`Stack.spawn`, `Stack.start_api`) and waits on them. Used by the benchmarks and
the integration tests.

`REPO_ROOT` and `free_port` are `bench.harness.spawn`'s, importable from here too."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness.spawn import (
    REPO_ROOT,
    free_port,
    health,
    healthy,
    owned_partitions,
    spawn_service,
    until,
)
from core import fold
from schemas import Actor, AddRecipients, Command, Contact, Content, Event, decode_event
from schemas.wire import CommandRecord, CommandResult, DeadLetter
from services.common.kafka import client_options
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics

__all__ = [
    "OPERATOR",
    "REPO_ROOT",
    "STRANGER",
    "Log",
    "Stack",
    "assert_one_history",
    "by_message",
    "contacts",
    "free_port",
    "ids",
    "record",
    "taken",
]

OPERATOR = Actor(kind="user", account_id="acct-a", user_id="ada")
STRANGER = Actor(kind="user", account_id="acct-b", user_id="eve")


def record(command: Command, actor: Actor = OPERATOR, at: datetime | None = None) -> CommandRecord:
    return CommandRecord(command=command, actor=actor, issued_at=at or datetime.now(UTC))


@dataclass
class Log:
    """Everything committed on one topic so far, read with read_committed."""

    values: list[tuple[bytes | None, bytes]] = field(default_factory=list)


class Stack:
    """One processor (or several) on topics of its own."""

    def __init__(
        self, bootstrap: str, tmp: Path, partitions: int = 4, *, simulated_time: bool = False
    ) -> None:
        self.bootstrap = bootstrap
        # Simulated time (replays, scenarios with the clock off): the commands topic keeps the
        # producer's timestamps (CreateTime) and `publish` stamps each record with its
        # issued_at, so the processor decides at the scenario's instants. Otherwise the broker
        # stamps every record (LogAppendTime) and issued_at is information only.
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            kafka_partitions=partitions,
            kafka_commands_timestamp_type="CreateTime" if simulated_time else "LogAppendTime",
        )
        self.topics = Topics(self.settings.topic_prefix)
        self.tmp = tmp
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.producer: AIOKafkaProducer | None = None
        self._readers: dict[str, tuple[AIOKafkaConsumer, Log]] = {}
        #: Records of the events and results topics that are no event or result (a test's or
        #: a fault row's bad records, set aside by the services): passed over when read here.
        self.unreadable = 0

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.producer = AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            max_request_size=self.settings.max_record_bytes,
        )
        await self.producer.start()
        for topic in (self.topics.events, self.topics.results, self.topics.dead_letter):
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                isolation_level="read_committed",
                auto_offset_reset="earliest",  # see services/dispatcher/processor.py _read_all
            )
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in range(self.settings.kafka_partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._readers[topic] = (consumer, Log())

    def spawn(
        self, name: str = "processor", module: str = "services.dispatcher", **env: str
    ) -> subprocess.Popen[bytes]:
        log_path = self.tmp / f"{name}-{len(self.processes)}.log"
        defaults = {
            "DISPATCHER_HEALTH_PORT": str(free_port()),
            "DELIVERY_HEALTH_PORT": str(free_port()),
            "TICK_INTERVAL_S": "0.2",
            "KAFKA_COMMANDS_TIMESTAMP_TYPE": self.settings.kafka_commands_timestamp_type,
        }
        process = spawn_service(module, self.settings, log_path, **{**defaults, **env})
        self.processes.append(process)
        self.logs[process.pid] = log_path
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> Path:
        """The file a process of this stack writes its log to."""
        return self.logs[process.pid]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)

    async def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.producer is not None:
            await self.producer.stop()
        for consumer, _ in self._readers.values():
            await consumer.stop()

    # ---------------------------------------------------------------- writing

    async def publish(self, *records: CommandRecord) -> None:
        assert self.producer is not None
        for item in records:
            await self.producer.send(
                self.topics.commands,
                value=item.model_dump_json().encode(),
                key=str(item.command.message_id).encode(),
                # Used only on a CreateTime topic (simulated time); the broker overwrites it.
                timestamp_ms=int(item.issued_at.timestamp() * 1000),
            )
        await self.producer.flush()

    async def publish_raw(self, key: bytes | None, value: bytes) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(self.topics.commands, value=value, key=key)

    # ---------------------------------------------------------------- reading

    async def _drain(self, topic: str) -> Log:
        """Read everything committed on `topic` up to now (its last stable offsets)."""
        consumer, log = self._readers[topic]
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                log.values.extend((r.key, r.value) for r in records)
        return log

    async def results(self) -> dict[UUID, list[CommandResult]]:
        log = await self._drain(self.topics.results)
        found: dict[UUID, list[CommandResult]] = defaultdict(list)
        for _, value in log.values:
            result = self.result_or_none(value)
            if result is not None:
                found[result.command_id].append(result)
        return found

    async def events(self) -> list[Event]:
        log = await self._drain(self.topics.events)
        return [e for _, value in log.values if (e := self.event_or_none(value)) is not None]

    def event_or_none(self, value: bytes | None) -> Event | None:
        try:
            return decode_event(value or b"")
        except ValueError:  # pydantic's ValidationError is a ValueError
            self.unreadable += 1
            return None

    def result_or_none(self, value: bytes | None) -> CommandResult | None:
        try:
            return CommandResult.model_validate_json(value or b"")
        except ValueError:
            self.unreadable += 1
            return None

    async def events_of(self, message_id: UUID) -> list[Event]:
        return [e for e in await self.events() if e.message_id == message_id]

    async def dead_letters(self) -> list[DeadLetter]:
        log = await self._drain(self.topics.dead_letter)
        return [DeadLetter.model_validate_json(value) for _, value in log.values]

    async def wait_for(
        self, what: str, check: Callable[[], Any], within: float = 60.0, every: float = 0.05
    ) -> Any:
        """Poll `check` (a coroutine function) until it returns something truthy; fail early
        when one of the stack's processes died (`bench.harness.spawn.until`)."""
        return await until(what, check, within, every=every, processes=self.processes)

    async def wait_healthy(self, url: str, what: str, within: float = 120.0) -> None:
        """Wait until the `/health` at `url` answers 200."""
        await self.wait_for(what, lambda: healthy(url), within, every=0.2)

    async def wait_owning(self, health_port: int, within: float = 120.0) -> None:
        """Wait until the dispatcher answering /health on `health_port` owns every partition:
        commands are decided from then on."""
        url = f"http://127.0.0.1:{health_port}/health"

        async def owning() -> bool:
            return owned_partitions((await health(url))[1]) == self.settings.kafka_partitions

        await self.wait_for("the dispatcher to own every partition", owning, within, every=0.2)

    async def start_api(
        self, dsn: str, name: str = "commands", within: float = 120.0, **env: str
    ) -> tuple[subprocess.Popen[bytes], str]:
        """The commands service (`python -m services.commands`, which serves the UI too) on a
        port of its own, writing `dsn`; returns it and its base URL once it answers /health."""
        port = free_port()
        process = self.spawn(
            name,
            module="services.commands",
            DATABASE_URL=dsn,
            COMMANDS_PORT=str(port),
            BIND_HOST="127.0.0.1",
            **env,
        )
        base = f"http://127.0.0.1:{port}"
        await self.wait_healthy(f"{base}/health", f"the {name} service's health", within)
        return process, base

    async def result_of(self, command_id: UUID, within: float = 60.0) -> CommandResult:
        async def check() -> CommandResult | None:
            found = (await self.results()).get(command_id)
            return found[0] if found else None

        result: CommandResult = await self.wait_for(f"the result of {command_id}", check, within)
        return result

    async def decide(self, *records: CommandRecord, within: float = 60.0) -> list[CommandResult]:
        """Publish and wait for every result, in order."""
        await self.publish(*records)
        return [await self.result_of(r.command.command_id, within) for r in records]


def taken(log: Path) -> list[dict[str, Any]]:
    """The "partition taken" entries of a dispatcher's JSON log, in order: one a take, with its
    partition, the events and results it folded, its source (log or snapshot) and take_s."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(x) for x in lines if x.startswith("{") and '"partition taken"' in x]


def by_message(events: Iterable[Event]) -> dict[UUID, list[Event]]:
    grouped: dict[UUID, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.message_id].append(event)
    return grouped


CONTENT = Content(name="News", from_address="news@example.org", subject="Hi", body="Hello")


def ids() -> UUID:
    return uuid.uuid4()


def unchecked_add(
    message_id: UUID, contacts: tuple[Contact, ...], command_id: UUID | None = None
) -> AddRecipients:
    """An ``AddRecipients`` of ``contacts`` built without validating (valid by construction: the
    benches' chunks of up to ``MAX_CHUNK``; the dispatcher validates them when it decodes the
    record)."""
    return AddRecipients.model_construct(
        type="AddRecipients",
        schema_version=1,
        command_id=command_id or uuid.uuid4(),
        message_id=message_id,
        contacts=contacts,
    )


def generated(start: int, stop: int) -> tuple[Contact, ...]:
    """Contacts ``s<start>`` .. ``s<stop - 1>`` with one merge attribute, built without validating
    (valid by construction; the dispatcher validates them when it decodes the record): the
    audiences of the scale and memory benches."""
    return tuple(
        Contact.model_construct(
            contact_id=f"s{i}",
            email=f"s{i}@example.org",
            time_zone=None,
            attributes={"first_name": f"N{i}"},
        )
        for i in range(start, stop)
    )


def contacts(n: int, prefix: str = "c") -> tuple[Contact, ...]:
    return tuple(
        Contact(contact_id=f"{prefix}{i}", email=f"{prefix}{i}@example.org") for i in range(n)
    )


def assert_one_history(events: list[Event]) -> None:
    """A message's events: sequence 1..n without gap or repeat, and a valid fold."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    fold(events)
