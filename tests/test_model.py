"""A model test: random sessions and mutations against a plain dict.

Hypothesis builds a random nested session, stores it, then applies a random
sequence of operations both to a :class:`~flask_relay_session.session.Session`
(through its mapping API and the tracked dicts and lists it hands out, and
through the caller's own references to values it was given) and to a plain
dict, the model. Saves, reloads as a new request and id rotations happen in
between. At the end, a fresh session loaded from the store must equal the
model exactly, types included: every change was tracked, every merge applied
as the Python code meant it, and nothing was lost to cjson.

Runs on the memory store and on real Redis 7 and 6.2, with both layouts.
"""

from __future__ import annotations

import copy
import typing as t
from datetime import timezone

import pytest
import redis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session.config import Settings
from flask_relay_session.session import Session
from flask_relay_session.session import SessionPolicy

from .test_serialization import assert_same

EXAMPLES = 150
STEPS = 25

# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------

#: Keys that each hit a corner: tag names, escapes, dots, numbers, surrogates.
TRICKY_KEYS = [" t", " di", " l", " ", "  ", " ~", "0", "1", "a.b", "", "\ud800"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=False),
    st.sampled_from([0.1, 1 / 3, 2.0, -0.0, 1e300, 5e-324, float("inf")]),
    st.text(max_size=4),
    st.sampled_from(["\ud800", "\u2028", "\U0001f600"]),
    st.binary(max_size=4),
    st.uuids(),
    st.datetimes(timezones=st.none() | st.just(timezone.utc)),
)


class Strategies:
    """What the model test draws, with the keys a store can be tested with."""

    def __init__(self, tricky_keys: list[str]) -> None:
        self.keys = st.sampled_from(tricky_keys) | st.text(max_size=3)
        #: Session values; lists and dicts are often empty, which cjson
        #: mangles.
        self.values = st.recursive(
            scalars,
            lambda children: st.one_of(
                st.lists(children, max_size=3),
                st.lists(children, max_size=3).map(tuple),
                st.dictionaries(self.keys, children, max_size=3),
            ),
            max_leaves=8,
        )
        self.containers = st.one_of(
            st.lists(self.values, max_size=3),
            st.dictionaries(self.keys, self.values, max_size=3),
        )
        self.anything = self.values | self.containers
        self.session_data = st.dictionaries(
            self.keys, self.anything, min_size=1, max_size=5
        )


STRATEGIES = Strategies(list(TRICKY_KEYS))


# --------------------------------------------------------------------------
# Walking the model and the session side by side
# --------------------------------------------------------------------------

Step = str | int


def container_paths(
    tree: t.Any, path: tuple[Step, ...] = ()
) -> t.Iterator[tuple[Step, ...]]:
    """The paths of every dict and list in ``tree`` (tuples are immutable)."""
    if isinstance(tree, dict):
        if path:
            yield path
        for key in sorted(tree, key=repr):
            yield from container_paths(tree[key], (*path, key))
    elif isinstance(tree, list):
        yield path
        for index, item in enumerate(tree):
            yield from container_paths(item, (*path, index))


def walk(root: t.Any, path: tuple[Step, ...]) -> t.Any:
    node = root
    for step in path:
        node = node[step]
    return node


def kind(value: t.Any) -> str:
    """A sort key equal for a value and its tracked copy."""
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


class Run:
    """A session, its model, and the references a caller would keep."""

    def __init__(
        self, policy: SessionPolicy, drawn: Strategies, data: dict[str, t.Any]
    ) -> None:
        self.policy = policy
        self.drawn = drawn
        session = Session(policy)
        for key, value in data.items():
            session[key] = copy.deepcopy(value)
        session.save()
        self.session = Session(policy, session.sid)
        self.model = copy.deepcopy(data)
        #: (value the session holds, the model's twin), both mutable.
        self.held: list[tuple[t.Any, t.Any]] = []
        self.log: list[str] = []

    def give(self, value: t.Any) -> tuple[t.Any, t.Any]:
        """Two equal independent copies: one for the session, one for the model."""
        mine, twin = copy.deepcopy(value), copy.deepcopy(value)
        if isinstance(mine, (dict, list)):
            self.held.append((mine, twin))
        return mine, twin

    def forget_references(self) -> None:
        # After a save, the next read hands out tracked copies: a caller's
        # own reference is no longer the stored value (as with Flask, whose
        # cookie session is saved once, at the end of the request).
        self.held.clear()


