"""Change tracking: which paths a mutation marks, and what a save writes.

The first half tests :mod:`flask_relay_session.tracking` directly; the second
half goes through :class:`~flask_relay_session.session.Session` and a
:class:`~flask_relay_session.MemorySessionStore`, saving and loading again, so
that a path that was not marked shows up as a lost write.
"""

from __future__ import annotations

import copy
import json
import pickle
import typing as t

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from flask_relay_session import MemorySessionStore
from flask_relay_session.config import Settings
from flask_relay_session.serialization import MAX_DEPTH
from flask_relay_session.session import Session
from flask_relay_session.session import SessionPolicy
from flask_relay_session.tracking import DirtyPaths
from flask_relay_session.tracking import TrackedDict
from flask_relay_session.tracking import TrackedList
from flask_relay_session.tracking import track

# --------------------------------------------------------------------------
# DirtyPaths
# --------------------------------------------------------------------------


def test_a_parent_path_absorbs_its_children() -> None:
    dirty = DirtyPaths()
    dirty.mark(("cart", "items"))
    dirty.mark(("cart", "total", "net"))
    dirty.mark(("user",))
    dirty.mark(("cart",))
    assert set(dirty) == {("cart",), ("user",)}


def test_a_child_of_a_dirty_path_adds_nothing() -> None:
    dirty = DirtyPaths()
    dirty.mark(("cart",))
    dirty.mark(("cart", "items"))
    dirty.mark(("cart", "items", "0"))
    assert set(dirty) == {("cart",)}
    assert dirty.covers(("cart", "items"))
    assert not dirty.covers(("carts",))


def test_a_sibling_with_a_common_prefix_is_not_absorbed() -> None:
    dirty = DirtyPaths()
    dirty.mark(("a", "b"))
    dirty.mark(("a", "bc"))
    dirty.mark(("ab",))
    assert set(dirty) == {("a", "b"), ("a", "bc"), ("ab",)}
    dirty.mark(("a",))
    assert set(dirty) == {("a",), ("ab",)}


def test_dirty_paths_with_keys_of_mixed_types_can_be_listed() -> None:
    # ``session[1] = ...`` is allowed (the key is stored as "1"), so paths
    # may mix ints and strings; listing them must not compare an int with a
    # str.
    dirty = DirtyPaths()
    dirty.mark((1,))
    dirty.mark(("a",))
    dirty.mark(("a", None))
    assert set(dirty) == {(1,), ("a",)}
    assert len(list(dirty)) == 2


def test_clear_forgets_every_path() -> None:
    dirty = DirtyPaths()
    dirty.mark(("a",))
    dirty.clear()
    assert not dirty
    assert list(dirty) == []


_paths = st.lists(st.sampled_from("ab"), min_size=1, max_size=4).map(tuple)


@given(st.lists(_paths | st.none(), max_size=40))
def test_marking_keeps_the_topmost_of_the_marked_paths(
    marks: list[tuple[str, ...] | None],
) -> None:
    # ``None`` stands for a save, which clears the set.
    dirty = DirtyPaths()
    expected: set[tuple[str, ...]] = set()
    for path in marks:
        if path is None:
            dirty.clear()
            expected.clear()
            continue
        dirty.mark(path)
        if not any(path[:end] in expected for end in range(1, len(path) + 1)):
            expected = {other for other in expected if other[: len(path)] != path}
            expected.add(path)
        assert set(dirty) == expected
        assert len(dirty) == len(expected)
        assert list(dirty) == sorted(expected)
        for other in expected:
            assert dirty.covers(other)
            assert dirty.covers((*other, "c"))
            assert not dirty.covers(("c", *other))


# --------------------------------------------------------------------------
# Tracked containers
# --------------------------------------------------------------------------


def tracked(data: dict[str, t.Any]) -> tuple[TrackedDict, DirtyPaths]:
    dirty = DirtyPaths()
    return TrackedDict(data, dirty), dirty


