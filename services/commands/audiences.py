"""Audiences for operators and services (issue 16): previews, CSV imports, test sends, exports.

One shell used by the REST routes (services/commands/audience_api.py) and the web UI
(services/web/audience_pages.py). The rules are the core's: a preview renders with
`core.render.render` (delivery's own function) and lists the merge fields with
`core.preview.merge_fields`; an import's chunks are ordinary `AddRecipients` /
`RemoveRecipients` commands run through the API's `Executor`, so what each chunk did is the
core's answer (`core.audience`); a test send is a `SendTestMessage` command the core accepts or
refuses and records as `TestSendRequested`, then handed to SMTP here (why here: docs/api.md).
Postgres tables: migration 0010.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID, uuid5

import asyncpg
import structlog

from core.book import RecipientStatus
from core.preview import merge_fields
from core.render import render
from schemas import (
    MAX_CHUNK,
    Actor,
    AddRecipients,
    Command,
    Contact,
    Content,
    RemoveRecipients,
    SendTestMessage,
    normalize_address,
)
from schemas.fast import contacts_json
from services.commands.csv_rows import CsvContacts, HeaderError, InvalidRow, ParsedRow
from services.commands.errors import Problem, ProblemError
from services.commands.gateway import CommandRequest, Executor
from services.commands.ids import command_id_for
from services.commands.ports import IdempotencyStore
from services.delivery.mail import compose
from services.projections.reader import PostgresViews

log = structlog.get_logger(__name__)

__all__ = ["MAX_TEST_ADDRESSES", "AudienceService", "ImportSummary", "import_key"]

#: At most this many addresses per test send (issue 16).
MAX_TEST_ADDRESSES = 10
#: Rows per import chunk: the core's chunk limit.
IMPORT_CHUNK = MAX_CHUNK
#: An import's chunks published and not answered yet, at most: the processor has the next chunk
#: on the topic when it finishes one (no idle gap for this process's answer handling and the
#: next publish), while the chunks still go on the topic in the file's order.
IMPORT_IN_FLIGHT = 2
#: An import still "running" with no progress for this long is reported as partial (its
#: process ended: browser closed, service restarted); uploading the file again resumes it.
STALE_IMPORT_S = 120.0
#: How long a chunk's command may stay pending (202) before the import stops as partial.
CHUNK_WAIT_S = 120.0
#: Lines per piece of a streamed CSV answer (an export, an import's problems).
CSV_PIECE = 2000
STATES = tuple(s.value for s in RecipientStatus)
#: An import's progress: bytes and rows read, chunks recorded.
_PROGRESS = (
    "UPDATE audience_imports SET bytes_read = $2, rows_read = $3, chunks_done = $4,"
    " updated_at = now() WHERE import_id = $1"
)


def import_key(import_id: UUID, chunk: int) -> str:
    """The Idempotency-Key of an import's chunk: a resumed import sends the same keys, and the
    API's idempotency rows answer chunks already applied with their first outcome."""
    return f"import:{import_id}:{chunk}"