def apply_dict_op(
    data: st.DataObject, run: Run, target: t.Any, model: dict[str, t.Any], where: str
) -> None:
    existing = sorted(model, key=repr)
    ops = ["set", "set", "setdefault", "update", "ior"]
    if existing:
        ops += ["del", "pop", "popitem", "set existing", "setdefault existing"]
    if existing and data.draw(st.integers(0, 9)) == 0:
        ops.append("clear")
    op = data.draw(st.sampled_from(ops), label=f"dict op at {where}")
    run.log.append(f"{where}: {op}")
    if op in ("set", "set existing"):
        key = data.draw(
            st.sampled_from(existing) if op == "set existing" else run.drawn.keys
        )
        mine, twin = run.give(data.draw(run.drawn.anything))
        target[key] = mine
        model[key] = twin
    elif op in ("setdefault", "setdefault existing"):
        key = data.draw(
            st.sampled_from(existing) if "existing" in op else run.drawn.keys
        )
        mine, twin = run.give(data.draw(run.drawn.anything))
        result = target.setdefault(key, mine)
        expected = model.setdefault(key, twin)
        assert_same(result, expected, f"setdefault result at {where}")
    elif op == "del":
        key = data.draw(st.sampled_from(existing))
        del target[key]
        del model[key]
    elif op == "pop":
        key = data.draw(st.sampled_from(existing))
        assert_same(target.pop(key), model.pop(key), f"pop result at {where}")
    elif op == "popitem":
        key, value = target.popitem()
        assert_same(value, model.pop(key), f"popitem result at {where}")
    elif op in ("update", "ior"):
        new = data.draw(st.dictionaries(run.drawn.keys, run.drawn.values, max_size=3))
        if op == "update":
            target.update(copy.deepcopy(new))
        else:
            target |= copy.deepcopy(new)
        model.update(copy.deepcopy(new))
    elif op == "clear":
        target.clear()
        model.clear()


def apply_list_op(
    data: st.DataObject, run: Run, target: list[t.Any], model: list[t.Any], where: str
) -> None:
    size = len(model)
    ops = ["append", "extend", "insert", "iadd", "sort", "reverse"]
    if size:
        ops += ["pop", "remove", "setitem", "setslice", "delitem", "delslice", "imul"]
    if size and data.draw(st.integers(0, 9)) == 0:
        ops.append("clear")
    op = data.draw(st.sampled_from(ops), label=f"list op at {where}")
    run.log.append(f"{where}: {op}")
    index = data.draw(st.integers(-size, size - 1)) if size else 0
    if op == "append":
        mine, twin = run.give(data.draw(run.drawn.anything))
        target.append(mine)
        model.append(twin)
    elif op == "insert":
        mine, twin = run.give(data.draw(run.drawn.anything))
        target.insert(index, mine)
        model.insert(index, twin)
    elif op in ("extend", "iadd", "setslice"):
        new = data.draw(st.lists(run.drawn.values, max_size=3))
        if op == "extend":
            target.extend(copy.deepcopy(new))
        elif op == "iadd":
            target += copy.deepcopy(new)
        else:
            start, stop = sorted(
                data.draw(st.lists(st.integers(-size, size), min_size=2, max_size=2))
            )
            target[start:stop] = copy.deepcopy(new)
            model[start:stop] = copy.deepcopy(new)
            return
        model.extend(copy.deepcopy(new))
    elif op == "sort":
        target.sort(key=kind)
        model.sort(key=kind)
    elif op == "reverse":
        target.reverse()
        model.reverse()
    elif op == "pop":
        assert_same(target.pop(index), model.pop(index), f"pop result at {where}")
    elif op == "remove":
        # Remove by identity of the element at ``index`` (equal elements may
        # come first, in both lists alike).
        target.remove(target[index])
        model.remove(model[index])
    elif op == "setitem":
        mine, twin = run.give(data.draw(run.drawn.anything))
        target[index] = mine
        model[index] = twin
    elif op == "delitem":
        del target[index]
        del model[index]
    elif op == "delslice":
        start, stop = sorted(
            data.draw(st.lists(st.integers(-size, size), min_size=2, max_size=2))
        )
        del target[start:stop]
        del model[start:stop]
    elif op == "imul":
        # Repeating dicts or lists would alias them: the model keeps the
        # aliases, a store cannot. Repeat only immutable items.
        shared = any(isinstance(item, (dict, list)) for item in model)
        count = data.draw(st.integers(0, 1 if shared else 2))
        target *= count
        model *= count
    elif op == "clear":
        target.clear()
        model.clear()


