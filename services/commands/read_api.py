"""The read API: the views the projections build (docs/projections.md), under /v1, with the same
authentication and account isolation as the commands. Another account's message answers 404
exactly like an unknown one.

Read-your-writes: a command's answer carries the message's `sequence`; pass it as
`min_sequence` (the lists: `wait_for=<message_id>:<sequence>`) and the read waits (up to
`wait_s`) until the view has caught up with it, or answers 409 `not_caught_up` with the sequence
the view is at (the view is not yet at the state asked for: retry; not a 5xx, nothing failed); a
message the view does not hold at all by then answers 404, like an unknown one.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AfterValidator, BaseModel, Field

from core import MessageStatus, RecipientStatus
from core.views import (
    LISTS,
    NOT_DELIVERED,
    ZoneTime,
    not_sent_reason,
    remaining_count,
    zones_to_skip,
)
from schemas.text import ONE_LINE, UnsafeTextError
from schemas.times import LocalDateTime
from services.commands.errors import ERROR_RESPONSES, ErrorBody, Problem, ProblemError

__all__ = ["ViewReader", "message_view", "read_routes"]

#: The largest number the views store (Postgres `integer`): sequences, offsets and cursors are
#: bounded by it in the schema, so a larger one is a 422 naming the parameter, never a 500.
PG_INT_MAX = 2**31 - 1

#: The longest a read waits for a view to catch up with `min_sequence` (by default; the setting
#: `read_max_wait_s`), and how long when `wait_s` is not given.
MAX_WAIT_S = 30.0
DEFAULT_WAIT_S = 5.0
_POLL_S = 0.05
#: `wait_for` of the lists: a message id and one of its sequences (at most 9 digits, so always
#: inside `PG_INT_MAX`).
WAIT_FOR_PATTERN = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[1-9][0-9]{0,8}$"
)

ListName = Literal["sent", "scheduled", "drafts"]


def _no_nul(value: str | None) -> str | None:
    # Postgres text cannot hold NUL: such a value can match nothing, and asking would fail.
    if value is not None and "\x00" in value:
        raise UnsafeTextError("must not hold NUL (U+0000)")
    return value


#: A query parameter read as text: one line (schemas/text.py), so a NUL or a control character
#: is a 422 naming the parameter, never a database error.
SearchText = Annotated[str, ONE_LINE] | None
#: `after` echoes a contact id the view gave: an old history may hold one with a control
#: character (accepted before the input rules), so only NUL, which no view can hold, is refused.
ContactCursor = Annotated[str | None, AfterValidator(_no_nul)]


class ViewReader(Protocol):
    """What the read API needs from the views (Postgres: services/projections/reader.py)."""

    async def list_messages(
        self,
        account: str,
        view: str,
        statuses: list[str],
        *,
        search: str | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]: ...

    async def message(self, account: str, message_id: UUID) -> dict[str, Any] | None: ...

    async def sequence_of(self, account: str, message_id: UUID) -> int | None: ...

    async def sequences_of(self, keys: list[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
        """The last sequence of each (account, message id) the views hold; absent ones left out
        (one query for every read waiting in the process: `SequenceWatch`)."""
        ...

    async def recipients(
        self,
        account: str,
        message_id: UUID,
        states: list[str] | None,
        *,
        after: str | None,
        limit: int,
        search: str | None = None,
    ) -> list[dict[str, Any]]: ...

    async def history(
        self, account: str, message_id: UUID, *, after: int, limit: int
    ) -> list[dict[str, Any]]: ...


class ActorView(BaseModel):
    kind: Literal["user", "service"]
    account_id: str
    user_id: str | None = None
    service: str | None = None
    display_name: str | None = Field(default=None, description="an operator's name (web UI)")


class ZoneTimeView(BaseModel):
    zone: str
    due_at: datetime
    pending: int


class MessageView(BaseModel):
    """One message as the lists and its details page show it."""

    message_id: UUID
    status: MessageStatus
    name: str
    subject: str
    from_address: str
    from_name: str | None
    mode: str
    send_at: datetime | None = Field(
        description="the send instant (recipient_timezone: in the account's zone)"
    )
    send_at_local: LocalDateTime | None = Field(
        description="recipient_timezone: the wall-clock time (no UTC offset)"
    )
    send_now: bool | None
    default_time_zone: str | None
    throttle_batch_size: int | None
    throttle_interval_seconds: int | None
    end_at: datetime | None = Field(description="throttle end date")
    missed_zone_policy: str
    release_rate: int
    copied_from: UUID | None
    created_at: datetime
    created_by: ActorView
    started_at: datetime | None
    paused_at: datetime | None = Field(description="paused since (while paused)")
    paused_by: ActorView | None
    pause_reason: str | None
    canceled_at: datetime | None
    canceled_by: ActorView | None
    cancel_reason: str | None
    sent_at: datetime | None
    audience: int = Field(description="contacts the message is for: not removed, not excluded")
    pending: int
    released: int
    delivered: int
    failed: int
    skipped: int
    removed: int
    excluded: int
    unknown: int
    remaining: int = Field(
        description="not sent (yet): pending and in flight; of a canceled message the "
        "recipients its list shows as not sent (pending, `reason: canceled`) and in flight"
    )
    current_batch: int | None
    batch_remaining: int | None
    next_batch_at: datetime | None
    zones_pending: list[str] | None
    zones_done: list[str] | None
    first_release_at: datetime | None = Field(
        default=None,
        description="when it really starts releasing: recipient_timezone, the first zone of "
        "the audience to reach the send time (`send_at` is the send time in the account's "
        "zone); else the send time",
    )
    zone_times: list[ZoneTimeView] | None = Field(
        default=None,
        description="recipient_timezone: each zone's due time and pending count, first due first",
    )
    zones_to_skip: list[str] | None = Field(
        default=None,
        description="paused under the skip policy: the zones a resume now would skip (pending, "
        "due since the pause)",
    )
    last_sequence: int = Field(description="the sequence of the last event the view includes")
    updated_at: datetime


class MessageList(BaseModel):
    items: list[MessageView]
    limit: int
    offset: int
    next_offset: int | None = Field(description="pass as `offset` for the next page")


class RecipientView(BaseModel):
    contact_id: str
    email: str
    time_zone: str | None
    state: RecipientStatus
    reason: str | None = Field(
        description="failed/skipped/excluded: why; pending in a canceled message: `canceled`; "
        "released and waiting to be tried again after a transient (4xx) refusal: "
        "`retrying after: <the last refusal>`"
    )
    batch: int | None
    added_at: datetime
    released_at: datetime | None
    state_at: datetime = Field(description="when the contact entered its state")
    sequence: int


class RecipientPage(BaseModel):
    items: list[RecipientView]
    next_after: str | None = Field(description="pass as `after` for the next page")


class HistoryEntry(BaseModel):
    sequence: int
    event_id: UUID
    type: str
    occurred_at: datetime
    actor: ActorView
    causation_id: UUID
    correlation_id: UUID
    detail: dict[str, Any] = Field(description="the event's fields; contact lists as counts")


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next_after: int | None


def message_view(row: dict[str, Any], now: datetime | None = None) -> MessageView:
    """One row of the messages view as the API shows it; ``now`` (the shell's clock, by default
    the current time) decides which zones a resume now would skip."""
    remaining = remaining_count(row["status"], row["pending"], row["released"])
    data = {k: v for k, v in row.items() if k not in ("account_id", "zone_times")}
    times = (
        None
        if row.get("zone_times") is None
        else [
            ZoneTime(z["zone"], datetime.fromisoformat(z["due_at"]), int(z["pending"]))
            for z in row["zone_times"]
        ]
    )
    skip = zones_to_skip(
        row["status"],
        row["missed_zone_policy"],
        row["paused_at"],
        times,
        now if now is not None else datetime.now(UTC),
    )
    return MessageView(
        **data,
        remaining=remaining,
        zone_times=None if times is None else [ZoneTimeView(**asdict(z)) for z in times],
        zones_to_skip=skip,
    )


NOT_CAUGHT_UP: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "`not_caught_up`: the view holds the message but did not reach "
        "`min_sequence` in time (a message the view does not hold at all answers 404)",
    }
}


Key = tuple[str, UUID]


class SequenceWatch:
    """Every read of the process that waits for `min_sequence`, polled together: one query per
    poll interval for all of them (`ViewReader.sequences_of`), not one per waiting read.

    With a query per read every 50 ms, 200 waiting reads were 4,000 queries a second through a
    pool of four connections: under load the reads waited longer, so more of them waited, so
    there were more queries (docs/api.md "Latency"). Here the cost of a poll grows with the
    number of waiting reads by a row each, and a read is answered at the first poll after the
    view caught up (a poll at once when none runs: an idle read is not delayed)."""

    def __init__(self, views: ViewReader, poll_s: float = _POLL_S) -> None:
        self.views = views
        self.poll_s = poll_s
        self._waiting: dict[Key, list[tuple[int, asyncio.Future[int | None]]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def reached(self, key: Key, min_sequence: int, wait_s: float) -> tuple[bool, int | None]:
        """Wait until the view of `key` holds `min_sequence` or `wait_s` passed: (reached, the
        sequence seen last, None when the view holds nothing of the message)."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        entry = (min_sequence, future)
        self._waiting.setdefault(key, []).append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            seen = await asyncio.wait_for(asyncio.shield(future), wait_s)
            return True, seen
        except TimeoutError:
            # One last look of its own: the answer says where the view is.
            seen = await self.views.sequence_of(*key)
            return seen is not None and seen >= min_sequence, seen
        finally:
            entries = self._waiting.get(key)
            if entries is not None and entry in entries:
                entries.remove(entry)
                if not entries:
                    del self._waiting[key]

    async def _poll(self) -> None:
        while self._waiting:
            keys = list(self._waiting)
            try:
                found = await self.views.sequences_of(keys)
            except Exception:  # Postgres away for a moment: the reads time out, or a poll works
                found = {}
            for key in keys:
                seen = found.get(key)
                if seen is None:
                    continue
                for min_sequence, future in self._waiting.get(key, []):
                    if seen >= min_sequence and not future.done():
                        future.set_result(seen)
            await asyncio.sleep(self.poll_s)


