"""Runs rows of the fault matrix on the stack the project's scripts run and judges each with
every checker (faults/checkers.py). The services are the ones `scripts/services.sh start`
runs, on the default topic prefix; each row sends one message from a sender of its own, so
what the shared sink and ledger hold for a row is found by sender and message id.

A `Matrix` is one harness (the commands producer, the readers of the events and results topics,
the ledger connection) shared by the rows of a run: each row reads only what was written since
the row before, and the views are compared for the row's own message only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from core import RecipientStatus, fold
from faults.badinput import BadInput
from faults.checkers import Mail, Observation, Verdict, judge
from faults.probes import marker_seen
from faults.replay import replay
from faults.scenarios import Injection, Scenario
from schemas import (
    AddRecipients,
    CancelMessage,
    Command,
    Contact,
    DeliveryPlan,
    Event,
    PauseMessage,
    RemoveRecipients,
    ResumeMessage,
)
from services.common.kafka import client_options
from services.common.reading import read_range
from services.common.settings import Settings
from services.common.topics import Topics
from services.dispatcher.decider import Input, Rules

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_KAFKA_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_USERNAME",
    "KAFKA_PASSWORD",
)
RUN_DIR = Path(os.environ.get("STATE_DIR", REPO_ROOT / ".state")) / "run"
#: Recipient statuses the core gives contacts that are never to be sent.
UNSENT = frozenset({RecipientStatus.REMOVED, RecipientStatus.EXCLUDED, RecipientStatus.SKIPPED})
#: The release rate of every row's send (recipients per second).
RELEASE_RATE = 2000


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    workload: str
    seed: int
    verdict: Verdict
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "fault": self.scenario.fault,
            "injection": self.scenario.injection,
            "workload": self.workload,
            "runs": 1,
            "seed": self.seed,
            "duplicates": self.verdict.duplicates,
            "lost": self.verdict.lost,
            "unknown": self.verdict.unknown,
            "passed": self.verdict.passed,
        }


def local_env() -> dict[str, str]:
    """The environment of one of the project's scripts, as from a user's shell: the servers the
    scripts run are the scripts' own choice (with_env.sh exported their addresses for this
    process), not external mode (scripts/kafka.sh, scripts/postgres.sh)."""
    env = dict(os.environ)
    if env.get("MAILCTL_LOCAL_KAFKA") == "1":
        for name in (*LOCAL_KAFKA_ENV, "MAILCTL_LOCAL_KAFKA"):
            env.pop(name, None)
    port = env.get("PG_PORT", "15432")
    if env.get("DATABASE_URL") == f"postgresql://mailctl:mailctl@127.0.0.1:{port}/mailctl":
        env.pop("DATABASE_URL")
    return env


def script(*args: str) -> None:
    """One of the project's scripts, as a user runs it."""
    done = subprocess.run(
        ["bash", *args], cwd=REPO_ROOT, env=local_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")


async def run_script(*args: str) -> None:
    await asyncio.to_thread(script, *args)


def pid_of(name: str) -> int:
    return int((RUN_DIR / f"{name}.pid").read_text().strip())


def running(pid: int) -> bool:
    """Any thread of the process still runs (scripts/lib.sh pid_running): a JVM's main thread
    is a zombie while its other threads still exit and hold its ports."""
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            stat = task.read_text()
        except OSError:
            continue
        if stat.rsplit(") ", 1)[1][:1] not in ("Z", "X"):
            return True
    return False


async def until(what: str, check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Poll `check` until it holds, bounded."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {within:g}s waiting for {what}")
        await asyncio.sleep(0.2)


async def killed(pid: int) -> None:
    """SIGKILL `pid` and wait until it has died (a zombie has: scripts/lib.sh pid_running). The
    signal is delivered asynchronously: a JVM with many threads runs on for a moment, and a
    start script called in that moment rightly finds it running."""
    os.kill(pid, signal.SIGKILL)

    async def dead() -> bool:
        return not running(pid)

    await until(f"pid {pid} to die on SIGKILL", dead, 60)


HEALTH_PORTS = {
    "dispatcher": ("DISPATCHER_HEALTH_PORT", 8081, "processor"),
    "delivery": ("DELIVERY_HEALTH_PORT", 8082, "delivery"),
}


def health_port(kind: str, second: bool = False) -> int:
    name, default, _ = HEALTH_PORTS[kind]
    port = int(os.environ.get(name, default))
    if second:
        port = int(os.environ.get(name.replace("_HEALTH", "2_HEALTH"), port + 20))
    return port


async def owned(kind: str, second: bool = False, *, assigned: bool = False) -> list[int] | None:
    """The partitions a dispatcher or delivery worker owns, from its /health (None: no answer);
    with `assigned` also those assigned to it that it could not take yet (orphaned: retried)."""
    url = f"http://127.0.0.1:{health_port(kind, second)}/health"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            body = (await client.get(url)).json()
    except (httpx.HTTPError, ValueError):
        return None
    details = body.get(HEALTH_PORTS[kind][2]) or {}
    partitions: list[int] = details.get("partitions", [])
    if assigned:
        partitions = sorted({*partitions, *details.get("orphaned", [])})
    return partitions


class Matrix:
    """The harness the rows of one run share (see the module's docstring)."""

    def __init__(self, *, within: float) -> None:
        self.settings = Settings()
        self.within = within
        self.stack: Any = None

    async def __aenter__(self) -> Matrix:
        from faults.stack import FaultStack

        await run_script("scripts/services.sh", "start")
        settings = self.settings
        stack = FaultStack(
            settings.kafka_bootstrap_servers,
            settings.database_url,
            (settings.smtp_host, settings.smtp_port),
            os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:18025"),
            Path(tempfile.mkdtemp(prefix="faults-")),
        )
        stack.settings = settings
        stack.topics = Topics(settings.topic_prefix)
        await stack.start()
        self.stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.stack is not None:
            await self.stack.close()

    # ------------------------------------------------------------------ injections

    async def inject(self, injection: Injection, rows: RowRun) -> None:
        action, target = injection.action, injection.target
        if action == "sigkill":
            await killed(pid_of(target))
            await run_script("scripts/services.sh", "start")
        elif action == "sigterm":
            await self.sigterm(target)
        elif action == "sigkill-broker":
            await killed(pid_of("kafka"))
            await run_script("scripts/kafka.sh", "start")
            await run_script("scripts/services.sh", "start")
        elif action == "pg-restart":
            # The services reconnect by themselves; any that ended is relaunched as a user would.
            await run_script("scripts/postgres.sh", "restart-immediate")
            await self.stack.reconnect_db()
            await run_script("scripts/services.sh", "start")
        elif action == "pg-down-rebalance":
            await self.postgres_down_rebalance()
        elif action == "zombie":
            await self.zombie(target, rows)
        elif action == "cluster-kill":
            await killed(pid_of(f"kafka-node{target}"))
            await run_script("scripts/kafka_cluster.sh", "start")
            await run_script("scripts/services.sh", "start")
        elif action == "cluster-leaders":
            before = await self.leaders()
            await run_script("scripts/kafka_cluster.sh", "stop-node", target)
            away = await self.leaders()
            await run_script("scripts/kafka_cluster.sh", "start")
            await run_script("scripts/services.sh", "start")

            async def back() -> bool:
                return await self.leaders() == before

            # The preferred leaders come back within the imbalance check (5 s) and a margin.
            with contextlib.suppress(TimeoutError):
                await until("the preferred leaders to come back", back, 60)
            rows.notes["leaders"] = {
                "before": before,
                "node stopped": away,
                "after": await self.leaders(),
            }
        elif action == "bad-input":
            assert rows.bad is not None
            await rows.bad.inject(self.stack, rows.message, self.retake)
        else:
            raise ValueError(f"unknown injection {action}")

    async def retake(self) -> None:
        """Make the dispatcher take its partitions again (the bad-input row: it reads the
        events and results topics then): a clean restart, and a wait until it owns every one.
        On a loaded machine the takes outlast the scripts' 90 s health wait; they go on."""
        try:
            await self.sigterm("dispatcher")
        except RuntimeError as error:
            print(f"dispatcher not healthy in the scripts' time, waiting: {error}", file=sys.stderr)

        async def every() -> bool:
            return len(await owned("dispatcher") or []) == self.settings.kafka_partitions

        await until("the restarted dispatcher to own every partition", every, 600)

    async def sigterm(self, target: str) -> None:
        """A clean restart: SIGTERM, wait until it has exited, `scripts/services.sh start`."""
        pid = pid_of(target)
        os.kill(pid, signal.SIGTERM)

        async def gone() -> bool:
            return not running(pid)

        await until(f"{target} to exit on SIGTERM", gone, 60)
        await run_script("scripts/services.sh", "start")

    async def leaders(self) -> dict[str, int]:
        """The leader of each partition of the sends and events topics ("sends-0": broker id)."""
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        await admin.start()
        try:
            topics = self.stack.topics
            described = await admin.describe_topics([topics.sends, topics.events])
        finally:
            await admin.close()
        return {
            f"{t['topic'].rsplit('.', 1)[1]}-{p['partition']}": p["leader"]
            for t in described
            for p in t["partitions"]
        }

    async def postgres_down_rebalance(self) -> None:
        """A second delivery worker shares the partitions; Postgres goes away at once; the second
        is SIGKILLed, so the first takes its partitions in a rebalance while the ledger cannot be
        reached (each take fails and is retried). Postgres comes back; the scripts relaunch
        whatever ended."""
        await run_script("scripts/services.sh", "start-second", "delivery")

        async def shared() -> bool:
            first, second = await owned("delivery"), await owned("delivery", second=True)
            return bool(first) and bool(second)

        await until("two delivery workers sharing the partitions", shared, 90)
        gone = set(await owned("delivery", second=True) or [])
        await run_script("scripts/postgres.sh", "stop-immediate")
        try:
            await killed(pid_of("delivery-2"))
            (RUN_DIR / "delivery-2.pid").unlink(missing_ok=True)

            async def taken() -> bool:
                # Assigned, and failing to take them: the ledger is unreachable (retried).
                return gone <= set(await owned("delivery", assigned=True) or [])

            # Session timeout (10 s) and the rebalance, with the ledger unreachable.
            await until("the first delivery worker to be assigned the partitions", taken, 90)
        finally:
            await run_script("scripts/postgres.sh", "start")
            await self.stack.reconnect_db()
        await run_script("scripts/services.sh", "start")

    async def zombie(self, kind: str, rows: RowRun) -> None:
        """SIGSTOP the process of `kind`, start a second one, wait until the second owns every
        partition (the stopped member's session ran out), SIGCONT the first. Whatever the woken
        process still held (its open transaction, its claimed sends) must come to nothing: the
        checkers find no second copy. The second process is stopped at the end of the row, so
        the next row has one process of each kind again."""
        pid = pid_of(kind)
        partitions = self.settings.kafka_partitions
        os.kill(pid, signal.SIGSTOP)
        try:
            await run_script("scripts/services.sh", "start-second", kind)

            async def moved() -> bool:
                return len(await owned(kind, second=True) or []) == partitions

            await until(f"the second {kind} to own every partition", moved, 120)
        finally:
            os.kill(pid, signal.SIGCONT)
        rows.after.append(lambda: run_script("scripts/services.sh", "stop-second", kind))

    # ------------------------------------------------------------------ a row

    async def run(self, scenario: Scenario, recipients: int, seed: int) -> Row:
        """One row; a row that cannot finish (a wait that gives up, a script that fails) is a
        failed row with the reason, and the stack is brought back up for the next one."""
        started = time.monotonic()
        try:
            return await self._run(scenario, recipients, seed)
        except Exception as error:
            verdict = Verdict(0, 0, 0, (f"the row did not complete: {error!r}"[:2000],))
            for recover in (
                ("scripts/postgres.sh", "start"),
                ("scripts/kafka.sh", "start"),
                ("scripts/services.sh", "stop-second", "dispatcher"),
                ("scripts/services.sh", "stop-second", "delivery"),
                ("scripts/services.sh", "start"),
            ):
                with contextlib.suppress(RuntimeError):
                    await run_script(*recover)
            await self.stack.reconnect_db()
            return Row(
                scenario, f"{recipients} recipients", seed, verdict, time.monotonic() - started
            )

    async def _run(self, scenario: Scenario, recipients: int, seed: int) -> Row:
        stack = self.stack
        started = time.monotonic()
        phases: dict[str, float] = {}
        mark = [started]

        def phase(name: str) -> None:
            now = time.monotonic()
            phases[name] = round(now - mark[0], 1)
            mark[0] = now

        await run_script("scripts/services.sh", "start")
        stack.new_sender()
        message = uuid.UUID(int=uuid.uuid4().int)
        tag = stack.sender.split("@")[1].split(".")[0]
        audience = tuple(
            Contact(contact_id=f"{tag}-{i}", email=f"{tag}-{i}@example.org")
            for i in range(recipients)
        )
        rows = RowRun(message, set(c.contact_id for c in audience))
        if any(i.action == "bad-input" for i in scenario.injections):
            rows.bad = BadInput(tag)
        await stack.send_now(message, audience, DeliveryPlan(release_rate=RELEASE_RATE))
        phase("send")
        racer = None
        if scenario.race:
            racer = asyncio.create_task(
                self.race(message, rows, recipients, seed, cancel=scenario.cancel)
            )
        for injection in sorted(scenario.injections, key=lambda i: i.at):
            await stack.wait_delivered(message, int(recipients * injection.at), within=self.within)
            await self.inject(injection, rows)
        phase("faults")
        if racer is not None:
            await racer
            phase("race")
        final = await stack.wait_final(message, within=self.within)
        phase("sent")
        try:
            verdict = await self.judge(message, rows, final, race=scenario.race)
        finally:
            for step in rows.after:
                await step()
        phase("checks")
        return Row(
            scenario,
            f"{recipients} recipients",
            seed,
            verdict,
            time.monotonic() - started,
            phases,
            {
                **({"commands": rows.outcomes} if rows.outcomes else {}),
                **({"hostile": dict(rows.bad.hostile)} if rows.bad is not None else {}),
                **rows.notes,
            },
        )

    async def race(
        self, message: uuid.UUID, rows: RowRun, recipients: int, seed: int, *, cancel: bool
    ) -> None:
        """Pause, resume, cancel and audience changes at seeded random moments of the send, in
        an order the seed picks (a resume follows each pause; with `cancel`, a cancel comes
        last). Each command's outcome is the core's to decide; the seed draws the moments,
        the chunks added and the ranges removed."""
        stack = self.stack
        rng = random.Random(seed)
        added = 0

        def command_id() -> uuid.UUID:
            # Never from the seed: a command id seen before (an earlier run with the same seed)
            # is a retry, answered with its first result and decided again by nobody.
            return uuid.uuid4()

        steps: list[str] = []
        for _ in range(3):
            steps += rng.sample(["pause", "add", "remove"], k=3)
        steps += ["cancel"] if cancel else []
        paused = False
        # Spread over the send's first part (its length at the release rate).
        window = max(recipients / RELEASE_RATE * 0.7, 3.0)
        for step in steps:
            await asyncio.sleep(rng.uniform(0.0, 2 * window / len(steps)))
            item: Command
            if step == "pause" and not paused:
                item = PauseMessage(command_id=command_id(), message_id=message)
                paused = True
            elif step == "pause":
                item = ResumeMessage(command_id=command_id(), message_id=message)
                paused = False
            elif step == "add":
                tag = f"{stack.tag}-added{added}"
                added += 1
                contacts = tuple(
                    Contact(contact_id=f"{tag}-{i}", email=f"{tag}-{i}@example.org")
                    for i in range(rng.randint(10, 300))
                )
                rows.audience |= {c.contact_id for c in contacts}
                item = AddRecipients(command_id=command_id(), message_id=message, contacts=contacts)
            elif step == "remove":
                start = rng.randrange(recipients)
                end = min(start + 200, recipients)
                ids = tuple(f"{stack.tag}-{i}" for i in range(start, end))
                item = RemoveRecipients(
                    command_id=command_id(), message_id=message, contact_ids=ids
                )
            else:
                item = CancelMessage(command_id=command_id(), message_id=message)
            rows.commands.append((item.type, item.command_id))
            await stack.publish(stack.record(item))
        if paused:
            item = ResumeMessage(command_id=command_id(), message_id=message)
            await stack.publish(stack.record(item))
            rows.commands.append((item.type, item.command_id))
        for kind, cid in rows.commands:
            result = await stack.result_of(cid, within=self.within)
            outcome = f"{kind} {result.outcome}"
            rows.outcomes[outcome] = rows.outcomes.get(outcome, 0) + 1

    # ------------------------------------------------------------------ the checks

    async def judge(self, message: uuid.UUID, rows: RowRun, final: Any, *, race: bool) -> Verdict:
        stack = self.stack
        settings = self.settings
        # Every record of the message's partition decided so far (a no-op command's result
        # comes after all of them), then the reports of the last outcomes.
        await stack.barrier_now(message)
        await stack.wait_settled(message, within=self.within)
        await stack.barrier_now(message)
        assert stack.db is not None
        ledger = await stack.db.fetch(
            "SELECT contact_id, state FROM delivery_ledger WHERE topic = $1 AND message_id = $2",
            stack.topics.sends,
            str(message),
        )
        events = await stack.events_of(message)
        state = fold(events)
        assert state is not None
        mails = [Mail(mid, rcpt.split("@")[0]) for mid, rcpt in await stack.sink()]
        # The audience is what the core made of the adds (a refused add adds nobody); the
        # replay of the racing rows checks the core's decisions themselves.
        book = state.book
        audience = frozenset(c for c in rows.audience if book.status_of(c) is not None)
        unsent = frozenset(c for c in audience if book.status_of(c) in UNSENT)
        observation = Observation(
            audience=audience,
            mails=mails,
            ledger=[(r["contact_id"], r["state"]) for r in ledger],
            events=events,
            counts=dict(state.book.counts),
            status=state.status,
            unsent=unsent,
        )
        options = client_options(settings)
        seen: dict[int, bool] = {}
        for topic in (stack.topics.sends, stack.topics.events, stack.topics.results):
            for p, ok in (await marker_seen(options, topic, settings.kafka_partitions)).items():
                seen[p] = seen.get(p, True) and ok
        equal, differences = await views_equal(message)
        replayed = await self.replayed(message) if race else None
        extra: list[str] = []
        if rows.bad is not None:
            extra += await rows.bad.check(stack, message)
        return judge(
            observation,
            views_equal=equal,
            view_diffs=differences,
            marker_seen=seen,
            replayed=replayed,
            extra=extra,
        )

    async def replayed(self, message: uuid.UUID) -> list[Event]:
        """The pure core run again on the message's partition of the commands topic."""
        settings = self.settings
        topic = self.stack.topics.commands
        number = self.stack.partition_of(message)
        records = [
            Input(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                r.timestamp,
                r.timestamp_type,
                tuple(r.headers or ()),
            )
            async for r in read_range(settings, topic, number)
        ]
        rules = Rules(
            partitions=settings.kafka_partitions,
            timestamp_type=settings.kafka_commands_timestamp_type,
        )
        return replay(records, rules, message)


#: The services' environment on the cluster: by configuration only (docs/kafka.md).
CLUSTER_PREFIX = "mailctl-cluster"


class ClusterMatrix(Matrix):
    """The rows on the three-broker cluster of scripts/kafka_cluster.sh: the services are
    stopped, the cluster started, and the services started again with the cluster's address,
    credentials and replication factor in their environment (and topics of their own prefix:
    the ledger and the views' offsets in Postgres are the single broker's under the default
    one). On the way out the cluster is stopped and the services go back to the one broker."""

    def __init__(self, *, within: float) -> None:
        self.saved = dict(os.environ)
        super().__init__(within=within)

    async def __aenter__(self) -> Matrix:
        await run_script("scripts/services.sh", "stop")
        await run_script("scripts/kafka_cluster.sh", "start")
        bootstrap = await asyncio.to_thread(
            subprocess.run,
            ["bash", "scripts/kafka_cluster.sh", "bootstrap"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        password = await asyncio.to_thread(
            subprocess.run,
            ["bash", "scripts/kafka.sh", "password", "mailctl-admin"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        os.environ.pop("MAILCTL_LOCAL_KAFKA", None)
        os.environ.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap.stdout.strip(),
            KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
            KAFKA_USERNAME="mailctl-admin",
            KAFKA_PASSWORD=password.stdout.strip(),
            KAFKA_REPLICATION_FACTOR="3",
            TOPIC_PREFIX=CLUSTER_PREFIX,
        )
        self.settings = Settings()
        return await super().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await super().__aexit__(*exc)
            await run_script("scripts/services.sh", "stop")
            await run_script("scripts/kafka_cluster.sh", "stop")
        finally:
            os.environ.clear()
            os.environ.update(self.saved)
        await run_script("scripts/services.sh", "start")


@dataclass
class RowRun:
    """What one row's run keeps while it goes."""

    message: uuid.UUID
    audience: set[str]
    bad: BadInput | None = None
    commands: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    #: How the racing commands were decided ("PauseMessage accepted": 2, ...).
    outcomes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def views_equal(*messages: uuid.UUID) -> tuple[bool, list[dict[str, Any]]]:
    """services.projections.cli compare: the live views of the run's own messages against a
    rebuild from the log. The live schema is shared with whatever else writes views there
    (other tests of `make test`, earlier runs), so only these messages' rows are compared."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.projections.cli",
        "compare",
        *(arg for m in messages for arg in ("--message", str(m))),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    try:
        report: dict[str, Any] = json.loads(out)
    except ValueError:
        return False, [{"table": "?", "only_live": "compare failed", "only_rebuilt": "?"}]
    differences: list[dict[str, Any]] = report.get("differences", [])
    return process.returncode == 0 and bool(report.get("equal")), differences


async def run_row(scenario: Scenario, recipients: int, seed: int, *, within: float) -> Row:
    """One row on a harness of its own."""
    async with Matrix(within=within) as matrix:
        return await matrix.run(scenario, recipients, seed)


__all__ = ["ClusterMatrix", "Matrix", "Row", "run_row"]
