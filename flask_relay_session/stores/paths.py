"""The merge rules of :meth:`SessionStore.merge`, for stores written in Python.

They mirror ``lua/merge.lua``: setting a path creates the dicts above it and
replaces anything above it that is not a dict (a list, a scalar, a tagged
value); deleting a path that does not exist does nothing. Trees here are
stored JSON, decoded with plain :func:`json.loads`: tags are still tags.
"""

from __future__ import annotations

import json
import typing as t

from .base import Change

#: Encodes stored JSON the way the stores keep it: compact, UTF-8.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def is_dict(value: t.Any) -> bool:
    """Whether a stored JSON value is a dict, not a tagged value."""
    if not isinstance(value, dict):
        return False
    if len(value) != 1:
        return True
    key = next(iter(value))
    # A tag is a space and one letter; a user's key " " is stored as "  ".
    return not (len(key) == 2 and key[0] == " " and key[1].isalpha())


def apply_change(tree: dict[str, t.Any], change: Change) -> None:
    """Apply ``change`` to the stored data ``tree``, in place."""
    *parents, last = change.path
    node: dict[str, t.Any] = tree
    for key in parents:
        child = node.get(key)
        if not is_dict(child):
            if change.value is None:
                return
            child = node[key] = {}
        node = t.cast("dict[str, t.Any]", child)
    if change.value is None:
        node.pop(last, None)
    else:
        node[last] = json.loads(change.value)


def apply_change_to_fields(fields: dict[str, bytes], change: Change) -> None:
    """Apply ``change`` to data kept as each top-level key's JSON, in place.

    A change of a whole top-level key replaces or removes its JSON as it is;
    a deeper change decodes and re-encodes that one key only.
    """
    top, *rest = change.path
    if not rest:
        if change.value is None:
            fields.pop(top, None)
        else:
            fields[top] = change.value
        return
    tree = json.loads(fields[top]) if top in fields else None
    if not is_dict(tree):
        if change.value is None:
            return
        tree = {}
    apply_change(t.cast("dict[str, t.Any]", tree), Change(tuple(rest), change.value))
    fields[top] = dumps(tree).encode()
