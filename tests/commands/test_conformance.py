"""The API as its OpenAPI document says (issue 11): every error in the declared shape, the
Bearer scheme declared, the real rules in the schema, error paths naming the API's fields. The
fuzzed run against the real stack: tests/integration/test_api_conformance.py."""

from __future__ import annotations

import re
from typing import Any, cast
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import FastAPI

from schemas import DeliveryPlan
from schemas.values import ZONE_NAMES
from services.commands.audience_api import audience_routes
from services.commands.audiences import AudienceService
from services.commands.errors import ErrorBody, install_error_handlers
from tests.commands.conftest import CONTENT, Api


def components(doc: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = doc["components"]["schemas"]
    return schemas


async def test_an_undecodable_body_is_a_422_in_the_declared_error_shape(api: Api) -> None:
    message = await api.create()
    answer = await api.client.post(
        f"/v1/messages/{message}/discard",
        content=b"|@4(w\n\xff\xfe\x19'",
        headers={"Authorization": "Bearer key-a", "Content-Type": "application/json"},
    )

    assert answer.status_code == 422, answer.text
    body = ErrorBody.model_validate(answer.json())
    assert body.detail.code == "invalid"
    assert body.detail.message.startswith("the request body could not be read as JSON")


async def test_a_body_level_error_lists_its_problem_without_a_field_and_matches_the_schema(
    api: Api,
) -> None:
    message = await api.create()
    edit = await api.call("PATCH", f"/v1/messages/{message}", {"content": None, "plan": None})
    schedule = await api.call("PUT", f"/v1/messages/{message}/schedule", {})

    for answer in (edit, schedule):
        assert answer.status_code == 422
        errors = answer.json()["detail"]["errors"]
        assert errors and all("field" not in e for e in errors)  # absent, as declared
        ErrorBody.model_validate(answer.json())
    field_problem = components((await api.client.get("/openapi.json")).json())["FieldProblem"]
    assert field_problem.get("required", []) == ["message"]


async def test_an_attribute_error_names_the_attribute_not_the_validator(api: Api) -> None:
    message = await api.create()
    answer = await api.call(
        "POST",
        f"/v1/messages/{message}/recipients",
        {"contacts": [{"contact_id": "a", "email": "a@example.org", "attributes": {"a": {}}}]},
    )

    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["detail"]["errors"]}
    assert fields == {"contacts.0.attributes.a"}, fields


