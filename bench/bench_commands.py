"""Command latency over HTTP, the highest steady rate, and the projections worker's recovery.

On topics and a Postgres schema of its own: the real API (`python -m services.commands`), the
dispatcher (`python -m services.dispatcher`) and the projections worker
(`python -m services.projections`) as subprocesses, called over loopback HTTP by an aiohttp client.

* **steady load**: R commands/s (make bench: 200) for T seconds (60), open loop: request i is
  started at t0 + i/R whatever the earlier ones are doing. The commands are mixed: each message
  cycles create → add 10 recipients → edit → schedule (a day ahead) → unschedule → edit → …;
  a message is used by one command at a time (a pool of messages), new ones are created when none
  is free. For each command: from its due start to its **committed answer** (the API's 200/201,
  sent once the processor's result is committed), and to the change **visible in the read API**
  (`GET /v1/messages/{id}?min_sequence=<the answer's sequence>` answering 200). p50/p95/p99.
* **highest steady rate**: the same load without the visibility reads, for a few seconds per
  step (make bench: 10 s): rates doubled from R until the commit p99 passes 250 ms (or a request
  fails), or halved from R when R already misses, then bisected twice between the last rate held
  and the first one missed; bounded by `max_rate` and 5 commands/s (see `search`).
* **recovery of the projections worker**: SIGKILL, restart at once, one command sent: time from
  the SIGKILL until the read API shows it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.cpu import cpu_s, pidfile
from bench.harness.kafka import committed
from bench.harness.processor import Stack
from bench.harness.projections import (
    spawn_projections,
    stack_with_schema,
)
from bench.harness.spawn import api_key, free_port
from bench.progress import say

CONTENT = {"name": "Bench", "from_address": "bench@example.org", "subject": "Hi", "body": "Hello"}
P99_LIMIT_MS = 250.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(
        q / 100 * len(ordered)
    )  # nearest rank: the smallest value with q % at or below
    return ordered[min(len(ordered), max(1, rank)) - 1]


@dataclass
class Message:
    message_id: str | None = None
    step: int = 0  # 0 create, 1 add, 2 edit, 3 schedule, 4 unschedule (then back to 2)


@dataclass
class Load:
    commit_ms: list[float] = field(default_factory=list)
    visible_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    lag_ms: list[float] = field(default_factory=list)  # how late requests were started
    #: (command id, due, answered) in wall-clock seconds, to split the latency by stage
    samples: list[tuple[str, float, float]] = field(default_factory=list)

    def summary(self, rate: float, seconds: float) -> dict[str, Any]:
        def p(values: list[float], q: float) -> float | None:
            found = percentile(values, q)
            return round(found, 2) if found is not None else None

        return {
            "rate": rate,
            "seconds": seconds,
            "commands": len(self.commit_ms),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "kinds": self.kinds,
            "commit_p50_ms": p(self.commit_ms, 50),
            "commit_p95_ms": p(self.commit_ms, 95),
            "commit_p99_ms": p(self.commit_ms, 99),
            "visible_p50_ms": p(self.visible_ms, 50),
            "visible_p95_ms": p(self.visible_ms, 95),
            "visible_p99_ms": p(self.visible_ms, 99),
            "start_lag_p99_ms": p(self.lag_ms, 99),
        }


class Client:
    """The load generator: aiohttp rather than httpx, because the client shares the machine's
    two cores with the stack it measures and aiohttp costs it fewer CPU milliseconds a request."""

    def __init__(self, http: aiohttp.ClientSession, key: str) -> None:
        self.http = http
        self.auth = {"Authorization": f"Bearer {key}"}
        self.free: list[Message] = []

    async def _call(
        self, method: str, path: str, body: Any = None, params: Any = None
    ) -> tuple[int, Any]:
        headers = dict(self.auth)
        if method != "GET":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        async with self.http.request(
            method, path, json=body, params=params, headers=headers
        ) as answer:
            text = await answer.text()
            try:
                return answer.status, json.loads(text)
            except ValueError:
                return answer.status, text

    async def one(self, load: Load, due: float, visible: bool) -> None:
        message = self.free.pop() if self.free else Message()
        load.lag_ms.append((time.perf_counter() - due) * 1000)
        kind, method, path, body = self._next(message)
        load.kinds[kind] = load.kinds.get(kind, 0) + 1
        try:
            status, result = await self._call(method, path, body)
        except (aiohttp.ClientError, TimeoutError) as error:
            # No answer: counted as an error, and its time so far as its latency (a lower
            # bound), so that the percentiles are not flattered by leaving it out.
            load.commit_ms.append((time.perf_counter() - due) * 1000)
            load.errors.append(f"{kind}: {type(error).__name__}")
            self.free.append(Message())  # its state is unknown: start over with a fresh message
            return
        committed = time.perf_counter()
        if status not in (200, 201):
            if status == 202:  # not decided within COMMAND_WAIT_S: same as above
                load.commit_ms.append((committed - due) * 1000)
            load.errors.append(f"{kind}: {status} {str(result)[:120]}")
            self.free.append(Message())  # start over with a fresh message
            return
        load.commit_ms.append((committed - due) * 1000)
        wall = time.time()
        load.samples.append((str(result["command_id"]), wall - (time.perf_counter() - due), wall))
        if message.message_id is None:
            message.message_id = str(result["message_id"])
        message.step = 2 if message.step == 4 else message.step + 1
        self.free.append(message)
        if visible:
            try:
                seen, _ = await self._call(
                    "GET",
                    f"/v1/messages/{message.message_id}",
                    params={"min_sequence": result["sequence"], "wait_s": 30},
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                load.errors.append(f"visible {kind}: {type(error).__name__}")
                return
            if seen == 200:
                load.visible_ms.append((time.perf_counter() - due) * 1000)
            else:
                load.errors.append(f"visible {kind}: {seen}")

    def _next(self, message: Message) -> tuple[str, str, str, Any]:
        path = f"/v1/messages/{message.message_id}"
        if message.step == 0:
            return "create", "POST", "/v1/messages", {"content": CONTENT}
        if message.step == 1:
            tag = uuid.uuid4().hex[:8]
            contacts = [
                {"contact_id": f"{tag}-{i}", "email": f"{tag}-{i}@example.org"} for i in range(10)
            ]
            return "add", "POST", f"{path}/recipients", {"contacts": contacts}
        if message.step == 2:
            subject = f"Hi {uuid.uuid4().hex[:6]}"
            return "edit", "PATCH", path, {"content": {**CONTENT, "subject": subject}}
        if message.step == 3:
            at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            return "schedule", "PUT", f"{path}/schedule", {"send_at": at}
        return "unschedule", "POST", f"{path}/unschedule", {}

    async def steady(self, rate: float, seconds: float, visible: bool, drain: float = 60) -> Load:
        load = Load()
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            due = started + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(self.one(load, due, visible))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if i and i % int(rate * 10) == 0:
                say(f"commands {rate:g}/s", "requests started", i, total)
        if tasks:
            # Bounded: what has not answered `drain` seconds after the last start is cancelled
            # and counted as an error.
            await asyncio.wait(tasks, timeout=drain)
            for task in list(tasks):
                task.cancel()
                load.errors.append(f"cancelled: no answer {drain:g} s after the last start")
        return load


async def _stamps(bootstrap: str, topic: str, partitions: int, path: tuple[str, ...]) -> dict:
    """command id -> record timestamp (s) of every committed record of `topic`."""
    found: dict[str, float] = {}
    async for item in committed(bootstrap, topic, range(partitions)):
        try:
            value: Any = json.loads(item.value)
            for key in path:
                value = value[key]
        except (ValueError, KeyError, TypeError):
            continue
        found[str(value)] = item.timestamp / 1000
    return found


async def stages(stack: Stack, samples: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Where a command's time goes: request to its command record (the API: auth, idempotency
    row, publish), command record to its result record (the dispatcher: waiting for its turn in
    the poll loop, deciding, writing), result record to the answer (the transaction's commit and
    the API's result listener). p50/p99 in ms, from the records' timestamps."""
    n = stack.settings.kafka_partitions
    commands = await _stamps(stack.bootstrap, stack.topics.commands, n, ("command", "command_id"))
    results = await _stamps(stack.bootstrap, stack.topics.results, n, ("command_id",))
    parts: dict[str, list[float]] = {"api_to_log": [], "dispatcher": [], "commit_to_answer": []}
    for command_id, due, answered in samples:
        if command_id in commands and command_id in results:
            parts["api_to_log"].append((commands[command_id] - due) * 1000)
            parts["dispatcher"].append((results[command_id] - commands[command_id]) * 1000)
            parts["commit_to_answer"].append((answered - results[command_id]) * 1000)
    out: dict[str, Any] = {"matched": len(parts["dispatcher"])}
    for name, values in parts.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        out[name] = {
            "p50_ms": round(p50, 1) if p50 is not None else None,
            "p99_ms": round(p99, 1) if p99 is not None else None,
        }
    return out


