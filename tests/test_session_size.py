"""``RELAY_SESSION_MAX_SIZE``: one size for a session, in every store.

The size of a session is the sum, over its top-level keys, of the UTF-8
length of the stored key and of the length of the value's tagged JSON as
Python's :mod:`json` writes it, compactly and without ASCII escapes
(:func:`~flask_relay_session.stores.paths.session_size`). The memory store
and both Redis layouts, on Redis 7 and 6.2, must measure it exactly so,
whether a value is sent whole or rewritten inside Redis by ``cjson`` (which
escapes ``/`` and U+007F where Python does not). Last, the memory store's
merge must do work in proportion to what it changes, not to its square.
"""

from __future__ import annotations

import gc
import re
import secrets
import time
import typing as t
from collections.abc import Callable

import pytest
from flask import Flask
from flask import jsonify
from flask import session
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_relay_session import MemorySessionStore
from flask_relay_session import SessionSerializationError
from flask_relay_session.serialization import dumps
from flask_relay_session.serialization import encode_key
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeStatus
from flask_relay_session.stores.paths import session_size

from .helpers import Store
from .helpers import now_ms
from .test_serialization import _keys
from .test_serialization import values

MakeApp = Callable[..., Flask]

LIFETIME = 600_000
UNLIMITED = 8 * 1024 * 1024


def change(path: t.Sequence[str], value: t.Any) -> Change:
    return Change(tuple(encode_key(key) for key in path), dumps(value, path))


def write(store: Store, sid: str, changes: t.Sequence[Change], max_size: int) -> bool:
    """Merge ``changes``, creating the session; return whether it fit."""
    try:
        result = store.merge(
            sid,
            changes,
            now=now_ms(),
            ttl=LIFETIME,
            create=True,
            lock_token=None,
            max_size=max_size,
        )
    except SessionSerializationError:
        return False
    assert result.status is MergeStatus.DONE
    return True


def measured(store: Store, sid: str, changes: t.Sequence[Change]) -> int:
    """The size the store gives the session ``changes`` make: it refuses
    them at 0 bytes, and says how large they would make it.
    """
    with pytest.raises(SessionSerializationError) as info:
        store.merge(
            sid,
            changes,
            now=now_ms(),
            ttl=LIFETIME,
            create=True,
            lock_token=None,
            max_size=0,
        )
    found = re.search(r"would grow to (\d+) bytes", str(info.value))
    assert found is not None
    return int(found.group(1))


def size_of(data: dict[str, t.Any]) -> int:
    return session_size(
        {encode_key(key): dumps(value, (key,)) for key, value in data.items()}
    )


# --------------------------------------------------------------------------
# The largest string each store accepts
# --------------------------------------------------------------------------

#: Characters whose JSON differs in length from their UTF-8, or between
#: Python's json and Lua's cjson.
CHARACTERS = {
    "ascii": "a",
    "slash": "/",
    "delete": "\x7f",
    "e-acute": "é",
    "euro": "€",
    "astral": "\U0001f600",
    "quote": '"',
    "backslash": "\\",
    "newline": "\n",
    "control": "\x01",
    "mixed": 'a/é"\\\x01\x7f€\n',
}

#: The largest ``n`` with ``{"v": text * n}`` accepted under a limit, which
#: the definition gives: 1 byte of key, 2 of quotes and the text's JSON.
EXPECTED_LARGEST = {
    (100, "ascii"): 97,
    (100, "slash"): 97,
    (100, "delete"): 97,
    (100, "e-acute"): 48,
    (100, "quote"): 48,
    (100, "control"): 16,
    (1000, "slash"): 997,
    (1000, "euro"): 332,
    (1000, "astral"): 249,
}


def largest_accepted(fits: Callable[[int], bool], limit: int) -> int:
    """The largest ``n`` in ``0 .. limit`` for which ``fits(n)``; sizes grow
    with ``n``, so a binary search finds it.
    """
    low, high = -1, limit
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


@pytest.mark.parametrize("limit", [100, 1000])
@pytest.mark.parametrize("name", CHARACTERS)
def test_every_store_accepts_the_same_largest_string(
    store: Store, name: str, limit: int
) -> None:
    text = CHARACTERS[name]

    def whole(n: int) -> bool:
        # A new session, its value sent whole.
        changes = [change(["v"], text * n)]
        return write(store, secrets.token_hex(32), changes, limit)

    def expected(n: int) -> bool:
        return size_of({"v": text * n}) <= limit

    largest = largest_accepted(whole, limit)
    assert largest == largest_accepted(expected, limit)
    assert largest == EXPECTED_LARGEST.get((limit, name), largest)


