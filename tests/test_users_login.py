"""Flask-Login binds sessions to its users (``RELAY_SESSION_TRACK_USERS``).

With Flask-Login installed the extension binds the session on every login
(``login_user``, or the "remember me" cookie) to ``user.get_id()`` and
unbinds it on ``logout_user``; the app writes no line of its own. On every
store (``make_app``).
"""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask_login import LoginManager
from flask_login import UserMixin
from flask_login import current_user
from flask_login import login_required
from flask_login import login_user
from flask_login import logout_user

from flask_relay_session import RelaySession
from flask_relay_session import Session

MakeApp = t.Callable[..., Flask]


class User(UserMixin):
    def __init__(self, user_id: int) -> None:
        self.id = user_id


USERS = {7: User(7), 8: User(8)}


def login_app(make_app: MakeApp, **config: t.Any) -> Flask:
    app = make_app(**config)
    relay: RelaySession = app.extensions["relay_session"].extension
    LoginManager(app)

    @app.login_manager.user_loader  # type: ignore[attr-defined]
    def load_user(user_id: str) -> User | None:
        return USERS.get(int(user_id))

    @app.post("/login/<int:user>")
    def login(user: int) -> str:
        login_user(USERS[user], remember=request.args.get("remember") == "1")
        t.cast(Session, session).rotate_id(grace_period=0)
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        logout_user()
        return "bye"

    @app.get("/me")
    @login_required
    def me() -> t.Any:
        return jsonify(user=current_user.id, bound=t.cast(Session, session).user_id)

    @app.get("/devices")
    @login_required
    def devices() -> t.Any:
        sessions = relay.sessions_of(current_user.get_id())
        return jsonify([info.as_dict() for info in sessions])

    @app.post("/logout-everywhere")
    @login_required
    def logout_everywhere() -> t.Any:
        return jsonify(relay.revoke_all(current_user.get_id()))

    return app


def test_a_login_binds_the_session_to_the_user_id(make_app: MakeApp) -> None:
    app = login_app(make_app)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/7")
    laptop.post("/login/7")
    assert phone.get("/me").json == {"user": 7, "bound": "7"}
    shown = laptop.get("/devices").json
    assert sorted(info["current"] for info in shown) == [False, True]
    assert laptop.post("/logout-everywhere").json == 2
    assert phone.get("/me").status_code == 401
    assert laptop.get("/me").status_code == 401


def test_a_logout_unbinds_the_session(make_app: MakeApp) -> None:
    app = login_app(make_app)
    client, other = app.test_client(), app.test_client()
    client.post("/login/7")
    other.post("/login/7")
    client.post("/logout")
    assert [info["current"] for info in other.get("/devices").json] == [True]
    # A new login of the same browser binds it again, to whoever logs in.
    client.post("/login/8")
    assert client.get("/me").json == {"user": 8, "bound": "8"}
    with app.app_context():
        assert len(app.extensions["relay_session"].extension.sessions_of("7")) == 1


def test_a_login_by_the_remember_cookie_binds_the_new_session(
    make_app: MakeApp,
) -> None:
    app = login_app(make_app)
    client = app.test_client()
    client.post("/login/7?remember=1")
    remember = client.get_cookie("remember_token")
    assert remember is not None
    # The browser restarts: the session cookie is gone, "remember me" stays.
    client.delete_cookie("session")
    assert client.get("/me").json == {"user": 7, "bound": "7"}
    with app.app_context():
        assert len(app.extensions["relay_session"].extension.sessions_of("7")) == 2


def test_tracking_can_be_turned_off(make_app: MakeApp) -> None:
    app = login_app(make_app, RELAY_SESSION_TRACK_USERS=False)
    client = app.test_client()
    client.post("/login/7")
    assert client.get("/me").json == {"user": 7, "bound": None}
    assert client.get("/devices").json == []


def test_tracking_is_on_by_default_only_for_an_app_with_flask_login(
    make_app: MakeApp,
) -> None:
    plain = make_app()
    assert plain.extensions["relay_session"].settings.track_users is None

    @plain.post("/login")
    def login() -> str:
        session["user"] = "7"  # no Flask-Login: nothing binds
        return "ok"

    plain.test_client().post("/login")
    with plain.app_context():
        assert plain.extensions["relay_session"].extension.sessions_of("7") == []
