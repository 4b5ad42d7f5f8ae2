"""The read API with a hand-written fake of the views (the in-memory tables the pure view function
wrote): routes, paging, filters, isolation, read-your-writes. The same routes over the real
Postgres: tests/integration/test_projections.py."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import TypeAdapter

from bench.harness.histories import Simulator, contacts
from schemas import Actor, CancelMessage, DeliveryPlan, RecipientsReleased, ScheduleMessage
from schemas.times import LOCAL_TIME_PATTERN, LocalDateTime
from services.commands.app import Adapters, create_app
from services.common.settings import Settings
from services.projections.reader import ORDER
from services.projections.views import HISTORY_COLUMNS
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore
from tests.projections.tables import Tables, project

KEYS = {"key-a": "acct-a", "key-b": "acct-b"}


class FakeViews:
    """The ViewReader port over in-memory tables, with the Postgres reader's rules."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def _row(self, account: str, message_id: UUID) -> dict[str, Any] | None:
        row = self.tables.messages.get(message_id)
        if row is None or row["account_id"] != account:
            return None
        out = dict(row)
        for name in ("created_by", "paused_by", "canceled_by", "zone_times"):
            if out[name] is not None:
                out[name] = json.loads(out[name])
        return out

    async def list_messages(
        self,
        account: str,
        view: str,
        statuses: list[str],
        *,
        search: str | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        assert view in ORDER
        rows = [
            r
            for m in self.tables.messages
            if (r := self._row(account, m)) is not None
            and r["status"] in statuses
            and (search is None or search.lower() in r["name"].lower())
        ]
        rows.sort(key=lambda r: (r["updated_at"], str(r["message_id"])), reverse=True)
        return rows[offset : offset + limit]

    async def message(self, account: str, message_id: UUID) -> dict[str, Any] | None:
        return self._row(account, message_id)

    async def sequence_of(self, account: str, message_id: UUID) -> int | None:
        row = self._row(account, message_id)
        return None if row is None else int(row["last_sequence"])

    async def sequences_of(self, keys: list[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
        found = {key: await self.sequence_of(*key) for key in keys}
        return {key: seen for key, seen in found.items() if seen is not None}

    async def recipients(
        self,
        account: str,
        message_id: UUID,
        states: list[str] | None,
        *,
        after: str | None,
        limit: int,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        message = self._row(account, message_id)
        if message is None:
            return []
        rows = sorted(
            (
                {
                    **{k: v for k, v in r.items() if k != "message_id"},
                    "message_status": message["status"],
                }
                for (m, _), r in self.tables.recipients.items()
                if m == message_id
                and (states is None or r["state"] in states)
                and (after is None or r["contact_id"] > after)
                and (not search or search.lower() in r["email"].lower())
            ),
            key=lambda r: r["contact_id"],
        )
        return rows[:limit]

    async def history(
        self, account: str, message_id: UUID, *, after: int, limit: int
    ) -> list[dict[str, Any]]:
        if self._row(account, message_id) is None:
            return []
        names = HISTORY_COLUMNS
        rows = [
            dict(zip(names, row, strict=True))
            for (m, seq), row in sorted(self.tables.history.items())
            if m == message_id and seq > after
        ]
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows[:limit]


@pytest.fixture
def world() -> tuple[Simulator, dict[str, UUID]]:
    sim = Simulator()
    draft = sim.create()
    sending = sim.create(plan=DeliveryPlan(release_rate=2))
    sim.add(sending, contacts(5))
    sim.send_now(sending)
    for event in sim.tick():
        if isinstance(event, RecipientsReleased):
            sim.deliver(
                sending, delivered=event.contact_ids[:1], failed=((event.contact_ids[1], "550"),)
            )
    canceled = sim.create()
    sim.add(canceled, contacts(2))
    sim.send_now(canceled)
    sim.run(CancelMessage(command_id=sim.new_id(), message_id=canceled))
    theirs = sim.create(actor=Actor(kind="user", account_id="acct-b", user_id="eve"))
    return sim, {"draft": draft, "sending": sending, "canceled": canceled, "theirs": theirs}


@pytest.fixture
async def client(world: tuple[Simulator, dict[str, UUID]]) -> AsyncIterator[httpx.AsyncClient]:
    sim, _ = world
    views = FakeViews(project(sim.events))
    app = create_app(
        Settings(),
        Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys(KEYS), views=views),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        c.headers["Authorization"] = "Bearer key-a"
        yield c


async def test_each_list_shows_its_statuses(client: httpx.AsyncClient, world: Any) -> None:
    _, ids = world
    sent = (await client.get("/v1/views/sent")).json()
    drafts = (await client.get("/v1/views/drafts")).json()
    scheduled = (await client.get("/v1/views/scheduled")).json()

    assert {i["message_id"] for i in sent["items"]} == {str(ids["sending"]), str(ids["canceled"])}
    assert {i["message_id"] for i in drafts["items"]} == {str(ids["draft"])}
    assert scheduled["items"] == []
    by_id = {i["message_id"]: i for i in sent["items"]}
    sending = by_id[str(ids["sending"])]
    assert (sending["delivered"], sending["failed"], sending["remaining"]) == (1, 1, 3)
    # Its two pending recipients are listed "not sent: canceled": remaining says the same.
    assert by_id[str(ids["canceled"])]["remaining"] == 2


async def test_lists_page_and_filter(client: httpx.AsyncClient, world: Any) -> None:
    first = (await client.get("/v1/views/sent", params={"limit": 1})).json()
    second = (await client.get("/v1/views/sent", params={"limit": 1, "offset": 1})).json()
    only_canceled = (await client.get("/v1/views/sent", params={"status": "canceled"})).json()
    wrong = await client.get("/v1/views/sent", params={"status": "draft"})
    none = (await client.get("/v1/views/sent", params={"q": "no such name"})).json()

    assert first["next_offset"] == 1 and second["next_offset"] is None
    assert first["items"][0]["message_id"] != second["items"][0]["message_id"]
    assert [i["status"] for i in only_canceled["items"]] == ["canceled"]
    assert wrong.status_code == 422
    assert none["items"] == []


async def test_details_recipients_and_history_of_a_message(
    client: httpx.AsyncClient, world: Any
) -> None:
    _, ids = world
    m = ids["sending"]
    details = (await client.get(f"/v1/messages/{m}")).json()
    everyone = (await client.get(f"/v1/messages/{m}/recipients")).json()
    not_delivered = (
        await client.get(f"/v1/messages/{m}/recipients", params={"not_delivered": True})
    ).json()
    failed = (await client.get(f"/v1/messages/{m}/recipients", params={"state": "failed"})).json()
    page = (await client.get(f"/v1/messages/{m}/recipients", params={"limit": 2})).json()
    history = (await client.get(f"/v1/messages/{m}/history")).json()

    assert details["status"] == "sending" and details["audience"] == 5
    assert len(everyone["items"]) == 5
    assert "delivered" not in {i["state"] for i in not_delivered["items"]}
    assert len(not_delivered["items"]) == 4
    assert [(i["state"], i["reason"]) for i in failed["items"]] == [("failed", "550")]
    assert page["next_after"] == page["items"][-1]["contact_id"]
    assert [h["sequence"] for h in history["items"]] == list(range(1, details["last_sequence"] + 1))
    assert history["items"][0]["actor"] == {
        "kind": "user",
        "account_id": "acct-a",
        "user_id": "ada",
        "service": None,
        "display_name": None,
    }


async def test_pending_recipients_of_a_canceled_message_show_as_not_sent_canceled(
    client: httpx.AsyncClient, world: Any
) -> None:
    _, ids = world
    answer = (await client.get(f"/v1/messages/{ids['canceled']}/recipients")).json()

    assert {(i["state"], i["reason"]) for i in answer["items"]} == {("pending", "canceled")}


async def test_another_accounts_message_is_not_found_like_an_unknown_one(
    client: httpx.AsyncClient, world: Any
) -> None:
    _, ids = world
    for path in ("", "/recipients", "/history"):
        theirs = await client.get(f"/v1/messages/{ids['theirs']}{path}")
        unknown = await client.get(f"/v1/messages/{uuid4()}{path}")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json() == unknown.json()
    listed = (await client.get("/v1/views/drafts")).json()
    assert str(ids["theirs"]) not in {i["message_id"] for i in listed["items"]}
    as_b = (await client.get("/v1/views/drafts", headers={"Authorization": "Bearer key-b"})).json()
    assert [i["message_id"] for i in as_b["items"]] == [str(ids["theirs"])]


async def test_reads_need_a_key(client: httpx.AsyncClient, world: Any) -> None:
    _, ids = world
    for path in ("/v1/views/sent", f"/v1/messages/{ids['draft']}"):
        answer = await client.get(path, headers={"Authorization": ""})
        assert answer.status_code == 401


async def test_read_your_writes_waits_for_the_sequence_or_answers_409_or_404(
    client: httpx.AsyncClient, world: Any
) -> None:
    _, ids = world
    m = ids["sending"]
    last = (await client.get(f"/v1/messages/{m}")).json()["last_sequence"]

    reached = await client.get(f"/v1/messages/{m}", params={"min_sequence": last})
    ahead = await client.get(
        f"/v1/messages/{m}/history", params={"min_sequence": last + 1, "wait_s": 0.2}
    )
    theirs = await client.get(
        f"/v1/messages/{ids['theirs']}", params={"min_sequence": 1, "wait_s": 0.2}
    )
    unknown = await client.get(f"/v1/messages/{uuid4()}", params={"min_sequence": 1, "wait_s": 0.2})
    listed = await client.get("/v1/views/sent", params={"wait_for": f"{m}:{last}"})
    listed_ahead = await client.get(
        "/v1/views/sent", params={"wait_for": f"{m}:{last + 1}", "wait_s": 0.2}
    )
    # The lists' wait names the message and the sequence in one parameter: a sequence alone
    # (the old `min_sequence` without `message_id`) is not a parameter of the lists.
    half = await client.get("/v1/views/sent", params={"wait_for": str(last)})

    assert reached.status_code == 200
    # Not a 5xx: nothing failed, the view is not yet at the state asked for (retry).
    assert ahead.status_code == 409
    assert ahead.json()["detail"]["code"] == "not_caught_up"
    assert ahead.json()["detail"]["sequence"] == last
    # A message the view does not hold answers 404 after the wait, not 504; another account's
    # message answers exactly like an unknown one: nothing leaks.
    assert unknown.status_code == 404 and unknown.json()["detail"]["code"] == "not_found"
    assert theirs.status_code == 404 and theirs.json() == unknown.json()
    assert listed.status_code == 200
    assert listed_ahead.status_code == 409
    assert listed_ahead.json()["detail"]["code"] == "not_caught_up"
    assert half.status_code == 422 and half.json()["detail"]["field"] == "wait_for"


async def test_the_openapi_document_lists_the_read_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    for path in (
        "/v1/views/sent",
        "/v1/views/scheduled",
        "/v1/views/drafts",
        "/v1/messages/{message_id}/recipients",
        "/v1/messages/{message_id}/history",
    ):
        assert "get" in paths[path]
    assert "get" in paths["/v1/messages/{message_id}"]
    assert "patch" in paths["/v1/messages/{message_id}"]  # the command route is still there


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/views/drafts", {"q": "a\x00b"}, "q"),
        ("/v1/views/sent", {"q": "line\nbreak"}, "q"),
        ("/v1/views/scheduled", {"q": "esc\x1b"}, "q"),
        ("/v1/messages/{m}/recipients", {"after": "c\x00"}, "after"),
    ],
)
async def test_a_nul_or_control_character_in_a_query_parameter_is_422_naming_it(
    client: httpx.AsyncClient, world: Any, path: str, params: dict[str, str], field: str
) -> None:
    _, m = world
    answer = await client.get(path.format(m=m["sending"]), params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]["field"] == field


async def test_the_recipients_cursor_states_its_no_nul_rule_in_the_document(
    client: httpx.AsyncClient,
) -> None:
    """A schema-valid `after` is accepted: the NUL the reader refuses is refused by the
    document's pattern too (schemathesis found the gap in a longer run)."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    [after] = [
        p
        for p in paths["/v1/messages/{message_id}/recipients"]["get"]["parameters"]
        if p["name"] == "after"
    ]
    pattern = after["schema"]["pattern"]
    assert re.match(pattern, "c\x07é") and not re.match(pattern, "c\x00")


async def test_numbers_past_postgres_integer_range_are_422_naming_the_parameter(
    client: httpx.AsyncClient, world: Any
) -> None:
    _, ids = world
    huge = str(2**31)
    answers = {
        "offset": await client.get("/v1/views/sent", params={"offset": huge}),
        "min_sequence": await client.get(
            f"/v1/messages/{ids['sending']}", params={"min_sequence": huge}
        ),
        "after": await client.get(f"/v1/messages/{ids['sending']}/history", params={"after": huge}),
    }

    for name, answer in answers.items():
        assert answer.status_code == 422, (name, answer.text)
        assert answer.json()["detail"]["field"] == name
        assert answer.json()["detail"]["code"] == "invalid"


async def test_a_405_lists_every_method_of_a_path_served_by_two_routers(
    client: httpx.AsyncClient, world: Any
) -> None:
    _, ids = world
    answer = await client.options(f"/v1/messages/{ids['draft']}")

    assert answer.status_code == 405
    # GET comes from the read API, PATCH from the command routes.
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "PATCH"}


async def test_a_recipient_timezone_message_shows_its_zones_due_times_and_first_release() -> None:
    sim = Simulator(zone="Europe/Berlin")
    message = sim.create(plan=DeliveryPlan(mode="recipient_timezone", missed_zone_policy="skip"))
    sim.add(message, contacts(3, zones=("Asia/Tokyo", "America/New_York", None)))
    local = datetime(2030, 1, 16, 9, 0)
    sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, send_at_local=local))
    views = FakeViews(project(sim.events))
    app = create_app(
        Settings(),
        Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys(KEYS), views=views),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        answer = await c.get(f"/v1/messages/{message}", headers={"Authorization": "Bearer key-a"})

    shown = answer.json()
    assert answer.status_code == 200, answer.text
    # Beside the send time in the account's zone, when each zone goes and how many are left.
    assert shown["send_at"] == "2030-01-16T08:00:00Z"
    assert shown["first_release_at"] == "2030-01-16T00:00:00Z"
    assert shown["zone_times"] == [
        {"zone": "Asia/Tokyo", "due_at": "2030-01-16T00:00:00Z", "pending": 1},
        {"zone": "Europe/Berlin", "due_at": "2030-01-16T08:00:00Z", "pending": 1},
        {"zone": "America/New_York", "due_at": "2030-01-16T14:00:00Z", "pending": 1},
    ]
    assert shown["zones_to_skip"] is None  # not paused


async def test_a_released_recipient_waiting_for_a_retry_shows_the_last_refusal() -> None:
    sim = Simulator()
    message = sim.create(plan=DeliveryPlan(release_rate=1))
    sim.add(message, contacts(3))
    sim.send_now(message)
    sim.tick()  # starts and releases c0, which delivery has not settled
    tables = project(sim.events)
    released = "c0"
    assert tables.recipients[(message, released)]["state"] == "released"

    class Deferred(FakeViews):
        async def recipients(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            rows = await super().recipients(*args, **kwargs)
            # What the Postgres reader joins from the delivery ledger (a deferred send).
            return [
                {**r, "refusal": "451 4.7.1 try later" if r["contact_id"] == released else None}
                for r in rows
            ]

    app = create_app(
        Settings(),
        Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys(KEYS), views=Deferred(tables)),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        answer = await c.get(
            f"/v1/messages/{message}/recipients", headers={"Authorization": "Bearer key-a"}
        )

    reasons = {r["contact_id"]: r["reason"] for r in answer.json()["items"]}
    assert reasons == {"c0": "retrying after: 451 4.7.1 try later", "c1": None, "c2": None}


async def test_a_wall_clock_send_time_is_stated_as_the_local_pattern_not_an_instant(
    client: httpx.AsyncClient,
) -> None:
    # schemathesis: "2689-05-25T12:18:56" (no offset) is not a `format: date-time`, which the
    # document promised for `send_at_local` of a recipient_timezone message.
    doc = (await client.get("/openapi.json")).json()
    local = doc["components"]["schemas"]["MessageView"]["properties"]["send_at_local"]
    text = local["anyOf"][0]
    assert "format" not in text and text["pattern"] == LOCAL_TIME_PATTERN
    shown = TypeAdapter(LocalDateTime).dump_json(datetime(2689, 5, 25, 12, 18, 56)).decode()
    assert re.match(text["pattern"], json.loads(shown))
