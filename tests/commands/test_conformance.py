"""The API as its OpenAPI document says (issue 11): every error in the declared shape, the
Bearer scheme declared, the real rules in the schema, error paths naming the API's fields. The
fuzzed run against the real stack: tests/integration/test_api_conformance.py."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.commands.errors import ErrorBody
from tests.commands.conftest import Api


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
