"""JSON merge patch (RFC 7396): how a partial edit of a draft applies (docs/api.md#edit-a-draft).
Pure: no I/O, no clock."""

from __future__ import annotations

from typing import Any

__all__ = ["merge_patch"]


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` applied as RFC 7396 says: an object patch merges member by
    member, a member set to null is removed, anything else (a string, a number, an array)
    replaces the target whole. Neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
