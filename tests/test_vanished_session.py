"""A session that vanishes under a request never comes back with its data.

A request that loaded a session which a concurrent logout then destroyed
may keep only what it changed itself, under a new id: never what it only
read, even when it sets ``session.modified = True`` (which saves every key
it read while the session exists). On every store; the same race through
gunicorn, with a real logout, is in ``test_rotation_concurrency.py``.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask import jsonify
from flask import session

MakeApp = t.Callable[..., Flask]


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app()
    store = app.extensions["relay_session"].store

    @app.get("/login")
    def login() -> str:
        session["user_id"] = "ada"
        session["theme"] = "dark"
        return "ok"

    @app.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(dict(session))

    @app.get("/logged-out-meanwhile/<mode>")
    def logged_out_meanwhile(mode: str) -> str:
        user = session["user_id"]
        session.get("theme")
        # A concurrent logout destroys the session while this request runs.
        store.delete(session.sid)  # type: ignore[attr-defined]
        if mode in ("change", "change-nested"):
            session["visits"] = {"n": 1}
        if mode == "change-nested":
            session["visits"]["n"] = 2
        session.modified = True  # as apps migrating from Flask-Session do
        return user

    return app


@pytest.mark.parametrize("mode", ["force", "change", "change-nested"])
def test_a_forced_save_after_a_concurrent_logout_keeps_nothing_it_only_read(
    app: Flask, mode: str
) -> None:
    client = app.test_client()
    client.get("/login")
    old = client.get_cookie("session")
    assert old is not None
    assert client.get(f"/logged-out-meanwhile/{mode}").text == "ada"
    visits = 2 if mode == "change-nested" else 1
    expected = {} if mode == "force" else {"visits": {"n": visits}}
    assert client.get("/whoami").json == expected
    # Nor does the old cookie lead anywhere.
    stale = app.test_client()
    stale.set_cookie("session", old.value)
    assert stale.get("/whoami").json == {}
    new = client.get_cookie("session")
    if mode == "force":
        assert new is None
    else:
        assert new is not None and new.value[:64] != old.value[:64]
