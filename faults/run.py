"""Runs rows of the fault matrix on the stack the project's scripts run and judges each with
every checker (faults/checkers.py). The services are the ones `scripts/services.sh start`
runs, on the default topic prefix; each row sends one message from a sender of its own, so
what the shared sink and ledger hold for a row is found by sender and message id."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import MessageStatus, fold
from faults.checkers import Mail, Observation, Verdict, judge
from faults.probes import marker_seen
from faults.scenarios import Injection, Scenario
from schemas import Contact, DeliveryPlan
from services.common.kafka import client_options
from services.common.settings import Settings
from services.common.topics import Topics

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_KAFKA_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_USERNAME",
    "KAFKA_PASSWORD",
)
RUN_DIR = Path(os.environ.get("STATE_DIR", REPO_ROOT / ".state")) / "run"


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    workload: str
    seed: int
    verdict: Verdict
    seconds: float

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


def script(*args: str) -> None:
    """One of the project's scripts, as a user runs it (the environment of with_env.sh)."""
    env = dict(os.environ)
    if env.get("MAILCTL_LOCAL_KAFKA") == "1":
        # The broker the scripts run (with_env.sh exported its address for this process): the
        # scripts' own choice, not external mode (scripts/kafka.sh), as from a user's shell.
        for name in (*LOCAL_KAFKA_ENV, "MAILCTL_LOCAL_KAFKA"):
            env.pop(name, None)
    done = subprocess.run(
        ["bash", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")


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


async def killed(pid: int) -> None:
    """SIGKILL `pid` and wait until it has died (a zombie has: scripts/lib.sh pid_running). The
    signal is delivered asynchronously: a JVM with many threads runs on for a moment, and a
    start script called in that moment rightly finds it running."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while running(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} did not die on SIGKILL")
        await asyncio.sleep(0.05)


async def inject(injection: Injection) -> None:
    if injection.action == "sigkill":
        await killed(pid_of(injection.target))
        await asyncio.to_thread(script, "scripts/services.sh", "start")
    elif injection.action == "sigterm":
        pid = pid_of(injection.target)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while running(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{injection.target} did not exit on SIGTERM")
            await asyncio.sleep(0.1)
        await asyncio.to_thread(script, "scripts/services.sh", "start")
    elif injection.action == "sigkill-broker":
        await killed(pid_of("kafka"))
        await asyncio.to_thread(script, "scripts/kafka.sh", "start")
        await asyncio.to_thread(script, "scripts/services.sh", "start")
    else:
        raise ValueError(f"unknown injection {injection.action}")


async def views_equal() -> tuple[bool, list[dict[str, Any]]]:
    """services.projections.cli compare: the live views against a rebuild from the log."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.projections.cli",
        "compare",
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
    # The harness of the integration tests drives the commands topic and reads the events, the
    # ledger and the sink; here on the services' own (default) topic prefix.
    from bench.harness.delivery import DeliveryStack

    settings = Settings()
    started = time.monotonic()
    await asyncio.to_thread(script, "scripts/services.sh", "start")
    stack = DeliveryStack(
        settings.kafka_bootstrap_servers,
        settings.database_url,
        (settings.smtp_host, settings.smtp_port),
        os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:18025"),
        Path(tempfile.mkdtemp(prefix="faults-")),
    )
    stack.settings = settings
    stack.topics = Topics(settings.topic_prefix)
    stack.sender = f"news@f{uuid.uuid4().hex[:10]}.test"
    stack.content = stack.content.model_copy(update={"from_address": stack.sender})
    await stack.start()
    try:
        message = uuid.UUID(int=uuid.uuid4().int)
        tag = stack.sender.split("@")[1].split(".")[0]
        audience = tuple(
            Contact(contact_id=f"{tag}-{i}", email=f"{tag}-{i}@example.org")
            for i in range(recipients)
        )
        await stack.send_now(message, audience, DeliveryPlan(release_rate=2000))
        for injection in sorted(scenario.injections, key=lambda i: i.at):
            await stack.wait_delivered(message, int(recipients * injection.at), within=within)
            await inject(injection)
        await stack.wait_status(message, MessageStatus.SENT, within=within)
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
        observation = Observation(
            audience=frozenset(c.contact_id for c in audience),
            mails=mails,
            ledger=[(r["contact_id"], r["state"]) for r in ledger],
            events=events,
            counts=dict(state.book.counts),
            status=state.status,
        )
        options = client_options(settings)
        seen: dict[int, bool] = {}
        for topic in (stack.topics.sends, stack.topics.events, stack.topics.results):
            for p, ok in (await marker_seen(options, topic, settings.kafka_partitions)).items():
                seen[p] = seen.get(p, True) and ok
        equal, differences = await views_equal()
        verdict = judge(observation, views_equal=equal, view_diffs=differences, marker_seen=seen)
    finally:
        await stack.close()
    return Row(scenario, f"{recipients} recipients", seed, verdict, time.monotonic() - started)
