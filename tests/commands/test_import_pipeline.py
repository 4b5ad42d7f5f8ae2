"""A CSV import keeps two chunks in flight (services/commands/audiences.py `run_import`) and still
puts its chunks on the command topic in the file's order: chunk n + 1 is handed to the executor
only once chunk n is published (`CommandRequest.published`, set by the gateway)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from schemas import Actor, AddRecipients, Contact, Content, CreateDraft
from schemas.wire import CommandRecord
from services.commands.audiences import AudienceService
from services.commands.errors import ProblemError
from services.commands.gateway import CommandRequest, Executor
from services.commands.ports import Claim
from tests.commands.fakes import FakeBus, FakeStore

ACCOUNT = "acct-a"
ACTOR = Actor(kind="service", account_id=ACCOUNT, service="api")
CONTENT = {"name": "News", "from_address": "news@example.org", "subject": "Hi", "body": "Hello"}


class SlowFirstStore(FakeStore):
    """Claims of the first chunk answered last: without the wait for the previous chunk's
    publish, the chunks would reach the topic out of order."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim(
        self, account: str, key: str, fingerprint: str, command_id: UUID, message_id: UUID
    ) -> Claim:
        self.claims += 1
        if key.endswith(":0"):
            await asyncio.sleep(0.05)
        return await super().claim(account, key, fingerprint, command_id, message_id)


class CountingBus(FakeBus):
    """Holds every command until the test lets it go, counting how many wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.most_waiting = 0

    async def publish(self, record: Any, value: bytes | None = None) -> None:
        await super().publish(record, value)
        self.most_waiting = max(self.most_waiting, len(self.held))


class NullPool:
    """The import tables of Postgres, ignored: the test looks at the bus."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.row = {
            "import_id": None,
            "account_id": ACCOUNT,
            "message_id": None,
            "kind": "add",
            "state": "done",
            "file_name": None,
            "started_by": "api",
            "started_at": now,
            "updated_at": now,
            "finished_at": now,
            "total_bytes": None,
            "bytes_read": 0,
            "rows_read": 0,
            "chunks_done": 0,
            "error": None,
        }

    async def fetchval(self, query: str, *args: Any) -> Any:
        return ACCOUNT if "INSERT" in query else 0

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return self.row

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return []

    async def execute(self, query: str, *args: Any) -> str:
        return "UPDATE 1"

    async def executemany(self, query: str, args: Any) -> None:
        return None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[NullPool]:
        yield self


class Views:
    def __init__(self) -> None:
        self.db = NullPool()

    async def pool(self) -> NullPool:
        return self.db

    async def draft(self, account: str, message_id: UUID) -> dict[str, Any]:
        return {"content": CONTENT}


def service(bus: FakeBus, store: FakeStore) -> AudienceService:
    executor = Executor(bus, store, wait_s=5.0, background_wait_s=5.0, max_record_bytes=10**7)
    return AudienceService(executor, Views(), store, chunk_size=3)  # type: ignore[arg-type]


async def draft(bus: FakeBus) -> UUID:
    message = uuid.uuid4()
    command = CreateDraft(
        command_id=uuid.uuid4(), message_id=message, content=Content.model_validate(CONTENT)
    )
    await bus.publish(CommandRecord(command=command, actor=ACTOR, issued_at=datetime.now(UTC)))
    return message


async def lines(n: int) -> AsyncIterator[bytes]:
    yield b"contact_id,email\r\n"
    for i in range(n):
        yield f"c{i},p{i % 5}@example.org\r\n".encode()  # addresses repeat across chunks


async def test_two_chunks_are_in_flight_and_reach_the_topic_in_the_files_order() -> None:
    bus, store = CountingBus(), SlowFirstStore()
    message = await draft(bus)
    audiences = service(bus, store)
    bus.holding = True

    async def processor() -> None:
        # The slow processor: decides what is on the topic now and then, in its order.
        while True:
            await asyncio.sleep(0.02)
            bus.release()

    deciding = asyncio.create_task(processor())
    try:
        summary = await audiences.run_import(
            account=ACCOUNT,
            actor=ACTOR,
            message_id=message,
            import_id=uuid.uuid4(),
            kind="add",
            body=lines(12),
        )
    finally:
        deciding.cancel()
    assert summary.error is None
    chunks = [r.command for r in bus.published if isinstance(r.command, AddRecipients)]
    assert [[c.contact_id for c in chunk.contacts] for chunk in chunks] == [
        [f"c{i}" for i in range(n, n + 3)] for n in range(0, 12, 3)
    ]
    assert bus.most_waiting == 2  # two chunks on the topic at once, never more
    # The file's first row with an address is the one kept: the later ones are duplicates.
    duplicates = {
        cid
        for row in store.rows.values()
        for cid in ((row.response_body or {}).get("audience") or {}).get("duplicate_address", ())
    }
    assert duplicates == {f"c{i}" for i in range(5, 12)}


async def test_the_gateway_says_published_once_the_command_is_on_the_topic() -> None:
    bus, store = FakeBus(), FakeStore()
    executor = Executor(bus, store, wait_s=5.0, background_wait_s=5.0, max_record_bytes=10**7)
    message = await draft(bus)
    bus.holding = True
    published = asyncio.Event()
    command = AddRecipients(
        command_id=uuid.uuid4(),
        message_id=message,
        contacts=(Contact(contact_id="c1", email="c1@example.org"),),
    )
    request = CommandRequest(
        ACCOUNT, "k1", ACTOR, None, "POST", "/p", {}, command, published=published
    )

    answering = asyncio.create_task(executor.execute(request))
    await asyncio.wait_for(published.wait(), 5)
    assert not answering.done()  # published, not answered yet
    bus.release()
    assert (await answering).status_code == 200


async def test_the_gateway_says_published_for_a_command_never_published() -> None:
    bus, store = FakeBus(), FakeStore()
    executor = Executor(bus, store, wait_s=5.0, background_wait_s=5.0, max_record_bytes=10**7)
    bus.down = True
    published = asyncio.Event()
    command = AddRecipients(
        command_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        contacts=(Contact(contact_id="c1", email="c1@example.org"),),
    )
    request = CommandRequest(
        ACCOUNT, "k1", ACTOR, None, "POST", "/p", {}, command, published=published
    )
    with pytest.raises(ProblemError):
        await executor.execute(request)
    assert published.is_set()  # the next chunk waits on nothing
