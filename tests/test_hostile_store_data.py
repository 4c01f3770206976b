"""A session key that holds something that is not a session.

Corrupt data, a key another program wrote, or a key of the other layout
(after switching ``RELAY_SESSION_LAYOUT`` with the same prefix) must never
fail a request or be changed: it is logged once, at error level and without
its data, left in place for inspection, and the request goes on with a fresh
session under a new id. On real Redis 7 and 6.2, with both layouts, through a
Flask app: a read, a blind write (the merge script), ``rotate_id()`` and a
locked write; then at the store level, the paths an app cannot reach alone.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeStatus

from .redis_servers import RedisServer
from .redis_topologies import LocalCluster

#: Written into every foreign value that can hold it: it must never reach a
#: log line.
MARKER = "hostile-7f3a"

#: Writes a foreign value under a key.
Plant = t.Callable[[redis.Redis, str], t.Any]


def now_ms() -> int:
    return int(time.time() * 1000)


def string(value: t.Any) -> Plant:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return lambda client, key: client.set(key, raw)


def hash_of(mapping: dict[t.Any, t.Any]) -> Plant:
    return lambda client, key: client.hset(key, mapping=mapping)


def session_hash(extra: dict[t.Any, t.Any]) -> Plant:
    """A hash with valid meta fields, and ``extra`` fields."""
    now = now_ms()
    meta = {" created": now, " expires": now + 60_000, " size": 10, " version": 1}
    return hash_of({**meta, **extra})


def a_list(client: redis.Redis, key: str) -> None:
    client.rpush(key, MARKER)


def a_set(client: redis.Redis, key: str) -> None:
    client.sadd(key, MARKER)


def a_sorted_set(client: redis.Redis, key: str) -> None:
    client.zadd(key, {MARKER: 1})


META = {"id": "ab12", "createdAt": 1_700_000_000_000, "expiresAt": 1}

#: Foreign values every script notices, by layout and name.
FOREIGN: dict[str, dict[str, Plant]] = {
    "json": {
        "not-json": string(b"\xff " + MARKER.encode() + b" not json"),
        "data-list": string({"data": [1, MARKER], "meta": META}),
        "data-empty-list": string({"data": [], "meta": META}),
        "data-string": string({"data": MARKER, "meta": META}),
        "data-null": string({"data": None, "meta": META}),
        "data-null-alone": string({"data": None}),
        "data-tagged": string({"data": {" t": [MARKER]}, "meta": META}),
        "no-meta": string({"data": {"a": MARKER}}),
        "created-not-a-number": string(
            {"data": {"a": MARKER}, "meta": {"createdAt": MARKER}}
        ),
        "created-too-large": string({"data": {"a": 1}, "meta": {"createdAt": 1e300}}),
        "json-list": string([MARKER]),
        "json-number": string(5),
        "too-deep": string(b"[" * 5000 + b"]" * 5000),
        "redirect-to-no-id": string(
            {"data": None, "meta": {"redirectTo": f"../{MARKER}"}}
        ),
        "redirect-expiry-not-a-number": string(
            {"data": None, "meta": {"redirectTo": "ab12", "expiresAt": MARKER}}
        ),
        "hash": hash_of({"a": MARKER}),
        "hash-layout-session": session_hash({"a": json.dumps(MARKER)}),
        "list": a_list,
        "set": a_set,
        "sorted-set": a_sorted_set,
    },
    "hash": {
        "string": string(b"\xff " + MARKER.encode()),
        "json-layout-session": string({"data": {"a": MARKER}, "meta": META}),
        "no-meta": hash_of({"a": json.dumps(MARKER)}),
        "meta-not-numbers": session_hash({" created": MARKER, "a": "1"}),
        "meta-too-long": session_hash({" version": "1" * 20, "a": "1"}),
        "meta-missing": hash_of({" created": 1, " expires": 1, "a": "1"}),
        "redirect-to-no-id": hash_of({" redirect": f"../{MARKER}", " expires": 1}),
        "redirect-expiry-not-a-number": hash_of(
            {" redirect": "ab12", " expires": MARKER}
        ),
        "list": a_list,
        "set": a_set,
        "sorted-set": a_sorted_set,
    },
}

#: Foreign values in sessions whose frame is sound: a read decodes the values
#: it reads and notices them, a write only decodes what it changes, and a
#: rotation checks every value.
FOREIGN_INSIDE: dict[str, dict[str, Plant]] = {
    "json": {
        "bad-tag": string({"data": {"a": {" b": 5}}, "meta": META}),
        "bad-datetime": string({"data": {"a": {" d": MARKER}}, "meta": META}),
    },
    "hash": {
        "field-not-json": session_hash({"a": f"{{{MARKER}"}),
        "bad-datetime": session_hash({"a": json.dumps({" d": MARKER})}),
        "stray-meta-field": session_hash({" x": "1"}),
        "field-name-not-utf8": session_hash({b"\xff": "1"}),
    },
}


#: The hash's foreign values, found only by decoding them.
FOREIGN_VALUES = {
    name: FOREIGN_INSIDE["hash"][name] for name in ("field-not-json", "bad-datetime")
}


def cases(table: dict[str, dict[str, Plant]]) -> list[t.Any]:
    return [
        pytest.param(layout, plant, id=f"{layout}-{name}")
        for layout, plants in table.items()
        for name, plant in plants.items()
    ]


#: What each action leaves in the fresh session.
ACTIONS = {
    "read": {},
    "write": {"b": "2"},
    "rotate": {"r": 1},
    "lock": {"n": 1},
}


def make_app(server: RedisServer, layout: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        TESTING=True,
        RELAY_SESSION_REDIS=server.url,
        RELAY_SESSION_LAYOUT=layout,
    )
    RelaySession(app)

    @app.get("/start")
    def start() -> str:
        session["a"] = "1"
        session.permanent = True
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/write")
    def write() -> str:
        session["b"] = "2"
        return "ok"

    @app.get("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        session["r"] = 1
        return "ok"

    @app.get("/lock")
    def lock() -> str:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return "ok"

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    return app


def sid_of(browser: FlaskClient) -> str | None:
    cookie = browser.get_cookie("session")
    return None if cookie is None else cookie.value.split(".")[0]


class Planted(t.NamedTuple):
    app: Flask
    browser: FlaskClient
    client: redis.Redis
    key: str
    sid: str
    dump: bytes


@pytest.fixture
def plant_foreign(
    redis_server: RedisServer,
) -> Iterator[t.Callable[[str, Plant], Planted]]:
    """Start a session, then replace what its key holds with ``plant``."""
    clients: list[redis.Redis] = []

    def plant_into(layout: str, plant: Plant) -> Planted:
        app = make_app(redis_server, layout)
        browser = app.test_client()
        assert browser.get("/start").status_code == 200
        sid = sid_of(browser)
        assert sid is not None
        client = redis_server.client()
        clients.append(client)
        key = app.extensions["relay_session"].store.session_key(sid)
        client.delete(key)
        plant(client, key)
        client.pexpire(key, 60_000)
        dump = client.dump(key)
        assert dump is not None
        return Planted(app, browser, client, key, sid, dump)

    yield plant_into
    for client in clients:
        client.close()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flask_relay_session" and record.levelno >= logging.ERROR
    ]


def assert_fresh_and_left_alone(
    planted: Planted, action: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        response = planted.browser.get(f"/{action}")
    assert response.status_code == 200, response.text
    logged = errors_logged(caplog)
    assert len(logged) == 1, logged
    assert "not a session" in logged[0]
    assert MARKER not in logged[0]
    assert sid_of(planted.browser) != planted.sid
    caplog.clear()
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        assert planted.browser.get("/read").json == ACTIONS[action]
    assert errors_logged(caplog) == []
    assert planted.client.dump(planted.key) == planted.dump


# --------------------------------------------------------------------------
# Through an app
# --------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(("layout", "plant"), cases(FOREIGN))
def test_a_foreign_key_gives_a_fresh_session_is_logged_once_and_left_alone(
    plant_foreign: t.Callable[[str, Plant], Planted],
    layout: str,
    plant: Plant,
    action: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert_fresh_and_left_alone(plant_foreign(layout, plant), action, caplog)


@pytest.mark.parametrize("action", ["read", "rotate"])
@pytest.mark.parametrize(("layout", "plant"), cases(FOREIGN_INSIDE))
def test_a_foreign_value_inside_a_session_is_found_by_what_decodes_it(
    plant_foreign: t.Callable[[str, Plant], Planted],
    layout: str,
    plant: Plant,
    action: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert_fresh_and_left_alone(plant_foreign(layout, plant), action, caplog)


@pytest.mark.parametrize(
    ("layout", "plant", "action"),
    [
        *(
            pytest.param(*case.values, "write", id=f"{case.id}-write")
            for case in cases(FOREIGN_INSIDE)
        ),
        # A locked section loads the session, and a load checks every
        # field name of a hash: only foreign values are left for the next
        # read to find.
        *(
            pytest.param(*case.values, "lock", id=f"{case.id}-lock")
            for case in cases({"json": FOREIGN_INSIDE["json"], "hash": FOREIGN_VALUES})
        ),
    ],
)
def test_a_write_beside_a_foreign_value_is_caught_by_the_next_read(
    plant_foreign: t.Callable[[str, Plant], Planted],
    layout: str,
    plant: Plant,
    action: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A request decodes only the values it reads, and a write only those it
    # changes (the cost of a request follows what it uses), so a write that
    # never reads the foreign value lands; the next read of it finds the
    # session is foreign.
    planted = plant_foreign(layout, plant)
    assert planted.browser.get(f"/{action}").status_code == 200
    assert sid_of(planted.browser) == planted.sid
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        response = planted.browser.get("/read")
    assert response.status_code == 200
    assert response.json == {}
    assert len(errors_logged(caplog)) == 1


@pytest.mark.parametrize(("layout", "plant"), cases(FOREIGN))
def test_a_request_that_never_reads_a_foreign_key_leaves_it_alone(
    plant_foreign: t.Callable[[str, Plant], Planted], layout: str, plant: Plant
) -> None:
    # The session is permanent: the request refreshes its expiry with the
    # touch script, which must not fail on a key of another type.
    planted = plant_foreign(layout, plant)
    assert planted.browser.get("/untouched").status_code == 200
    assert planted.client.dump(planted.key) == planted.dump


# --------------------------------------------------------------------------
# At the store level
# --------------------------------------------------------------------------

SID = "a1" * 32
NEW_SID = "b2" * 32


def merge(store: RedisSessionStore, changes: list[Change], *, create: bool) -> t.Any:
    return store.merge(
        SID,
        changes,
        now=now_ms(),
        ttl=60_000,
        create=create,
        lock_token=None,
        max_size=1 << 20,
    )


def rotate(store: RedisSessionStore) -> t.Any:
    return store.rotate(
        SID,
        NEW_SID,
        [],
        now=now_ms(),
        ttl=60_000,
        grace=5_000,
        lock_token=None,
        max_size=1 << 20,
    )


@pytest.mark.parametrize("create", [False, True])
@pytest.mark.parametrize(("layout", "plant"), cases(FOREIGN))
def test_a_merge_into_a_foreign_key_answers_missing_even_to_create(
    redis_client: redis.Redis,
    layout: str,
    plant: Plant,
    create: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisSessionStore(redis_client, layout=layout)
    key = store.session_key(SID)
    plant(redis_client, key)
    dump = redis_client.dump(key)
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        result = merge(store, [Change(("b",), b"2")], create=create)
    assert result.status is MergeStatus.MISSING
    assert len(errors_logged(caplog)) == 1
    assert redis_client.dump(key) == dump


def test_a_nested_write_into_a_hash_field_that_is_not_json_answers_missing(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # An app reads a value before it changes inside it, so only a key
    # replaced between the read and the write gets here.
    store = RedisSessionStore(redis_client, layout="hash")
    key = store.session_key(SID)
    session_hash({"prefs": f"{{{MARKER}"})(redis_client, key)
    dump = redis_client.dump(key)
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        result = merge(store, [Change(("prefs", "x"), b"1")], create=False)
    assert result.status is MergeStatus.MISSING
    assert errors_logged(caplog) == [
        f"session {SID[:8]}… holds something that is not a session (a hash whose"
        " field is not JSON); it is left in place for inspection and the"
        " request goes on with a new session"
    ]
    assert redis_client.dump(key) == dump


@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_key_turned_foreign_during_a_rotation_drops_the_copy(
    redis_client: redis.Redis,
    layout: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisSessionStore(redis_client, layout=layout)
    assert merge(store, [Change(("a",), b"1")], create=True).status is (
        MergeStatus.DONE
    )
    key = store.session_key(SID)
    end_rotation = store._layout.rotate

    def replace_then_end_rotation(keys: t.Sequence[str], args: t.Any) -> t.Any:
        # Another program writes the key between the copy and the script.
        redis_client.delete(key)
        a_list(redis_client, key)
        return end_rotation(keys, args)

    monkeypatch.setattr(store._layout, "rotate", replace_then_end_rotation)
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        result = rotate(store)
    assert result.status is MergeStatus.MISSING
    assert len(errors_logged(caplog)) == 1
    assert redis_client.type(key) == b"list"
    assert not redis_client.exists(store.session_key(NEW_SID))


@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_key_turned_into_another_string_during_a_rotation_drops_the_copy(
    redis_client: redis.Redis,
    layout: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The rotate script sees a change and sends the key back to be copied
    # again: the second copy finds it is no session.
    store = RedisSessionStore(redis_client, layout=layout)
    assert merge(store, [Change(("a",), b"1")], create=True).status is (
        MergeStatus.DONE
    )
    key = store.session_key(SID)
    end_rotation = store._layout.rotate
    plant = FOREIGN[layout]["no-meta" if layout == "hash" else "data-list"]

    def replace_then_end_rotation(keys: t.Sequence[str], args: t.Any) -> t.Any:
        # Another program writes the key between the copy and the script.
        redis_client.delete(key)
        plant(redis_client, key)
        return end_rotation(keys, args)

    monkeypatch.setattr(store._layout, "rotate", replace_then_end_rotation)
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        result = rotate(store)
    assert result.status is MergeStatus.MISSING
    assert len(errors_logged(caplog)) == 1
    assert not redis_client.exists(store.session_key(NEW_SID))


@pytest.mark.parametrize(("layout", "plant"), cases(FOREIGN))
def test_touch_and_rotate_never_change_a_foreign_key(
    redis_client: redis.Redis, layout: str, plant: Plant
) -> None:
    store = RedisSessionStore(redis_client, layout=layout)
    key = store.session_key(SID)
    plant(redis_client, key)
    dump = redis_client.dump(key)
    touched = store.touch(SID, ttl=60_000)
    if layout == "hash" or redis_client.type(key) != b"string":
        assert touched is False
        assert redis_client.ttl(key) == -1
    # else: the JSON layout's touch reads no session, so it extends the
    # lifetime of a string it does not know is foreign; the next read does.
    assert rotate(store).status is MergeStatus.MISSING
    assert redis_client.dump(key) == dump
    assert not redis_client.exists(store.session_key(NEW_SID))


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode_responses", [False, True])
@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_key_of_the_other_type_is_foreign_on_every_client_mode(
    redis_server: RedisServer,
    layout: str,
    protocol: int,
    decode_responses: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert redis_server.port is not None
    with redis.Redis(
        port=redis_server.port, protocol=protocol, decode_responses=decode_responses
    ) as client:
        store = RedisSessionStore(client, layout=layout)
        plant = FOREIGN[layout]["hash" if layout == "json" else "json-layout-session"]
        plant(client, store.session_key(SID))
        with caplog.at_level(logging.ERROR, "flask_relay_session"):
            assert store.load(SID, ttl=60_000) is None
            assert store.load(SID, ttl=None) is None
        assert len(errors_logged(caplog)) == 2


@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_key_of_the_other_type_is_foreign_on_a_cluster(
    cluster: LocalCluster, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = cluster.client()
    try:
        store = RedisSessionStore(client, layout=layout)
        key = store.session_key(SID)
        plant = FOREIGN[layout]["hash" if layout == "json" else "json-layout-session"]
        plant(t.cast(redis.Redis, client), key)
        with caplog.at_level(logging.ERROR, "flask_relay_session"):
            assert store.load(SID, ttl=60_000) is None
            assert merge(store, [Change(("b",), b"2")], create=False).status is (
                MergeStatus.MISSING
            )
            assert rotate(store).status is MergeStatus.MISSING
        assert len(errors_logged(caplog)) == 3
        assert client.type(key) == (b"hash" if layout == "json" else b"string")
    finally:
        client.close()
        cluster.flush()