def _not_found() -> HTTPException:
    return HTTPException(404, "no such message")


def read_routes(
    account: Callable[..., Awaitable[str]], views: ViewReader, max_wait_s: float = MAX_WAIT_S
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["views"], responses=ERROR_RESPONSES)
    Account = Annotated[str, Depends(account)]
    MinSequence = Annotated[
        int | None,
        Query(
            ge=1,
            le=PG_INT_MAX,
            description="read-your-writes: wait until the view includes this sequence number "
            "of the message (a command's answer carries it)",
        ),
    ]
    # The lists' read-your-writes: one parameter naming the message and its sequence, so the
    # document states the rule (a sequence alone names nothing to wait for).
    WaitFor = Annotated[
        str | None,
        Query(
            pattern=WAIT_FOR_PATTERN,
            description="read-your-writes: `<message_id>:<sequence>`, wait until the view "
            "includes this sequence of the message (a command's answer carries both)",
        ),
    ]
    default_wait = min(DEFAULT_WAIT_S, max_wait_s)
    WaitS = Annotated[
        float, Query(gt=0, le=max_wait_s, description="how long to wait for `min_sequence`")
    ]

    watch = SequenceWatch(views)

    async def caught_up(
        who: str, message_id: UUID, min_sequence: int | None, wait_s: float
    ) -> None:
        """Wait until the view of the message has `min_sequence` (409 when it has not in time,
        404 when the view holds nothing of it by then). Unknown and other accounts' messages
        wait like a message not projected yet and then answer the same 404: the answer
        says nothing about whether it exists."""
        if min_sequence is None:
            return
        reached, seen = await watch.reached((who, message_id), min_sequence, wait_s)
        if reached:
            return
        if seen is None:
            # The view holds nothing of it: no such message (in this account).
            raise _not_found()
        raise ProblemError(
            Problem(
                code="not_caught_up",
                message=f"the view has not reached sequence {min_sequence} of the "
                f"message within {wait_s:g}s; retry",
                min_sequence=min_sequence,
                sequence=seen,
            )
        )

    def list_route(view: ListName, title: str) -> None:
        allowed = LISTS[view]
        # The statuses this list shows, as the parameter's enum: another is not schema-valid.
        shown: Any = Literal.__getitem__(tuple(allowed))

        async def handler(
            who: Account,
            status: Annotated[
                list[shown] | None,
                Query(description=f"only these statuses (of: {', '.join(allowed)})"),
            ] = None,
            q: Annotated[SearchText, Query(max_length=200, description="name contains")] = None,
            limit: Annotated[int, Query(ge=1, le=200)] = 50,
            offset: Annotated[int, Query(ge=0, le=PG_INT_MAX)] = 0,
            wait_for: WaitFor = None,
            wait_s: WaitS = default_wait,
        ) -> MessageList:
            if wait_for is not None:
                message_id, sequence = wait_for.split(":")
                await caught_up(who, UUID(message_id), int(sequence), wait_s)
            statuses = [str(s) for s in status] if status else list(allowed)
            if any(s not in allowed for s in statuses):
                raise HTTPException(422, f"status: the {view} list shows {', '.join(allowed)}")
            rows = await views.list_messages(
                who, view, statuses, search=q, limit=limit + 1, offset=offset
            )
            more = len(rows) > limit
            return MessageList(
                items=[message_view(r) for r in rows[:limit]],
                limit=limit,
                offset=offset,
                next_offset=offset + limit if more else None,
            )

        router.add_api_route(
            f"/views/{view}",
            handler,
            methods=["GET"],
            summary=title,
            response_model=MessageList,
            responses=NOT_CAUGHT_UP,
        )

    list_route("sent", "Email Sent: sending, paused, canceled and sent messages")
    list_route("scheduled", "Scheduled messages")
    list_route("drafts", "Drafts, including unscheduled messages and copies")

    @router.get(
        "/messages/{message_id}",
        summary="One message's details (the hover details included)",
        responses=NOT_CAUGHT_UP,
    )
    async def message_details(
        who: Account,
        message_id: UUID,
        min_sequence: MinSequence = None,
        wait_s: WaitS = default_wait,
    ) -> MessageView:
        await caught_up(who, message_id, min_sequence, wait_s)
        row = await views.message(who, message_id)
        if row is None:
            raise _not_found()
        return message_view(row)

    @router.get(
        "/messages/{message_id}/recipients",
        summary="The message's recipients with their state and timestamps",
        responses=NOT_CAUGHT_UP,
    )
    async def message_recipients(
        who: Account,
        message_id: UUID,
        state: Annotated[
            list[RecipientStatus] | None, Query(description="only these states (repeatable)")
        ] = None,
        not_delivered: Annotated[
            bool, Query(description="who did not get it: every state but delivered")
        ] = False,
        after: Annotated[
            ContactCursor,
            Query(
                description="the last contact id of the previous page",
                # The rule of `_no_nul`, in the document (its own message stays the answer's).
                json_schema_extra={"pattern": "^[^\\u0000]*$"},
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        q: Annotated[
            str | None, Query(max_length=300, description="address contains (any case)")
        ] = None,
        min_sequence: MinSequence = None,
        wait_s: WaitS = default_wait,
    ) -> RecipientPage:
        await caught_up(who, message_id, min_sequence, wait_s)
        if await views.sequence_of(who, message_id) is None:
            raise _not_found()
        wanted: set[str] | None = {s.value for s in state} if state else None
        if not_delivered:
            wanted = set(NOT_DELIVERED) if wanted is None else wanted & NOT_DELIVERED
        rows = await views.recipients(
            who,
            message_id,
            sorted(wanted) if wanted is not None else None,
            after=after,
            limit=limit + 1,
            search=q,
        )
        items = []
        for row in rows[:limit]:
            reason = not_sent_reason(
                row["state"], row["reason"], row["message_status"], row.get("refusal")
            )
            items.append(
                RecipientView(
                    **{
                        k: v
                        for k, v in row.items()
                        if k not in ("message_status", "reason", "refusal")
                    },
                    reason=reason,
                )
            )
        return RecipientPage(
            items=items, next_after=items[-1].contact_id if len(rows) > limit else None
        )

    @router.get(
        "/messages/{message_id}/history",
        summary="Every event of the message, in order, with who caused it",
        responses=NOT_CAUGHT_UP,
    )
    async def message_history(
        who: Account,
        message_id: UUID,
        after: Annotated[
            int,
            Query(ge=0, le=PG_INT_MAX, description="the last sequence of the previous page"),
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        min_sequence: MinSequence = None,
        wait_s: WaitS = default_wait,
    ) -> HistoryPage:
        await caught_up(who, message_id, min_sequence, wait_s)
        if await views.sequence_of(who, message_id) is None:
            raise _not_found()
        rows = await views.history(who, message_id, after=after, limit=limit + 1)
        items = [
            HistoryEntry(
                sequence=r["sequence"],
                event_id=r["event_id"],
                type=r["type"],
                occurred_at=r["occurred_at"],
                actor=ActorView(
                    kind=r["actor_kind"],
                    account_id=r["actor_account_id"],
                    user_id=r["actor_user_id"],
                    service=r["actor_service"],
                    display_name=r.get("actor_display_name"),
                ),
                causation_id=r["causation_id"],
                correlation_id=r["correlation_id"],
                detail=r["detail"],
            )
            for r in rows[:limit]
        ]
        return HistoryPage(
            items=items, next_after=items[-1].sequence if len(rows) > limit else None
        )

    return router