def move(data: st.DataObject, run: Run, path: tuple[Step, ...], how: str) -> None:
    """Move a container the session handed out to another place.

    ``move`` puts it under another key of a dict outside it, ``wrap`` into a
    new list at its own place, ``unwrap`` replaces a list by its first item.
    The containers keep their identity, as a caller's code would.
    """
    *parents, key = path
    session_parent = walk(run.session, tuple(parents))
    model_parent = walk(run.model, tuple(parents))
    run.log.append(f"{how} {path!r}")
    if how == "wrap":
        session_parent[key] = [session_parent[key]]
        model_parent[key] = [model_parent[key]]
    elif how == "unwrap":
        if not (isinstance(model_parent[key], list) and model_parent[key]):
            return
        session_parent[key] = session_parent[key][0]
        model_parent[key] = model_parent[key][0]
    else:
        targets = [()] + [
            other
            for other in container_paths(run.model)
            if isinstance(walk(run.model, other), dict) and other[: len(path)] != path
        ]
        target = data.draw(st.sampled_from(targets), label="to")
        new_key = data.draw(run.drawn.keys, label="new key")
        session_value = session_parent.pop(key)
        model_value = model_parent.pop(key)
        walk(run.session, target)[new_key] = session_value
        walk(run.model, target)[new_key] = model_value


def step(data: st.DataObject, run: Run) -> None:
    session, model = run.session, run.model
    choices = ["nested", "nested", "nested", "top set", "save"]
    if model:
        choices += ["top del", "top mapping"]
    if run.held:
        choices += ["held", "held"]
    # Containers under a dict (or the session), which can be moved around.
    movable = [
        path
        for path in container_paths(model)
        if isinstance(walk(model, path[:-1]), dict)
    ]
    if movable:
        choices += ["move", "wrap", "unwrap"]
    choices += ["reload", "rotate"]
    choice = data.draw(st.sampled_from(choices), label="step")
    if choice in ("move", "wrap", "unwrap"):
        move(data, run, data.draw(st.sampled_from(movable), label="moved"), choice)
        return
    if choice == "nested":
        paths = list(container_paths(model))
        if not paths:
            choice = "top set"
        else:
            path = data.draw(st.sampled_from(paths), label="container")
            target = walk(session, path)
            twin = walk(model, path)
            if isinstance(twin, dict):
                apply_dict_op(data, run, target, twin, repr(path))
            else:
                apply_list_op(data, run, target, twin, repr(path))
            return
    if choice == "top set":
        key = data.draw(run.drawn.keys)
        mine, twin = run.give(data.draw(run.drawn.anything))
        run.log.append(f"session[{key!r}] = ...")
        session[key] = mine
        model[key] = twin
    elif choice == "top del":
        key = data.draw(st.sampled_from(sorted(model, key=repr)))
        run.log.append(f"del session[{key!r}]")
        del session[key]
        del model[key]
    elif choice == "top mapping":
        # The session's own MutableMapping methods, like the dict ops.
        apply_dict_op(data, run, session, model, "session")
    elif choice == "held":
        mine, twin = data.draw(st.sampled_from(run.held), label="held reference")
        run.log.append("through a held reference:")
        if isinstance(twin, dict):
            apply_dict_op(data, run, mine, twin, "held")
        else:
            apply_list_op(data, run, mine, twin, "held")
    elif choice == "save":
        run.log.append("save()")
        session.save()
        run.forget_references()
    elif choice == "reload":
        run.log.append("save(), then a new request")
        session.save()
        run.session = Session(run.policy, session.sid)
        run.forget_references()
    elif choice == "rotate":
        run.log.append("rotate_id()")
        session.rotate_id()
        run.forget_references()


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------


@pytest.fixture
def policy(store_config: dict[str, object]) -> t.Iterator[SessionPolicy]:
    """A session policy on each store: memory, Redis 7 and 6.2, both layouts."""
    url = store_config.get("RELAY_SESSION_REDIS")
    client = None if url is None else redis.Redis.from_url(t.cast(str, url))
    layout = t.cast(str, store_config.get("RELAY_SESSION_LAYOUT", "json"))
    store = (
        MemorySessionStore()
        if client is None
        else RedisSessionStore(client, layout=layout)
    )
    app = Flask(__name__)
    yield SessionPolicy(
        store=store,
        settings=Settings.from_app(app),
        lifetime=600_000,
        refresh_each_request=True,
    )
    if client is not None:
        client.close()


@settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_mutations_are_saved_exactly_as_a_plain_dict_model(
    policy: SessionPolicy, data: st.DataObject
) -> None:
    drawn = STRATEGIES
    run = Run(policy, drawn, data.draw(drawn.session_data, label="initial"))
    assert_same(dict(run.session), run.model, "loaded")
    for _ in range(data.draw(st.integers(1, STEPS), label="steps")):
        step(data, run)
        if data.draw(st.integers(0, 3), label="check now") == 0:
            assert_same(dict(run.session), run.model, "in memory")
    run.session.save()
    loaded = Session(policy, run.session.sid)
    assert_same(dict(loaded), run.model, "stored")
    assert_same(copy.deepcopy(dict(loaded)), run.model, "stored, deep copied")
