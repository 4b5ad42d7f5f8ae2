"""The account's default time zone through the API: read it, change it, and the commands issued
after the change carry it."""

from __future__ import annotations

from tests.commands.conftest import Api


async def test_the_default_zone_is_read_and_changed_through_the_api(api: Api) -> None:
    before = await api.call("GET", "/v1/account")
    changed = await api.call("PUT", "/v1/account/time-zone", {"default_time_zone": "Asia/Tokyo"})
    after = await api.call("GET", "/v1/account")
    theirs = await api.call("GET", "/v1/account", api_key="key-b")
    await api.create()

    assert before.json() == {"account_id": "acct-a", "default_time_zone": "UTC"}
    assert changed.status_code == 200
    assert after.json() == {"account_id": "acct-a", "default_time_zone": "Asia/Tokyo"}
    assert theirs.json()["default_time_zone"] == "Europe/Berlin"  # another account: its own
    assert api.bus.published[-1].default_time_zone == "Asia/Tokyo"


async def test_an_unknown_zone_is_422_naming_the_field_and_changes_nothing(api: Api) -> None:
    answer = await api.call("PUT", "/v1/account/time-zone", {"default_time_zone": "Mars/Olympus"})
    unauthenticated = await api.client.get("/v1/account")

    assert answer.status_code == 422
    assert answer.json()["detail"]["field"] == "default_time_zone"
    assert (await api.call("GET", "/v1/account")).json()["default_time_zone"] == "UTC"
    assert unauthenticated.status_code == 401