def test_nested_dict_assignment_marks_the_nested_path() -> None:
    root, dirty = tracked({"user": {"profile": {"name": "a"}}})
    root["user"]["profile"]["name"] = "b"
    assert set(dirty) == {("user", "profile", "name")}


def test_reading_marks_nothing() -> None:
    root, dirty = tracked({"a": {"b": [1, {"c": [2]}]}, "d": 1})
    root["a"]["b"][1]["c"][0]
    list(root.items())
    list(root["a"].values())
    root.get("a")
    json.dumps(root)
    assert "a" in root
    assert not dirty


LIST_MUTATIONS: dict[str, t.Callable[[list[t.Any]], object]] = {
    "append": lambda items: items.append(9),
    "extend": lambda items: items.extend([9, 8]),
    "insert": lambda items: items.insert(0, 9),
    "pop": lambda items: items.pop(),
    "pop index": lambda items: items.pop(0),
    "remove": lambda items: items.remove(2),
    "clear": lambda items: items.clear(),
    "sort": lambda items: items.sort(reverse=True),
    "reverse": lambda items: items.reverse(),
    "setitem": lambda items: items.__setitem__(0, 9),
    "setitem negative": lambda items: items.__setitem__(-1, 9),
    "setitem slice": lambda items: items.__setitem__(slice(0, 2), [7, 7, 7]),
    "setitem extended slice": lambda items: items.__setitem__(
        slice(None, None, 2), [5, 5]
    ),
    "delitem": lambda items: items.__delitem__(0),
    "delitem slice": lambda items: items.__delitem__(slice(1, None)),
    "iadd": lambda items: items.__iadd__([9]),
    "imul": lambda items: items.__imul__(2),
    "imul zero": lambda items: items.__imul__(0),
}


@pytest.mark.parametrize("mutation", sorted(LIST_MUTATIONS))
def test_every_list_mutation_marks_the_path_of_the_list(mutation: str) -> None:
    root, dirty = tracked({"cart": {"items": [1, 2, 3]}})
    items = root["cart"]["items"]
    expected = [1, 2, 3]
    LIST_MUTATIONS[mutation](items)
    LIST_MUTATIONS[mutation](expected)
    assert items == expected
    assert set(dirty) == {("cart", "items")}


def test_augmented_assignment_on_a_nested_list_marks_it() -> None:
    root, dirty = tracked({"cart": {"items": [1]}})
    root["cart"]["items"] += [2]
    root["cart"]["n"] = [0]
    root["cart"]["n"] *= 3
    assert root == {"cart": {"items": [1, 2], "n": [0, 0, 0]}}
    assert set(dirty) == {("cart", "items"), ("cart", "n")}


def test_a_change_inside_a_list_marks_the_outermost_list() -> None:
    root, dirty = tracked({"a": {"rows": [{"x": 1, "deep": [[{"y": 2}]]}]}})
    rows = root["a"]["rows"]
    rows[0]["x"] = 5
    assert set(dirty) == {("a", "rows")}
    dirty.clear()
    rows[0]["deep"][0][0]["y"] = 3
    assert set(dirty) == {("a", "rows")}
    dirty.clear()
    rows[0]["deep"][0].append(1)
    assert set(dirty) == {("a", "rows")}
    dirty.clear()
    for row in rows:
        row.setdefault("z", []).append(1)
    assert set(dirty) == {("a", "rows")}
    assert root["a"]["rows"][0]["z"] == [1]


def test_a_dict_moved_into_a_list_at_its_own_path_marks_the_list() -> None:
    root, dirty = tracked({"l": {"k": 1}})
    # A dict read from the top-level key "l" (not in a list) is put into a
    # list stored at the same path.
    root["l"] = [root["l"]]
    dirty.clear()  # what a save does
    root["l"][0]["k"] = 2
    assert set(dirty) == {("l",)}, "a change inside a list must mark the list"


