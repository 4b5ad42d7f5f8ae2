"""PATCH of a draft as a JSON merge patch (RFC 7396): the pure function, and the core applying
it to the draft it holds."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from core import DomainError
from core.errors import InvalidCommandError
from core.patch import merge_patch
from schemas import DeliveryPlan, EditDraft
from schemas.codec import decode_command, encode
from schemas.commands import DraftPatch

from .dsl import CONTENT, Sim, cmd

# The examples of RFC 7396, appendix A.
RFC_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before  # the target is not changed


def edit(**patch: Any) -> EditDraft:
    return cmd(EditDraft, patch=DraftPatch.model_validate(patch))


def test_changing_only_the_subject_keeps_the_rest_of_the_content() -> None:
    sim = Sim(DeliveryPlan(release_rate=7))
    sim.do(edit(content={"subject": "Only this"}))

    assert sim.s.content == CONTENT.model_copy(update={"subject": "Only this"})
    assert sim.s.plan == DeliveryPlan(release_rate=7)


def test_a_null_member_goes_back_to_its_default_and_a_nested_member_merges() -> None:
    sim = Sim(DeliveryPlan(release_rate=7))
    sim.do(edit(plan={"throttle": {"batch_size": 10, "interval_seconds": 60}}))
    sim.do(edit(plan={"throttle": {"batch_size": 20}, "release_rate": None}))

    assert sim.s.plan.release_rate == DeliveryPlan().release_rate
    assert sim.s.plan.throttle is not None
    assert (sim.s.plan.throttle.batch_size, sim.s.plan.throttle.interval_seconds) == (20, 60)


def test_a_patch_whose_result_breaks_a_rule_is_refused_naming_the_field() -> None:
    sim = Sim(DeliveryPlan())
    with pytest.raises(InvalidCommandError) as refused:
        sim.do(edit(plan={"throttle": {"interval_seconds": 60}}))  # no batch_size

    assert refused.value.field == "plan.throttle.batch_size"
    assert isinstance(refused.value, DomainError)


@pytest.mark.parametrize(
    "given",
    [
        {"content": {"subject": "New"}},
        {"plan": None},
        {"content": {"from_name": None}, "plan": {"throttle": {"batch_size": 5}}},
        {"content": {}},
    ],
)
def test_a_patch_means_the_same_after_the_command_topic(given: dict[str, Any]) -> None:
    """The command travels as JSON on Kafka: a member not given must not come back as a null
    (which removes it), or a subject-only edit would drop the sender's address."""
    command = EditDraft(
        command_id=uuid4(), message_id=uuid4(), patch=DraftPatch.model_validate(given)
    )

    decoded = decode_command(encode(command))

    assert isinstance(decoded, EditDraft) and decoded.patch is not None
    assert decoded.patch.members() == given
    assert decoded == command
