"""Projection catch-up benchmark on the real Kafka and Postgres (figures in docs/projections.md).

    .venv/bin/python -m bench.bench_projections [--recipients 1000000] [--runs 3] [--full]

Builds one message of N recipients with the core (tests/histories.py: added in
chunks of 10,000, sent now, released at 10,000 per second of simulated clock, every recipient's
outcome recorded: 1 in 100 failed, the rest delivered) and produces its events to a fresh
`<prefix>.events` topic: first the audience (create, adds, schedule), then the send events
(start, N releases, N outcomes, sent).

* **send catch-up**: the audience is projected first and its rows vacuumed (not timed); then
  the projection catches up the send events (every recipient released and given its outcome)
  from Kafka into Postgres, with the worker's code path (read_committed reads, the pure view
  function, batches written with their offsets in one transaction each): timed from the first
  read to the last commit.
* **full catch-up** (with `--full`; not part of `make bench`): the in-process `ViewsWorker`
  (consumer group) brings empty views up to date with the whole history, audience included:
  timed until its stored offsets reach the topic's end.
* **baseline**: a plain asyncpg `copy_records_to_table` of the same N recipient rows (the final
  rows, read back from the view) into an empty table of the same definition.

The history is built and produced once; each of the `--runs` runs (make bench: 3, autovacuum
left on) projects it into a fresh schema, times the send catch-up and one COPY.

The issue's bar: the send catch-up runs at no less than a third of the baseline's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from typing import Any

import asyncpg

from bench.harness.histories import sends_history
from bench.harness.projections import end_offsets, produce, with_schema
from bench.progress import say
from schemas import Event, SendingStarted
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics
from services.projections.audit import rebuild
from services.projections.consumer import LIVE, Partition, ViewsWorker
from services.projections.store import create_schema, quote_ident
from services.projections.views import RECIPIENT_COLUMNS


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


async def _vacuum(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(with_schema(dsn, schema))
    try:
        await conn.execute("VACUUM (ANALYZE) view_recipients")
    finally:
        await conn.close()


async def _stored(dsn: str, topic: str) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM projection_offsets WHERE consumer = $1"
            " AND topic = $2",
            LIVE,
            topic,
        )
        return {int(r["partition"]): int(r["next_offset"]) for r in rows}
    finally:
        await conn.close()


async def _baseline(dsn: str, schema: str, runs: int = 3) -> tuple[int, list[float]]:
    """COPY the view's final recipient rows into a fresh table of the same definition, `runs`
    times (the machine is shared: the fastest run is the strictest bar)."""
    conn = await asyncpg.connect(with_schema(dsn, schema))
    try:
        rows = [tuple(r) for r in await conn.fetch("SELECT * FROM view_recipients")]
        # Same storage parameters as the view (fillfactor), which LIKE does not copy.
        options = await conn.fetchval(
            "SELECT array_to_string(reloptions, ', ') FROM pg_class"
            " WHERE oid = 'view_recipients'::regclass"
        )
        times = []
        for run in range(runs):
            await conn.execute(
                f"CREATE TABLE copy_baseline_{run} (LIKE view_recipients INCLUDING ALL)"
                + (f" WITH ({options})" if options else "")
            )
            started = time.perf_counter()
            await conn.copy_records_to_table(
                f"copy_baseline_{run}", records=rows, columns=RECIPIENT_COLUMNS
            )
            times.append(time.perf_counter() - started)
            await conn.execute(f"DROP TABLE copy_baseline_{run}")
        return len(rows), times
    finally:
        await conn.close()


async def run(recipients: int, full: bool, runs: int = 3) -> dict[str, Any]:
    """Build and produce the history once; then `runs` times: a fresh schema, the audience
    projected and vacuumed (not timed), the send catch-up timed, and one COPY of the same rows
    (autovacuum left on throughout). Returns every run's figures."""
    name = f"projections {recipients:,}"
    base = Settings()
    settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}"})
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings)

    say(name, "building the history with the core and producing it")
    started = time.perf_counter()
    audience: list[Event] = []
    sends: list[Event] = []
    for event in sends_history(1, recipients, rate=10_000, fail_every=100):
        (sends if sends or isinstance(event, SendingStarted) else audience).append(event)
    built = time.perf_counter() - started
    started = time.perf_counter()
    await produce(settings, audience)
    audience_end = await end_offsets(settings)
    await produce(settings, sends)
    produced = time.perf_counter() - started
    say(
        name,
        f"history: {len(audience)} audience events and {len(sends)} send events; built in "
        f"{built:.1f}s, produced in {produced:.1f}s",
    )
    audience.clear()
    sends.clear()

    measured: list[dict[str, Any]] = []
    for run_no in range(runs):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        await create_schema(settings.database_url, schema)
        try:
            parts: dict[int, Partition] = {}
            say(name, f"run {run_no + 1}/{runs}: projecting the audience (not timed)")
            await rebuild(settings, schema, audience_end, partitions=parts)
            # The audience's new rows trigger autovacuum (and the first reads set the rows' hint
            # bits): part of the audience's cost, done here rather than during the timed send
            # catch-up (in use, a send starts long after its audience was added).
            await _vacuum(settings.database_url, schema)
            say(name, f"run {run_no + 1}/{runs}: send catch-up")
            started = time.perf_counter()
            await rebuild(settings, schema, partitions=parts)
            send_s = time.perf_counter() - started
            parts.clear()
            say(name, f"run {run_no + 1}/{runs}: baseline COPY")
            rows, copy_times = await _baseline(settings.database_url, schema, runs=1)
        finally:
            await _drop(settings.database_url, schema)
        one = {
            "send_s": round(send_s, 3),
            "value": round(recipients / send_s, 1),
            "copy_s": round(copy_times[0], 3),
            "ceiling": round(rows / copy_times[0], 1),
            "ratio": round(copy_times[0] / send_s, 3),
        }
        say(name, f"run {run_no + 1}/{runs}: {one}")
        measured.append(one)
    if full:
        measured.append({"full_catch_up_s": await _full(settings, topics, recipients)})
    return {"recipients": recipients, "runs": measured}


async def _full(settings: Settings, topics: Topics, recipients: int) -> float:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    await create_schema(settings.database_url, schema)
    dsn = with_schema(settings.database_url, schema)
    worker = ViewsWorker(
        settings.model_copy(update={"database_url": dsn}),
        topics,
        max_batch_rows=settings.projections_max_batch_rows,
    )
    stop = asyncio.Event()
    ends = await end_offsets(settings)
    started = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    try:
        while True:
            stored = await _stored(dsn, topics.events)
            if all(stored.get(p, 0) >= end for p, end in ends.items()):
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.2)
        full_s = time.perf_counter() - started
        say("projections", f"full catch-up by the worker: {full_s:.1f}s")
        return round(full_s, 3)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await _drop(settings.database_url, schema)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_projections")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also the worker's full catch-up")
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.recipients, args.full, args.runs)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