async def postgres_commits(dsn: str, n: int = 50) -> dict[str, Any]:
    """Latency of a one-row INSERT committed on its own (what each idempotency-row write costs
    at least; a logged table in the bench's schema), p50/p99 in ms: the floor Postgres sets
    under the API on this machine."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE bench_commit (n int)")
        times = []
        for i in range(n):
            started = time.perf_counter()
            await conn.execute("INSERT INTO bench_commit VALUES ($1)", i)
            times.append((time.perf_counter() - started) * 1000)
        setting = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    p50, p99 = percentile(times, 50), percentile(times, 99)
    return {
        "p50_ms": round(p50 or 0, 2),
        "p99_ms": round(p99 or 0, 2),
        "synchronous_commit": setting,
    }


async def run(
    rate: float,
    seconds: float,
    step_seconds: float,
    max_rate: float,
    recoveries: int,
    warmup: float,
    tmp: Path,
    bootstrap: str,
    database: str,
) -> dict[str, Any]:
    async with stack_with_schema(bootstrap, database, tmp / "commands", "bench_api") as (
        stack,
        dsn,
        schema,
    ):
        key = await asyncio.to_thread(api_key, dsn, f"bench-{schema[-6:]}")
        dispatcher_port = free_port()
        dispatcher = stack.spawn(
            "dispatcher", TICK_INTERVAL_S="1.0", DISPATCHER_HEALTH_PORT=str(dispatcher_port)
        )
        # Static membership, as `make run` starts it (scripts/services.sh): the restart of the
        # recovery figure gets its partitions back at once.
        instance = f"{stack.settings.topic_prefix}-projections"
        projections = spawn_projections(stack, dsn, PROJECTIONS_INSTANCE_ID=instance)
        api, base = await stack.start_api(dsn)
        processes = {"api": api.pid, "dispatcher": dispatcher.pid, "projections": projections.pid}
        await stack.wait_owning(dispatcher_port)
        async with aiohttp.ClientSession(
            base_url=base,
            timeout=aiohttp.ClientTimeout(total=30),
            # An idle pooled connection is dropped after 2 s, well before the API's keep-alive
            # (75 s, services/common/http.py; it was uvicorn's 5 s) closes it: a request sent on
            # a connection the server is just closing fails with ServerDisconnectedError, which
            # the load would count against the stack (the max-rate search of the 16:53 run
            # failed steps of 25-100/s on it).
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=2),
        ) as http:
            client = Client(http, key)
            say("commands", f"warming up ({warmup:g} s at {rate / 10:g}/s)")
            await client.steady(rate / 10, warmup, visible=True)
            say("commands", "one at a time (20 commands): the latency without load")
            alone = Load()
            for _ in range(20):
                await client.one(alone, time.perf_counter(), visible=True)
            unloaded = alone.summary(0, 0)
            unloaded["postgres_commit"] = await postgres_commits(dsn)
            say("commands", f"one at a time: {unloaded}")
            say("commands", f"steady {rate:g} commands/s for {seconds:g}s")
            # Where the CPU goes during the steady load: CPU seconds of each process.
            pids = {"bench client": os.getpid(), **processes}
            if (kafka := pidfile("kafka")) is not None:
                pids["kafka"] = kafka
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            load = await client.steady(rate, seconds, visible=True)
            steady = load.summary(rate, seconds)
            wall = time.perf_counter() - started
            cpu, per_command = {}, {}
            for name, pid in pids.items():
                now, then = cpu_s(pid), before[name]
                if now is not None and then is not None:
                    cpu[name] = round((now - then) / wall, 3)
                    per_command[name] = round((now - then) * 1000 / max(1, steady["commands"]), 2)
            # Cores each process got, and its CPU milliseconds per command (read included): the
            # second does not depend on how loaded the machine is.
            steady["cpu_cores_used"] = cpu
            steady["cpu_ms_per_command"] = per_command
            steady["stages"] = await stages(stack, load.samples)
            steady["load_avg"] = list(os.getloadavg())
            say("commands", f"steady: {steady}")

            steps: list[dict[str, Any]] = []

            async def settle() -> None:
                # The backlog of the step before is gone once a lone command answers in time
                # (at most 20 tries).
                for _ in range(20):
                    lone = Load()
                    await client.one(lone, time.perf_counter(), visible=False)
                    if lone.commit_ms and lone.commit_ms[0] <= P99_LIMIT_MS and not lone.errors:
                        return

            async def holds(probe: float) -> bool:
                await settle()
                say("commands", f"max rate search: {probe:g}/s for {step_seconds:g}s")
                step = (await client.steady(probe, step_seconds, False, drain=15)).summary(
                    probe, step_seconds
                )
                steps.append(step)
                ok = not step["errors"] and (step["commit_p99_ms"] or 1e9) <= P99_LIMIT_MS
                say("commands", f"{probe:g}/s: p99 {step['commit_p99_ms']} ms, held={ok}")
                return ok

            held, missed = await search(holds, rate, max_rate)
            recovered: list[float] = []
            for k in range(recoveries):
                say("commands", f"recovery of the projections worker {k + 1}/{recoveries}")
                stack.kill(projections)
                killed = time.perf_counter()
                projections = spawn_projections(stack, dsn, PROJECTIONS_INSTANCE_ID=instance)
                load = Load()
                await client.one(load, time.perf_counter(), visible=True)
                if load.visible_ms:
                    recovered.append(round(time.perf_counter() - killed, 3))
                else:
                    say("commands", f"recovery: not visible: {load.errors}")
        return {
            "steady": steady,
            "one_at_a_time": unloaded,
            "max_rate": held,
            "first_missed": missed,
            "search": steps,
            "recovery_projections_s": recovered,
        }


async def search(
    holds: Callable[[float], Awaitable[bool]], start: float, ceiling: float, floor: float = 5
) -> tuple[float | None, float | None]:
    """The highest rate that holds, bounded: doubling from `start` up to `ceiling` (or halving
    down to `floor` when `start` does not hold), then two bisections between the last rate held
    and the first one missed. Returns (held, missed); None where not found within the bounds."""
    held: float | None = None
    missed: float | None = None
    probe = start
    if await holds(probe):
        held = probe
        while probe * 2 <= ceiling:
            probe *= 2
            if not await holds(probe):
                missed = probe
                break
            held = probe
    else:
        missed = probe
        while probe / 2 >= floor:
            probe /= 2
            if await holds(probe):
                held = probe
                break
            missed = probe
    if held is not None and missed is not None:
        for _ in range(2):
            probe = round((held + missed) / 2)
            if probe in (held, missed):
                break
            if await holds(probe):
                held = probe
            else:
                missed = probe
    return held, missed
