"""Snapshots on the real stack (docs/scale.md): a dispatcher SIGKILLed in the middle of a send
is taken again from its newest snapshot and the records after it, and every contact is still
released exactly once; with its snapshots corrupted it folds the whole log instead, with the
same outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from bench.harness.processor import CONTENT, Stack, contacts, ids, record
from schemas import (
    AddRecipients,
    Contact,
    CreateDraft,
    DeliveryPlan,
    RecipientsReleased,
    ScheduleMessage,
)

AUDIENCE = 3_000


STACK_PARTITIONS = 1  # the `stack` fixture's: the whole message in one partition


def _env(state: Path) -> dict[str, str]:
    return {
        "DISPATCHER_STATE_DIR": str(state),
        "SNAPSHOT_INTERVAL_S": "0",
        "SNAPSHOT_MIN_EVENTS": "1",
        "DISPATCHER_INSTANCE_ID": "snapshots-test",
    }


async def _released(stack: Stack, message: UUID) -> list[str]:
    return [
        cid
        for event in await stack.events_of(message)
        if isinstance(event, RecipientsReleased)
        for cid in event.contact_ids
    ]


def _takes(log: Path) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") in ("partition taken", "snapshot not used")]


async def _start_sending(stack: Stack, state: Path) -> UUID:
    message = ids()
    await stack.decide(
        record(
            CreateDraft(
                command_id=ids(),
                message_id=message,
                content=CONTENT,
                # 500 a second and no in-flight window (no delivery worker here): ~6 s.
                plan=DeliveryPlan(release_rate=500, max_in_flight=None),
            )
        ),
        *[
            record(AddRecipients(command_id=ids(), message_id=message, contacts=chunk))
            for chunk in _chunks(contacts(AUDIENCE))
        ],
        record(ScheduleMessage(command_id=ids(), message_id=message, send_at=datetime.now(UTC))),
        within=120,
    )

    async def mid_send() -> bool:
        released = await _released(stack, message)
        return bool(_snapshots(state)) and 500 <= len(released) < AUDIENCE

    await stack.wait_for("a snapshot in the middle of the send", mid_send, within=120)
    return message


def _snapshots(state: Path) -> list[Path]:
    return list(state.glob("*/p0/snapshot-*.bin"))


def _chunks(people: tuple[Contact, ...], size: int = 1000) -> list[tuple[Contact, ...]]:
    return [people[i : i + size] for i in range(0, len(people), size)]


async def _finish(stack: Stack, message: UUID) -> list[str]:
    async def everyone() -> bool:
        return len(await _released(stack, message)) >= AUDIENCE

    await stack.wait_for("every contact released", everyone, within=180)
    return await _released(stack, message)


async def test_a_killed_dispatcher_resumes_from_its_snapshot_and_loses_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = stack.spawn(**_env(state))
    message = await _start_sending(stack, state)
    stack.kill(first)
    stack.spawn(**_env(state))
    released = await _finish(stack, message)
    # Exactly once: nobody lost, nobody released twice (a release is in its send's transaction).
    assert sorted(released) == sorted(c.contact_id for c in contacts(AUDIENCE))
    takes = _takes(tmp_path / "processor-1.log")
    taken = [t for t in takes if t["event"] == "partition taken"]
    assert taken and str(taken[0]["source"]).startswith("snapshot-"), takes


async def test_corrupt_snapshots_fall_back_to_the_full_fold(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = stack.spawn(**_env(state))
    message = await _start_sending(stack, state)
    stack.kill(first)
    for snapshot in _snapshots(state):
        data = bytearray(snapshot.read_bytes())
        data[-10] ^= 0xFF  # in the payload (the header's room is at the start)
        snapshot.write_bytes(bytes(data))
    stack.spawn(**_env(state))
    released = await _finish(stack, message)
    assert sorted(released) == sorted(c.contact_id for c in contacts(AUDIENCE))
    takes = _takes(tmp_path / "processor-1.log")
    refused = [t for t in takes if t["event"] == "snapshot not used"]
    taken = [t for t in takes if t["event"] == "partition taken"]
    assert refused and all("corrupt" in str(t["reason"]) for t in refused), takes
    assert taken and taken[0]["source"] == "log", takes