async def test_the_bearer_scheme_is_declared_and_needed_by_every_v1_operation(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()

    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearer": []}], path
            else:
                assert "security" not in operation, path


async def test_no_parameter_is_declared_nullable(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()

    for path, operations in doc["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                assert {"type": "null"} not in parameter["schema"].get("anyOf", []), (
                    path,
                    parameter["name"],
                )


async def test_the_real_rules_are_in_the_schema(api: Api) -> None:
    schemas = components((await api.client.get("/openapi.json")).json())

    assert schemas["Contact"]["properties"]["email"]["format"] == "email"
    assert schemas["Content"]["properties"]["from_address"]["format"] == "email"
    assert schemas["Throttle"]["properties"]["interval_seconds"]["minimum"] == 60
    assert "release_rate * throttle.interval_seconds" in str(
        schemas["DeliveryPlan"]["properties"]["throttle"]["description"]
    )
    local = schemas["ScheduleBody"]["properties"]["send_at_local"]["anyOf"][0]
    assert "format" not in local and local["pattern"].endswith(")?)?$")
    assert "\\u0000-\\u001f" in schemas["Contact"]["properties"]["contact_id"]["pattern"]


async def test_a_send_at_local_with_an_offset_is_refused_naming_the_field(api: Api) -> None:
    message = await api.create()
    answer = await api.call(
        "PUT", f"/v1/messages/{message}/schedule", {"send_at_local": "2030-01-01T09:00:00+01:00"}
    )

    assert answer.status_code == 422
    assert answer.json()["detail"]["field"] == "send_at_local"


async def test_patch_of_a_draft_is_a_json_merge_patch(api: Api) -> None:
    message = await api.create()
    subject = await api.call(
        "PATCH",
        f"/v1/messages/{message}",
        {"content": {"subject": "Only the subject"}},
        **{"Content-Type": "application/merge-patch+json"},
    )
    broken = await api.call("PATCH", f"/v1/messages/{message}", {"content": {"from_address": None}})
    unknown = await api.call("PATCH", f"/v1/messages/{message}", {"content": {"subjekt": "x"}})

    assert subject.status_code == 200, subject.text
    content = api.bus.states[UUID(message)].content
    assert content.subject == "Only the subject"
    assert (content.name, content.body) == ("News", "Hello")  # the rest is kept
    # Removing a required member: the merged result is refused, naming the field.
    assert broken.status_code == 422
    assert broken.json()["detail"]["field"] == "content.from_address"
    assert unknown.status_code == 422
    assert unknown.json()["detail"]["field"] == "content.subjekt"


async def test_an_empty_edit_is_declared_invalid_in_the_schema(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    assert components(doc)["EditMessageBody"]["minProperties"] == 1


async def test_a_null_plan_sets_the_plan_back_to_its_defaults(api: Api) -> None:
    """RFC 7396: a member set to null is removed; `{"plan": null}` is an edit (the plan's
    defaults), not an empty one. The content cannot be null: the schema says so."""
    answer = await api.call(
        "POST",
        "/v1/messages",
        {"content": CONTENT, "plan": {"release_rate": 5}},
    )
    message = answer.json()["message_id"]

    reset = await api.call("PATCH", f"/v1/messages/{message}", {"plan": None})

    assert reset.status_code == 200, reset.text
    assert api.bus.states[UUID(message)].plan == DeliveryPlan()
    body = components((await api.client.get("/openapi.json")).json())["EditMessageBody"]
    assert body["properties"]["content"] == {"$ref": "#/components/schemas/ContentPatch"}


async def test_a_required_member_of_a_patch_is_not_nullable_in_the_schema(api: Api) -> None:
    schemas = components((await api.client.get("/openapi.json")).json())
    content = schemas["ContentPatch"]["properties"]
    # Required in Content: changed, never removed; with a default: null sets it back.
    assert content["from_address"]["type"] == "string" and "anyOf" not in content["from_address"]
    assert content["from_address"]["format"] == "email"  # the field's own words kept
    assert {"type": "null"} in content["from_name"]["anyOf"]


def test_the_csv_routes_declare_text_csv_and_their_errors_json() -> None:
    async def account() -> str:
        return "acct-a"

    app = FastAPI()
    # The routes' document only: no request is served, so no audience service is needed.
    app.include_router(audience_routes(account, cast(AudienceService, None)))
    paths = app.openapi()["paths"]

    for path in (
        "/v1/imports/{import_id}/problems.csv",
        "/v1/messages/{message_id}/recipients.csv",
    ):
        responses = paths[path]["get"]["responses"]
        assert set(responses["200"]["content"]) == {"text/csv"}, path
        for status in ("401", "404", "422"):
            assert set(responses[status]["content"]) == {"application/json"}, (path, status)
    # An import's body is the file as it is: no JSON type a raw text body could break (a fuzzer
    # "sending a number" sends the same text).
    upload = paths["/v1/messages/{message_id}/imports"]["post"]["requestBody"]["content"]
    assert set(upload) == {"text/csv"} and "type" not in upload["text/csv"]["schema"]


async def test_exactly_one_send_time_is_stated_in_the_schema(api: Api) -> None:
    schedule = components((await api.client.get("/openapi.json")).json())["ScheduleBody"]
    shapes = schedule["oneOf"]
    assert [s["required"] for s in shapes] == [["send_at"], ["send_at_local"], ["send_now"]]
    assert shapes[2]["properties"]["send_now"] == {"const": True}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"send_at_local": "2027-02-29T09:00"}, 422),  # no 29 February in 2027
        ({"send_at_local": "2030-04-31T09:00"}, 422),
        ({"send_at_local": "0000-00-00T00:00"}, 422),
        ({"send_at_local": "2028-02-29T09:00"}, 200),  # a leap day
        # Year 1 made the processor overflow (a dead letter); now the edge refuses it.
        ({"send_at": "0001-01-01T00:00:01Z"}, 422),
        ({"send_at": "9999-12-31T23:59:59-12:00"}, 422),
        ({"send_at": 4102444800}, 422),  # a number is not an instant of the document
        ({"send_at": "2030-01-01T09:00:00+01:00"}, 200),
    ],
)
async def test_send_times_are_real_days_of_2000_to_2999_as_the_schema_says(
    api: Api, body: dict[str, Any], status: int
) -> None:
    message = await api.create()

    answer = await api.call("PUT", f"/v1/messages/{message}/schedule", body)

    assert answer.status_code == status, answer.text
    if status == 422:
        assert answer.json()["detail"]["field"] == next(iter(body))
    schema = components((await api.client.get("/openapi.json")).json())["ScheduleBody"]
    field = next(iter(body))
    pattern = schema["properties"][field]["anyOf"][0]["pattern"]
    assert (re.match(pattern, str(body[field])) is not None) == (status == 200)


