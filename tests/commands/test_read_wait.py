"""The read API's waiting reads (`min_sequence`) are polled together: one views query per poll
for every waiting read of the process, not one per read (services/commands/read_api.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

from services.commands.read_api import SequenceWatch


class CountingViews:
    """Only what the watch uses: the last sequence of each message, and how often it is asked."""

    def __init__(self) -> None:
        self.sequences: dict[tuple[str, UUID], int] = {}
        self.batches: list[int] = []
        self.single = 0

    async def sequences_of(self, keys: list[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
        self.batches.append(len(keys))
        return {k: self.sequences[k] for k in keys if k in self.sequences}

    async def sequence_of(self, account: str, message_id: UUID) -> int | None:
        self.single += 1
        return self.sequences.get((account, message_id))

    def __getattr__(self, name: str) -> Any:  # the rest of ViewReader is not used here
        raise AttributeError(name)


async def test_many_waiting_reads_share_one_query_per_poll() -> None:
    views = CountingViews()
    watch = SequenceWatch(views, poll_s=0.01)  # type: ignore[arg-type]
    keys = [("acct", uuid4()) for _ in range(200)]
    waits = [asyncio.create_task(watch.reached(key, 2, 30)) for key in keys]
    await asyncio.sleep(0.05)  # a few polls with nothing projected yet
    for key in keys:
        views.sequences[key] = 2

    answers = await asyncio.gather(*waits)

    assert answers == [(True, 2)] * 200
    # Each poll asked for every waiting read at once: far fewer queries than reads, and none
    # of the reads asked on its own.
    assert len(views.batches) < 50 and max(views.batches) == 200
    assert views.single == 0


async def test_a_read_waits_only_for_its_own_sequence() -> None:
    views = CountingViews()
    watch = SequenceWatch(views, poll_s=0.01)  # type: ignore[arg-type]
    key = ("acct", uuid4())
    views.sequences[key] = 3
    later = asyncio.create_task(watch.reached(key, 5, 30))

    now = await watch.reached(key, 3, 30)
    await asyncio.sleep(0.05)
    assert now == (True, 3) and not later.done()
    views.sequences[key] = 5
    assert await later == (True, 5)


async def test_a_read_that_times_out_reports_where_the_view_is() -> None:
    views = CountingViews()
    watch = SequenceWatch(views, poll_s=0.01)  # type: ignore[arg-type]
    behind, unknown = ("acct", uuid4()), ("acct", uuid4())
    views.sequences[behind] = 1

    assert await watch.reached(behind, 4, 0.05) == (False, 1)
    assert await watch.reached(unknown, 1, 0.05) == (False, None)
    assert watch._waiting == {}  # nothing left behind
