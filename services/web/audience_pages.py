"""The audience page of a message in the web UI (issue 16): preview for a recipient, test sends
to the account's allowed addresses, CSV import with a progress bar, and export.

Everything goes through services/commands/audiences.py, the same code as the REST routes. The
upload is streamed: the browser posts the file itself as the request body (static/audience.js),
the server parses it as it arrives; the progress bar polls the import's row.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from core import TESTABLE_STATUSES, RecipientStatus
from core.views import NEVER_RECEIVED
from services.commands.audiences import STATES, AudienceService
from services.commands.errors import ProblemError, http_status
from services.projections.reader import PostgresViews
from services.web.guard import csrf_ok, form_data, operator
from services.web.guard import signed_in as session_of
from services.web.pages import environment
from services.web.present import plain_error
from services.web.sessions import Session, UiStore

__all__ = ["audience_pages"]


def audience_pages(audiences: AudienceService, views: PostgresViews, ui: UiStore) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    env = environment()

    async def signed_in(request: Request) -> Session | None:
        return await session_of(ui, request)

    async def render_page(
        session: Session, message_id: UUID, contact_id: str | None = None, **extra: Any
    ) -> Response:
        found = await views.message(session.account_id, message_id)
        if found is None:
            return HTMLResponse(
                env.get_template("missing.html").render(
                    session=session, csrf=session.csrf_token, what="message"
                ),
                status_code=404,
            )
        error = None
        try:
            previews = await audiences.preview(session.account_id, message_id, contact_id)
        except ProblemError as refused:
            previews, error = [], refused.problem.message
        context = {
            "session": session,
            "csrf": session.csrf_token,
            "m": found,
            "previews": previews,
            "preview_error": error,
            "contact_id": contact_id or "",
            "test_addresses": await audiences.test_addresses(session.account_id),
            "imports": await audiences.imports_of(session.account_id, message_id),
            "states": [s.value for s in RecipientStatus],
            "not_delivered": NEVER_RECEIVED,
            "testable": found["status"] in TESTABLE_STATUSES,
            **extra,
        }
        return HTMLResponse(env.get_template("audience.html").render(**context))

    @router.get("/ui/messages/{message_id}/audience")
    async def audience_page(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return RedirectResponse("/ui/signin", status_code=303)
        contact_id = (request.query_params.get("contact_id") or "").strip()[:200] or None
        return await render_page(session, message_id, contact_id)

    @router.post("/ui/messages/{message_id}/audience/upload")
    async def upload(request: Request, message_id: UUID) -> Response:
        """The file is the request body (streamed); options are in the query string."""
        session = await signed_in(request)
        if session is None:
            return JSONResponse({"error": "signed out"}, status_code=401)
        if not csrf_ok(request, session, {}):
            return JSONResponse({"error": "security token expired: reload"}, status_code=403)
        params = request.query_params
        try:
            import_id = UUID(params.get("import_id", ""))
        except ValueError:
            return JSONResponse({"error": "import_id is not a UUID"}, status_code=422)
        mode = "remove" if params.get("mode") == "remove" else "add"
        mapping = {
            field: value.strip()[:200]
            for field in ("contact_id", "email", "time_zone")
            if (value := params.get(f"map_{field}", ""))
        }
        total = params.get("total_bytes", "")
        try:
            summary = await audiences.run_import(
                account=session.account_id,
                actor=operator(session),
                message_id=message_id,
                import_id=import_id,
                kind=mode,
                body=request.stream(),
                mapping=mapping,
                file_name=(params.get("file_name") or "")[:300] or None,
                total_bytes=int(total) if total.isdigit() else None,
            )
        except ProblemError as refused:
            return JSONResponse(
                {"error": refused.problem.message},
                status_code=http_status(refused.problem.code),
            )
        return JSONResponse(summary.as_json())

    @router.get("/ui/imports/{import_id}")
    async def import_progress(request: Request, import_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return JSONResponse({"error": "signed out"}, status_code=401)
        summary = await audiences.import_status(session.account_id, import_id)
        if summary is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(summary.as_json())

    @router.get("/ui/imports/{import_id}/problems.csv")
    async def import_problems(request: Request, import_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return RedirectResponse("/ui/signin", status_code=303)
        if await audiences.import_status(session.account_id, import_id) is None:
            return HTMLResponse("not found", status_code=404)
        return StreamingResponse(
            audiences.problems_csv(session.account_id, import_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="import-{import_id}.csv"'},
        )

    @router.get("/ui/messages/{message_id}/audience/export.csv")
    async def export(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return RedirectResponse("/ui/signin", status_code=303)
        if await views.message(session.account_id, message_id) is None:
            return HTMLResponse("not found", status_code=404)
        wanted = [s for s in request.query_params.getlist("state") if s in STATES]
        return StreamingResponse(
            audiences.export_csv(session.account_id, message_id, wanted or None),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="recipients-{message_id}.csv"'},
        )

    @router.post("/ui/messages/{message_id}/audience/test-addresses")
    async def test_addresses(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return RedirectResponse("/ui/signin", status_code=303)
        form = await form_data(request)
        if not csrf_ok(request, session, form):
            return HTMLResponse("security token expired: reload", status_code=403)
        address = form.get("address", "").strip()
        if form.get("remove"):
            await audiences.remove_test_address(session.account_id, form["remove"])
        elif address:
            from pydantic import TypeAdapter, ValidationError

            from schemas.values import EmailAddress

            try:
                TypeAdapter(EmailAddress).validate_python(address)
            except ValidationError:
                return await render_page(
                    session, message_id, test_error=f"{address!r} is not an email address"
                )
            await audiences.add_test_address(session.account_id, operator(session), address)
        return RedirectResponse(f"/ui/messages/{message_id}/audience#test", status_code=303)

    @router.post("/ui/messages/{message_id}/audience/test-send")
    async def test_send(request: Request, message_id: UUID) -> Response:
        session = await signed_in(request)
        if session is None:
            return RedirectResponse("/ui/signin", status_code=303)
        raw = (await request.body()).decode("utf-8", errors="replace")
        fields = parse_qs(raw, keep_blank_values=True)
        form = {k: v[0] for k, v in fields.items()}
        if not csrf_ok(request, session, form):
            return HTMLResponse("security token expired: reload", status_code=403)
        addresses = fields.get("address", [])
        contact_id = form.get("contact_id", "").strip() or None
        try:
            status, answer = await audiences.test_send(
                account=session.account_id,
                actor=operator(session),
                message_id=message_id,
                addresses=addresses,
                contact_id=contact_id,
                key=form.get("idem") or None,
            )
        except ProblemError as refused:
            problem = refused.problem
            status = http_status(problem.code)
            answer = {"detail": problem.model_dump(exclude_none=True)}
        if status != 200:
            return await render_page(session, message_id, test_error=plain_error(status, answer))
        return await render_page(session, message_id, test_results=answer.get("test_sends", []))

    return router