def test_a_dict_moved_out_of_a_list_to_the_lists_path_marks_its_keys() -> None:
    root, dirty = tracked({"l": [{"k": 1, "j": 1}]})
    root["l"] = root["l"][0]
    dirty.clear()
    root["l"]["k"] = 2
    assert set(dirty) == {("l", "k")}


def test_items_appended_to_a_list_are_tracked_after_a_save() -> None:
    root, dirty = tracked({"rows": []})
    root["rows"].append({"n": 1})
    root["rows"].insert(0, [1])
    root["rows"] += [{"m": []}]
    dirty.clear()  # what a save does
    root["rows"][1]["n"] = 2
    assert set(dirty) == {("rows",)}
    dirty.clear()
    root["rows"][0].append(2)
    assert set(dirty) == {("rows",)}
    dirty.clear()
    for row in root["rows"]:
        if isinstance(row, dict) and "m" in row:
            row["m"].append(3)
    assert set(dirty) == {("rows",)}
    dirty.clear()
    for row in reversed(root["rows"]):
        if isinstance(row, dict) and "n" in row:
            row["n"] = 5
    assert set(dirty) == {("rows",)}
    assert root["rows"] == [[1, 2], {"n": 5}, {"m": [3]}]


def test_slices_and_copies_of_a_tracked_list_are_plain_lists() -> None:
    root, dirty = tracked({"l": [1, 2, 3]})
    for part in (root["l"][1:], root["l"].copy(), root["l"] + [4], root["l"] * 2):
        assert type(part) is list
        part.append(4)
    assert type(root["l"].copy()) is list
    assert root == {"l": [1, 2, 3]}
    assert not dirty


def test_items_shared_with_a_slice_or_copy_still_mark_the_list() -> None:
    # A shallow copy shares its items: changing one changes the session.
    root, dirty = tracked({"l": [{"n": 1}, {"n": 2}], "d": {"x": {"n": 1}}})
    root["l"][:1][0]["n"] = 5
    assert set(dirty) == {("l",)}
    dirty.clear()
    root["l"].copy()[1]["n"] = 6
    assert set(dirty) == {("l",)}
    dirty.clear()
    root["d"].copy()["x"]["n"] = 7
    assert set(dirty) == {("d", "x", "n")}
    assert root == {"l": [{"n": 5}, {"n": 6}], "d": {"x": {"n": 7}}}


DICT_MUTATIONS: dict[str, tuple[t.Callable[[dict[str, t.Any]], object], set[str]]] = {
    "setitem": (lambda d: d.__setitem__("a", 9), {"a"}),
    "setitem new": (lambda d: d.__setitem__("new", 9), {"new"}),
    "delitem": (lambda d: d.__delitem__("a"), {"a"}),
    "setdefault missing": (lambda d: d.setdefault("new", 5), {"new"}),
    "pop": (lambda d: d.pop("a"), {"a"}),
    "pop default": (lambda d: d.pop("missing", None), set()),
    "popitem": (lambda d: d.popitem(), {"b"}),
    "update": (lambda d: d.update({"a": 2}, c=3), {"a", "c"}),
    "update pairs": (lambda d: d.update([("b", 0)]), {"b"}),
    "clear": (lambda d: d.clear(), {"a", "b"}),
    "ior": (lambda d: d.__ior__({"b": 7, "z": 8}), {"b", "z"}),
}


@pytest.mark.parametrize("mutation", sorted(DICT_MUTATIONS))
def test_every_dict_mutation_marks_the_changed_keys(mutation: str) -> None:
    root, dirty = tracked({"x": {"a": 1, "b": 2}})
    change, keys = DICT_MUTATIONS[mutation]
    expected = {"a": 1, "b": 2}
    change(root["x"])
    change(expected)
    assert root["x"] == expected
    assert set(dirty) == {("x", key) for key in keys}


def test_setdefault_of_an_existing_key_marks_nothing() -> None:
    root, dirty = tracked({"x": {"a": [1]}})
    root["x"].setdefault("a", []).append(2)
    assert root == {"x": {"a": [1, 2]}}
    assert set(dirty) == {("x", "a")}


