"""The bad-input row of the fault matrix (docs/reliability.md, "Bad input during a live send").

During a live send of account A's message:

* bad records on every topic the services consume, keyed by the message (so they sit in its
  partition, between its own records): undecodable bytes, schema-invalid JSON, an oversized
  record (1 MiB of it), an unknown schema version. The dispatcher (commands; events and
  command-results at its next take of the partition, which the row forces by restarting it),
  the delivery worker (sends) and its fence reader (control) set each aside on
  `<prefix>.dead-letter` with the error; the projections keep their own dead letters of the
  bad events in Postgres (tests/integration/test_projections_poison.py). Processing continues:
  the send completes and every checker passes. Only the dispatcher's principal may write the
  events and results topics: the row writes them as the admin, as an operator could.
* another account's API key: it neither sees (GET the message, its recipients, its history:
  404) nor changes (pause, cancel: 404) account A's message.
* the hostile inputs of the bad-input issue, sent with that key through the API while A's send
  runs: NUL bytes and control characters in the subject and names, a header injection in the
  subject and the sender's name, internationalized addresses. Each is refused (4xx, never a
  5xx) or, when accepted, cannot reach A's send or views.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness.processor import record
from core import MessageStatus, fold
from schemas import MessageCanceled, MessagePaused, PauseMessage
from services.dispatcher.decider import key_of

KINDS = ("undecodable", "invalid", "oversized", "version")
#: The topics the row writes bad records on; each is dead-lettered by its consumer.
DEAD_LETTERED = ("commands", "sends", "control", "events", "results")
#: The record type the bad records of a topic pretend to be.
SHAPE = {
    "sends": "SendRecord",
    "control": "Fence",
    "events": "DraftCreated",
    "results": "CommandResult",
}


def bad_values(tag: str, message: uuid.UUID, topic: str) -> dict[str, bytes]:
    """One bad record of each kind for `topic`, each carrying its own marker text. On the
    commands topic the schema-invalid and the unknown-version records are pauses of the very
    message being sent: decoded leniently they would pause it (the row's check sees that)."""
    marker = {k: f"{tag}-{topic}-{k}" for k in KINDS}
    if topic == "commands":
        pause = record(PauseMessage(command_id=uuid.uuid4(), message_id=message)).model_dump(
            mode="json"
        )
        invalid = json.loads(json.dumps(pause))
        invalid["command"]["command_id"] = f"not-a-uuid {marker['invalid']}"
        version = json.loads(json.dumps(pause))
        version["command"]["schema_version"] = 99
        version["command"]["reason"] = marker["version"]
        oversized = json.loads(json.dumps(pause))
        oversized["command"]["reason"] = f"{marker['oversized']} " + "x" * (1 << 20)
        shaped = {"invalid": invalid, "version": version, "oversized": oversized}
    else:
        base = {"type": SHAPE[topic], "schema_version": 1, "message_id": str(message)}
        shaped = {
            "invalid": {**base, "message_id": "not-a-uuid", "marker": marker["invalid"]},
            "version": {**base, "schema_version": 99, "marker": marker["version"]},
            "oversized": {**base, "marker": marker["oversized"], "filler": "x" * (1 << 20)},
        }
    values = {k: json.dumps(v).encode() for k, v in shaped.items()}
    values["undecodable"] = b"\xff\xfe\x00\x81 " + marker["undecodable"].encode() + b" \xc3\x28"
    return values


def topic_of(topics: Any, short: str) -> str:
    name: str = {
        "commands": topics.commands,
        "sends": topics.sends,
        "control": topics.control,
        "events": topics.events,
        "results": topics.results,
    }[short]
    return name


@dataclass
class BadInput:
    tag: str
    other_key: str | None = None
    problems: list[str] = field(default_factory=list)
    hostile: list[tuple[str, int]] = field(default_factory=list)

    def expected(self) -> set[tuple[str, str]]:
        return {(t, f"{self.tag}-{t}-{k}") for t in DEAD_LETTERED for k in KINDS}

    async def inject(
        self, stack: Any, message: uuid.UUID, restart: Callable[[], Awaitable[None]]
    ) -> None:
        """Write the bad records; ``restart`` restarts the dispatcher (cleanly, through the
        project's scripts) so that it takes the partition again and reads them."""
        assert stack.producer is not None
        key = key_of(message)
        topics = stack.topics
        number = stack.partition_of(message)
        for short in DEAD_LETTERED:
            topic = topic_of(topics, short)
            for value in bad_values(self.tag, message, short).values():
                await stack.producer.send_and_wait(topic, value=value, key=key, partition=number)
        # The events and results topics are read by the dispatcher when it takes a partition:
        # a restart through the project's scripts (its snapshot, if any, ends before them).
        await restart()
        await self.other_account(stack, message)

    # ------------------------------------------------------------------ the API

    def _api(self) -> str:
        return f"http://127.0.0.1:{os.environ.get('COMMANDS_PORT', '8080')}"

    async def _key(self, account: str) -> str:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.commands.apikeys", "create", "--account", account],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"apikeys create failed: {done.stderr[-1000:]}")
        return done.stdout.strip().split()[-1]

    async def settled(self, api: httpx.AsyncClient, answer: httpx.Response) -> int:
        """The HTTP status a command's request ends with: a 202 (the outcome was not known in
        time, a loaded machine) is followed at its status URL until it is decided."""
        if answer.status_code != 202:
            return answer.status_code
        url = answer.json()["status_url"]
        for _ in range(600):
            polled = await api.get(url)
            body = polled.json() if polled.status_code == 200 else {}
            if body.get("state") == "done":
                status: int = body["http_status"]
                return status
            await asyncio.sleep(0.2)
        return 202

    async def other_account(self, stack: Any, message: uuid.UUID) -> None:
        """Another account's key against A's message, then its hostile sends."""
        self.other_key = await self._key(f"{self.tag}-other")
        headers = {"Authorization": f"Bearer {self.other_key}"}
        async with httpx.AsyncClient(base_url=self._api(), headers=headers, timeout=30) as api:
            for path in ("", "/recipients", "/history"):
                answer = await api.get(f"/v1/messages/{message}{path}")
                if answer.status_code != 404:
                    self.problems.append(
                        f"another account's GET /v1/messages/{{id}}{path}: {answer.status_code}"
                    )
            for verb in ("pause", "cancel"):
                answer = await api.post(f"/v1/messages/{message}/{verb}", json={})
                status = await self.settled(api, answer)
                if status != 404:
                    self.problems.append(
                        f"another account's POST /v1/messages/{{id}}/{verb}: {status}"
                    )
            await self.hostile_sends(api)

    async def hostile_sends(self, api: httpx.AsyncClient) -> None:
        sender = f"news@{self.tag}-hostile.test"
        contents = {
            "nul": {"name": "N\x00", "subject": "Hi\x00there", "body": "a\x00b"},
            "control": {"name": "C\x07\x1b[31m", "subject": "Hi\x1b[2J\x08", "body": "ok"},
            "header-injection": {
                "name": "Evil\r\nBcc: victim@example.org",
                "subject": "Hi\r\nBcc: victim@example.org\r\n\r\nbody",
                "body": "ok",
            },
            "plain": {"name": "Plain", "subject": "Hi", "body": "ok"},
        }
        contacts = {
            "idn": [{"contact_id": f"{self.tag}-idn", "email": "josé@exämple.org"}],
            "nul-address": [{"contact_id": f"{self.tag}-nul", "email": "a\x00@example.org"}],
            "control-address": [
                {"contact_id": f"{self.tag}-ctl", "email": "a\r\nRCPT TO:<x@example.org>"}
            ],
            "injected-address": [
                {"contact_id": f"{self.tag}-inj", "email": "a@example.org>\r\nDATA"}
            ],
        }
        for name, content in contents.items():
            created = await api.post(
                "/v1/messages",
                json={"content": {**content, "from_address": sender}},
            )
            status = await self.settled(api, created)
            self.hostile.append((f"content {name}", status))
            if status != 201:
                continue
            message_id = created.json()["message_id"]
            for cname, rows in contacts.items():
                added = await api.post(
                    f"/v1/messages/{message_id}/recipients", json={"contacts": rows}
                )
                self.hostile.append((f"contacts {cname}", await self.settled(api, added)))
            scheduled = await api.put(
                f"/v1/messages/{message_id}/schedule", json={"send_now": True}
            )
            self.hostile.append((f"send {name}", await self.settled(api, scheduled)))
        for what, status in self.hostile:
            if status >= 500:
                self.problems.append(f"hostile input {what}: HTTP {status}")

    # ------------------------------------------------------------------ the checks

    async def check(self, stack: Any, message: uuid.UUID) -> list[str]:
        """The bad records set aside, the other account's key changed nothing."""
        found: set[tuple[str, str]] = set()
        short = {topic_of(stack.topics, name): name for name in DEAD_LETTERED}
        for letter in await stack.dead_letters():
            topic = short.get(letter.topic)
            if topic is None:
                continue
            for kind in KINDS:
                marker = f"{self.tag}-{topic}-{kind}"
                if marker in letter.value:
                    found.add((topic, marker))
        problems = list(self.problems)
        problems += [
            f"bad record {marker} on {topic} was not dead-lettered"
            for topic, marker in sorted(self.expected() - found)
        ]
        events = await stack.events_of(message)
        if any(isinstance(e, MessagePaused | MessageCanceled) for e in events):
            problems.append("account A's message was paused or canceled (another account's key?)")
        state = fold(events)
        if state is None or state.status is not MessageStatus.SENT:
            problems.append("account A's message did not complete")
        return problems
