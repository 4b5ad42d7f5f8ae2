"""No record stops the views or is skipped (issue 10), against the real Kafka and Postgres: events
written directly to a one-partition events topic, two poisoned ones (content with NULs, a batch
number past Postgres' integer range) between good events of two accounts; `python -m
services.projections` keeps every other view current, stores the NUL content with U+FFFD (the
history keeps the original), dead-letters the release it cannot store; a revoked privilege makes
it retry with /health red and the reason; after a SIGKILL and a restart every event is in the
views or the dead letters; a rebuild reproduces both exactly (compare, also through the CLI) and
the CLI's export shows the poisoned record instead of crashing."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx

from bench.harness.histories import Simulator
from bench.harness.processor import Stack, free_port
from bench.harness.projections import (
    compare_with_rebuild,
    produce,
    projections_cli,
    spawn_projections,
    stored_offsets,
    wait_caught_up,
    with_schema,
)
from schemas import Event
from tests.projections.poison import OTHER, poisoned_history

# One partition (the `stack` fixture): every account's messages share it, as the poisoned
# record's neighbours.
STACK_PARTITIONS = 1


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def every_event_applied(dsn: str, events: list[Event]) -> None:
    """Each offset of the topic is in the history view or a dead letter, never both, never
    neither (the offsets are the events' positions: produced in order, no transactions)."""
    history = {
        (r["message_id"], r["sequence"])
        for r in await fetch(dsn, "SELECT message_id, sequence FROM view_history")
    }
    dead = {r["offset"] for r in await fetch(dsn, 'SELECT "offset" FROM projection_dead_letters')}
    for offset, event in enumerate(events):
        written = (event.message_id, event.sequence) in history
        assert written != (offset in dead), (offset, event.type, written)


async def health(port: int) -> tuple[int, dict[str, Any], str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        answer = await client.get("/health")
        metrics = (await client.get("/metrics")).text
    return answer.status_code, answer.json(), metrics


async def metrics_show(stack: Stack, port: int, *lines: str) -> None:
    """Wait until /metrics has each of these lines (bounded)."""

    async def check() -> bool:
        text = (await health(port))[2]
        return all(line in text.splitlines() for line in lines)

    await stack.wait_for(f"/metrics to show {lines}", check, within=30)


async def test_poisoned_records_neither_stop_nor_skip_the_views_and_rebuild_identically(
    stack: Stack, schema: str, database_url: str
) -> None:
    dsn = with_schema(database_url, schema)
    sim = Simulator()
    events, ids, at = poisoned_history(sim)
    await produce(stack.settings, list(events))
    port = free_port()
    first = spawn_projections(stack, dsn, port)
    await wait_caught_up(stack, dsn)

    # The other views are current: every good message of both accounts, before and after.
    messages = {r["message_id"]: r for r in await fetch(dsn, "SELECT * FROM view_messages")}
    for name in ("a1", "b2", "a2"):
        assert ids[name] in messages, name
    assert messages[ids["b2"]]["account_id"] == OTHER.account_id
    # The NUL content is stored with U+FFFD; the history keeps the original, escaped.
    nul = messages[ids["nul"]]
    assert (nul["name"], nul["subject"]) == ("Nul\ufffdname", "Hi\ufffdthere")
    [detail] = [
        json.loads(r["detail"])
        for r in await fetch(
            dsn, "SELECT detail FROM view_history WHERE message_id = $1", ids["nul"]
        )
    ]
    assert json.loads(detail["unstorable"]["content.subject"]) == "Hi\x00there"
    # The release past int32 is a dead letter with its reason; its message's later events too.
    dead = {
        r["offset"]: r["error"]
        for r in await fetch(dsn, 'SELECT "offset", error FROM projection_dead_letters')
    }
    assert "int32" in dead[at["big"]] and dead[at["big"]].startswith("unstorable:")
    await every_event_applied(dsn, events)
    status, report, metrics = await health(port)
    assert status == 200, report
    # The figures follow the commit within a turn of the worker's loop (the write commits in
    # the background; the views show it first): poll for them. Both count the two dead letters
    # here: the ones this process wrote, and the ones stored for its partition.
    await metrics_show(
        stack,
        port,
        f"mailctl_projection_dead_letters_total {len(dead)}",
        f'mailctl_projection_dead_letters{{partition="0"}} {len(dead)}',
    )

    # A transient failure of Postgres (INSERT on the history revoked): the worker retries,
    # /health turns red with the reason; nothing is dead-lettered or skipped meanwhile.
    await execute(dsn, f'REVOKE INSERT ON "{schema}".view_history FROM CURRENT_USER')
    during = [sim.create(), sim.create(actor=OTHER)]
    events += sim.events[len(events) :]
    await produce(stack.settings, events[-2:])

    async def red() -> tuple[dict[str, Any], str] | None:
        status, report, metrics = await health(port)
        return (report, metrics) if status == 503 else None

    report, metrics = await stack.wait_for("/health red while retrying", red)
    error = report["checks"]["partition-0"]["error"]
    assert "retrying" in error and "permission denied" in error, error
    assert 'mailctl_projection_retrying{partition="0"} 1' in metrics
    assert "mailctl_projection_retries_total 0" not in metrics
    assert sum((await stored_offsets(dsn, stack.settings)).values()) == len(events) - 2
    await execute(dsn, f'GRANT INSERT ON "{schema}".view_history TO CURRENT_USER')
    await wait_caught_up(stack, dsn)

    async def green() -> bool:
        return (await health(port))[0] == 200

    await stack.wait_for("/health green again", green)

    # A restart (SIGKILL) keeps every event: it reads on from the stored offset, folding the
    # partition without the dead letters, as the batches that wrote them did.
    stack.kill(first)
    after = [sim.create(), sim.create(actor=OTHER)]
    events += sim.events[len(events) :]
    await produce(stack.settings, events[-2:])
    port = free_port()
    spawn_projections(stack, dsn, port)
    await wait_caught_up(stack, dsn)
    present = {r["message_id"] for r in await fetch(dsn, "SELECT message_id FROM view_messages")}
    assert {*during, *after} <= present
    await every_event_applied(dsn, events)
    # After the restart the stored dead letters are still shown (a gauge read from Postgres when
    # the partition is taken); the new process itself wrote none.
    await metrics_show(
        stack,
        port,
        f'mailctl_projection_dead_letters{{partition="0"}} {len(dead)}',
        "mailctl_projection_dead_letters_total 0",
    )

    # A rebuild writes the same sanitized rows and the same dead letters.
    result = await compare_with_rebuild(stack.settings, database_url, schema)
    assert result.equal, result.as_json()
    assert [d["offset"] for d in result.dead_letters] == sorted(dead)
    assert [s["message_id"] for s in result.sanitized] == [str(ids["nul"])]

    # The CLI: compare says equal and lists them; export shows the NUL content escaped.
    compared = await projections_cli(stack, database_url, "compare", "--live-schema", schema)
    assert compared.returncode == 0, compared.stderr.decode()[-2000:]
    output = json.loads(compared.stdout)
    assert output["equal"] is True
    assert {d["offset"] for d in output["dead_letters"]} == set(dead)
    exported = await projections_cli(stack, database_url, "export", str(ids["nul"]))
    assert exported.returncode == 0, exported.stderr.decode()[-2000:]
    [line] = exported.stdout.decode().splitlines()
    assert "\\u0000" in line
    assert json.loads(line)["content"]["subject"] == "Hi\x00there"
    for raw in (True, False):
        flags = ["--raw"] if raw else []
        big = await projections_cli(stack, database_url, "export", str(ids["big"]), *flags)
        assert big.returncode == 0, big.stderr.decode()[-2000:]
        assert str(2**31) in big.stdout.decode()
