"""Bad records on the topics the services read more than once (issue 18, item 5): the events and
command-results topics (the dispatcher folds them on every take of a partition, and a snapshot
ends past them) and the control topic (the delivery worker's fence reader reads it from the
beginning at every start).

Each bad record (undecodable bytes, a schema-invalid JSON, an unknown version, an oversized
record: faults/badinput.py `bad_values`) is written by the test as the admin into the partition
of a live message, as an operator with admin rights could (only the dispatcher's principal may
write the events and results topics). It must be set aside on `<prefix>.dead-letter` with its
error, once (identified by its source topic, partition and offset:
services/common/deadletters.py), however often it is read again, while the partition is owned
and its messages go on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import CONTENT, Stack, contacts, free_port, ids, record
from core import MessageStatus
from faults.badinput import KINDS, bad_values
from schemas import (
    AddRecipients,
    CancelMessage,
    Contact,
    CreateDraft,
    DeliveryPlan,
    ScheduleMessage,
)
from schemas.wire import DeadLetter
from services.common.reading import read_range
from services.dispatcher.decider import key_of, partition_of


@pytest.fixture
async def stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(kafka_bootstrap, tmp_path)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


async def healthy(port: int) -> dict[str, Any] | None:
    code, body = await asyncio.to_thread(health, port)
    return body if code == 200 else None


async def inject(stack: Stack, message: UUID, shorts: tuple[str, ...]) -> dict[Any, str]:
    """One bad record of each kind on each topic, in the message's partition; returns their
    sources (topic, partition, offset) and the marker each carries."""
    assert stack.producer is not None
    topics = {"events": stack.topics.events, "results": stack.topics.results}
    topics["control"] = stack.topics.control
    number = partition_of(key_of(message), stack.settings.kafka_partitions)
    tag = stack.settings.topic_prefix
    sources: dict[Any, str] = {}
    for short in shorts:
        for kind, value in bad_values(tag, message, short).items():
            sent = await stack.producer.send_and_wait(
                topics[short], value=value, key=key_of(message), partition=number
            )
            sources[(topics[short], number, sent.offset)] = f"{tag}-{short}-{kind}"
    assert len(sources) == len(shorts) * len(KINDS)
    return sources


async def letters_of(stack: Stack, sources: dict[Any, str]) -> Counter[Any]:
    """How many dead letters each source has, each checked to carry its record and error."""
    found: Counter[Any] = Counter()
    for letter in await stack.dead_letters():
        source = (letter.topic, letter.partition, letter.offset)
        if source in sources:
            check_letter(letter, sources[source])
            found[source] += 1
    return found


def check_letter(letter: DeadLetter, marker: str) -> None:
    assert marker in letter.value, (marker, letter.value[:200])
    assert letter.error and ":" in letter.error, letter.error
    assert letter.key is not None


async def set_aside(stack: Stack, sources: dict[Any, str]) -> Counter[Any]:
    """Wait (bounded) until every source has a dead letter; returns how many each has."""

    async def every() -> Counter[Any] | None:
        found = await letters_of(stack, sources)
        return found if set(found) == set(sources) else None

    found: Counter[Any] = await stack.wait_for("a dead letter of every bad record", every)
    return found


def lines(logs: Path, event: str) -> list[dict[str, Any]]:
    """The lines of the processors' logs that say ``event``, in the order of the processes."""
    return [
        json.loads(line)
        for path in sorted(logs.glob("processor-*.log"))
        for line in path.read_text().splitlines()
        if f'"{event}"' in line
    ]


def takes(logs: Path) -> list[dict[str, Any]]:
    """The "partition taken" lines of the processors' logs."""
    return lines(logs, "partition taken")


