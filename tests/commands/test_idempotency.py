"""Idempotency keys: the same key and request return the first outcome and change nothing; the
same key with another request is refused; an outcome not known in time is answered 202, stored
later, and a retry finishes what a first try could not."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from services.commands.ids import command_id_for
from tests.commands.conftest import CONTENT, Api, Build


async def until(what: str, check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


async def test_the_same_key_and_body_return_the_first_outcome(api: Api) -> None:
    first = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")
    again = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.bus.published) == 1


async def test_a_stored_rejection_is_replayed_too(api: Api) -> None:
    message = await api.create()
    first = await api.call("POST", f"/v1/messages/{message}/pause", key="p")
    again = await api.call("POST", f"/v1/messages/{message}/pause", key="p")

    assert first.status_code == again.status_code == 409
    assert again.json() == first.json()


async def test_the_same_key_with_another_request_is_refused(api: Api) -> None:
    message = await api.create()
    await api.call("POST", f"/v1/messages/{message}/copy", key="k")
    published = len(api.bus.published)

    other_body = await api.call(
        "POST", f"/v1/messages/{message}/copy", {"exclude_delivered": True}, key="k"
    )
    other_route = await api.call("POST", f"/v1/messages/{message}/cancel", key="k")
    other_message = await api.call("POST", f"/v1/messages/{uuid.uuid4()}/copy", key="k")

    for answer in (other_body, other_route, other_message):
        problem = answer.json()["detail"]
        assert answer.status_code == 422
        assert (problem["code"], problem["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert len(api.bus.published) == published


async def test_the_fingerprint_is_of_the_request_not_its_spelling(api: Api) -> None:
    message = await api.create()
    first = await api.call("POST", f"/v1/messages/{message}/copy", {}, key="k")

    upper = await api.call(
        "POST", f"/v1/messages/{message.upper()}/copy", {"exclude_delivered": False}, key="k"
    )

    assert upper.status_code == 201 and upper.json() == first.json()


async def test_without_a_key_every_request_is_a_new_command(api: Api) -> None:
    first = await api.call("POST", "/v1/messages", {"content": CONTENT})
    second = await api.call("POST", "/v1/messages", {"content": CONTENT})

    assert first.json()["message_id"] != second.json()["message_id"]
    assert len(api.bus.states) == 2


async def test_the_command_id_is_derived_from_account_and_key(api: Api) -> None:
    answer = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="order-17")

    assert answer.json()["command_id"] == str(command_id_for("acct-a", "order-17"))


async def test_concurrent_first_tries_are_decided_once(api: Api) -> None:
    answers = await asyncio.gather(
        *(api.call("POST", "/v1/messages", {"content": CONTENT}, key="k") for _ in range(10))
    )

    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["message_id"] for a in answers}) == 1
    assert len(api.bus.states) == 1 and len(api.bus.results) == 1


async def test_an_outcome_not_known_in_time_is_202_then_stored(build: Build) -> None:
    async with build(wait_s=0.05) as api:
        api.bus.holding = True
        first = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="slow")

        assert first.status_code == 202
        status_url = first.json()["status_url"]
        assert first.headers["location"] == status_url
        assert first.json()["state"] == "pending"
        pending = await api.call("GET", status_url)
        assert pending.status_code == 200 and pending.json()["state"] == "pending"

        api.bus.release()

        async def done() -> bool:
            return bool((await api.call("GET", status_url)).json()["state"] == "done")

        await until("the late outcome stored", done)
        outcome = (await api.call("GET", status_url)).json()
        replay = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="slow")
        assert outcome["http_status"] == 201 and outcome["response"] == replay.json()
        assert replay.status_code == 201
        assert len(api.bus.published) == 1


async def test_a_retry_after_a_202_publishes_the_same_command_again(build: Build) -> None:
    async with build(wait_s=0.05) as api:
        api.bus.holding = True
        first = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")
        api.bus.held.clear()  # the first try is lost (e.g. the processor crashed before it)
        api.bus.holding = False

        retried = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")

        assert first.status_code == 202 and retried.status_code == 201
        assert retried.json()["command_id"] == first.json()["command_id"]
        assert retried.json()["message_id"] == first.json()["message_id"]
        assert [r.command.command_id for r in api.bus.published] == [
            uuid.UUID(first.json()["command_id"])
        ] * 2
        assert len(api.bus.states) == 1


async def test_a_background_wait_gives_up_and_leaves_the_row_for_a_retry(build: Build) -> None:
    async with build(wait_s=0.02, background_wait_s=0.05) as api:
        api.bus.holding = True
        first = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")

        async def forgotten() -> bool:
            return api.bus.waiting() == 0

        await until("the background wait to give up", forgotten)
        state = (await api.call("GET", first.json()["status_url"])).json()["state"]
        assert state == "pending"


async def test_kafka_down_is_503_and_a_retry_succeeds(api: Api) -> None:
    api.bus.down = True
    failed = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")
    api.bus.down = False
    retried = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")

    assert failed.status_code == 503 and failed.json()["detail"]["code"] == "unavailable"
    assert api.bus.waiting() == 0
    assert retried.status_code == 201


async def test_an_unknown_command_is_404(api: Api) -> None:
    answer = await api.call("GET", f"/v1/commands/{uuid.uuid4()}")

    assert answer.status_code == 404 and answer.json()["detail"]["code"] == "not_found"
