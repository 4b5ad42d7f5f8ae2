"""Merge fields: what one contact's copy of a message says (pure; the delivery worker calls it).

Syntax: ``{{ field }}`` or ``{{ field | fallback }}`` in the subject and the body. A field is one
of the contact's ``attributes``, or ``email`` / ``contact_id``. A field the contact does not have
(or has as null) renders its fallback, or nothing. In an HTML body (one whose first non-blank
character is ``<``) the values are HTML-escaped, so a contact's data cannot inject markup;
fallbacks are the author's own text and are left as written. Booleans render as ``true`` /
``false``, numbers as Python prints them. Anything that is not a well-formed placeholder is left
as it is. See docs/delivery.md.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from schemas import Contact, Content

__all__ = ["RenderedMail", "is_html", "render"]

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:\|([^{}]*?))?\s*\}\}")


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """One contact's subject and body, merge fields applied."""

    subject: str
    body: str
    html: bool


def is_html(body: str) -> bool:
    """Whether a body is sent as HTML: its first non-blank character opens a tag."""
    return body.lstrip().startswith("<")


def _value(contact: Contact, name: str) -> str | None:
    if name == "email":
        return contact.email
    if name == "contact_id":
        return contact.contact_id
    value = contact.attributes.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(template: str, contact: Contact, escape: bool) -> str:
    if "{{" not in template:
        return template

    def one(match: re.Match[str]) -> str:
        value = _value(contact, match.group(1))
        if value is None:
            return (match.group(2) or "").strip()
        return html.escape(value) if escape else value

    return _FIELD.sub(one, template)


def render(content: Content, contact: Contact) -> RenderedMail:
    """The message as ``contact`` receives it, merge values as they are. A subject is a header
    and cannot carry a line break: a merge value that brings one (or another control character)
    into it is not rewritten here but refused by the mail builder, so that send fails with that
    reason instead of going out with a subject its author never wrote."""
    as_html = is_html(content.body)
    subject = _fill(content.subject, contact, escape=False)
    return RenderedMail(subject=subject, body=_fill(content.body, contact, as_html), html=as_html)
