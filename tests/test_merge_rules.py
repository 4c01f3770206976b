"""The merge rules exist once per language: ``apply_change`` in
``stores/paths.py`` and in ``lua/common.lua``. This holds the two to each
other on random stored trees and random changes: the real Lua runs on real
Redis 7 and 6.2 (``redis_url``) through the store's merge, in both layouts,
and must leave exactly what Python's rule computes, and the hash layout must
keep the session's size as Python measures it.

Trees are stored JSON, as a session keeps it: tags are one-key dicts such as
``{" t": [...]}``, and there is no empty list (tagged JSON writes it as
``{" l": 0}``) and no float or integer that Redis's ``cjson`` would change
(see FACTS.md); those are the serializer's business, not the merge rules'.
Keys are drawn from a few names, so that paths often meet: tags, names that
look like tags but are not (``"  "``, ``" é"``), numbers, the empty key.
"""

from __future__ import annotations

import copy
import json
import typing as t
import uuid

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_relay_session import RedisSessionStore
from flask_relay_session.stores import Change
from flask_relay_session.stores import MergeStatus
from flask_relay_session.stores.layouts import HASH_META
from flask_relay_session.stores.layouts import SIZE
from flask_relay_session.stores.paths import apply_change
from flask_relay_session.stores.paths import apply_changes_to_fields
from flask_relay_session.stores.paths import dumps
from flask_relay_session.stores.paths import is_dict
from flask_relay_session.stores.paths import session_size

from .helpers import now_ms

KEYS = st.sampled_from(["a", "b", "1", "", " t", " l", "  ", " é", "é/\x7f"])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**13), 10**13)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=5)
)

#: Stored JSON values: no empty list, no float.
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(KEYS, children, max_size=3)
    ),
    max_leaves=8,
)

#: A session's stored data: a dict (not a tag) with at least one key.
TREES = st.dictionaries(KEYS, VALUES, min_size=1, max_size=4).filter(is_dict)


def paths_in(tree: t.Any, above: tuple[str, ...] = ()) -> t.Iterator[tuple[str, ...]]:
    """Yield the path of every value under a dict in ``tree``, tags and
    other one-key dicts included.
    """
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*above, key)
            yield from paths_in(value, (*above, key))


@st.composite
def trees_and_changes(draw: st.DrawFn) -> tuple[dict[str, t.Any], list[Change]]:
    """A tree, and changes whose paths are random or lead into the tree,
    then maybe further: most meet something, a dict, a list, a tag or a
    scalar, on their way.
    """
    tree = draw(TREES)
    paths = st.lists(KEYS, min_size=1, max_size=4).map(tuple)
    into = st.tuples(
        st.sampled_from(sorted(paths_in(tree))), st.lists(KEYS, max_size=2)
    )
    paths |= into.map(lambda pair: (*pair[0], *pair[1]))
    values = st.none() | VALUES.map(lambda value: dumps(value).encode())
    changes = draw(st.lists(st.builds(Change, paths, values), min_size=1, max_size=6))
    return tree, changes


def stored_data(store: RedisSessionStore, sid: str) -> tuple[dict[str, t.Any], int]:
    """Return the data Redis holds for ``sid`` as plain JSON, ``{}`` when the
    session is gone, and its size as the hash layout keeps it (0 with the
    JSON layout).
    """
    key = store.session_key(sid)
    if store.layout == "json":
        raw = store.redis.get(key)
        return ({} if raw is None else json.loads(raw)["data"]), 0
    fields = {name.decode(): value for name, value in store.redis.hgetall(key).items()}
    data = {
        name: json.loads(value)
        for name, value in fields.items()
        if name not in HASH_META
    }
    return data, int(fields.get(SIZE, 0))


@pytest.mark.parametrize("layout", ["json", "hash"])
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=trees_and_changes())
# Each above-the-path value a set replaces, or goes into: a tag, a list, a
# scalar, and one-key dicts that look like tags and are not.
@example(case=({"a": {" t": [1, 2]}}, [Change(("a", "b"), b"2")]))
@example(case=({"a": {" \u00e9": 1}}, [Change(("a", "b"), b"2")]))
@example(case=({"a": {"  ": 1}}, [Change(("a", "b"), b"2")]))
@example(case=({"a": {" 1": 1}}, [Change(("a", " 1"), None)]))
@example(case=({"a": [1]}, [Change(("a", "b"), None), Change(("a", "b"), b"1")]))
@example(
    case=({"a": 1, "b": {"c": 1}}, [Change(("b", "c"), None), Change(("a",), None)])
)
def test_lua_merges_exactly_as_python_does(
    redis_url: str,
    layout: str,
    case: tuple[dict[str, t.Any], list[Change]],
) -> None:
    tree, changes = case
    # Python: the rule on the whole tree, and on each top-level key's JSON,
    # as the hash layout and the memory store keep it. They agree.
    expected = copy.deepcopy(tree)
    for change in changes:
        apply_change(expected, change)
    fields = {key: dumps(value).encode() for key, value in tree.items()}
    apply_changes_to_fields(fields, changes)
    assert {key: json.loads(value) for key, value in fields.items()} == expected

    # Lua: the same changes through the merge script.
    store = RedisSessionStore(redis.Redis.from_url(redis_url), layout=layout)
    sid = uuid.uuid4().hex
    options: dict[str, t.Any] = dict(
        now=now_ms(), ttl=60_000, lock_token=None, max_size=10**7
    )
    initial = [Change((key,), dumps(value).encode()) for key, value in tree.items()]
    assert store.merge(sid, initial, create=True, **options).status is (
        MergeStatus.DONE
    )
    assert stored_data(store, sid)[0] == tree
    result = store.merge(sid, changes, create=False, **options)
    assert result.status is MergeStatus.DONE
    assert result.emptied == (not expected)
    data, size = stored_data(store, sid)
    store.redis.delete(store.session_key(sid))
    store.redis.close()
    assert data == expected
    if layout == "hash" and expected:
        assert size == session_size(fields)