@pytest.mark.parametrize(
    ("end_at", "status"),
    [
        (0, 422),  # schemathesis found a number read as a Unix time (1970) and accepted
        (4102444800, 422),
        ("1990-01-01T00:00:00Z", 422),
        ("2030-01-01T09:00:00", 422),  # no offset
        ("2030-01-01T09:00:00+01:00", 200),
    ],
)
async def test_a_throttle_end_is_an_instant_of_the_document_like_the_send_time(
    api: Api, end_at: Any, status: int
) -> None:
    message = await api.create()
    plan = {"throttle": {"batch_size": 1, "interval_seconds": 60, "end_at": end_at}}

    answer = await api.call("PATCH", f"/v1/messages/{message}", {"plan": plan})

    assert answer.status_code == status, answer.text
    if status == 422:
        assert answer.json()["detail"]["field"] == "plan.throttle.end_at"
    schema = components((await api.client.get("/openapi.json")).json())["Throttle"]
    pattern = schema["properties"]["end_at"]["anyOf"][0]["pattern"]
    assert (isinstance(end_at, str) and re.match(pattern, end_at) is not None) == (status == 200)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        # schemathesis found pydantic's lax coercions accepted: true as 1, 0 as false, "710".
        ("POST", "", {"content": CONTENT, "plan": {"max_in_flight": True}}, "plan.max_in_flight"),
        ("POST", "", {"content": CONTENT, "plan": {"release_rate": "710"}}, "plan.release_rate"),
        ("POST", "", {"content": CONTENT, "plan": {"release_rate": 710.5}}, "plan.release_rate"),
        ("PATCH", "/{m}", {"plan": {"max_in_flight": True}}, "plan.max_in_flight"),
        (
            "PATCH",
            "/{m}",
            {"plan": {"throttle": {"batch_size": True, "interval_seconds": 60}}},
            "plan.throttle.batch_size",
        ),
        (
            "PATCH",
            "/{m}",
            {"plan": {"throttle": {"batch_size": 1, "interval_seconds": "60"}}},
            "plan.throttle.interval_seconds",
        ),
        ("POST", "/{m}/copy", {"exclude_delivered": 0}, "exclude_delivered"),
        ("PUT", "/{m}/schedule", {"send_now": 1}, "send_now"),
    ],
)
async def test_numbers_and_booleans_are_of_their_json_type_not_coerced(
    api: Api, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    message = await api.create()

    answer = await api.call(method, "/v1/messages" + path.format(m=message), body)

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]["field"] == field


