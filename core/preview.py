"""What a preview shows beside the rendered mail: each merge field, its value or its fallback.

The mail itself is rendered by :func:`core.render.render`, the function delivery uses; this
module only lists the placeholders of the subject and both bodies (the same syntax,
``core.render``'s own pattern) and says, for one contact, which ones fell back because the
contact lacks the field.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.render import _FIELD, _value, parts
from schemas import Contact, Content

__all__ = ["MergeField", "merge_fields"]


@dataclass(frozen=True, slots=True)
class MergeField:
    """One placeholder as one contact's copy fills it.

    ``value`` is the contact's value (``None``: the contact does not have the field), ``fallback``
    the author's fallback text (``None``: none written), ``missing`` whether the fallback (or
    nothing) was used.
    """

    name: str
    value: str | None
    fallback: str | None
    missing: bool


def merge_fields(content: Content, contact: Contact) -> list[MergeField]:
    """Every distinct placeholder of the subject, the text body then the HTML body, in order of
    first appearance (one entry for a placeholder used in several of them)."""
    seen: set[tuple[str, str | None]] = set()
    fields: list[MergeField] = []
    text, html_part = parts(content)
    for template in (content.subject, text or "", html_part or ""):
        for match in _FIELD.finditer(template):
            name = match.group(1)
            fallback = match.group(2)
            fallback = None if fallback is None else fallback.strip()
            if (name, fallback) in seen:
                continue
            seen.add((name, fallback))
            value = _value(contact, name)
            fields.append(MergeField(name, value, fallback, value is None))
    return fields