def test_missing_keys_raise_like_a_dict_and_mark_nothing() -> None:
    root, dirty = tracked({"x": {}})
    with pytest.raises(KeyError):
        root["x"]["nope"]
    with pytest.raises(KeyError):
        root["x"].pop("nope")
    with pytest.raises(KeyError):
        del root["x"]["nope"]
    with pytest.raises(KeyError):
        root["x"].popitem()
    assert root["x"].pop("nope", 0) == 0
    assert not dirty


def test_tracked_values_are_real_dicts_and_lists() -> None:
    root, _ = tracked({"d": {"l": [1, {"x": None}]}})
    d = root["d"]
    assert isinstance(d, dict)
    assert isinstance(d["l"], list)
    assert isinstance(d["l"][1], dict)
    assert json.dumps(root, sort_keys=True) == '{"d": {"l": [1, {"x": null}]}}'
    assert json.loads(json.dumps(d)) == {"l": [1, {"x": None}]}
    assert d == {"l": [1, {"x": None}]}


def test_copies_and_pickles_are_plain_containers() -> None:
    root, dirty = tracked({"d": {"l": [1, {"x": [2]}]}})
    d = root["d"]
    d["l"][1]["x"]  # make sure nested values are wrapped

    def plain(value: t.Any) -> None:
        assert type(value) in (dict, list, int), type(value)
        if isinstance(value, dict):
            for item in value.values():
                plain(item)
        elif isinstance(value, list):
            for item in value:
                plain(item)

    for copied in (
        copy.deepcopy(d),
        pickle.loads(pickle.dumps(d)),
        pickle.loads(pickle.dumps(d, protocol=0)),
        copy.deepcopy(root),
    ):
        plain(copied)
    assert type(copy.copy(d)) is dict
    assert type(copy.copy(d["l"])) is list
    assert type(d.copy()) is dict
    assert type(d["l"].copy()) is list
    deep = copy.deepcopy(d)
    deep["l"].append(3)
    deep["l"][1]["x"].append(3)
    assert not dirty
    assert d == {"l": [1, {"x": [2]}]}


def test_track_leaves_scalars_and_tuples_alone() -> None:
    dirty = DirtyPaths()
    for value in (1, "s", None, (1, [2]), b"x"):
        assert track(value, dirty, ("a",), False) is value
    lst = track([1], dirty, ("a",), False)
    assert isinstance(lst, TrackedList)
    assert track(lst, dirty, ("a",), False) is lst


def test_list_items_are_tracked_when_read_not_when_the_list_is() -> None:
    dirty = DirtyPaths()
    rows = TrackedList([[1], {"n": 1}, [[2]]], dirty, ("rows",))
    assert [type(item) for item in list.__iter__(rows)] == [list, dict, list]
    assert type(rows[1]) is TrackedDict
    assert type(list.__getitem__(rows, 1)) is TrackedDict
    assert type(list.__getitem__(rows, 0)) is list
    assert type(rows[-1]) is TrackedList
    assert type(list.__getitem__(rows[-1], 0)) is list
    assert not dirty
    rows[-1][0].append(3)
    assert set(dirty) == {("rows",)}


def test_slices_track_only_the_items_they_hold() -> None:
    dirty = DirtyPaths()
    rows = TrackedList([{"n": i} for i in range(6)], dirty, ("rows",))
    assert rows[4:1:-2] == [{"n": 4}, {"n": 2}]
    tracked = [type(item) is TrackedDict for item in list.__iter__(rows)]
    assert tracked == [False, False, True, False, True, False]
    rows[-2:][0]["n"] = 40
    assert set(dirty) == {("rows",)}
    assert rows[4] == {"n": 40}