@pytest.mark.parametrize("limit", [100, 1000])
@pytest.mark.parametrize("name", CHARACTERS)
def test_every_store_accepts_the_same_largest_string_written_inside_a_value(
    store: Store, name: str, limit: int
) -> None:
    # Setting a path inside a value makes Redis decode and re-encode the
    # value with cjson (the whole document with the JSON layout).
    text = CHARACTERS[name]
    sid = secrets.token_hex(32)
    assert write(store, sid, [change(["p"], {"x": 0})], limit)

    def inside(n: int) -> bool:
        return write(store, sid, [change(["p", "v"], text * n)], limit)

    def expected(n: int) -> bool:
        return size_of({"p": {"x": 0, "v": text * n}}) <= limit

    assert largest_accepted(inside, limit) == largest_accepted(expected, limit)


@pytest.mark.parametrize("inside", [False, True], ids=["top-level", "inside"])
def test_a_change_that_does_not_grow_the_session_is_never_refused(
    make_app: MakeApp, inside: bool
) -> None:
    # 622 bytes (608 at the top level) of a 1000-byte limit, which cjson
    # would write as 1222 (1208).
    app = make_app(RELAY_SESSION_MAX_SIZE=1000)

    def values() -> dict[str, t.Any]:
        return session["prefs"] if inside else session  # type: ignore[return-value]

    @app.get("/start")
    def start() -> str:
        data = {"next": "/" * 600, "n": 1}
        if inside:
            session["prefs"] = data
        else:
            session.update(data)
        return "ok"

    @app.get("/count")
    def count() -> str:
        values()["n"] = 2
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(values()))

    browser = app.test_client()
    assert browser.get("/start").status_code == 200
    assert browser.get("/count").status_code == 200
    assert browser.get("/read").json == {"next": "/" * 600, "n": 2}


def test_a_session_of_exactly_the_limit_is_accepted_and_stays_so(
    store: Store,
) -> None:
    data = {"next": "/" * 600, "n": 1, "prefs": {"next": "\x7f/" * 50, "n": 1}}
    limit = size_of(data)
    sid = secrets.token_hex(32)
    assert write(
        store, sid, [change([key], value) for key, value in data.items()], limit
    )
    assert write(store, sid, [change(["n"], 2)], limit)
    assert write(store, sid, [change(["prefs", "n"], 2)], limit)
    assert not write(store, sid, [change(["n"], 10)], limit)
    assert not write(store, sid, [change(["prefs", "n"], 10)], limit)


# --------------------------------------------------------------------------
# What each store measures, against the definition
# --------------------------------------------------------------------------

sessions = st.dictionaries(_keys, values, min_size=1, max_size=4)


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=sessions, inner=values)
@example(data={"": 0}, inner="/\x7f")  # the smallest session; cjson's escapes
@example(data={"": None}, inner=5e-324)  # cjson writes it as "4.94...e-324"
def test_every_store_measures_the_size_the_definition_gives(
    store: Store, data: dict[str, t.Any], inner: t.Any
) -> None:
    sid = secrets.token_hex(32)
    created = [change([key], value) for key, value in data.items()]
    assert measured(store, sid, created) == size_of(data)
    assert write(store, sid, created, size_of(data))
    # A value rewritten inside the store measures as one sent whole.
    assert write(store, sid, [change(["d"], {"x": inner})], UNLIMITED)
    data["d"] = {"x": inner, "y": inner}
    assert measured(store, sid, [change(["d", "y"], inner)]) == size_of(data)
    assert write(store, sid, [change(["d", "y"], inner)], size_of(data))
    assert write(store, sid, [change(["d", "x"], inner)], size_of(data))


# --------------------------------------------------------------------------
# Work per merge in the memory store
# --------------------------------------------------------------------------


def time_merge(changes: list[Change]) -> float:
    """The processor time of one merge of ``changes`` into a session."""
    store = MemorySessionStore()
    assert write(store, "a1", [change(["prefs"], {})], UNLIMITED)
    # A collection of the objects piled up so far would land in one run.
    gc.disable()
    try:
        started = time.process_time()
        assert write(store, "a1", changes, UNLIMITED)
        return time.process_time() - started
    finally:
        gc.enable()


def test_a_memory_merge_decodes_each_changed_value_once() -> None:
    # Four times the changes inside one value: about four times the work,
    # not sixteen. Each pair of runs is timed back to back, and the median
    # ratio kept, so that a busy machine slows both runs of a pair.
    small, large = (
        [change(["prefs", f"k{index}"], index) for index in range(count)]
        for count in (2_000, 8_000)
    )
    ratios = sorted(time_merge(large) / time_merge(small) for _ in range(5))
    assert ratios[2] < 8, ratios
