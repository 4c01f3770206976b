"""The merge rules of :meth:`SessionStore.merge`, for stores written in Python.

:func:`apply_change` is the rule, the only one in Python: setting a path
creates the dicts above it and replaces anything above it that is not a dict
(a list, a scalar, a tagged value); deleting a path that does not exist does
nothing. Its twin is ``apply_change`` in ``lua/common.lua``, which both
layouts' merge scripts use. :func:`apply_changes_to_fields` applies the rule
to data kept as each top-level key's JSON, as the hash layout and the memory
store keep it (twin: ``lua/hash_merge.lua``). Trees here are stored JSON,
decoded with plain :func:`json.loads`: tags are still tags.
``tests/test_merge_rules.py`` holds the two languages to each other.

The size of a session, which ``RELAY_SESSION_MAX_SIZE`` limits, is defined
here too (:func:`session_size`), once for every store and layout.
"""

from __future__ import annotations

import json
import typing as t

from .base import Change
from .base import too_large

#: Encodes stored JSON the way the stores keep it: compact, UTF-8. The Lua
#: scripts write what they re-encode the same way (``encode`` in
#: ``lua/common.lua``).
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def session_size(fields: t.Mapping[str, bytes]) -> int:
    """Return the size of a session, as ``RELAY_SESSION_MAX_SIZE`` limits it.

    It is the sum, over the session's top-level keys, of the length in
    UTF-8 of the stored key and of the length of its value's JSON as
    :data:`dumps` writes it. It depends on the data only: not on the store,
    the layout, or which writes made the session, so a change that does not
    grow a value never makes a session too large.

    Its twins: ``encode_data`` in ``lua/merge.lua`` measures the JSON
    layout, and the hash layout keeps it in the ``" size"`` field
    (``lua/hash_merge.lua``).

    :param fields: each stored top-level key and its value's JSON, as
        :data:`dumps` writes it.
    """
    return sum(len(key.encode()) + len(value) for key, value in fields.items())


def checked_size(fields: t.Mapping[str, bytes], max_size: int) -> int:
    """Return :func:`session_size` of ``fields``.

    :raises SessionSerializationError: it is more than ``max_size``.
    """
    size = session_size(fields)
    if size > max_size:
        raise too_large(size, max_size)
    return size


#: What :meth:`dict.pop` returns for a key that is not there.
_ABSENT = object()


def is_dict(value: t.Any) -> bool:
    """Whether a stored JSON value is a dict, not a tagged value.

    Twin: ``is_dict`` and ``is_tag`` in ``lua/common.lua``.
    """
    if not isinstance(value, dict):
        return False
    if len(value) != 1:
        return True
    key = next(iter(value))
    # A tag is a space and one ASCII letter; a user's key " " is stored as
    # "  ".
    return not (
        len(key) == 2 and key[0] == " " and key[1].isascii() and key[1].isalpha()
    )


def apply_change(tree: dict[str, t.Any], change: Change) -> bool:
    """Apply ``change`` to the stored data ``tree``, in place: the merge
    rule. Twin: ``apply_change`` in ``lua/common.lua``.

    Return whether anything changed: deleting a path that does not exist
    changes nothing.
    """
    *parents, last = change.path
    node: dict[str, t.Any] = tree
    for key in parents:
        child = node.get(key)
        if not is_dict(child):
            if change.value is None:
                return False
            child = node[key] = {}
        node = t.cast("dict[str, t.Any]", child)
    if change.value is not None:
        node[last] = json.loads(change.value)
        return True
    return node.pop(last, _ABSENT) is not _ABSENT


def apply_changes_to_fields(
    fields: dict[str, bytes], changes: t.Iterable[Change]
) -> None:
    """Apply ``changes``, in order, to data kept as each top-level key's
    JSON, in place. Twin: ``lua/hash_merge.lua``.

    A change of a whole top-level key replaces or removes its JSON as it is.
    Deeper changes decode their top-level key's JSON once, however many of
    them there are, apply :func:`apply_change` to it, and encode it once at
    the end, so the work follows the size of the keys they touch plus their
    number.
    """
    #: The decoded values of the keys deeper changes touched, by key: the
    #: tree they apply to.
    trees: dict[str, t.Any] = {}
    #: The keys whose decoded value changed, to encode at the end.
    dirty: set[str] = set()
    for change in changes:
        top = change.path[0]
        if len(change.path) == 1:
            trees.pop(top, None)
            dirty.discard(top)
            if change.value is None:
                fields.pop(top, None)
            else:
                fields[top] = change.value
            continue
        if top not in trees and top in fields:
            trees[top] = json.loads(fields[top])
        if apply_change(trees, change):
            dirty.add(top)
    for top in dirty:
        fields[top] = dumps(trees[top]).encode()