async def restart_and_add(
    stack: Stack, port: int, message: UUID, sequence: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """A dispatcher started again (with ``env``): the next add of ``message`` is decided against
    its folded state, accepted at ``sequence``. Returns the process."""
    process = stack.spawn(DISPATCHER_HEALTH_PORT=str(port), **env)
    [added] = await stack.decide(
        record(AddRecipients(command_id=ids(), message_id=message, contacts=contacts(sequence))),
        within=90,
    )
    assert added.outcome == "accepted" and added.sequence == sequence, added
    return process


async def test_bad_events_and_results_are_set_aside_once_at_each_take_and_the_partition_is_owned(
    stack: Stack,
) -> None:
    """Given a message's partition whose events and results topics hold a bad record of each
    kind, when the dispatcher takes it (a restart), then each is in the dead letters with its
    error, the take succeeds (/health 200 with the partition owned) and the message's commands
    are decided against its folded state; and a further restart neither stalls nor writes a
    second dead letter of any of them."""
    port = free_port()
    first = stack.spawn(DISPATCHER_HEALTH_PORT=str(port))
    m = ids()
    number = partition_of(key_of(m), stack.settings.kafka_partitions)
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=m, content=CONTENT)),
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2))),
    )
    sources = await inject(stack, m, ("events", "results"))
    first.terminate()
    assert first.wait(timeout=30) == 0

    for restart in range(2):
        process = stack.spawn(DISPATCHER_HEALTH_PORT=str(port))
        # Decided against the folded state: the draft and its 2 contacts, then 1 more a time.
        [added] = await stack.decide(
            record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(3 + restart))),
            within=90,
        )
        assert added.outcome == "accepted" and added.sequence == 3 + restart, added
        found = await set_aside(stack, sources)
        assert set(found.values()) == {1}, f"a second dead letter after take {restart}: {found}"

        async def owned() -> dict[str, Any] | None:
            code, body = health(port)
            return body if code == 200 and f"partition-{number}" in body["checks"] else None

        body = await stack.wait_for("/health 200 with the partition owned", owned)
        status = body["processor"]
        assert status["set_aside"] >= len(sources), status
        assert status["set_aside_written"] == (len(sources) if restart == 0 else 0), status
        process.terminate()
        assert process.wait(timeout=30) == 0


async def test_a_snapshot_does_not_hide_a_bad_record_written_while_the_partition_was_owned(
    stack: Stack, tmp_path: Path
) -> None:
    """Given a dispatcher with snapshots owning a message's partition, when bad events and
    results are written there meanwhile and the next batch writes a snapshot past them, then
    they are set aside before the snapshot (no take ever read them), a restart restoring that
    snapshot decides on, and neither it nor a restart folding the whole log writes them again."""
    port = free_port()
    snapshots = {"DISPATCHER_STATE_DIR": str(tmp_path / "state"), "SNAPSHOT_INTERVAL_S": "0"}
    first = stack.spawn(DISPATCHER_HEALTH_PORT=str(port), **snapshots)
    m = ids()
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=m, content=CONTENT)),
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2))),
    )
    sources = await inject(stack, m, ("events", "results"))
    # A batch that folds an event: the snapshot after it ends past the bad records.
    await stack.decide(record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(3))))
    found = await set_aside(stack, sources)
    assert set(found.values()) == {1}, found
    first.terminate()
    assert first.wait(timeout=30) == 0

    sequence = 3
    for env in (snapshots, {}):  # restored from the snapshot, then folded from the log
        sequence += 1
        process = await restart_and_add(stack, port, m, sequence, env)
        body = await stack.wait_for("/health 200", lambda: healthy(port))
        assert body["processor"]["set_aside_written"] == 0, body["processor"]
        process.terminate()
        assert process.wait(timeout=30) == 0
    taken = await asyncio.to_thread(takes, tmp_path)
    assert any(t["source"] != "log" for t in taken), "no take restored a snapshot"
    assert set((await letters_of(stack, sources)).values()) == {1}