async def test_a_whole_number_written_with_a_fraction_is_an_integer_as_json_schema_says(
    api: Api,
) -> None:
    # JSON Schema's "integer" holds 60.0; schemathesis sent it and a strict int refused it.
    message = await api.create()
    plan = {"release_rate": 1235.0, "throttle": {"batch_size": 5, "interval_seconds": 1931.0}}

    answer = await api.call("PATCH", f"/v1/messages/{message}", {"plan": plan})

    assert answer.status_code == 200, answer.text
    stored = DeliveryPlan.model_validate(plan)
    assert stored.release_rate == 1235 and type(stored.release_rate) is int
    assert stored.throttle is not None and stored.throttle.interval_seconds == 1931


async def test_every_bound_is_a_json_schema_keyword(api: Api) -> None:
    # A bound pydantic could not place in a JSON Schema keyword stays as its own name ("ge": 1
    # inside an anyOf): a fuzzer then sends 0 as valid and the API's 422 looks like a refusal of
    # valid data (schemathesis found it on max_in_flight).
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number", "string", "array"):
                found.extend(f"{path}/{k}" for k in ("ge", "gt", "le", "lt") if k in node)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk((await api.client.get("/openapi.json")).json(), "")
    assert found == []
    plan = components((await api.client.get("/openapi.json")).json())["DeliveryPlan"]
    assert plan["properties"]["max_in_flight"]["anyOf"][0]["minimum"] == 1


async def test_time_zones_are_an_enum_of_tzdata_and_the_check_agrees(api: Api) -> None:
    schemas = components((await api.client.get("/openapi.json")).json())
    zone = schemas["Contact"]["properties"]["time_zone"]["anyOf"][0]
    assert zone["enum"] == list(ZONE_NAMES) and "Europe/Berlin" in zone["enum"]
    message = await api.create()

    # Names zoneinfo may find on a host but that are not IANA zones of tzdata's list.
    for name in ("0", "localtime", "posixrules", "posix/Europe/Berlin"):
        answer = await api.call(
            "POST",
            f"/v1/messages/{message}/recipients",
            {"contacts": [{"contact_id": "a", "email": "a@example.org", "time_zone": name}]},
        )
        assert answer.status_code == 422, name
        assert answer.json()["detail"]["field"] == "contacts.0.time_zone"


async def test_attribute_names_and_text_values_have_their_rules_in_the_schema(api: Api) -> None:
    attributes = components((await api.client.get("/openapi.json")).json())["Contact"][
        "properties"
    ]["attributes"]
    name = attributes["propertyNames"]["pattern"]
    text = next(k for k in attributes["additionalProperties"]["anyOf"] if k["type"] == "string")
    assert re.match(name, "first name") and not re.match(name, "\x14x")
    assert re.match(text["pattern"], "two\nlines") and not re.match(text["pattern"], "\x1b")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"total_bytes": str(2**63)}, "total_bytes"),  # past Postgres bigint: was a 500
        ({"file_name": "a\x00b"}, "file_name"),  # NUL, which Postgres text cannot hold
        ({"map_contact_id": "id\x1b"}, "map_contact_id"),
    ],
)
async def test_an_imports_query_parameters_are_bounded_as_the_schema_says(
    params: dict[str, str], field: str
) -> None:
    async def account() -> str:
        return "acct-a"

    app = FastAPI()
    install_error_handlers(app)
    # Refused before the route runs: no audience service is needed.
    app.include_router(audience_routes(account, cast(AudienceService, None)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        answer = await client.post(
            f"/v1/messages/{uuid4()}/imports",
            params={"import_id": str(uuid4()), **params},
            content=b"contact_id,email\n",
            headers={"Content-Type": "text/csv"},
        )

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]["field"] == field
