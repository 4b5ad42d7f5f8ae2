"""The compose form and the pasted audience (pure)."""

from __future__ import annotations

from core.render import parts
from schemas import Content, DeliveryPlan
from services.web.forms import AUDIENCE_LIMIT, ComposeForm, parse_audience

FORM = {
    "name": "News",
    "from_address": "news@example.org",
    "subject": "Hi {{name}}",
    "body": "Hello\n  {{name}}",
    "mode": "fixed",
    "missed_zone_policy": "send_on_resume",
    "zone": "Europe/London",
}


def test_pasted_lines_become_contacts_once_each() -> None:
    contacts, problems = parse_audience(
        "ada@example.org, Ada Lovelace\n\n# a comment\nbob@example.org\n"
        "c-7; carol@example.org; Carol\nADA@example.org, twice\n"
    )
    assert problems == []
    assert [(c.contact_id, c.email, c.attributes) for c in contacts] == [
        ("ada@example.org", "ada@example.org", {"name": "Ada Lovelace"}),
        ("bob@example.org", "bob@example.org", {}),
        ("c-7", "carol@example.org", {"name": "Carol"}),
    ]


def test_a_bad_line_is_named_by_its_number() -> None:
    _, problems = parse_audience("ada@example.org\nnot an address\nx@y")
    assert [(p.field, p.message) for p in problems] == [
        ("audience", "line 2: no email address in 'not an address'"),
        ("audience", "line 3: 'x@y' is not a valid address"),
    ]


def test_a_paste_larger_than_one_chunk_is_refused() -> None:
    text = "\n".join(f"p{i}@example.org" for i in range(AUDIENCE_LIMIT + 1))
    _, problems = parse_audience(text)
    assert problems and "at most" in problems[0].message


def test_the_form_makes_content_and_plan_with_a_throttle_in_the_chosen_zone() -> None:
    form = ComposeForm.from_post(
        {
            **FORM,
            "throttle": "on",
            "batch_size": "500",
            "interval_minutes": "10",
            "end_at": "2030-07-01T18:00",
        },
        "UTC",
    )
    content, plan = form.content(), form.plan()
    assert form.problems == []
    assert content is not None and content.body == "Hello\n  {{name}}"
    assert plan is not None and plan.throttle is not None
    assert plan.throttle.interval_seconds == 600
    assert plan.throttle.end_at is not None
    assert plan.throttle.end_at.isoformat() == "2030-07-01T17:00:00+00:00"  # BST


def test_the_send_time_is_an_instant_in_fixed_mode_and_a_wall_clock_per_recipient() -> None:
    later = {**FORM, "when": "later", "send_at": "2030-01-15T09:30"}
    assert ComposeForm.from_post(later, "UTC").schedule_body() == {
        "send_at": "2030-01-15T09:30:00+00:00"
    }
    local = {**later, "mode": "recipient_timezone"}
    assert ComposeForm.from_post(local, "UTC").schedule_body() == {
        "send_at_local": "2030-01-15T09:30:00"
    }
    assert ComposeForm.from_post({**FORM, "when": "now"}, "UTC").schedule_body() == {
        "send_now": True
    }


def test_problems_name_the_form_field() -> None:
    form = ComposeForm.from_post(
        {**FORM, "from_address": "nope", "when": "later", "send_at": "", "zone": "Mars/Base"},
        "UTC",
    )
    form.content()
    form.schedule_body()
    assert form.error_for("from_address") == "not a syntactically valid email address"
    assert form.error_for("send_at") == "choose a send date and time"
    throttled = ComposeForm.from_post(
        {
            **FORM,
            "mode": "recipient_timezone",
            "throttle": "on",
            "batch_size": "5",
            "interval_minutes": "1",
        },
        "UTC",
    )
    assert throttled.plan() is None
    assert "fixed delivery mode" in (throttled.error_for("mode") or "")


def test_a_draft_reads_back_into_the_form() -> None:
    form = ComposeForm.from_post(
        {**FORM, "throttle": "on", "batch_size": "5", "interval_minutes": "2"}, "UTC"
    )
    content, plan = form.content(), form.plan()
    assert content is not None and plan is not None
    again = ComposeForm.from_draft(content, plan, "UTC")
    assert (again.name, again.batch_size, again.interval_minutes, again.throttle) == (
        "News",
        "5",
        "2",
        True,
    )
    assert ComposeForm.from_draft(content, DeliveryPlan(), "UTC").throttle is False


def test_the_form_has_a_text_and_an_html_body_and_needs_at_least_one() -> None:
    both = ComposeForm.from_post({**FORM, "html_body": "<p>Hi {{name}}</p>\n"}, "UTC")
    content = both.content()
    assert content is not None
    assert (content.body, content.html_body) == ("Hello\n  {{name}}", "<p>Hi {{name}}</p>\n")
    again = ComposeForm.from_draft(content, DeliveryPlan(), "UTC")
    assert (again.body, again.html_body) == ("Hello\n  {{name}}", "<p>Hi {{name}}</p>\n")
    # A text body that begins with "<" stays text: the form always sends html_body.
    text_only = ComposeForm.from_post({**FORM, "body": "<3 {{name}}", "html_body": ""}, "UTC")
    assert text_only.content() == content.model_copy(
        update={"body": "<3 {{name}}", "html_body": ""}
    )
    neither = ComposeForm.from_post({**FORM, "body": "  ", "html_body": "\n"}, "UTC")
    assert neither.content() is None
    assert neither.error_for("body") == "write a text body, an HTML body, or both"


def test_an_old_single_html_body_opens_in_the_html_field_and_keeps_its_meaning() -> None:
    old = Content(name="N", from_address="n@example.org", subject="S", body="<p>Old</p>")
    form = ComposeForm.from_draft(old, DeliveryPlan(), "UTC")
    assert (form.body, form.html_body) == ("", "<p>Old</p>")
    saved = form.content()
    assert saved is not None and parts(saved) == parts(old) == (None, "<p>Old</p>")