def test_lists_nested_far_deeper_than_a_session_are_read_without_recursion() -> None:
    dirty = DirtyPaths()
    deep: list[t.Any] = ["leaf"]
    for _ in range(100_000):
        deep = [deep]
    root = TrackedDict({"v": deep}, dirty)
    value = root["v"]
    for _ in range(100_000):
        value = value[0]
    assert value == ["leaf"]
    assert not dirty
    value.append("more")
    assert set(dirty) == {("v",)}


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_values_nested_to_the_limit_copy_and_pickle_as_plain_ones(kind: str) -> None:
    plain: t.Any = "leaf"
    for _ in range(MAX_DEPTH):
        plain = [plain] if kind == "list" else {"k": plain}
    root, dirty = tracked({"v": copy.deepcopy(plain)})
    value = root["v"]
    for _ in range(MAX_DEPTH - 1):
        value = value[0] if kind == "list" else value["k"]  # tracks each level
    for copied in (
        copy.deepcopy(root["v"]),
        pickle.loads(pickle.dumps(root["v"])),
        pickle.loads(pickle.dumps(root["v"], protocol=0)),
    ):
        assert copied == plain
        for _ in range(MAX_DEPTH):
            assert type(copied) in (list, dict)
            copied = copied[0] if kind == "list" else copied["k"]
    assert not dirty


# --------------------------------------------------------------------------
# Through a Session and a store
# --------------------------------------------------------------------------


@pytest.fixture
def store() -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture
def policy(store: MemorySessionStore) -> SessionPolicy:
    app = Flask(__name__)
    return SessionPolicy(
        store=store,
        settings=Settings.from_app(app),
        lifetime=3_600_000,
        refresh_each_request=True,
    )


def saved(policy: SessionPolicy, data: dict[str, t.Any]) -> str:
    """Create a stored session holding ``data``; return its id."""
    session = Session(policy)
    for key, value in data.items():
        session[key] = value
    session.save()
    return session.sid


def reload(policy: SessionPolicy, sid: str) -> dict[str, t.Any]:
    """Load the stored session ``sid`` as plain data."""
    stored = policy.store.load(sid, ttl=None)
    assert stored is not None
    return stored.decoded()


def test_deleting_a_key_and_setting_it_to_none_are_different(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"a": 1, "b": 2, "c": {"d": 3, "e": 4}})
    session = Session(policy, sid)
    del session["a"]
    session["b"] = None
    del session["c"]["d"]
    session["c"]["e"] = None
    session.save()
    assert reload(policy, sid) == {"b": None, "c": {"e": None}}


def test_pop_popitem_clear_and_setdefault_on_the_session_are_saved(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"a": 1, "b": 2, "c": 3})
    session = Session(policy, sid)
    assert session.pop("a") == 1
    session.setdefault("d", []).append(4)
    session.update({"e": 5})
    session |= {"f": (6,)}
    session.save()
    assert reload(policy, sid) == {"b": 2, "c": 3, "d": [4], "e": 5, "f": (6,)}
    session = Session(policy, sid)
    key, _ = session.popitem()
    session.save()
    assert key not in reload(policy, sid)
    session = Session(policy, sid)
    session.clear()
    session.save()
    assert policy.store.load(sid, ttl=None) is None


def test_nested_mutations_are_saved_without_setting_modified(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"cart": {"items": [{"n": 1}], "meta": {"k": "v"}}})
    session = Session(policy, sid)
    session["cart"]["items"].append({"n": 2})
    session["cart"]["items"][0]["n"] = 10
    session["cart"]["meta"]["k2"] = "v2"
    del session["cart"]["meta"]["k"]
    session["cart"]["total"] = 3
    assert session.dirty_paths == {
        ("cart", "items"),
        ("cart", "meta", "k2"),
        ("cart", "meta", "k"),
        ("cart", "total"),
    }
    session.save()
    assert reload(policy, sid) == {
        "cart": {"items": [{"n": 10}, {"n": 2}], "meta": {"k2": "v2"}, "total": 3}
    }


