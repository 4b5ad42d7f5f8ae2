"""A stop signal reaches the projections worker while it is taking a partition (the fault matrix's
sigterm-projections row at 100,000 recipients: the SIGTERM came while the worker folded its
partitions' histories, 78 s of takes inside the rebalance callback, and the row gave up after
60 s). The take here is held up for as long as the test likes: the table of the stored offsets is
locked by the test, so the take's first query waits in Postgres; SIGTERM must end the process
cleanly all the same, while the lock is still held (without the change it waits for the lock)."""

from __future__ import annotations

import asyncpg

from bench.harness.histories import Simulator
from bench.harness.processor import Stack, free_port
from bench.harness.projections import (
    produce,
    spawn_projections,
    wait_caught_up,
    with_schema,
)
from tests.projections.poison import poisoned_history

STACK_PARTITIONS = 1


async def test_sigterm_during_a_take_ends_the_worker_without_waiting_for_the_take(
    stack: Stack, schema: str, database_url: str
) -> None:
    dsn = with_schema(database_url, schema)
    events, _, _ = poisoned_history(Simulator())
    await produce(stack.settings, list(events))
    # A first run creates the tables and writes the views.
    first = spawn_projections(stack, dsn, free_port())
    await wait_caught_up(stack, dsn)
    first.terminate()
    assert first.wait(timeout=60) == 0

    lock = await asyncpg.connect(dsn)
    try:
        transaction = lock.transaction()
        await transaction.start()
        await lock.execute("LOCK TABLE projection_offsets IN ACCESS EXCLUSIVE MODE")
        second = spawn_projections(stack, dsn, free_port())

        async def take_waiting() -> bool:
            waiting = await lock.fetchval(
                "SELECT count(*) FROM pg_locks WHERE NOT granted"
                " AND relation = 'projection_offsets'::regclass"
            )
            return bool(waiting)

        await stack.wait_for("the take waiting for the locked table", take_waiting, within=90)
        second.terminate()
        # Ends while the take still cannot go on (the lock is released only below).
        assert second.wait(timeout=60) == 0
        log = stack.log_of(second).read_text()
        assert '"stopped"' in log and '"partition taken"' not in log, log[-2000:]
        await transaction.rollback()
    finally:
        await lock.close()
