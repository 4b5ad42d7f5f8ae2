"""The scale case (issue 15 item 5): one message of N recipients end to end on the real stack.

`make bench-scale` runs it at 10,000,000 recipients (not in CI; it needs several GB of RAM and
most of an hour on this machine); `tests/integration/test_scale.py` runs the same path at
100,000 as a correctness check. On topics of its own, with one partition (the whole message in
one dispatcher partition), the real dispatcher (`python -m services.dispatcher`, its clock off,
snapshots as the service's defaults have them) and the real broker:

1. **intake**: the audience is published to the commands topic as AddRecipients commands of
   10,000 contacts (built beforehand, not timed) and timed from the first publish to the last
   command's result committed: contacts/s into committed events (beside it, "intake_floor":
   the ceiling one core allows at the raw libraries' cost a contact, bench/intake_floor.py);
2. **release**: the message is scheduled (release_rate: see below; no in-flight window: no delivery
   worker runs here) and every tick is written at once, one simulated second apart, so the figure
   is the dispatcher's speed: send records committed per second;
3. **restart**: once half of the send records are committed the dispatcher is SIGKILLed and
   started again (same static-membership id): time from the SIGKILL to the next release
   committed (read_committed: the release events and their send records are one transaction);
   the restart loads the newest snapshot and folds the records after it;
4. **memory**: the dispatcher's resident set, sampled every 0.5 s over the whole run (both
   processes): the peak divided by N;
5. **exactly once**: every contact is released exactly once (the release events, read back), and
   the send records committed are N (with `verify`, each contact's send record is read back);
6. **projections catch-up**: the dispatcher is stopped (its work done, every event committed)
   and the real projections worker (`python -m services.projections`) starts on a Postgres
   schema of its own: time from its start until its stored offsets reach the events topic's end
   (the offsets are stored in the transaction that writes the views, so the views then hold
   every event); rows/s = N / that time. Then `view_recipients` of the message is counted by
   state: N rows, every one `released` (the run's final state: no delivery worker runs). Its
   peak RSS, sampled every 0.5 s;
7. **recipients page latency**: the read API (`python -m services.commands`) serves
   `GET /v1/messages/{id}/recipients` (100 a page) on that view: `pages` pages (default 200)
   after a keyset cursor at a random position (`after=s<i>`, i uniform in the audience, seeded),
   each timed from sent to its whole answer read (bench_paging's `timed_get`): p50, p99, against
   the target of 50 ms;
8. **delivery scale-out** (`--delivery-slice S`, default 200,000; 0 skips it): one delivery worker
   against two on a slice of S sends (bench/bench_scaleout.py, on stacks of its own).

The release rate of the plan is 10,000/s, or N/20 below 200,000 recipients: the release spans at
least 20 ticks, so the SIGKILL at half lands mid-send.

Usage: ``python -m bench.bench_scale [--recipients N] [--pages P] [--delivery-slice S]``
(make bench-scale); the figures go to ``bench/results/scale-latest.json`` (its "scale" and
"scaleout" sections, and a dated copy; `--out DIR` for another directory) and are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import bench_scaleout, intake_floor, results
from bench.bench_commands import percentile
from bench.bench_dispatch import Ends, rss_mb
from bench.bench_paging import TARGET_MS, timed_get
from bench.harness.kafka import committed, kafka_options
from bench.harness.processor import (
    CONTENT,
    OPERATOR,
    Stack,
    generated,
    ids,
    record,
    taken,
    unchecked_add,
)
from bench.harness.projections import (
    drop_schema,
    new_schema,
    spawn_projections,
    wait_caught_up,
    with_schema,
)
from bench.harness.servers import Servers, servers
from bench.harness.spawn import api_key
from bench.progress import say
from schemas import (
    CreateDraft,
    DeliveryPlan,
    RecipientsReleased,
    ScheduleMessage,
    Tick,
    decode_event,
)
from services.common.reading import read_range
from services.common.settings import Settings

CHUNK = 10_000
RATE = 10_000
PAGES = 200
SLICE = 200_000  # sends of the delivery scale-out phase (issue 15 item 4)
ROOT = Path(__file__).resolve().parent.parent


def _adds(message: uuid.UUID, n: int) -> Iterator[tuple[uuid.UUID, bytes]]:
    at = datetime.now(UTC)
    for start in range(0, n, CHUNK):
        command = unchecked_add(message, generated(start, min(n, start + CHUNK)))
        yield command.command_id, record(command, at=at).model_dump_json().encode()


class Sampler:
    """The peak resident set of the dispatcher processes, sampled every 0.5 s."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for pid in self.pids:
                self.peak_mb = max(self.peak_mb, rss_mb(pid) or 0.0)
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _last_result(stack: Stack, command_id: uuid.UUID, within: float) -> None:
    """Wait for `command_id`'s result on the results topic, reading only the headers."""
    wanted = str(command_id).encode()
    consumer = AIOKafkaConsumer(
        **kafka_options(stack.bootstrap),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tp = TopicPartition(stack.topics.results, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for found in batches.get(tp, []):
                if dict(found.headers or ()).get("command_id") == wanted:
                    return
        raise AssertionError(f"no result of {command_id} within {within}s")
    finally:
        await consumer.stop()


async def _released(stack: Stack, message: uuid.UUID, verify: bool) -> tuple[int, int]:
    """(contacts released in total, distinct contacts released) from the release events."""
    total = 0
    seen: set[str] = set()
    async for found in committed(stack.bootstrap, stack.topics.events, [0]):
        if dict(found.headers or ()).get("type") != b"RecipientsReleased":
            continue
        event = decode_event(found.value)
        assert isinstance(event, RecipientsReleased) and event.message_id == message
        total += len(event.contact_ids)
        if verify:
            seen.update(event.contact_ids)
    return total, len(seen) if verify else total


class ReleaseCount:
    """Contacts released so far, counted as the release events are committed: each read goes on
    from the offset the last one reached (the services' `read_range`), instead of re-reading the
    whole events topic every 0.5 s, which at 10,000,000 recipients took longer than the release
    and competed with the dispatcher."""

    def __init__(self, stack: Stack) -> None:
        self.total = 0
        self._settings = Settings(kafka_bootstrap_servers=stack.bootstrap)
        self._topic = stack.topics.events
        self._next = 0

    async def read(self) -> int:
        """Everything committed since the last call, then the total."""
        async for item in read_range(self._settings, self._topic, 0, start=self._next):
            self._next = item.offset + 1
            if dict(item.headers or ()).get("type") == b"RecipientsReleased":
                self.total += len(orjson.loads(item.value)["contact_ids"])
        return self.total


async def _send_records(stack: Stack) -> tuple[int, int]:
    """(send records committed, distinct contacts among them) on the sends topic."""
    count = 0
    seen: set[str] = set()
    async for found in committed(stack.bootstrap, stack.topics.sends, [0]):
        if dict(found.headers or ()).get("type") == b"Send":
            count += 1
            seen.add(json.loads(found.value)["contact"]["contact_id"])
    return count, len(seen)


async def run(
    n: int,
    tmp: Path,
    server: Servers,
    *,
    verify: bool = False,
    snapshot_interval_s: float | None = None,
    pages: int = PAGES,
) -> dict[str, Any]:
    """Every figure of the scale case at `n` recipients but the delivery scale-out (phases 1-7
    of the module's docstring). ``snapshot_interval_s``: None, the service's default (the
    benchmark's figures count only with it); the test sets a shorter one, so a restart of its
    small message still comes from a snapshot."""
    name = f"scale {n:,}"
    started_at = datetime.now(UTC)
    bootstrap = server.bootstrap
    rate = min(RATE, max(1, n // 20))
    stack = Stack(bootstrap, tmp, partitions=1)
    await stack.start()
    sampler = Sampler()
    ends = Ends(bootstrap)
    await ends.__aenter__()
    env = {
        "CLOCK_ENABLED": "false",
        "DISPATCHER_INSTANCE_ID": f"{stack.settings.topic_prefix}-scale",
        "DISPATCHER_STATE_DIR": str(tmp / "state"),
    }
    if snapshot_interval_s is not None:
        env["SNAPSHOT_INTERVAL_S"] = str(snapshot_interval_s)
    try:
        dispatcher = stack.spawn("dispatcher", **env)
        sampler.pids.append(dispatcher.pid)
        sampler.start()
        message = ids()
        issued = datetime.now(UTC)
        await stack.decide(
            record(
                CreateDraft(
                    command_id=ids(),
                    message_id=message,
                    content=CONTENT,
                    plan=DeliveryPlan(release_rate=rate, max_in_flight=None),
                ),
                at=issued,
            ),
            within=300,
        )
        say(name, "building the audience's commands")
        adds = list(_adds(message, n))
        assert stack.producer is not None
        say(name, f"intake: {len(adds)} commands through the commands topic")
        started = time.perf_counter()
        key = str(message).encode()
        for _, value in adds:
            await stack.producer.send(stack.topics.commands, value=value, key=key)
        await stack.producer.flush()
        last = adds[-1][0]
        del adds
        await _last_result(stack, last, within=max(600, n / 1000))
        intake_s = time.perf_counter() - started
        say(name, f"intake: {n / intake_s:,.0f} contacts/s")

        at = issued.replace(microsecond=0) + timedelta(hours=1)
        await stack.decide(
            record(ScheduleMessage(command_id=ids(), message_id=message, send_at=at), at=issued),
            within=300,
        )
        base = await ends.of(stack.topics.sends, 0)
        # The committed releases are counted as they come (read_committed), caught up with the
        # intake's history before the clock starts, and followed during the release, so that
        # the count after the SIGKILL reads only the last few events.
        count = ReleaseCount(stack)
        await count.read()
        following = True

        async def follow() -> None:
            while following:
                await count.read()
                await asyncio.sleep(0.1)

        follower = asyncio.create_task(follow())
        say(name, "releasing (the ticks written ahead, in two parts)")
        started = time.perf_counter()
        # The ticks up to a little past half the audience first, the rest once the new process
        # is spawned: however fast the dispatcher, the SIGKILL lands before the last release
        # (a small run on a fast machine released everything before the bench saw half).
        ticks = n // rate + 2
        first_part = min(ticks, n // rate // 2 + 2)

        async def write_ticks(ks: range) -> None:
            assert stack.producer is not None
            for k in ks:
                tick = Tick(tick_id=uuid.uuid4(), at=at + timedelta(seconds=k))
                await stack.producer.send(
                    stack.topics.commands, value=tick.model_dump_json().encode(), partition=0
                )
            await stack.producer.flush()

        await write_ticks(range(first_part))

        async def half() -> bool:
            return await ends.of(stack.topics.sends, 0) - base >= n // 2

        await stack.wait_for("half of the send records", half, max(600, n / 500), every=0.2)
        half_s = time.perf_counter() - started
        say(name, "restart: SIGKILL of the dispatcher in the middle of the send")
        stack.kill(dispatcher)
        killed = time.perf_counter()
        killed_at = datetime.now(UTC)
        # Started again at once, as a supervisor would: this bench's reads below are not the
        # dispatcher's restart (the read to the last stable offset can wait out a fetch's
        # 500 ms when nothing new comes: 0.63 s in two of stop 17's four 1,000,000 runs).
        dispatcher = stack.spawn("dispatcher", **env)
        spawned_s = time.perf_counter() - killed
        sampler.pids.append(dispatcher.pid)
        following = False
        await follower
        # What the killed process committed (read_committed, up to the last stable offset: its
        # open transaction, if any, is never counted). Not the sends topic's last stable
        # offset: it jumps past that open transaction's records and abort marker when the next
        # owner's init aborts it, which is no sign of a restarted release. Read while the new
        # process starts: it cannot commit before its take (its init is what aborts the open
        # transaction), and were a commit of its own counted here, the figure would only be
        # longer (it would wait for the next one), never shorter.
        before = await count.read()
        if before >= n:
            raise AssertionError(f"all {n} contacts out before the SIGKILL: too few to restart")
        await write_ticks(range(first_part, ticks))

        async def again() -> bool:
            return await count.read() > before

        await stack.wait_for(
            "a release committed after the restart", again, max(600, n / 1000), every=0.1
        )
        restart_s = time.perf_counter() - killed

        async def everyone() -> bool:
            return await count.read() >= n

        await stack.wait_for("every contact released", everyone, max(900, n / 200), every=0.5)
        release_s = time.perf_counter() - started - restart_s
        total, distinct = await _released(stack, message, verify=verify)
        sends, distinct_sends = await _send_records(stack) if verify else (None, None)
        takes = taken(stack.log_of(dispatcher))
        # Its work is done and every event committed: stopped, so that the projections alone
        # are measured next.
        await sampler.stop()
        dispatcher.terminate()
        await asyncio.to_thread(dispatcher.wait, 60)
        result: dict[str, Any] = {
            "started_at": started_at.isoformat(),
            "recipients": n,
            "release_rate_of_plan": rate,
            "intake_s": round(intake_s, 3),
            "intake_rate": round(n / intake_s, 1),
            "release_s": round(release_s, 3),
            "release_rate": round(n / release_s, 1),
            "half_released_s": round(half_s, 3),
            "restart_s": round(restart_s, 3),
            "restart_source": takes[0].get("source") if takes else None,
            "restart_folded_events": takes[0].get("events") if takes else None,
            **_restart_parts(takes[0] if takes else None, killed_at, spawned_s, restart_s),
            "peak_rss_mb": round(sampler.peak_mb, 1),
            "memory_per_recipient": round(sampler.peak_mb * 1024 * 1024 / n, 1),
            "released": total,
            "released_distinct": distinct,
            "send_records": sends,
            "send_records_distinct": distinct_sends,
        }
        result.update(await _views(stack, server.database_url, message, n, pages))
        say(name, f"done: {result}")
        return result
    finally:
        await sampler.stop()
        await ends.__aexit__()
        await stack.close()


def _restart_parts(
    take: dict[str, Any] | None, killed_at: datetime, spawned_s: float, restart_s: float
) -> dict[str, float | None]:
    """Where the restart's time went: SIGKILL to the new process's spawn (since stop 17 the
    spawn follows the kill at once; this bench's read of what the killed process committed runs
    beside the new process's start), the spawn to the start of the take (the
    interpreter, the imports, the connections and the group join), the take itself (the
    producer's init, the snapshot's load, the tail's fold: its "partition taken" line), and
    the rest (the first transaction after the take and this bench's read of it)."""
    parts: dict[str, float | None] = dict.fromkeys(
        ("restart_init_s", "restart_take_s", "restart_start_s", "restart_after_take_s")
    )
    parts["restart_spawn_s"] = round(spawned_s, 3)
    if take is None or "timestamp" not in take:
        return parts
    taken_at = datetime.fromisoformat(take["timestamp"])
    take_s = float(take.get("take_s", 0.0))
    until_taken = (taken_at - killed_at).total_seconds()
    parts.update(
        restart_init_s=take.get("init_s"),
        restart_take_s=take_s,
        restart_start_s=round(until_taken - take_s - spawned_s, 3),
        restart_after_take_s=round(restart_s - until_taken, 3),
    )
    return parts


async def _states(dsn: str, message: uuid.UUID) -> dict[str, int]:
    """The message's rows of `view_recipients`, counted by state."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT state, count(*) AS n FROM view_recipients WHERE message_id = $1 GROUP BY state",
            message,
        )
        return {str(row["state"]): int(row["n"]) for row in rows}
    finally:
        await conn.close()


async def _views(
    stack: Stack, database_url: str, message: uuid.UUID, n: int, pages: int
) -> dict[str, Any]:
    """Phases 6 and 7: the projections worker catching up on the whole log, then the read API's
    recipients pages on the view it wrote (a schema of its own, dropped after)."""
    name = f"scale {n:,}"
    schema = await new_schema(database_url, "bench_scale")
    dsn = with_schema(database_url, schema)
    sampler = Sampler()
    try:
        say(name, "projections: the worker folds every event into a fresh schema")
        started = time.perf_counter()
        worker = spawn_projections(stack, dsn)
        sampler.pids.append(worker.pid)
        sampler.start()
        events = await wait_caught_up(stack, dsn, within=max(900, n / 200), every=0.5)
        catch_up_s = time.perf_counter() - started
        await sampler.stop()
        states = await _states(dsn, message)
        rows = sum(states.values())
        say(name, f"projections: {rows:,} rows in {catch_up_s:.1f} s, states {states}")
        found: dict[str, Any] = {
            "projections_catch_up_s": round(catch_up_s, 3),
            "projections_rate": round(n / catch_up_s, 1),
            "projections_events": sum(events.values()),
            "projections_peak_rss_mb": round(sampler.peak_mb, 1),
            "view_rows": rows,
            "view_states": states,
        }
        found.update(await _pages(stack, dsn, message, n, pages))
        return found
    finally:
        await sampler.stop()
        for process in [p for p in stack.processes if p.poll() is None]:
            process.terminate()  # the worker and the API: off the schema before it is dropped
            await asyncio.to_thread(process.wait, 60)
        await drop_schema(database_url, schema)


async def _pages(stack: Stack, dsn: str, message: uuid.UUID, n: int, pages: int) -> dict[str, Any]:
    """Phase 7: `pages` recipients pages of the read API after random keyset cursors."""
    key = await asyncio.to_thread(api_key, dsn, OPERATOR.account_id)
    _, base = await stack.start_api(dsn, name="read-api")
    path = f"/v1/messages/{message}/recipients"
    headers = {"Authorization": f"Bearer {key}"}
    positions = random.Random(15).choices(range(n), k=pages)
    times: list[float] = []
    items = 0
    async with aiohttp.ClientSession(
        base_url=base, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:
        await timed_get(http, path, headers, {})  # warm: the connection pools, the plans
        for position in positions:
            cursor = f"s{position}"
            took, body = await timed_get(http, path, headers, {"after": cursor})
            times.append(took)
            got = [item["contact_id"] for item in body["items"]]
            if got != sorted(got) or (got and got[0] <= cursor):
                raise AssertionError(f"a page after {cursor} is not in keyset order: {got[:3]}")
            items += len(got)
    p50, p99 = percentile(times, 50), percentile(times, 99)
    say("scale", f"recipients pages: p50 {p50:.1f} ms, p99 {p99:.1f} ms" if times else "no page")
    return {
        "pages": pages,
        "page_items": items,
        "page_p50_ms": round(p50, 2) if p50 is not None else None,
        "page_p99_ms": round(p99, 2) if p99 is not None else None,
        "page_target_ms": TARGET_MS,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=10_000_000)
    parser.add_argument("--verify", action="store_true", help="read every send record back")
    parser.add_argument("--pages", type=int, default=PAGES, help="recipients pages timed")
    parser.add_argument(
        "--delivery-slice",
        type=int,
        default=SLICE,
        help="sends of the delivery scale-out phase (one worker, then two); 0: not run",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    server = servers()
    sections: dict[str, Any] = {}
    # The intake's ceiling on one core (bench/intake_floor.py), measured in process before the
    # stack starts, so that the run's intake rate is read beside it.
    floor = intake_floor.measure(runs=7, contacts=10_000)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        sections["scale"] = asyncio.run(
            run(args.recipients, Path(tmp), server, verify=args.verify, pages=args.pages)
        )
        sections["scale"]["intake_floor"] = floor
        if args.delivery_slice:
            sections["scaleout"] = asyncio.run(
                bench_scaleout.run(args.delivery_slice, Path(tmp), server)
            )
    for path in results.write_scale(sections, args.out):
        say("scale", f"wrote {path}")
    print(json.dumps(sections, indent=2))
    wrong = problems(sections)
    if wrong:
        raise SystemExit(f"bench-scale: the run is not correct: {wrong}")


def problems(sections: dict[str, Any]) -> list[str]:
    """What the figures say went wrong (empty: every contact released, and sent with
    `--verify`, exactly once; the view holds each in its final state; every page answered;
    each scale-out configuration delivered each send exactly once)."""
    scale = sections["scale"]
    n = scale["recipients"]
    found = []
    if not scale["released"] == scale["released_distinct"] == n:
        found.append(f"released {scale['released']} ({scale['released_distinct']} distinct)")
    if scale["send_records"] is not None and not (
        scale["send_records"] == scale["send_records_distinct"] == n
    ):
        found.append(f"send records {scale['send_records']} ({scale['send_records_distinct']})")
    if scale["view_states"] != {"released": n}:
        found.append(f"view_recipients {scale['view_states']}")
    if scale["pages"] and not scale["page_items"]:
        found.append("the recipients pages were empty")
    scaleout = sections.get("scaleout")
    if scaleout is not None and not scaleout["exactly_once"]:
        found.append("scale-out: a send was not delivered exactly once")
    return found


if __name__ == "__main__":
    main()
