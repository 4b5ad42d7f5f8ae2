"""Merge fields: what one contact's copy of a message says (pure; the delivery worker calls it).

Syntax: ``{{ field }}`` or ``{{ field | fallback }}`` in the subject and both bodies. A field is
one of the contact's ``attributes``, or ``email`` / ``contact_id``. A field the contact does not
have (or has as null) renders its fallback, or nothing. In the HTML part (``html_body``, or an old
single body whose first non-blank character is ``<``: :func:`parts`) the values are HTML-escaped,
so a contact's data cannot inject markup; in the text part they are written as they are;
fallbacks are the author's own text and are left as written. Booleans render as ``true`` /
``false``, numbers as Python prints them. Anything that is not a well-formed placeholder is left
as it is. See docs/delivery.md.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from schemas import Contact, Content

__all__ = ["RenderedMail", "body_parts", "is_html", "parts", "render"]

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:\|([^{}]*?))?\s*\}\}")


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """One contact's subject and parts, merge fields applied. ``text`` / ``html``: the text/plain
    and text/html parts, ``None`` when the message has no such part (at least one is there)."""

    subject: str
    text: str | None
    html: str | None

    @property
    def body(self) -> str:
        """The single body of a one-part mail, or the text part of a two-part one."""
        return self.text if self.text is not None else (self.html or "")


def is_html(body: str) -> bool:
    """Whether a body is sent as HTML: its first non-blank character opens a tag."""
    return body.lstrip().startswith("<")


def parts(content: Content) -> tuple[str | None, str | None]:
    """The message's (text, HTML) templates; at least one is not None.

    * ``html_body`` absent (``None``): a record of the single-body era, read as it always was:
      ``body`` is HTML when :func:`is_html`, text otherwise (an empty body: an empty text part);
    * ``html_body`` present: ``body`` is the text part as written, never sniffed (a text part may
      begin with ``<``), and ``html_body`` the HTML part; an empty one of the two is no part, and
      both empty is one empty text part.
    """
    return body_parts(content.body, content.html_body)


def body_parts(body: str, html_body: str | None) -> tuple[str | None, str | None]:
    """:func:`parts` of a content's two fields as they are (for the web pages' stored dicts)."""
    if html_body is None:
        return (None, body) if is_html(body) else (body, None)
    text = body or None
    html_part = html_body or None
    if text is None and html_part is None:
        return "", None
    return text, html_part


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
    text, html_part = parts(content)
    return RenderedMail(
        subject=_fill(content.subject, contact, escape=False),
        text=None if text is None else _fill(text, contact, escape=False),
        html=None if html_part is None else _fill(html_part, contact, escape=True),
    )
