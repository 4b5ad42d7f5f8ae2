"""Add/remove recipients: the answer says what happened to every contact of the chunk (issue 11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.commands.conftest import Api


def _c(cid: str, email: str | None = None) -> dict[str, str]:
    return {"contact_id": cid, "email": email or f"{cid}@example.org"}


async def _add(
    api: Api, message: str, *contacts: dict[str, str], key: str | None = None
) -> dict[str, Any]:
    answer = await api.call(
        "POST", f"/v1/messages/{message}/recipients", {"contacts": list(contacts)}, key=key
    )
    assert answer.status_code == 200, answer.text
    audience = answer.json()["audience"]
    assert isinstance(audience, dict)
    return audience


async def test_the_answer_counts_and_names_each_kind_of_contact(api: Api) -> None:
    message = await api.create()
    await _add(api, message, _c("a"), _c("b"))

    audience = await _add(
        api,
        message,
        _c("a", "new-a@example.org"),  # pending, other address: updated
        _c("b"),  # same data: already present
        _c("c"),
        _c("c", "again@example.org"),  # repeated in the chunk: the first one counts
        _c("d", "B@example.org"),  # the address of b: duplicate address
    )

    assert audience["counts"] == {
        "added": 1,
        "updated": 1,
        "already_present": 1,
        "duplicate_in_chunk": 1,
        "duplicate_address": 1,
        "removed": 0,
        "not_present": 0,
        "refused": 0,
        "invalid": 0,
    }
    assert audience["added"] == ["c"] and audience["updated"] == ["a"]
    assert audience["already_present"] == ["b"] and audience["duplicate_in_chunk"] == ["c"]
    assert audience["duplicate_address"] == ["d"]


async def test_a_chunk_that_changes_nothing_still_says_why(api: Api) -> None:
    message = await api.create()
    await _add(api, message, _c("a"))
    audience = await _add(api, message, _c("a"))
    assert audience["already_present"] == ["a"] and audience["counts"]["added"] == 0


async def test_a_released_contact_with_new_data_is_refused_with_the_reason(api: Api) -> None:
    message = await api.create()
    await _add(api, message, _c("a"))
    await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_now": True})
    api.bus.tick(datetime.now(UTC) + timedelta(seconds=1))

    audience = await _add(api, message, _c("a", "late@example.org"))

    assert audience["refused"] == [
        {"contact_id": "a", "reason": "the contact is released: its data can no longer change"}
    ]


async def test_a_repeat_with_the_same_key_answers_the_first_report(api: Api) -> None:
    message = await api.create()
    first = await _add(api, message, _c("a"), key="k")
    again = await _add(api, message, _c("a"), key="k")
    assert first == again and first["added"] == ["a"]


async def test_removing_answers_removed_and_not_present(api: Api) -> None:
    message = await api.create()
    await _add(api, message, _c("a"))
    answer = await api.call(
        "DELETE", f"/v1/messages/{message}/recipients", {"contact_ids": ["a", "zz"]}
    )
    audience = answer.json()["audience"]
    assert audience["removed"] == ["a"] and audience["not_present"] == ["zz"]