async def test_an_event_out_of_its_messages_sequence_is_set_aside_and_the_partition_taken(
    stack: Stack, tmp_path: Path
) -> None:
    """Given a message's partition whose events topic holds, after the message's own events, a
    well-formed event that does not follow its history (a copy of its DraftCreated, sequence 1,
    written by someone else while no dispatcher owned the partition), when a dispatcher with a
    snapshot from before it takes the partition, then the snapshot is not used (its tail does not
    follow it), the fold of the whole log sets the event aside on the dead letters with the
    sequence error, the take succeeds and the message decides on at its own sequence; a restart
    folding the whole log again writes no second dead letter."""
    port = free_port()
    snapshots = {"DISPATCHER_STATE_DIR": str(tmp_path / "state"), "SNAPSHOT_INTERVAL_S": "0"}
    first = stack.spawn(DISPATCHER_HEALTH_PORT=str(port), **snapshots)
    m = ids()
    number = partition_of(key_of(m), stack.settings.kafka_partitions)
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=m, content=CONTENT)),
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2))),
    )
    # A batch that folds an event after the draft's: the snapshot after it is the one refused.
    await stack.decide(record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(3))))

    async def snapshot() -> list[Path] | None:
        return list((tmp_path / "state").rglob("snapshot-*.bin")) or None

    await stack.wait_for("a snapshot of the partition", snapshot)
    first.terminate()
    assert first.wait(timeout=30) == 0
    created = [
        r
        async for r in read_range(stack.settings, stack.topics.events, number)
        if (e := stack.event_or_none(r.value)) is not None and e.message_id == m and e.sequence == 1
    ]
    assert len(created) == 1, created
    assert stack.producer is not None
    forged = await stack.producer.send_and_wait(
        stack.topics.events, value=created[0].value, key=key_of(m), partition=number
    )
    source = (stack.topics.events, number, forged.offset)

    sequence = 3
    for env in (snapshots, {}):  # a snapshot before it (not used), then the whole log again
        sequence += 1
        process = await restart_and_add(stack, port, m, sequence, env)
        letters = [
            letter
            for letter in await stack.dead_letters()
            if (letter.topic, letter.partition, letter.offset) == source
        ]
        assert len(letters) == 1, letters
        assert "EventOutOfOrderError" in (letters[0].error or ""), letters[0].error
        body = await stack.wait_for("/health 200", lambda: healthy(port))
        assert body["processor"]["set_aside_written"] == (1 if env else 0), body["processor"]
        process.terminate()
        assert process.wait(timeout=30) == 0
    taken = [t for t in await asyncio.to_thread(takes, tmp_path) if t["partition"] == number]
    assert [t["source"] for t in taken] == ["log"] * 3, taken
    assert [t["set_aside"] for t in taken] == [0, 1, 1], taken
    refused = await asyncio.to_thread(lines, tmp_path, "snapshot not used")
    assert any(r["partition"] == number and "sequence" in r["reason"] for r in refused), refused


@pytest.fixture
def dstack(delivery_stack: DeliveryStack) -> DeliveryStack:
    return delivery_stack


async def test_a_bad_control_record_is_dead_lettered_once_and_the_fence_reads_on(
    dstack: DeliveryStack,
) -> None:
    """Given bad records of each kind on the control partition of a live message, then the
    delivery worker's fence reader sets each aside with its error, the message is mailed to
    every contact once, a cancel of another message of the partition still reaches the fence;
    and a restarted worker (which reads the control topic from the beginning) writes no second
    dead letter of them."""
    stack = dstack
    port = free_port()
    stack.spawn_dispatcher()
    worker = stack.spawn_delivery(DELIVERY_HEALTH_PORT=str(port))
    m = ids()
    sources = await inject(stack, m, ("control",))
    audience = tuple(Contact(contact_id=f"f{i}", email=f"f{i}@example.org") for i in range(20))
    await stack.send_now(m, audience, DeliveryPlan(max_in_flight=None))
    found = await set_aside(stack, sources)
    assert set(found.values()) == {1}, found

    # Another message of the same partition, scheduled later and canceled: its fence is read.
    number = partition_of(key_of(m), stack.settings.kafka_partitions)
    other = ids()
    while partition_of(key_of(other), stack.settings.kafka_partitions) != number:
        other = ids()
    later = datetime.now(UTC) + timedelta(hours=1)
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=other, content=stack.content)),
        record(AddRecipients(command_id=ids(), message_id=other, contacts=contacts(1))),
        record(ScheduleMessage(command_id=ids(), message_id=other, send_at=later)),
        record(CancelMessage(command_id=ids(), message_id=other)),
    )

    async def fenced() -> dict[str, Any] | None:
        code, body = health(port)
        delivery = body.get("delivery", {})
        return body if code == 200 and delivery.get("fences", 0) >= 1 else None

    body = await stack.wait_for("the cancel's fence read after the bad records", fenced)
    assert body["delivery"]["fences_set_aside_written"] == len(sources), body["delivery"]
    await stack.wait_status(m, MessageStatus.SENT, within=120)
    mails = await stack.sink()
    per_contact = Counter(rcpt.split("@")[0] for _, rcpt in mails)
    assert per_contact == Counter({c.contact_id: 1 for c in audience})

    worker.terminate()
    assert worker.wait(timeout=30) == 0
    stack.spawn_delivery(DELIVERY_HEALTH_PORT=str(port))

    async def read_again() -> dict[str, Any] | None:
        code, body = health(port)
        delivery = body.get("delivery", {})
        ready = code == 200 and delivery.get("fences_ready")
        return body if ready and delivery.get("fences_set_aside", 0) >= len(sources) else None

    body = await stack.wait_for("the restarted fence reader past the bad records", read_again)
    assert body["delivery"]["fences_set_aside_written"] == 0, body["delivery"]
    assert set((await letters_of(stack, sources)).values()) == {1}