@dataclass
class ImportSummary:
    """Progress and summary of one import (the sum of its chunks' answers)."""

    import_id: UUID
    message_id: UUID
    kind: str
    state: str
    file_name: str | None
    started_by: str
    started_at: Any
    updated_at: Any
    finished_at: Any
    total_bytes: int | None
    bytes_read: int
    rows_read: int
    chunks_done: int
    error: str | None
    counts: dict[str, int] = field(default_factory=dict)
    problems: int = 0

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        for k in ("import_id", "message_id"):
            out[k] = str(out[k])
        for k in ("started_at", "updated_at", "finished_at"):
            out[k] = None if out[k] is None else out[k].isoformat()
        out["progress"] = (
            None if not self.total_bytes else round(min(1.0, self.bytes_read / self.total_bytes), 4)
        )
        return out


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of an import on its way to the core: whose import, which chunk, its rows.

    ``rows`` are the chunk's valid rows (one `AddRecipients` / `RemoveRecipients` command);
    ``invalid`` the rows the parser refused that stand among them in the file (recorded as the
    chunk's problems, never sent)."""

    account: str
    actor: Actor
    message_id: UUID
    import_id: UUID
    kind: str
    number: int
    rows: tuple[ParsedRow, ...]
    invalid: tuple[InvalidRow, ...] = ()


def _actor_text(actor: Actor) -> str:
    return actor.display_name or actor.user_id or actor.service or actor.account_id


class AudienceService:
    """Previews, imports, test addresses, test sends and exports of one service process."""

    def __init__(
        self,
        executor: Executor,
        views: PostgresViews,
        store: IdempotencyStore,
        *,
        smtp: Any = None,
        message_id_domain: str = "mailctl.invalid",
        chunk_size: int = IMPORT_CHUNK,
        chunks_in_flight: int = IMPORT_IN_FLIGHT,
    ) -> None:
        self.executor = executor
        self.views = views
        self.store = store
        self.smtp = smtp  # an SmtpPool (services/delivery/smtp.py), made lazily
        self.domain = message_id_domain
        self.chunk_size = chunk_size
        self.chunks_in_flight = chunks_in_flight

    async def _pool(self) -> asyncpg.Pool:
        return await self.views.pool()

    # ------------------------------------------------------------------ content and contacts

    async def content(self, account: str, message_id: UUID) -> Content:
        """The message's content as its last draft event holds it (content changes only in
        draft), or 404."""
        draft = await self.views.draft(account, message_id)
        if draft is None:
            raise ProblemError(Problem(code="not_found", message=f"message {message_id} not found"))
        return Content.model_validate(draft["content"])

    async def contacts(
        self, account: str, message_id: UUID, contact_id: str | None, limit: int
    ) -> list[Contact]:
        pool = await self._pool()
        args: list[Any] = [message_id, account]
        where = "r.message_id = $1"
        if contact_id is not None:
            args.append(contact_id)
            where += " AND r.contact_id = $3"
            order = ""
        else:
            order = " ORDER BY r.added_at, r.contact_id"
        rows = await pool.fetch(
            "SELECT r.contact_id, r.email, r.time_zone, r.attributes FROM view_recipients r"
            " JOIN view_messages m ON m.message_id = r.message_id AND m.account_id = $2"
            f" WHERE {where}{order} LIMIT {int(limit)}",
            *args,
        )
        return [
            Contact.model_construct(
                contact_id=r["contact_id"],
                email=r["email"],
                time_zone=r["time_zone"],
                attributes=json.loads(r["attributes"]) if r["attributes"] else {},
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ preview

    async def preview(
        self, account: str, message_id: UUID, contact_id: str | None, limit: int = 3
    ) -> list[dict[str, Any]]:
        """The mail as each chosen contact receives it (by id, or the first of the audience)."""
        content = await self.content(account, message_id)
        chosen = await self.contacts(account, message_id, contact_id, limit)
        if contact_id is not None and not chosen:
            raise ProblemError(
                Problem(
                    code="not_found",
                    message=f"contact {contact_id} is not in the audience of message {message_id}",
                )
            )
        return [preview_of(content, c) for c in chosen]

    # ------------------------------------------------------------------ imports

    async def import_status(self, account: str, import_id: UUID) -> ImportSummary | None:
        pool = await self._pool()
        row = await pool.fetchrow(
            "SELECT * FROM audience_imports WHERE import_id = $1 AND account_id = $2",
            import_id,
            account,
        )
        if row is None:
            return None
        counts: dict[str, int] = {}
        for chunk in await pool.fetch(
            "SELECT counts FROM audience_import_chunks WHERE import_id = $1", import_id
        ):
            for name, n in json.loads(chunk["counts"]).items():
                counts[name] = counts.get(name, 0) + int(n)
        invalid = await pool.fetchval(
            "SELECT count(*) FROM audience_import_problems WHERE import_id = $1 AND kind ="
            " 'invalid'",
            import_id,
        )
        problems = await pool.fetchval(
            "SELECT count(*) FROM audience_import_problems WHERE import_id = $1", import_id
        )
        counts["invalid"] = int(invalid)
        state = row["state"]
        if state == "running" and time.time() - row["updated_at"].timestamp() > STALE_IMPORT_S:
            state = "partial"  # its process ended mid-way (browser closed, restart)
        data = {k: v for k, v in dict(row).items() if k not in ("account_id", "state")}
        return ImportSummary(state=state, counts=counts, problems=int(problems), **data)

    async def imports_of(self, account: str, message_id: UUID) -> list[ImportSummary]:
        pool = await self._pool()
        ids = await pool.fetch(
            "SELECT import_id FROM audience_imports WHERE account_id = $1 AND message_id = $2"
            " ORDER BY started_at DESC LIMIT 20",
            account,
            message_id,
        )
        found = [await self.import_status(account, r["import_id"]) for r in ids]
        return [s for s in found if s is not None]

    async def problems_csv(self, account: str, import_id: UUID) -> AsyncIterator[bytes]:
        """The rows an import did not apply, as CSV (line, kind, contact_id, reason)."""
        async for piece in self._stream_csv(
            account,
            "SELECT account_id FROM audience_imports WHERE import_id = $1",
            import_id,
            f"import {import_id} not found",
            b"line,kind,contact_id,reason\r\n",
            "SELECT line, kind, contact_id, reason FROM audience_import_problems"
            " WHERE import_id = $1 ORDER BY line, kind",
            [import_id],
            lambda r: [str(r["line"]), r["kind"], r["contact_id"] or "", r["reason"]],
        ):
            yield piece

    async def run_import(
        self,
        *,
        account: str,
        actor: Actor,
        message_id: UUID,
        import_id: UUID,
        kind: str,
        body: AsyncIterable[bytes],
        mapping: Mapping[str, str] | None = None,
        file_name: str | None = None,
        total_bytes: int | None = None,
    ) -> ImportSummary:
        """Stream a CSV into the message's audience in chunks (or remove its contacts).

        The same import id again (the same file) resumes: every chunk is sent again with its
        own key, and the API's idempotency rows answer the chunks already applied with their
        first outcome, so nothing is applied twice.
        """
        await self.content(account, message_id)  # 404 before reading a byte
        pool = await self._pool()
        owner = await pool.fetchval(
            """INSERT INTO audience_imports (import_id, account_id, message_id, kind, state,
                   file_name, started_by, total_bytes)
               VALUES ($1, $2, $3, $4, 'running', $5, $6, $7)
               ON CONFLICT (import_id) DO UPDATE
                  SET state = 'running', updated_at = now(), finished_at = NULL, error = NULL,
                      bytes_read = 0, rows_read = 0, total_bytes = EXCLUDED.total_bytes
                WHERE audience_imports.account_id = EXCLUDED.account_id
                  AND audience_imports.message_id = EXCLUDED.message_id
                  AND audience_imports.kind = EXCLUDED.kind
               RETURNING account_id""",
            import_id,
            account,
            message_id,
            kind,
            file_name,
            _actor_text(actor),
            total_bytes,
        )
        if owner is None:
            raise ProblemError(
                Problem(
                    code="already_exists",
                    message=f"import {import_id} exists for another message or kind",
                )
            )
        parser = CsvContacts(mapping, remove=kind == "remove")
        chunk: list[ParsedRow] = []
        problems: list[InvalidRow] = []
        number = 0
        last_progress = 0.0
        error: str | None = None
        # Chunks in flight while the next one is parsed: the processor decides chunk n while
        # this process reads chunk n + 1 (two cores at work instead of one). Chunk n + 1 is
        # handed to the executor only once chunk n is published, so the topic holds the chunks
        # in the file's order (which of two rows with one address is the duplicate stays the
        # file's answer); each is a command of its own key, applied once whatever the overlap.
        in_flight: deque[asyncio.Task[None]] = deque()
        published = asyncio.Event()
        published.set()

        async def send(rows: list[ParsedRow], invalid: list[InvalidRow]) -> None:
            nonlocal number, published
            while len(in_flight) >= self.chunks_in_flight:
                await in_flight.popleft()
            await published.wait()  # the previous chunk is on the topic (or never will be)
            published = asyncio.Event()
            job = ChunkJob(
                account=account,
                actor=actor,
                message_id=message_id,
                import_id=import_id,
                kind=kind,
                number=number,
                rows=tuple(rows),
                invalid=tuple(invalid),
            )
            task = asyncio.create_task(self._send_chunk(job, parser, published=published))
            # Set when done too: a chunk of invalid rows only publishes nothing, a failed one
            # never will.
            task.add_done_callback(_setter(published))
            in_flight.append(task)
            number += 1

        async def take(rows: Iterable[ParsedRow | InvalidRow]) -> None:
            # The rows of one piece of the file (or of its end) into chunks of chunk_size
            # valid rows; the invalid rows go with the chunk they stand in.
            nonlocal chunk, problems
            for row in rows:
                if isinstance(row, InvalidRow):
                    problems.append(row)
                    continue
                chunk.append(row)
                if len(chunk) >= self.chunk_size:
                    await send(chunk, problems)
                    chunk, problems = [], []

        try:
            try:
                async for piece in body:
                    await take(parser.feed(piece))
                    now = time.monotonic()
                    if now - last_progress > 0.5:
                        last_progress = now
                        await self._progress(import_id, parser, number)
                await take(parser.finish())
                if parser.header is None:
                    raise HeaderError("the file is empty: a header row is needed")
                if chunk or problems:
                    await send(chunk, problems)
            finally:
                # The chunks already published are always recorded, even when the upload broke.
                outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
                in_flight.clear()
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
        except HeaderError as bad:
            error = str(bad)
        except ProblemError as refused:
            error = refused.problem.message
        except Exception as broken:  # the client went away, the stream broke...
            error = f"the upload stopped: {type(broken).__name__}"
            log.warning("import interrupted", import_id=str(import_id), error=repr(broken))
        await pool.execute(
            """UPDATE audience_imports SET state = $2, error = $3, bytes_read = $4,
                   rows_read = $5, chunks_done = $6, updated_at = now(), finished_at = now()
                WHERE import_id = $1""",
            import_id,
            "done" if error is None else "partial",
            error,
            parser.bytes_read,
            parser.rows_read,
            number,
        )
        summary = await self.import_status(account, import_id)
        assert summary is not None
        log.info(
            "import finished",
            import_id=str(import_id),
            message_id=str(message_id),
            state=summary.state,
            rows=parser.rows_read,
            chunks=number,
            error=error,
        )
        return summary

    async def _progress(self, import_id: UUID, parser: CsvContacts, chunks: int) -> None:
        pool = await self._pool()
        await pool.execute(
            _PROGRESS,
            import_id,
            parser.bytes_read,
            parser.rows_read,
            chunks,
        )

    async def _send_chunk(
        self, job: ChunkJob, parser: CsvContacts, *, published: asyncio.Event | None = None
    ) -> None:
        rows, invalid, import_id, number = job.rows, job.invalid, job.import_id, job.number
        lines = {r.contact.contact_id: r.line for r in rows}
        counts: dict[str, int] = {}
        found: list[tuple[int, str, str | None, str]] = [
            (p.line, "invalid", p.contact_id, p.reason) for p in invalid
        ]
        if rows:
            answer = await self._execute_chunk(job, published=published)
            audience = answer.get("audience") or {}
            counts = {k: v for k, v in (audience.get("counts") or {}).items() if k != "invalid"}
            for name in ("duplicate_address", "duplicate_in_chunk", "not_present"):
                for cid in audience.get(name, ()):
                    found.append((lines.get(cid, 0), name, cid, name.replace("_", " ")))
            for refused in audience.get("refused", ()):
                cid = refused["contact_id"]
                found.append((lines.get(cid, 0), "refused", cid, refused["reason"]))
        first = min([r.line for r in rows] + [p.line for p in invalid])
        last = max([r.line for r in rows] + [p.line for p in invalid])
        pool = await self._pool()
        async with pool.acquire() as conn, conn.transaction():
            # Upserts: a resumed import writes the same chunk again, counted once.
            await conn.execute(
                """INSERT INTO audience_import_chunks (import_id, chunk, first_line, last_line,
                       counts) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (import_id, chunk) DO UPDATE SET counts = EXCLUDED.counts""",
                import_id,
                number,
                first,
                last,
                json.dumps(counts),
            )
            if found:
                await conn.executemany(
                    """INSERT INTO audience_import_problems (import_id, line, kind, contact_id,
                           reason) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
                    [(import_id, *f) for f in found],
                )
            await conn.execute(
                _PROGRESS,
                import_id,
                parser.bytes_read,
                parser.rows_read,
                number + 1,
            )

    async def _execute_chunk(
        self, job: ChunkJob, *, published: asyncio.Event | None = None
    ) -> dict[str, Any]:
        account, message_id, number, rows = job.account, job.message_id, job.number, job.rows
        key = import_key(job.import_id, number)
        command_id = command_id_for(account, key)
        command: Command
        if job.kind == "remove":
            ids = [r.contact.contact_id for r in rows]
            command = RemoveRecipients.model_construct(
                type="RemoveRecipients",
                schema_version=1,
                command_id=command_id,
                message_id=message_id,
                contact_ids=tuple(ids),
            )
            body: dict[str, Any] = {
                "import_id": str(job.import_id),
                "chunk": number,
                "contact_ids": ids,
            }
            method = "DELETE"
        else:
            contacts = tuple(r.contact for r in rows)
            # Validated row by row by the parser: not validated again (a million rows).
            command = AddRecipients.model_construct(
                type="AddRecipients",
                schema_version=1,
                command_id=command_id,
                message_id=message_id,
                contacts=contacts,
            )
            # What makes the request "the same request" for its Idempotency-Key: the chunk's
            # contacts, as a digest of their JSON (one fast dump instead of a canonical JSON
            # of 10,000 dicts); the key's import: prefix keeps it apart from API callers' keys.
            digest = hashlib.sha256(
                contacts_json(contacts)  # pydantic's bytes, written by orjson (schemas/fast.py)
            ).hexdigest()
            body = {"import_id": str(job.import_id), "chunk": number, "contacts_sha256": digest}
            method = "POST"
        response = await self.executor.execute(
            CommandRequest(
                account=account,
                key=key,
                actor=job.actor,
                correlation_id=None,
                method=method,
                path=f"/v1/messages/{message_id}/recipients",
                body=body,
                command=command,
                published=published,
            )
        )
        answer: dict[str, Any] = json.loads(bytes(response.body))
        status = response.status_code
        deadline = time.monotonic() + CHUNK_WAIT_S
        while status == 202 and time.monotonic() < deadline:
            # The processor is slow: wait for the stored outcome (the executor stores it).
            await asyncio.sleep(0.2)
            claim = await self.store.outcome(account, command_id)
            if claim is not None and claim.response_status is not None:
                status, answer = claim.response_status, dict(claim.response_body or {})
        if status != 200:
            detail = answer.get("detail", answer)
            message = detail.get("message") if isinstance(detail, dict) else None
            raise ProblemError(
                Problem(
                    code="not_allowed" if status == 409 else "unavailable",
                    message=f"chunk {number} was not applied ({status}): {message or detail}",
                )
            )
        return answer

    # ------------------------------------------------------------------ test addresses

    async def test_addresses(self, account: str) -> list[dict[str, Any]]:
        pool = await self._pool()
        rows = await pool.fetch(
            "SELECT address, added_at, added_by FROM test_addresses WHERE account_id = $1"
            " ORDER BY address",
            account,
        )
        return [
            {
                "address": r["address"],
                "added_at": r["added_at"].isoformat(),
                "added_by": r["added_by"],
            }
            for r in rows
        ]

    async def add_test_address(self, account: str, actor: Actor, address: str) -> None:
        pool = await self._pool()
        await pool.execute(
            "INSERT INTO test_addresses (account_id, address, added_by) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            account,
            normalize_address(address),
            _actor_text(actor),
        )

    async def remove_test_address(self, account: str, address: str) -> bool:
        pool = await self._pool()
        status = await pool.execute(
            "DELETE FROM test_addresses WHERE account_id = $1 AND address = $2",
            account,
            normalize_address(address),
        )
        return bool(status.endswith(" 1"))

    async def allowed(self, account: str, addresses: Sequence[str]) -> list[str]:
        """The addresses of ``addresses`` that are not on the account's test list."""
        pool = await self._pool()
        rows = await pool.fetch(
            "SELECT address FROM test_addresses WHERE account_id = $1"
            " AND address = ANY($2::text[])",
            account,
            [normalize_address(a) for a in addresses],
        )
        known = {r["address"] for r in rows}
        return [a for a in addresses if normalize_address(a) not in known]

    # ------------------------------------------------------------------ test sends

    async def test_send(
        self,
        *,
        account: str,
        actor: Actor,
        message_id: UUID,
        addresses: Sequence[str],
        contact_id: str | None,
        key: str | None,
    ) -> tuple[int, dict[str, Any]]:
        """Record the test send through the core, then hand each address to SMTP.

        The hand-off happens here, after the `TestSendRequested` event is committed: a test send
        is outside the never-twice promise (it has no ledger row, no send id of the audience),
        so a crash between the event and SMTP loses at most this test, which the operator sees
        and repeats; the delivery worker stays a worker of the audience only.
        """
        if not addresses or len(addresses) > MAX_TEST_ADDRESSES:
            raise ProblemError(
                Problem(
                    code="invalid",
                    field="addresses",
                    message=f"give 1 to {MAX_TEST_ADDRESSES} test addresses",
                )
            )
        unknown = await self.allowed(account, addresses)
        if unknown:
            raise ProblemError(
                Problem(
                    # 403, not 422: the request is well formed, the account does not allow it
                    # (the allowed addresses are the account's settings, not the document's).
                    code="forbidden",
                    field="addresses",
                    message="not on the account's allowed test addresses: " + ", ".join(unknown),
                )
            )
        full_key = f"test:{key}" if key else None
        command_id = command_id_for(account, full_key)
        command = SendTestMessage(
            command_id=command_id,
            message_id=message_id,
            addresses=tuple(addresses),
            contact_id=contact_id,
        )
        response = await self.executor.execute(
            CommandRequest(
                account=account,
                key=full_key,
                actor=actor,
                correlation_id=None,
                method="POST",
                path=f"/v1/messages/{message_id}/test-sends",
                body={"addresses": list(addresses), "contact_id": contact_id},
                command=command,
            )
        )
        answer: dict[str, Any] = json.loads(bytes(response.body))
        if response.status_code != 200:
            return response.status_code, answer
        if response.headers.get("Idempotent-Replayed") == "true" or not answer.get("events"):
            return 200, {**answer, "test_sends": []}  # a repeat: sent the first time
        await self._caught_up(account, message_id, int(answer["sequence"]))
        content = await self.content(account, message_id)
        content = content.model_copy(update={"subject": f"[TEST] {content.subject}"})
        base: Contact | None = None
        if contact_id is not None:
            found = await self.contacts(account, message_id, contact_id, 1)
            base = found[0] if found else None
        results = []
        for address in dict.fromkeys(a.strip() for a in addresses):
            contact = (
                base.model_copy(update={"email": address})
                if base is not None
                else Contact.model_construct(
                    contact_id="test", email=address, time_zone=None, attributes={}
                )
            )
            mail = compose(
                send_id=uuid5(command_id, address),
                message_id=message_id,
                content=content,
                contact=contact,
                domain=self.domain,
            )
            # Marked as a test twice: in the subject and in a header a filter can match.
            marked = replace(mail, data=b"X-Mailctl-Test: true\r\n" + mail.data)
            try:
                outcome = await self._smtp().deliver(marked)
                ok = outcome.verdict == "delivered"
                results.append(
                    {"address": address, "sent": ok, "reason": None if ok else outcome.detail}
                )
            except Exception as error:  # the transport is unreachable: say so, per address
                results.append({"address": address, "sent": False, "reason": repr(error)})
        log.info(
            "test send",
            message_id=str(message_id),
            command_id=str(command_id),
            addresses=len(results),
            sent=sum(r["sent"] for r in results),
        )
        return 200, {**answer, "test_sends": results}

    def _smtp(self) -> Any:
        if self.smtp is None:
            raise ProblemError(
                Problem(code="unavailable", message="no SMTP transport is configured")
            )
        return self.smtp

    async def _caught_up(self, account: str, message_id: UUID, sequence: int) -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            seen = await self.views.sequence_of(account, message_id)
            if seen is not None and seen >= sequence:
                return
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ export

    async def export_csv(
        self, account: str, message_id: UUID, states: Sequence[str] | None
    ) -> AsyncIterator[bytes]:
        """The message's recipients as CSV, streamed from a server-side cursor, in a shape the
        import reads back: contact_id, email, time_zone, the state and reason (``mailctl_*``,
        ignored by an import) and the merge attributes as one JSON column ``attributes`` (the
        set of attribute names is not known before the last row)."""
        args: list[Any] = [message_id]
        where = "message_id = $1"
        if states:
            args.append(list(states))
            where += " AND state = ANY($2::text[])"
        async for piece in self._stream_csv(
            account,
            "SELECT account_id FROM view_messages WHERE message_id = $1",
            message_id,
            f"message {message_id} not found",
            # mailctl_* columns are the export's own: an import of this file ignores them.
            b"contact_id,email,time_zone,mailctl_state,mailctl_reason,attributes\r\n",
            "SELECT contact_id, email, time_zone, state, reason, attributes"
            f" FROM view_recipients WHERE {where} ORDER BY contact_id",
            args,
            lambda r: [
                r["contact_id"],
                r["email"],
                r["time_zone"] or "",
                r["state"],
                r["reason"] or "",
                r["attributes"] or "",
            ],
        ):
            yield piece

    async def _stream_csv(
        self,
        account: str,
        owner_query: str,
        owner_key: UUID,
        missing: str,
        header: bytes,
        query: str,
        args: Sequence[Any],
        cells: Callable[[asyncpg.Record], Sequence[str]],
    ) -> AsyncIterator[bytes]:
        """The rows of `query` as CSV after `header`, from a server-side cursor, in pieces of
        `CSV_PIECE` lines; a 404 (`missing`) when `owner_query` does not name `account` as the
        owner of `owner_key` (another account's import or message is not found, not refused)."""
        pool = await self._pool()
        # A cursor lives in a transaction: the owner check and the rows read one snapshot.
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(owner_query, owner_key) != account:
                raise ProblemError(Problem(code="not_found", message=missing))
            yield header
            buffer: list[bytes] = []
            async for r in conn.cursor(query, *args, prefetch=5000):
                buffer.append(_csv_line(cells(r)))
                if len(buffer) >= CSV_PIECE:
                    yield b"".join(buffer)
                    buffer = []
            if buffer:
                yield b"".join(buffer)


def preview_of(content: Content, contact: Contact) -> dict[str, Any]:
    """One contact's preview: the mail as delivery renders it, and every merge field's fate."""
    mail = render(content, contact)
    return {
        "contact_id": contact.contact_id,
        "email": contact.email,
        "from": content.from_address,
        "from_name": content.from_name,
        "subject": mail.subject,
        # ``body`` / ``html``: the answer of the single-body era (the main body; whether it is
        # HTML), kept for old clients; ``text_body`` / ``html_body``: both parts (None: no part).
        "body": mail.body,
        "html": mail.text is None,
        "text_body": mail.text,
        "html_body": mail.html,
        "fields": [
            {"name": f.name, "value": f.value, "fallback": f.fallback, "missing": f.missing}
            for f in merge_fields(content, contact)
        ],
    }


def _setter(event: asyncio.Event) -> Callable[[asyncio.Task[None]], None]:
    return lambda _: event.set()


def _csv_line(cells: Sequence[str]) -> bytes:
    out = []
    for cell in cells:
        if any(ch in cell for ch in ',"\r\n') or cell != cell.strip():
            cell = '"' + cell.replace('"', '""') + '"'
        out.append(cell)
    return (",".join(out) + "\r\n").encode()
