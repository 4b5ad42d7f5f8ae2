"""The web UI's routes (docs/ui.md): pages, the fragments htmx polls, and the actions.

Every action goes through the same command path as the REST API (:class:`Executor` with an
idempotency key per rendered form), with the signed-in operator as the actor. Every read names
the operator's account. Every state-changing request must carry the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from core import ALLOWED_COMMANDS, MessageStatus, RecipientStatus
from core.render import body_parts
from core.views import LIST_OF, LISTS
from schemas import (
    AddRecipients,
    CancelMessage,
    Command,
    Content,
    CopyMessage,
    CreateDraft,
    DeliveryPlan,
    DiscardDraft,
    EditDraft,
    PauseMessage,
    ResumeMessage,
    ScheduleMessage,
    UnscheduleMessage,
)
from services.commands.bodies import ScheduleBody
from services.commands.errors import ProblemError, http_status
from services.commands.gateway import CommandRequest, Executor
from services.commands.ids import command_id_for, created_message_id
from services.commands.ports import IdempotencyStore
from services.commands.read_api import message_view
from services.projections.reader import PostgresViews
from services.web.forms import ComposeForm, dump
from services.web.guard import SESSION_COOKIE, csrf_ok, form_data, operator
from services.web.guard import signed_in as session_of
from services.web.present import (
    BY_NAME,
    STATUS_LABEL,
    actor_name,
    bars,
    in_zone,
    menu,
    plain_error,
    utc,
)
from services.web.sessions import Session, UiStore, new_token

__all__ = ["environment", "ui_routes"]

log = structlog.get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SIGNIN_COOKIE = "mailctl_signin"  # the sign-in form's CSRF token (double submit)
CATCH_UP_S = 5.0
PAGE = 50
RECIPIENT_PAGE = 50

LIST_TITLES = {"sent": "Email Sent", "scheduled": "Scheduled", "drafts": "Drafts"}
HISTORY_LABELS = {
    "DraftCreated": "Draft created",
    "DraftEdited": "Draft edited",
    "DraftDiscarded": "Draft discarded",
    "TestSendRequested": "Test send",
    "MessageScheduled": "Scheduled",
    "MessageUnscheduled": "Unscheduled",
    "SendingStarted": "Sending started",
    "MessagePaused": "Paused",
    "MessageResumed": "Resumed",
    "MessageCanceled": "Canceled",
    "MessageSent": "Sent",
    "MessageCopied": "Copied",
    "RecipientsAdded": "Recipients added",
    "RecipientsRemoved": "Recipients removed",
    "RecipientsExcluded": "Recipients excluded",
    "BatchStarted": "Batch started",
    "RecipientsReleased": "Recipients released",
    "RecipientsSkipped": "Recipients skipped",
    "RecipientsDelivered": "Delivered",
    "RecipientsFailed": "Failed",
    "RecipientsOutcomeUnknown": "Outcome unknown",
}


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        STATUS_LABEL=STATUS_LABEL,
        LIST_TITLES=LIST_TITLES,
        HISTORY_LABELS=HISTORY_LABELS,
        menu=menu,
        in_zone=in_zone,
        utc=utc,
        actor_name=actor_name,
        body_parts=body_parts,
        new_key=lambda: uuid.uuid4().hex,
    )
    return env


def ui_routes(
    executor: Executor,
    views: PostgresViews,
    store: IdempotencyStore,
    ui: UiStore,
    *,
    session_hours: float,
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    env = environment()

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    async def signed_in(request: Request) -> Session | None:
        return await session_of(ui, request)

    def to_signin(request: Request) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": "/ui/signin"})
        return RedirectResponse("/ui/signin", status_code=303)

    async def guarded(request: Request) -> tuple[Session | None, dict[str, str], Response | None]:
        """The session and form of a state-changing request, or the answer refusing it."""
        session = await signed_in(request)
        if session is None:
            return None, {}, to_signin(request)
        data = await form_data(request)
        if not csrf_ok(request, session, data):
            return (
                session,
                data,
                HTMLResponse(
                    '<p class="error" role="alert">This form has expired (security token). '
                    "Reload the page and try again.</p>",
                    status_code=403,
                ),
            )
        return session, data, None

    def base(session: Session, **context: Any) -> dict[str, Any]:
        return {"session": session, "csrf": session.csrf_token, **context}

    # ------------------------------------------------------------------ commands

    async def issue(
        session: Session,
        key: str | None,
        method: str,
        path: str,
        body: dict[str, Any],
        make: Callable[[UUID], Command],
        *,
        created: bool = False,
        new_message_id: UUID | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One command on the API's own path (idempotency, publishing, waiting for the result)
        with the operator as its actor; the answer's status and body."""
        actor = operator(session)
        full_key = f"ui:{key}" if key else None
        command_id = command_id_for(session.account_id, full_key)
        try:
            command = make(command_id)
            answer = await executor.execute(
                CommandRequest(
                    account=session.account_id,
                    key=full_key,
                    actor=actor,
                    correlation_id=None,
                    method=method,
                    path=path,
                    body=body,
                    command=command,
                    created=created,
                    new_message_id=new_message_id,
                )
            )
        except ProblemError as error:
            problem = error.problem
            return http_status(problem.code), {"detail": problem.model_dump(exclude_none=True)}
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            return 422, {"detail": {"code": "invalid", "field": field, "message": first["msg"]}}
        return answer.status_code, json.loads(bytes(answer.body))

    async def caught_up(account: str, message_id: UUID, sequence: int) -> None:
        """Read-your-writes: wait (bounded) until the views include the command's events."""
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline:
            seen = await views.sequence_of(account, message_id)
            if seen is not None and seen >= sequence:
                return
            await asyncio.sleep(0.05)

    async def settle(session: Session, status: int, body: dict[str, Any]) -> str | None:
        """None when the command was accepted (and the views caught up), else the error."""
        if status not in (200, 201):
            return plain_error(status, body)
        target = body.get("new_message_id") or body["message_id"]
        sequence = 1 if body.get("new_message_id") else int(body["sequence"])
        await caught_up(session.account_id, UUID(str(target)), sequence)
        return None

    # ------------------------------------------------------------------ sign-in

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse("/ui/sent", status_code=303)

    @router.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/sent", status_code=303)

    def signin_page(request: Request, error: str | None = None, email: str = "") -> Response:
        token = new_token()
        response = page(
            "signin.html", status=401 if error else 200, csrf=token, error=error, email=email
        )
        response.set_cookie(
            SIGNIN_COOKIE,
            token,
            max_age=3600,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/ui/signin",
        )
        return response

    @router.get("/ui/signin")
    async def signin_form(request: Request) -> Response:
        if await signed_in(request) is not None:
            return RedirectResponse("/ui/sent", status_code=303)
        return signin_page(request)

    @router.post("/ui/signin")
    async def signin(request: Request) -> Response:
        data = await form_data(request)
        expected = request.cookies.get(SIGNIN_COOKIE, "")
        email = data.get("email", "")[:300]
        if not expected or not hmac.compare_digest(expected, data.get("csrf", "")):
            return signin_page(request, "This form has expired. Please sign in again.", email)
        outcome = await ui.sign_in(email, data.get("password", "")[:1000])
        if outcome.token is None:
            log.info("sign-in refused", email=email)
            return signin_page(request, outcome.error, email)
        response = RedirectResponse("/ui/sent", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            outcome.token,
            max_age=int(session_hours * 3600),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
        response.delete_cookie(SIGNIN_COOKIE, path="/ui/signin")
        return response

    @router.post("/ui/signout")
    async def signout(request: Request) -> Response:
        session, _, refused = await guarded(request)
        if refused is not None or session is None:
            return refused or to_signin(request)
        await ui.sign_out(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/ui/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ lists

    async def row_context(session: Session, row: dict[str, Any]) -> dict[str, Any]:
        view = message_view(row).model_dump()
        zone = await store.default_time_zone(session.account_id)
        return {"m": view, "zone": view.get("default_time_zone") or zone}

    async def list_items(
        session: Session, list_name: str, *, search: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], str]:
        """The rows of a list as the templates show them, and the account's time zone."""
        rows = await views.list_messages(
            session.account_id,
            list_name,
            list(LISTS[list_name]),
            search=search,
            limit=limit,
            offset=offset,
        )
        zone = await store.default_time_zone(session.account_id)
        return [message_view(r).model_dump() for r in rows], zone

    def row_page(
        session: Session, list_name: str, context: dict[str, Any], **extra: Any
    ) -> HTMLResponse:
        """One row of a list as it is now; `moved` when its status belongs to another list."""
        moved = LIST_OF.get(context["m"]["status"]) != list_name
        return page(
            "row.html", **base(session, list_name=list_name, moved=moved, **context, **extra)
        )

    @router.get("/ui/{list_name}")
    async def message_list(request: Request, list_name: str) -> Response:
        if list_name not in LISTS:
            return page("missing.html", status=404, session=None, what="page")
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        q = request.query_params.get("q") or None
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        items, zone = await list_items(session, list_name, search=q, limit=PAGE + 1, offset=offset)
        return page(
            "list.html",
            **base(
                session,
                list_name=list_name,
                items=items[:PAGE],
                zone=zone,
                q=q or "",
                offset=offset,
                next_offset=offset + PAGE if len(items) > PAGE else None,
            ),
        )

    @router.get("/ui/{list_name}/fresh")
    async def fresh_rows(request: Request, list_name: str) -> Response:
        """Rows of the list's first page that the page does not show yet (`shown`): a message
        that started sending appears in Email Sent without a reload."""
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        if list_name not in LISTS:
            return HTMLResponse("")
        shown = set(request.query_params.getlist("shown"))
        first, zone = await list_items(
            session, list_name, search=request.query_params.get("q") or None, limit=PAGE, offset=0
        )
        items = [m for m in first if str(m["message_id"]) not in shown]
        if not items:
            return HTMLResponse("")
        return page("rows.html", **base(session, list_name=list_name, items=items, zone=zone))

    @router.get("/ui/rows/{message_id}")
    async def row(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        list_name = request.query_params.get("list", "sent")
        found = await views.message(session.account_id, message_id)
        if found is None or list_name not in LISTS:
            return HTMLResponse("")
        return row_page(session, list_name, await row_context(session, found))

    # ------------------------------------------------------------------ actions

    async def action_answer(
        session: Session,
        data: dict[str, str],
        message_id: UUID,
        error: str | None,
        redirect: str | None,
    ) -> Response:
        if error is not None:
            list_name = data.get("list", "")
            found = await views.message(session.account_id, message_id)
            if list_name in LISTS and found is not None:
                # The row again, as it is now (its status changed under a stale menu), with
                # the error next to its menu: it stays until the operator moves on.
                context = await row_context(session, found)
                answer = row_page(session, list_name, context, error=error)
                answer.headers["HX-Retarget"] = f"#row-{message_id}"
                answer.headers["HX-Reswap"] = "outerHTML"
                return answer
            return HTMLResponse(f'<span class="error" role="alert">{_escape(error)}</span>')
        if redirect is not None:
            return Response(status_code=204, headers={"HX-Redirect": redirect})
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    @router.post("/ui/messages/{message_id}/{action}")
    async def act(request: Request, message_id: UUID, action: str) -> Response:
        session, data, refused = await guarded(request)
        if refused is not None or session is None:
            return refused or to_signin(request)
        key = data.get("idem") or None
        base_path = f"/v1/messages/{message_id}"
        if action == "edit":
            return await save_draft(request, session, data, message_id)
        if action not in BY_NAME or action in ("edit", "schedule"):
            return await action_answer(
                session, data, message_id, f"Unknown action {action!r}.", None
            )
        makers: dict[str, tuple[str, dict[str, Any], Callable[[UUID], Command]]] = {
            "pause": (
                "pause",
                {"reason": None},
                lambda c: PauseMessage(command_id=c, message_id=message_id),
            ),
            "resume": ("resume", {}, lambda c: ResumeMessage(command_id=c, message_id=message_id)),
            "cancel": (
                "cancel",
                {"reason": None},
                lambda c: CancelMessage(command_id=c, message_id=message_id),
            ),
            "unschedule": (
                "unschedule",
                {},
                lambda c: UnscheduleMessage(command_id=c, message_id=message_id),
            ),
            "discard": (
                "discard",
                {},
                lambda c: DiscardDraft(command_id=c, message_id=message_id),
            ),
        }
        if action == "copy":
            exclude = data.get("exclude_delivered") == "on"
            command_key = f"ui:{key}" if key else None
            new_id = created_message_id(command_id_for(session.account_id, command_key), "copy")
            status, body = await issue(
                session,
                key,
                "POST",
                f"{base_path}/copy",
                {"exclude_delivered": exclude},
                lambda c: CopyMessage(
                    command_id=c,
                    message_id=message_id,
                    new_message_id=created_message_id(c, "copy"),
                    exclude_delivered=exclude,
                ),
                created=True,
                new_message_id=new_id,
            )
            error = await settle(session, status, body)
            new = body.get("new_message_id")
            return await action_answer(
                session, data, message_id, error, f"/ui/messages/{new}/edit" if new else None
            )
        segment, body_sent, make = makers[action]
        status, body = await issue(session, key, "POST", f"{base_path}/{segment}", body_sent, make)
        error = await settle(session, status, body)
        if action == "unschedule" and error is None:
            return await action_answer(
                session, data, message_id, None, f"/ui/messages/{message_id}/edit"
            )
        if action == "discard" and error is None:
            return await action_answer(session, data, message_id, None, "/ui/drafts")
        return await action_answer(session, data, message_id, error, None)

    # ------------------------------------------------------------------ compose / edit

    async def compose_page(
        session: Session,
        form: ComposeForm,
        message: dict[str, Any] | None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        zone = await store.default_time_zone(session.account_id)
        return page(
            "compose.html",
            status=status,
            **base(session, form=form, m=message, zone=zone, error=error),
        )

    @router.get("/ui/messages/new")
    async def new_message(request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        zone = await store.default_time_zone(session.account_id)
        return await compose_page(session, ComposeForm(zone=zone), None)

    @router.post("/ui/messages")
    async def create_message(request: Request) -> Response:
        session, data, refused = await guarded(request)
        if refused is not None or session is None:
            return refused or to_signin(request)
        return await save_draft(request, session, data, None)

    async def save_draft(
        request: Request, session: Session, data: dict[str, str], message_id: UUID | None
    ) -> Response:
        zone = await store.default_time_zone(session.account_id)
        form = ComposeForm.from_post(data, zone)
        content, plan = form.content(), form.plan()
        contacts = form.audience_contacts()
        action = data.get("action", "save")
        schedule = form.schedule_body() if action in ("schedule", "send_now") else None
        if action == "send_now":
            schedule = {"send_now": True}
        message = (
            None if message_id is None else await views.message(session.account_id, message_id)
        )
        view = None if message is None else message_view(message).model_dump()
        if form.problems or content is None or plan is None:
            return await compose_page(
                session, form, view, "Please correct the fields marked below.", 422
            )
        key = data.get("idem") or uuid.uuid4().hex
        if message_id is None:
            command_key = f"ui:{key}"
            new_id = created_message_id(command_id_for(session.account_id, command_key), "create")
            status, body = await issue(
                session,
                key,
                "POST",
                "/v1/messages",
                {"content": dump(content), "plan": dump(plan)},
                lambda c: CreateDraft(
                    command_id=c,
                    message_id=created_message_id(c, "create"),
                    content=content,
                    plan=plan,
                ),
                created=True,
            )
            message_id = new_id
        else:
            target = message_id
            status, body = await issue(
                session,
                key,
                "PATCH",
                f"/v1/messages/{target}",
                {"content": dump(content), "plan": dump(plan)},
                lambda c: EditDraft(command_id=c, message_id=target, content=content, plan=plan),
            )
        error = await settle(session, status, body)
        added = False
        if error is None and contacts:
            target = message_id
            status, body = await issue(
                session,
                f"{key}:audience",
                "POST",
                f"/v1/messages/{target}/recipients",
                {"contacts": [dump(c) for c in contacts]},
                lambda c: AddRecipients(command_id=c, message_id=target, contacts=tuple(contacts)),
            )
            error = await settle(session, status, body)
            added = error is None
        if error is None and schedule is not None:
            target = message_id
            try:
                when = ScheduleBody.model_validate(schedule)
            except ValidationError as invalid:
                error = str(invalid.errors(include_url=False)[0]["msg"])
            else:
                status, body = await issue(
                    session,
                    f"{key}:schedule",
                    "PUT",
                    f"/v1/messages/{target}/schedule",
                    when.model_dump(mode="json"),
                    lambda c: ScheduleMessage(
                        command_id=c,
                        message_id=target,
                        send_at=when.send_at,
                        send_at_local=when.send_at_local,
                        send_now=when.send_now,
                    ),
                )
                error = await settle(session, status, body)
        if error is not None:
            found = await views.message(session.account_id, message_id)
            shown = None if found is None else message_view(found).model_dump()
            if added:
                form.audience = ""  # in the audience now: not to be pasted twice
            return await compose_page(session, form, shown, error, 409 if status == 409 else 422)
        if schedule is None:
            return RedirectResponse("/ui/drafts", status_code=303)
        return RedirectResponse(
            "/ui/sent" if schedule.get("send_now") else "/ui/scheduled", status_code=303
        )

    @router.get("/ui/messages/{message_id}/edit")
    async def edit_message(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        found = await views.message(session.account_id, message_id)
        draft = await views.draft(session.account_id, message_id)
        if found is None or draft is None:
            return page("missing.html", status=404, session=session, what="message")
        zone = await store.default_time_zone(session.account_id)
        form = ComposeForm.from_draft(
            Content.model_validate(draft["content"]),
            DeliveryPlan.model_validate(draft["plan"]),
            zone,
        )
        view = message_view(found).model_dump()
        error = None
        # The core's rule (which statuses take an EditDraft), said before the operator types.
        if "EditDraft" not in ALLOWED_COMMANDS[MessageStatus(view["status"])]:
            error = (
                f"This message is {STATUS_LABEL[view['status']].lower()}: only a draft can be "
                "edited."
            )
        return await compose_page(session, form, view, error)

    # ------------------------------------------------------------------ the message page

    async def message_context(session: Session, message_id: UUID) -> dict[str, Any] | None:
        found = await views.message(session.account_id, message_id)
        if found is None:
            return None
        context = await row_context(session, found)
        context["chart"] = bars(await views.deliveries_per_minute(session.account_id, message_id))
        return context

    @router.get("/ui/messages/{message_id}")
    async def message_page(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        context = await message_context(session, message_id)
        if context is None:
            return page("missing.html", status=404, session=session, what="message")
        params = request.query_params
        wanted = [s for s in params.getlist("state") if s in {r.value for r in RecipientStatus}]
        q = (params.get("q") or "").strip()[:300] or None
        after = params.get("after") or None
        recipients = await views.recipients(
            session.account_id,
            message_id,
            wanted or None,
            after=after,
            limit=RECIPIENT_PAGE + 1,
            search=q,
        )
        more = len(recipients) > RECIPIENT_PAGE
        recipients = recipients[:RECIPIENT_PAGE]
        next_query = (
            urlencode(
                [("state", s) for s in wanted]
                + ([("q", q)] if q else [])
                + [("after", recipients[-1]["contact_id"])]
            )
            if more
            else None
        )
        history = await views.history(session.account_id, message_id, after=0, limit=1000)
        users = {
            str(h["actor_user_id"])
            for h in history
            if h["actor_kind"] == "user" and not h.get("actor_display_name")
        }
        names = await ui.display_names(session.account_id, users)
        draft = await views.draft(session.account_id, message_id)
        return page(
            "message.html",
            **base(
                session,
                **context,
                recipients=recipients,
                states=[s.value for s in RecipientStatus],
                wanted=wanted,
                q=q or "",
                after=after,
                next_query=next_query,
                history=history,
                names=names,
                body=(draft or {}).get("content", {}).get("body", ""),
                html_body=(draft or {}).get("content", {}).get("html_body"),
            ),
        )

    @router.get("/ui/messages/{message_id}/summary")
    async def summary(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_signin(request)
        context = await message_context(session, message_id)
        if context is None:
            return HTMLResponse("")
        return page("summary.html", **base(session, **context))

    return router


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
