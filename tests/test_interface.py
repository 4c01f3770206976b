"""Flask's session interface contract, through real requests.

Every test runs on the memory store and on real Redis 7 and 6.2.
"""

from __future__ import annotations

import typing as t
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask
from flask import after_this_request
from flask import flash
from flask import get_flashed_messages
from flask import jsonify
from flask import session
from flask.sessions import NullSession
from flask.sessions import SessionInterface
from markupsafe import Markup
from werkzeug.http import parse_cookie
from werkzeug.test import TestResponse

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import Session

MakeApp = t.Callable[..., Flask]


def stored_count(app: Flask) -> int:
    """How many keys the app's store holds, sessions and locks."""
    store = app.extensions["relay_session"].store
    if isinstance(store, MemorySessionStore):
        return len(store._sessions) + len(store._locks)
    assert isinstance(store, RedisSessionStore)
    return int(store.redis.dbsize())


def set_cookie_headers(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def session_cookie(response: TestResponse) -> str | None:
    for header in set_cookie_headers(response):
        name, _, rest = header.partition("=")
        if name == "session":
            return rest.split(";", 1)[0]
    return None


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app()

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/delete/<key>")
    def delete_value(key: str) -> str:
        del session[key]
        return "ok"

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    return app


def test_new_session_is_empty_and_untouched(app: Flask) -> None:
    with app.test_request_context():
        from flask import request

        opened = app.session_interface.open_session(app, request)
    assert isinstance(opened, Session)
    assert (opened.modified, opened.accessed, opened.new, opened.permanent) == (
        False,
        False,
        True,
        False,
    )
    assert len(opened) == 0
    response = app.test_client().get("/noop")
    assert set_cookie_headers(response) == []
    assert stored_count(app) == 0


def test_request_that_never_touches_session_sets_no_cookie_and_no_vary(
    app: Flask,
) -> None:
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/noop")
    assert set_cookie_headers(response) == []
    assert "Cookie" not in response.vary


def test_reading_adds_vary_cookie_without_setting_the_cookie(app: Flask) -> None:
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/read")
    assert response.json == {"a": "1"}
    assert "Cookie" in response.vary
    assert set_cookie_headers(response) == []


def test_new_empty_session_that_was_read_writes_nothing(app: Flask) -> None:
    response = app.test_client().get("/read")
    assert response.json == {}
    assert set_cookie_headers(response) == []
    assert stored_count(app) == 0


def test_writing_sets_a_signed_cookie_and_stores_the_value(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/set/name/ada")
    cookie = session_cookie(response)
    assert cookie is not None
    sid, signature, flags = cookie.split(".")
    assert len(sid) == 64 and int(sid, 16) >= 0
    assert len(signature) == 43
    assert flags[0] == "0"
    assert "Cookie" in response.vary
    assert client.get("/read").json == {"name": "ada"}
    assert stored_count(app) == 1


def test_every_assignment_marks_the_session_modified(app: Flask) -> None:
    @app.get("/same")
    def same() -> t.Any:
        session["a"] = session["a"]
        return jsonify(modified=session.modified)

    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/same")
    assert response.json == {"modified": True}
    # Saved, under the same id: the cookie says nothing new.
    assert session_cookie(response) is None
    assert client.get("/read").json == {"a": "1"}


def test_a_write_sends_the_cookie_again_only_when_what_it_says_changed(
    app: Flask,
) -> None:
    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        return "ok"

    @app.get("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    client = app.test_client()
    first = session_cookie(client.get("/set/a/1"))
    assert first is not None
    # Same id, a browser-session cookie: nothing to say again.
    assert session_cookie(client.get("/set/b/2")) is None
    assert session_cookie(client.get("/read")) is None
    # Permanence and a new id are in the cookie.
    made_permanent = session_cookie(client.get("/permanent"))
    assert made_permanent is not None and made_permanent != first
    rotated = session_cookie(client.get("/rotate"))
    assert rotated is not None and rotated.split(".")[0] != first.split(".")[0]
    # A permanent session's cookie expires with it: each refresh sends it.
    assert session_cookie(client.get("/set/c/3")) is not None
    assert client.get("/read").json == {"a": "1", "b": "2", "c": "3"}


def test_emptied_session_deletes_the_stored_data_and_the_cookie(app: Flask) -> None:
    client = app.test_client()
    client.get("/set/a/1")
    assert stored_count(app) == 1
    response = client.get("/delete/a")
    assert stored_count(app) == 0
    (header,) = set_cookie_headers(response)
    assert header.startswith("session=;")
    assert "Expires=Thu, 01 Jan 1970" in header
    assert client.get("/read").json == {}


def test_session_set_then_emptied_in_one_request_writes_nothing(app: Flask) -> None:
    @app.get("/set-and-delete")
    def set_and_delete() -> str:
        session["a"] = 1
        del session["a"]
        return "ok"

    app.test_client().get("/set-and-delete")
    assert stored_count(app) == 0


@pytest.mark.skipif(
    not hasattr(SessionInterface, "get_cookie_partitioned"),
    reason="SESSION_COOKIE_PARTITIONED came with Flask 3.1",
)
def test_cookie_attributes_follow_flask_config_when_set_and_deleted(
    make_app: MakeApp,
) -> None:
    app = make_app(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PARTITIONED=True,
        SESSION_COOKIE_HTTPONLY=True,
    )

    @app.get("/app/set")
    def set_value() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/app/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    client = app.test_client()
    base = "https://example.test"
    for response in (client.get(f"{base}/app/set"), client.get(f"{base}/app/clear")):
        (header,) = set_cookie_headers(response)
        assert header.startswith("sid=")
        for attribute in (
            "Domain=example.test",
            "Path=/app",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Partitioned",
        ):
            assert attribute in header


def test_permanent_session_cookie_expires_with_the_store(make_app: MakeApp) -> None:
    app = make_app(PERMANENT_SESSION_LIFETIME=timedelta(minutes=10))

    @app.get("/login")
    def login() -> str:
        session.permanent = True
        session["user"] = 1
        return "ok"

    @app.get("/expiry")
    def expiry() -> t.Any:
        return jsonify(expires=session.expires_at.timestamp())  # type: ignore[attr-defined]

    client = app.test_client()
    before = datetime.now(timezone.utc)
    response = client.get("/login")
    cookie = response.headers["Set-Cookie"]
    expires = response.headers.get("Set-Cookie", "").split("Expires=")[1].split(";")[0]
    cookie_expiry = datetime.strptime(expires, "%a, %d %b %Y %H:%M:%S GMT").replace(
        tzinfo=timezone.utc
    )
    assert cookie.startswith("session=")
    assert (
        timedelta(minutes=9) < cookie_expiry - before < timedelta(minutes=10, seconds=2)
    )
    stored = client.get("/expiry").json["expires"]
    assert abs(stored - cookie_expiry.timestamp()) < 2


def test_non_permanent_session_cookie_has_no_expiry(app: Flask) -> None:
    response = app.test_client().get("/set/a/1")
    (header,) = set_cookie_headers(response)
    assert "Expires" not in header


def test_flashed_messages_survive_a_redirect_with_categories_and_markup(
    app: Flask,
) -> None:
    @app.get("/flash")
    def flash_view() -> t.Any:
        flash("plain")
        flash(Markup("<b>bold</b>"), "warning")
        return "", 302, {"Location": "/show"}

    @app.get("/show")
    def show() -> t.Any:
        messages = get_flashed_messages(with_categories=True)
        return jsonify(
            messages=[[category, str(text)] for category, text in messages],
            markup=[isinstance(text, Markup) for _, text in messages],
        )

    client = app.test_client()
    client.get("/flash")
    response = client.get("/show")
    assert response.json == {
        "messages": [["message", "plain"], ["warning", "<b>bold</b>"]],
        "markup": [False, True],
    }
    assert client.get("/show").json == {"messages": [], "markup": []}


def test_tagged_values_round_trip_through_requests(app: Flask) -> None:
    value = {
        "tuple": (1, (2, 3), ()),
        "bytes": b"\x00\xff",
        "markup": Markup("<i>x</i>"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "datetime": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
        "empty": [],
        "float": 0.1 + 0.2,
        "big": 2**70,
        " t": "a key that looks like a tag",
    }
    seen = []

    @app.get("/store")
    def store() -> str:
        session["value"] = value
        return "ok"

    @app.get("/load")
    def load() -> str:
        seen.append(session["value"])
        return "ok"

    client = app.test_client()
    client.get("/store")
    client.get("/load")
    assert seen == [value]
    loaded = seen[0]
    for key in value:
        assert isinstance(loaded[key], type(value[key])), key


def test_secret_key_fallbacks_accept_old_cookies_and_resign_them(
    make_app: MakeApp,
) -> None:
    old = make_app(SECRET_KEY="old secret")

    @old.get("/set")
    def set_value() -> str:
        session["a"] = 1
        return "ok"

    client = old.test_client()
    client.get("/set")
    old_cookie = client.get_cookie("session")
    assert old_cookie is not None

    new = make_app(SECRET_KEY="new secret", SECRET_KEY_FALLBACKS=["old secret"])
    new.extensions["relay_session"].interface.store = old.extensions[
        "relay_session"
    ].store

    @new.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    new_client = new.test_client()
    new_client.set_cookie("session", old_cookie.value)
    response = new_client.get("/read")
    assert response.json == {"a": 1}
    resigned = session_cookie(response)
    assert resigned is not None and resigned != old_cookie.value
    assert resigned.split(".")[0] == old_cookie.value.split(".")[0]

    only_new = make_app(SECRET_KEY="new secret")
    only_new.extensions["relay_session"].interface.store = old.extensions[
        "relay_session"
    ].store
    only_new.add_url_rule("/read", view_func=read)
    stranger = only_new.test_client()
    stranger.set_cookie("session", old_cookie.value)
    assert stranger.get("/read").json == {}


def test_without_secret_key_the_null_session_explains_the_problem(
    make_app: MakeApp,
) -> None:
    app = make_app(SECRET_KEY=None)
    app.testing = False
    seen = []

    @app.get("/write")
    def write() -> str:
        seen.append(isinstance(session._get_current_object(), NullSession))  # type: ignore[attr-defined]
        try:
            session["a"] = 1
        except RuntimeError as error:
            return str(error)
        return "no error"

    response = app.test_client().get("/write")
    assert seen == [True]
    assert "secret key" in response.text


def test_save_session_accepts_none(app: Flask) -> None:
    with app.test_request_context():
        response = app.response_class()
        app.session_interface.save_session(app, None, response)  # type: ignore[arg-type]
    assert set_cookie_headers(t.cast(TestResponse, response)) == []


def test_session_transaction_before_and_after_a_request(app: Flask) -> None:
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["prepared"] = "yes"
    assert client.get("/read").json == {"prepared": "yes"}
    client.get("/set/b/2")
    with client.session_transaction() as sess:
        assert dict(sess) == {"prepared": "yes", "b": "2"}
        sess["prepared"] = "changed"
    assert client.get("/read").json == {"prepared": "changed", "b": "2"}


def test_after_request_writes_are_saved(app: Flask) -> None:
    @app.get("/late")
    def late() -> str:
        session["early"] = 1

        @after_this_request
        def write_late(response: t.Any) -> t.Any:
            session["late"] = 2
            return response

        return "ok"

    client = app.test_client()
    client.get("/late")
    assert client.get("/read").json == {"early": 1, "late": 2}


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "",
        "a" * 64,
        "0" * 64 + "." + "A" * 43 + ".01700000000",
        "é" * 10,
    ],
)
def test_invalid_cookies_give_a_fresh_session(app: Flask, cookie: str) -> None:
    client = app.test_client()
    client.set_cookie("session", cookie)
    assert client.get("/read").json == {}


def test_an_oversized_cookie_gives_a_fresh_session(app: Flask) -> None:
    client = app.test_client()
    # Werkzeug warns that browsers drop a cookie this large; a client that
    # sends one anyway gets a fresh session.
    with pytest.warns(UserWarning, match="cookie is too large"):
        client.set_cookie("session", "x" * 5000)
    assert client.get("/read").json == {}


def test_tampering_with_any_character_of_the_cookie_invalidates_it(
    app: Flask,
) -> None:
    client = app.test_client()
    good = session_cookie(client.get("/set/a/1"))
    assert good is not None
    for position in range(len(good)):
        for replacement in {"0", "A", "_", "1"} - {good[position]}:
            forged = good[:position] + replacement + good[position + 1 :]
            attacker = app.test_client()
            attacker.set_cookie("session", forged)
            assert attacker.get("/read").json == {}, (position, replacement)


def test_assigning_without_reading_does_not_load_the_session(app: Flask) -> None:
    loaded = []

    @app.get("/blind")
    def blind() -> str:
        current = session._get_current_object()  # type: ignore[attr-defined]
        session["b"] = 2
        loaded.append(current._loaded)
        return "ok"

    client = app.test_client()
    client.get("/set/a/1")
    client.get("/blind")
    assert loaded == [False]
    assert client.get("/read").json == {"a": "1", "b": 2}


def test_deleting_a_key_differs_from_setting_it_to_none(app: Flask) -> None:
    @app.get("/none/<key>")
    def set_none(key: str) -> str:
        session[key] = None
        return "ok"

    client = app.test_client()
    client.get("/set/a/1")
    client.get("/set/b/2")
    client.get("/none/a")
    client.get("/delete/b")
    assert client.get("/read").json == {"a": None}


def test_setting_modified_by_hand_saves_an_untracked_change(app: Flask) -> None:
    @app.get("/prefs")
    def prefs() -> str:
        session["prefs"] = {"theme": "light"}
        return "ok"

    @app.get("/untracked")
    def untracked() -> str:
        prefs = session["prefs"]
        dict.__setitem__(prefs, "theme", "dark")  # bypasses tracking
        session.modified = True
        return "ok"

    client = app.test_client()
    client.get("/prefs")
    client.get("/untracked")
    assert client.get("/read").json == {"prefs": {"theme": "dark"}}


def test_setting_modified_by_hand_leaves_keys_this_request_did_not_read(
    app: Flask,
) -> None:
    @app.get("/touch-a")
    def touch_a() -> str:
        session["a"]
        # Meanwhile, another request writes "b".
        with app.test_client() as other:
            other.set_cookie("session", client.get_cookie("session").value)  # type: ignore[union-attr]
            other.get("/set/b/written-concurrently")
        session.modified = True
        return "ok"

    client = app.test_client()
    client.get("/set/a/1")
    client.get("/touch-a")
    assert client.get("/read").json == {"a": "1", "b": "written-concurrently"}


def test_keys_with_dots_and_digits_are_separate_keys(app: Flask) -> None:
    @app.get("/odd-keys")
    def odd_keys() -> str:
        session["a.b"] = 1
        session["a"] = {"b": 2, "1": 3}
        session["0"] = 4
        return "ok"

    @app.get("/odd-nested")
    def odd_nested() -> str:
        session["a"]["1"] = "three"
        return "ok"

    client = app.test_client()
    client.get("/odd-keys")
    client.get("/odd-nested")
    assert client.get("/read").json == {
        "a.b": 1,
        "a": {"b": 2, "1": "three"},
        "0": 4,
    }


def test_nested_changes_are_saved_without_setting_modified(app: Flask) -> None:
    @app.get("/cart/add/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", {"items": []})["items"].append(item)
        return "ok"

    client = app.test_client()
    for item in ("apple", "pear", "plum"):
        client.get(f"/cart/add/{item}")
    assert client.get("/read").json == {"cart": {"items": ["apple", "pear", "plum"]}}


def test_session_object_reports_its_metadata(app: Flask) -> None:
    seen = {}

    @app.get("/meta")
    def meta() -> str:
        current = session._get_current_object()  # type: ignore[attr-defined]
        assert isinstance(current, Session)
        seen.update(
            sid=current.sid,
            created=current.created_at,
            expires=current.expires_at,
            redirected=current.is_redirected,
        )
        session["x"] = 1
        seen["dirty"] = current.dirty_paths
        return "ok"

    app.test_client().get("/meta")
    assert len(seen["sid"]) == 64
    assert seen["created"].tzinfo is timezone.utc
    assert seen["expires"] > seen["created"]
    assert seen["redirected"] is False
    assert seen["dirty"] == frozenset({("x",)})


def test_value_mutated_through_callers_reference_is_saved(app: Flask) -> None:
    @app.get("/by-reference")
    def by_reference() -> str:
        cart: dict[str, t.Any] = {}
        session["cart"] = cart
        cart["n"] = 1
        cart.setdefault("items", []).append("x")
        return "ok"

    client = app.test_client()
    client.get("/by-reference")
    assert client.get("/read").json == {"cart": {"n": 1, "items": ["x"]}}


def test_cookie_of_a_destroyed_session_gives_a_new_id(app: Flask) -> None:
    client = app.test_client()
    first = session_cookie(client.get("/set/a/1"))
    assert first is not None
    store = app.extensions["relay_session"].store
    store.delete(first.split(".")[0])
    response = client.get("/set/b/2")
    second = session_cookie(response)
    assert second is not None
    assert second.split(".")[0] != first.split(".")[0]
    assert client.get("/read").json == {"b": "2"}


def test_cookie_parsing_is_strict_about_the_name(app: Flask) -> None:
    client = app.test_client()
    cookie = session_cookie(client.get("/set/a/1"))
    assert cookie is not None
    assert parse_cookie(f"session={cookie}")["session"] == cookie


def test_making_a_new_session_permanent_without_data_sends_no_cookie(
    app: Flask,
) -> None:
    @app.get("/remember-me")
    def remember_me() -> str:
        session.permanent = True
        return "ok"

    response = app.test_client().get("/remember-me")
    assert set_cookie_headers(response) == []
    assert stored_count(app) == 0
