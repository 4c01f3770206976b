"""SPEC §6: rotating session ids, and destroying sessions.

On the memory store and real Redis 7 and 6.2. Concurrent requests with an
old cookie through a real server are in ``test_concurrency.py``.
"""

from __future__ import annotations

import json
import typing as t
from datetime import timedelta

import pytest
from flask import Flask
from flask import jsonify
from flask import redirect
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session import SessionChainError

from .helpers import client_with
from .helpers import sid_of

MakeApp = t.Callable[..., Flask]


def stored_state(app: Flask, sid: str) -> t.Any:
    """``None`` when nothing is stored, ``("redirect", target)`` or the data."""
    store = app.extensions["relay_session"].store
    if isinstance(store, MemorySessionStore):
        entry = store._sessions.get(sid)
        if entry is None:
            return None
        if entry.redirect_to is not None:
            return ("redirect", entry.redirect_to)
        return {key: json.loads(value) for key, value in entry.fields.items()}
    assert isinstance(store, RedisSessionStore)
    if store.layout == "hash":
        fields = {
            name.decode(): value
            for name, value in store.redis.hgetall(store.session_key(sid)).items()
        }
        if not fields:
            return None
        if " redirect" in fields:
            return ("redirect", fields[" redirect"].decode())
        return {
            name: json.loads(value)
            for name, value in fields.items()
            if name not in {" created", " expires", " size", " version"}
        }
    raw = store.redis.get(store.session_key(sid))
    if raw is None:
        return None
    document = json.loads(raw)
    if document["data"] is None:
        return ("redirect", document["meta"]["redirectTo"])
    return document["data"]


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app()

    @app.get("/read")
    def read() -> t.Any:
        current = session._get_current_object()  # type: ignore[attr-defined]
        return jsonify(data=dict(session), redirected=current.is_redirected)

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/login")
    def login() -> str:
        session["before"] = 1
        session.rotate_id()  # type: ignore[attr-defined]
        session["after"] = 2
        return "ok"

    @app.get("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.get("/rotate-twice")
    def rotate_twice() -> str:
        session["one"] = 1
        session.rotate_id()  # type: ignore[attr-defined]
        session["two"] = 2
        session.rotate_id()  # type: ignore[attr-defined]
        session["three"] = 3
        return "ok"

    @app.get("/write-then-lock")
    def write_then_lock() -> str:
        session["before_the_lock"] = 1
        with session.lock():  # type: ignore[attr-defined]
            session["inside"] = 2
        return "ok"

    @app.get("/logout")
    def logout() -> t.Any:
        session.destroy()  # type: ignore[attr-defined]
        return jsonify(dict(session))

    @app.get("/logout-and-start-over")
    def logout_and_start_over() -> str:
        session.destroy()  # type: ignore[attr-defined]
        session["fresh"] = True
        return "ok"

    @app.get("/slow-request")
    def slow_request() -> t.Any:
        seen = dict(session)
        # Meanwhile, the user logs out in another tab.
        logout = app.test_client()
        logout.set_cookie("session", request.cookies["session"])
        logout.get("/logout")
        session["last_page"] = "/slow-request"
        return jsonify(seen)

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.get("/set/cart/apples")
    return client


def test_rotation_moves_the_data_to_a_new_id_and_leaves_a_redirect(
    app: Flask, client: FlaskClient
) -> None:
    old = sid_of(client)
    response = client.get("/login")
    new = sid_of(client)
    assert new != old
    assert "Set-Cookie" in response.headers
    assert stored_state(app, old) == ("redirect", new)
    assert stored_state(app, new) == {"cart": "apples", "before": 1, "after": 2}
    assert client.get("/read").json == {
        "data": {"cart": "apples", "before": 1, "after": 2},
        "redirected": False,
    }


def test_old_cookie_is_served_the_new_session_and_gets_the_new_cookie(
    app: Flask, client: FlaskClient
) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/login")
    new = sid_of(client)
    straggler = client_with(app, old_cookie)
    response = straggler.get("/read")
    assert response.json == {
        "data": {"cart": "apples", "before": 1, "after": 2},
        "redirected": True,
    }
    assert sid_of(straggler) == new


def test_writes_with_the_old_cookie_land_in_the_new_session(
    app: Flask, client: FlaskClient
) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    old = sid_of(client)
    client.get("/rotate")
    new = sid_of(client)
    client_with(app, old_cookie).get("/set/late/write")
    assert stored_state(app, old) == ("redirect", new)
    assert client.get("/read").json["data"] == {"cart": "apples", "late": "write"}


def test_rotating_twice_in_one_request_keeps_every_change(
    app: Flask, client: FlaskClient
) -> None:
    first = sid_of(client)
    client.get("/rotate-twice")
    last = sid_of(client)
    assert client.get("/read").json["data"] == {
        "cart": "apples",
        "one": 1,
        "two": 2,
        "three": 3,
    }
    kind, middle = stored_state(app, first)
    assert kind == "redirect"
    assert middle not in (first, last)
    assert stored_state(app, middle) == ("redirect", last)


def test_rotating_a_new_session_just_changes_its_id(app: Flask) -> None:
    fresh = app.test_client()
    fresh.get("/login")
    assert fresh.get("/read").json["data"] == {"before": 1, "after": 2}


def test_redirect_chains_are_followed_and_shortened(
    app: Flask, client: FlaskClient
) -> None:
    cookies = [client.get_cookie("session").value]  # type: ignore[union-attr]
    for _ in range(3):
        client.get("/rotate")
        cookies.append(client.get_cookie("session").value)  # type: ignore[union-attr]
    ids = [cookie.split(".")[0] for cookie in cookies]
    assert stored_state(app, ids[0]) == ("redirect", ids[1])
    response = client_with(app, cookies[0]).get("/read")
    assert response.json == {"data": {"cart": "apples"}, "redirected": True}
    assert stored_state(app, ids[0]) == ("redirect", ids[3])
    assert stored_state(app, ids[1]) == ("redirect", ids[3])


def test_a_chain_longer_than_ten_gets_410(app: Flask, client: FlaskClient) -> None:
    first = client.get_cookie("session").value  # type: ignore[union-attr]
    for _ in range(11):
        client.get("/rotate")
    response = client_with(app, first).get("/read")
    assert response.status_code == 410
    assert response.json["error"] == "session_chain_broken"


def test_a_chain_to_a_missing_session_gets_410_and_drops_the_cookie(
    app: Flask, client: FlaskClient
) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/rotate")
    app.extensions["relay_session"].store.delete(sid_of(client))
    straggler = client_with(app, old_cookie)
    response = straggler.get("/read")
    assert response.status_code == 410
    assert response.json["error"] == "session_chain_broken"
    assert straggler.get_cookie("session") is None
    assert straggler.get("/read").json["data"] == {}


@pytest.mark.parametrize("view", ["/read", "/blind"])
def test_broken_chain_handler_can_be_replaced(make_app: MakeApp, view: str) -> None:
    """It answers a chain found broken by a read, and by a write-only view
    at the save, whose response it then replaces."""
    app = make_app()
    relay: RelaySession = app.extensions["relay_session"].extension

    @relay.broken_chain_handler
    def to_login(error: SessionChainError) -> t.Any:
        return redirect("/login-again")

    @app.get("/rotate")
    def rotate() -> str:
        session["a"] = 1
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/blind")
    def blind() -> t.Any:
        session["b"] = 2
        response = jsonify(view="answered")
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    client = app.test_client()
    client.get("/rotate")
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/rotate")
    app.extensions["relay_session"].store.delete(sid_of(client))
    straggler = client_with(app, old_cookie)
    response = straggler.get(view)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login-again"
    assert "Cache-Control" not in response.headers
    assert straggler.get_cookie("session") is None


def test_destroy_gives_a_fresh_session_and_replaces_the_cookie(
    app: Flask, client: FlaskClient
) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    old = sid_of(client)
    response = client.get("/logout")
    assert response.json == {}
    assert client.get_cookie("session") is None
    assert stored_state(app, old) is None
    assert client_with(app, old_cookie).get("/read").json["data"] == {}
    assert stored_state(app, old) is None


def test_destroyed_id_is_never_reused(app: Flask, client: FlaskClient) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    old = sid_of(client)
    client.get("/logout-and-start-over")
    new = sid_of(client)
    assert new != old
    assert client.get("/read").json["data"] == {"fresh": True}
    straggler = client_with(app, old_cookie)
    straggler.get("/set/x/1")
    assert sid_of(straggler) not in (old, new)
    assert stored_state(app, old) is None


def test_rotation_waits_for_the_lock_and_gives_409_when_it_stays_taken(
    make_app: MakeApp,
) -> None:
    app = make_app(RELAY_SESSION_LOCK_RETRIES=2, RELAY_SESSION_LOCK_BACKOFF=0.01)

    @app.get("/set")
    def set_value() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    client = app.test_client()
    client.get("/set")
    old = sid_of(client)
    store = app.extensions["relay_session"].store
    store.lock(old, "someone else", 10_000)
    assert client.get("/rotate").status_code == 409
    assert sid_of(client) == old
    store.unlock(old, "someone else")
    assert client.get("/rotate").status_code == 200
    assert sid_of(client) != old


def test_rotation_inside_a_lock_keeps_the_lock_on_the_new_id(
    make_app: MakeApp,
) -> None:
    app = make_app()
    seen = {}

    @app.get("/set")
    def set_value() -> str:
        session["n"] = 0
        return "ok"

    @app.get("/locked-rotate")
    def locked_rotate() -> str:
        store = app.extensions["relay_session"].store
        with session.lock():  # type: ignore[attr-defined]
            old = session.sid  # type: ignore[attr-defined]
            session.rotate_id()  # type: ignore[attr-defined]
            new = session.sid  # type: ignore[attr-defined]
            seen.update(
                owner=session.is_lock_owner,  # type: ignore[attr-defined]
                new_locked=store.is_locked(new),
                old_locked=store.is_locked(old),
            )
            session["n"] += 1
        seen["released"] = not store.is_locked(new)
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    client = app.test_client()
    client.get("/set")
    assert client.get("/locked-rotate").status_code == 200
    assert seen == {
        "owner": True,
        "new_locked": True,
        "old_locked": False,
        "released": True,
    }
    assert client.get("/read").json == {"n": 1}


def test_rotation_with_no_grace_period_ends_the_old_id_at_once(
    make_app: MakeApp,
) -> None:
    app = make_app()

    @app.get("/login")
    def login() -> str:
        session["user"] = "ada"
        session.rotate_id(grace_period=0)  # type: ignore[attr-defined]
        return "ok"

    @app.get("/visit")
    def visit() -> str:
        session["visited"] = True
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    victim = app.test_client()
    victim.get("/visit")
    planted = victim.get_cookie("session").value  # type: ignore[union-attr]
    victim.get("/login")
    # Deleted, or on Redis a tombstone whose grace period is already over,
    # kept a minute for a re-sent rotation to find (see test_retries.py).
    assert stored_state(app, planted.split(".")[0]) in (
        None,
        ("redirect", sid_of(victim)),
    )
    attacker = client_with(app, planted)
    assert attacker.get("/read").json == {}
    assert attacker.get("/visit").status_code == 200
    assert attacker.get("/read").json == {"visited": True}
    assert sid_of(attacker) != sid_of(victim)
    assert victim.get("/read").json == {"visited": True, "user": "ada"}


@pytest.mark.parametrize(
    "grace", [-1, float("nan"), float("inf"), 1e20, timedelta(days=3651), True]
)
def test_a_grace_period_out_of_range_is_refused_and_nothing_changes(
    make_app: MakeApp, grace: t.Any
) -> None:
    app = make_app()

    @app.get("/rotate")
    def rotate() -> str:
        session["a"] = 1
        session.save()  # type: ignore[attr-defined]
        try:
            session.rotate_id(grace_period=grace)  # type: ignore[attr-defined]
        except ValueError as error:
            return str(error)
        return "rotated"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    client = app.test_client()
    assert "from 0 seconds to 3650 days" in client.get("/rotate").text
    assert client.get("/read").json == {"a": 1}


def test_the_longest_grace_period_rotates(make_app: MakeApp) -> None:
    app = make_app()

    @app.get("/rotate")
    def rotate() -> str:
        session["a"] = 1
        session.save()  # type: ignore[attr-defined]
        session.rotate_id(grace_period=timedelta(days=3650))  # type: ignore[attr-defined]
        return "rotated"

    client = app.test_client()
    assert client.get("/rotate").text == "rotated"


def test_request_in_flight_cannot_undo_a_concurrent_logout(
    app: Flask, client: FlaskClient
) -> None:
    client.get("/set/user/ada")
    old = sid_of(client)
    assert client.get("/slow-request").json == {"cart": "apples", "user": "ada"}
    assert sid_of(client) != old
    assert client.get("/read").json["data"] == {"last_page": "/slow-request"}


def test_untouched_requests_with_an_old_cookie_do_not_extend_the_grace_period(
    make_app: MakeApp,
) -> None:
    app = make_app(RELAY_SESSION_ROTATION_GRACE_PERIOD=5)

    @app.get("/login")
    def login() -> str:
        session.permanent = True
        session["user"] = "ada"
        return "ok"

    @app.get("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    client = app.test_client()
    client.get("/login")
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    old = old_cookie[:64]
    client.get("/rotate")
    client_with(app, old_cookie).get("/noop")
    store = app.extensions["relay_session"].store
    if isinstance(store, MemorySessionStore):
        remaining = store._sessions[old].expires_at / 1000 - store.clock()
    else:
        remaining = store.redis.pttl(store.session_key(old)) / 1000
    assert 0 < remaining <= 5


def test_a_write_only_request_with_a_cookie_too_many_rotations_old_gets_410(
    app: Flask, client: FlaskClient
) -> None:
    first = client.get_cookie("session").value  # type: ignore[union-attr]
    for _ in range(11):
        client.get("/rotate")
    straggler = client_with(app, first)
    response = straggler.get("/set/blind/1")
    assert response.status_code == 410
    assert response.json["error"] == "session_chain_broken"
    # The dead cookie is dropped and nothing was written anywhere.
    assert straggler.get_cookie("session") is None
    assert "blind" not in client.get("/read").json["data"]
    assert straggler.get("/read").json["data"] == {}


def test_a_write_only_request_through_a_chain_to_a_missing_session_gets_410(
    app: Flask, client: FlaskClient
) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/rotate")
    new_sid = sid_of(client)
    app.extensions["relay_session"].store.delete(new_sid)
    straggler = client_with(app, old_cookie)
    response = straggler.get("/set/blind/1")
    assert response.status_code == 410
    assert straggler.get_cookie("session") is None
    assert stored_state(app, new_sid) is None


@pytest.mark.parametrize("how", ["clear", "delete-each"])
def test_rotating_an_emptied_session_stores_nothing_and_sends_no_cookie(
    make_app: MakeApp, how: str
) -> None:
    app = make_app()

    @app.get("/set")
    def set_value() -> str:
        session["user"] = "ada"
        session["cart"] = ["apple"]
        return "ok"

    @app.get("/empty-and-rotate")
    def empty_and_rotate() -> str:
        if how == "clear":
            session.clear()
        else:
            for key in list(session):
                del session[key]
        session.rotate_id(grace_period=0)  # type: ignore[attr-defined]
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    client = app.test_client()
    client.get("/set")
    old_sid = sid_of(client)
    response = client.get("/empty-and-rotate")
    assert response.status_code == 200
    assert client.get_cookie("session") is None
    assert stored_state(app, old_sid) is None
    store = app.extensions["relay_session"].store
    if isinstance(store, MemorySessionStore):
        assert store._sessions == {}
    else:
        assert store.redis.keys("sess:*") == []
    assert client.get("/read").json == {}


def test_a_locked_section_entered_through_a_broken_chain_keeps_nothing(
    app: Flask, client: FlaskClient
) -> None:
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/rotate")
    app.extensions["relay_session"].store.delete(sid_of(client))
    straggler = client_with(app, old_cookie)
    response = straggler.get("/write-then-lock")
    assert response.status_code == 410
    assert straggler.get_cookie("session") is None
    assert straggler.get("/read").json["data"] == {}