def test_values_mutated_through_the_callers_reference_are_saved(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"keep": 1, "cart": {}})
    session = Session(policy, sid)
    cart: dict[str, t.Any] = {}
    items: list[t.Any] = []
    session["new"] = cart
    session["cart"]["items"] = items
    cart["n"] = 1
    cart["nested"] = {"x": []}
    cart["nested"]["x"].append(1)
    items.append({"a": 1})
    items[0]["a"] = 2
    session.save()
    assert reload(policy, sid) == {
        "keep": 1,
        "new": {"n": 1, "nested": {"x": [1]}},
        "cart": {"items": [{"a": 2}]},
    }


def test_a_value_appended_to_a_list_and_mutated_later_is_saved(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"rows": []})
    session = Session(policy, sid)
    row: dict[str, t.Any] = {"n": 1}
    session["rows"].append(row)
    row["n"] = 2
    session.save()
    assert reload(policy, sid) == {"rows": [{"n": 2}]}
    # After the save, the same request keeps changing what it appended.
    session["rows"][0]["n"] = 3
    session.save()
    assert reload(policy, sid) == {"rows": [{"n": 3}]}


def test_a_dict_moved_into_a_list_under_its_own_key_saves_the_list(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"l": {"k": 1}})
    session = Session(policy, sid)
    session["l"] = [session["l"]]
    session.save()
    session["l"][0]["k"] = 2
    session.save()
    assert reload(policy, sid) == {"l": [{"k": 2}]}


def test_only_the_changed_paths_are_sent(policy: SessionPolicy) -> None:
    sid = saved(policy, {"a": {"b": 1, "c": 2}, "big": "x" * 1000})
    session = Session(policy, sid)
    session["a"]["b"] = 5
    calls: list[t.Any] = []
    store = policy.store
    original = store.merge

    def spy(*args: t.Any, **kwargs: t.Any) -> t.Any:
        calls.append(args[1])
        return original(*args, **kwargs)

    store.merge = spy  # type: ignore[method-assign]
    session.save()
    [changes] = calls
    assert [(c.path, c.value) for c in changes] == [(("a", "b"), b"5")]
    assert reload(policy, sid) == {"a": {"b": 5, "c": 2}, "big": "x" * 1000}


def test_a_child_change_then_a_parent_replacement_saves_the_parent(
    policy: SessionPolicy,
) -> None:
    sid = saved(policy, {"a": {"b": {"c": 1}, "d": 1}})
    session = Session(policy, sid)
    session["a"]["b"]["c"] = 2
    session["a"] = {"x": 1}
    session["a"]["y"] = 2
    assert session.dirty_paths == {("a",)}
    session.save()
    assert reload(policy, sid) == {"a": {"x": 1, "y": 2}}


def test_escaped_keys_are_saved_at_their_own_path(policy: SessionPolicy) -> None:
    sid = saved(policy, {" t": {" l": 1}, "a.b": {"c": 1}})
    session = Session(policy, sid)
    session[" t"][" l"] = 2
    session[" t"][" "] = 3
    session["a.b"]["c"] = 2
    session["\ud800"] = {"\udc00": 1}
    session.save()
    assert reload(policy, sid) == {
        " t": {" l": 2, " ": 3},
        "a.b": {"c": 2},
        "\ud800": {"\udc00": 1},
    }


def test_int_keys_are_saved_as_strings_like_in_flask(policy: SessionPolicy) -> None:
    sid = saved(policy, {"a": 1})
    session = Session(policy, sid)
    session[1] = "one"  # type: ignore[index]
    session["b"] = {2: "two"}
    session.save()
    assert reload(policy, sid) == {"a": 1, "1": "one", "b": {"2": "two"}}


def test_a_loaded_session_reads_back_the_tracked_containers_equal(
    policy: SessionPolicy,
) -> None:
    data = {"a": {"b": [1, {"c": ()}], "e": []}, "f": [[], {}]}
    sid = saved(policy, data)
    session = Session(policy, sid)
    assert dict(session) == data
    assert json.loads(json.dumps(session["a"], default=list)) == {
        "b": [1, {"c": []}],
        "e": [],
    }
