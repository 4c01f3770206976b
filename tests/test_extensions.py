"""Extensions people pair with the session, each in a real app.

Flask-Login and Flask-WTF keep their state in ``flask.session``; their tests
run on the memory store and on real Redis 7 and 6.2 (the ``make_app``
fixture). The Flask-Session migration tests check that its configuration
keys are read as their ``RELAY_SESSION_*`` equivalents.
"""

from __future__ import annotations

import re
import typing as t
import warnings

import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import render_template_string
from flask import request
from flask import session
from flask_login import LoginManager
from flask_login import UserMixin
from flask_login import confirm_login
from flask_login import current_user
from flask_login import fresh_login_required
from flask_login import login_required
from flask_login import login_user
from flask_login import logout_user
from flask_wtf import CSRFProtect
from flask_wtf import FlaskForm
from werkzeug.test import TestResponse
from wtforms import StringField
from wtforms.validators import DataRequired

from flask_relay_session import RelaySession
from flask_relay_session import SessionConfigError

MakeApp = t.Callable[..., Flask]


def cookie(response: TestResponse, name: str) -> str | None:
    """The value the response sets for cookie ``name``; ``""`` if deleted."""
    for header in response.headers.getlist("Set-Cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    return None


# -- Flask-Login ------------------------------------------------------------------


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


USERS = {"ada": User("ada"), "bob": User("bob")}


@pytest.fixture
def login_app(make_app: MakeApp) -> Flask:
    app = make_app()
    relay = app.extensions["relay_session"].extension
    manager = LoginManager(app)
    manager.refresh_view = "reauthenticate"

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        return USERS.get(user_id)

    @app.post("/login/<name>")
    def login(name: str) -> t.Any:
        before = relay.session.sid
        login_user(USERS[name], remember=request.args.get("remember") == "1")
        # Against session fixation: the logged-in session gets a new id, and
        # the old one is deleted rather than redirected.
        relay.session.rotate_id(grace_period=0)
        return jsonify(before=before, after=relay.session.sid)

    @app.post("/logout")
    def logout() -> str:
        logout_user()
        return "bye"

    @app.get("/me")
    @login_required
    def me() -> t.Any:
        return jsonify(user=current_user.id, fresh=session.get("_fresh"))

    @app.get("/settings")
    @fresh_login_required
    def settings() -> str:
        return f"settings of {current_user.id}"

    @app.post("/reauthenticate")
    def reauthenticate() -> str:
        confirm_login()
        return "confirmed"

    @app.get("/reauthenticate")
    def reauthenticate_form() -> str:
        return "enter your password again"

    @app.get("/keys")
    def keys() -> t.Any:
        return jsonify(sorted(session))

    return app


def test_login_then_rotate_id_gives_a_new_session_that_stays_logged_in(
    login_app: Flask,
) -> None:
    client = login_app.test_client()
    # A session that exists before login, as a fixation attack would plant.
    with client.session_transaction() as sess:
        sess["theme"] = "dark"
        planted = sess.sid  # type: ignore[attr-defined]
    response = client.post("/login/ada")
    assert response.json == {"before": planted, "after": response.json["after"]}
    assert response.json["after"] != planted
    assert cookie(response, "session")
    assert client.get("/me").json == {"user": "ada", "fresh": True}
    with client.session_transaction() as sess:
        assert sess.sid == response.json["after"]  # type: ignore[attr-defined]
        assert sess["theme"] == "dark"
        assert sess["_user_id"] == "ada"


def test_planted_pre_login_cookie_is_not_logged_in_after_rotation(
    login_app: Flask,
) -> None:
    attacker = login_app.test_client()
    with attacker.session_transaction() as sess:
        sess["theme"] = "dark"
    planted = attacker.get_cookie("session")
    assert planted is not None
    victim = login_app.test_client()
    victim.set_cookie("session", planted.value)
    assert victim.post("/login/ada").status_code == 200
    assert victim.get("/me").status_code == 200
    assert attacker.get("/me").status_code == 401


def test_login_required_rejects_anonymous_users(login_app: Flask) -> None:
    assert login_app.test_client().get("/me").status_code == 401


def test_logout_removes_the_login_and_clears_the_remember_cookie(
    login_app: Flask,
) -> None:
    client = login_app.test_client()
    client.post("/login/ada?remember=1")
    assert client.get_cookie("remember_token") is not None
    assert client.get("/me").status_code == 200

    response = client.post("/logout")
    assert cookie(response, "remember_token") == ""
    assert client.get_cookie("remember_token") is None
    assert client.get("/me").status_code == 401
    assert client.get("/keys").json == []


def test_remember_cookie_logs_in_again_without_the_session(
    login_app: Flask,
) -> None:
    client = login_app.test_client()
    client.post("/login/bob?remember=1")
    remember = client.get_cookie("remember_token")
    assert remember is not None

    # A new browser session: only the remember cookie is left.
    browser = login_app.test_client()
    browser.set_cookie("remember_token", remember.value)
    response = browser.get("/me")
    assert response.json == {"user": "bob", "fresh": False}
    # Flask-Login stored the login in a new session, with its cookie.
    assert cookie(response, "session")
    assert browser.get("/keys").json == ["_fresh", "_user_id"]


def test_fresh_login_required_asks_for_reauthentication_until_confirmed(
    login_app: Flask,
) -> None:
    client = login_app.test_client()
    client.post("/login/ada?remember=1")
    assert client.get("/settings").text == "settings of ada"

    browser = login_app.test_client()
    remember = client.get_cookie("remember_token")
    assert remember is not None
    browser.set_cookie("remember_token", remember.value)
    response = browser.get("/settings")
    assert response.status_code == 302
    assert response.location.startswith("/reauthenticate?next=")
    assert browser.post("/reauthenticate").text == "confirmed"
    assert browser.get("/settings").text == "settings of ada"
    assert browser.get("/me").json == {"user": "ada", "fresh": True}


def test_strong_session_protection_logs_out_another_user_agent(
    login_app: Flask,
) -> None:
    login_app.config["SESSION_PROTECTION"] = "strong"
    client = login_app.test_client()
    client.post("/login/ada", headers={"User-Agent": "laptop"})
    assert client.get("/me", headers={"User-Agent": "laptop"}).status_code == 200
    assert client.get("/me", headers={"User-Agent": "stolen"}).status_code == 401
    # The login keys were removed from the stored session.
    assert client.get("/me", headers={"User-Agent": "laptop"}).status_code == 401


# -- Flask-WTF --------------------------------------------------------------------


class CommentForm(FlaskForm):
    text = StringField(validators=[DataRequired()])


@pytest.fixture
def csrf_app(make_app: MakeApp) -> Flask:
    app = make_app()
    CSRFProtect(app)
    relay = app.extensions["relay_session"].extension

    @app.route("/comment", methods=["GET", "POST"])
    def comment() -> t.Any:
        form = CommentForm()
        if form.validate_on_submit():
            session.setdefault("comments", []).append(form.text.data)
            return jsonify(session["comments"])
        return render_template_string(
            '<form method="post">{{ form.csrf_token }}{{ form.text }}</form>',
            form=form,
        )

    @app.post("/rotate")
    def rotate() -> str:
        relay.session.rotate_id()
        return "rotated"

    return app


def csrf_token(client: t.Any) -> str:
    """Load the form and return the CSRF token it holds."""
    page = client.get("/comment").text
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def test_csrf_token_from_the_session_validates_on_a_later_request(
    csrf_app: Flask,
) -> None:
    client = csrf_app.test_client()
    token = csrf_token(client)
    with client.session_transaction() as sess:
        # Flask-WTF keeps the raw token in the session; the form holds a
        # signed copy.
        assert re.fullmatch(r"[0-9a-f]{40}", sess["csrf_token"])
    response = client.post("/comment", data={"csrf_token": token, "text": "hi"})
    assert response.json == ["hi"]
    # The token stays valid for the session's later forms.
    response = client.post("/comment", data={"csrf_token": token, "text": "again"})
    assert response.json == ["hi", "again"]
    assert csrf_token(client) != ""


def test_csrf_protect_rejects_a_post_without_a_valid_token(csrf_app: Flask) -> None:
    client = csrf_app.test_client()
    assert client.post("/comment", data={"text": "hi"}).status_code == 400

    # A token issued to another session is refused.
    other = csrf_app.test_client()
    foreign = csrf_token(other)
    csrf_token(client)
    response = client.post("/comment", data={"csrf_token": foreign, "text": "hi"})
    assert response.status_code == 400
    assert b"The CSRF tokens do not match" in response.data


def test_csrf_token_is_missing_without_the_session(csrf_app: Flask) -> None:
    client = csrf_app.test_client()
    token = csrf_token(client)
    client.delete_cookie("session")
    response = client.post("/comment", data={"csrf_token": token, "text": "hi"})
    assert response.status_code == 400
    assert b"The CSRF session token is missing" in response.data


def test_csrf_token_survives_session_rotation(csrf_app: Flask) -> None:
    client = csrf_app.test_client()
    token = csrf_token(client)
    before = client.get_cookie("session")
    client.post("/rotate", headers={"X-CSRFToken": token})
    after = client.get_cookie("session")
    assert before is not None and after is not None
    assert before.value != after.value
    response = client.post("/comment", data={"csrf_token": token, "text": "hi"})
    assert response.json == ["hi"]


# -- Flask-Session migration ----------------------------------------------------------


def flask_session_app(**config: object) -> Flask:
    """An app configured for Flask-Session, with RelaySession installed."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    app.config.update(config)
    RelaySession(app)

    @app.get("/set/<value>")
    def set_value(value: str) -> str:
        session["value"] = value
        return "ok"

    @app.get("/get")
    def get_value() -> str:
        return str(session.get("value"))

    return app


def test_flask_session_redis_config_is_read_with_a_deprecation_warning(
    redis_client: redis.Redis,
) -> None:
    with pytest.warns(DeprecationWarning) as caught:
        app = flask_session_app(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis_client,
            SESSION_KEY_PREFIX="flask-session:",
        )
    messages = sorted(str(warning.message) for warning in caught)
    assert len(messages) == 2
    assert "SESSION_KEY_PREFIX" in messages[0]
    assert "Rename it to RELAY_SESSION_KEY_PREFIX" in messages[0]
    assert "SESSION_REDIS" in messages[1]
    assert "Rename it to RELAY_SESSION_REDIS" in messages[1]
    # The warnings point at the code that installed the extension.
    assert {warning.filename for warning in caught} == {__file__}

    state = app.extensions["relay_session"]
    assert state.store.redis is redis_client
    client = app.test_client()
    client.get("/set/kept")
    assert client.get("/get").text == "kept"
    keys = [key.decode() for key in redis_client.keys("*")]
    assert len(keys) == 1
    assert keys[0].startswith("flask-session:{")


def test_relay_session_keys_win_over_flask_session_keys(
    redis_client: redis.Redis,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app = flask_session_app(
            SESSION_REDIS="redis://127.0.0.1:1/0",
            RELAY_SESSION_REDIS=redis_client,
            SESSION_KEY_PREFIX="old:",
            RELAY_SESSION_KEY_PREFIX="new:",
        )
    client = app.test_client()
    client.get("/set/kept")
    assert client.get("/get").text == "kept"
    assert [key.decode()[:5] for key in redis_client.keys("*")] == ["new:{"]


def test_flask_session_settings_without_an_equivalent_warn_when_they_matter() -> None:
    with pytest.warns(UserWarning, match="SESSION_PERMANENT = True") as caught:
        flask_session_app(SESSION_PERMANENT=True)
    assert "session.permanent = True" in str(caught[0].message)
    with pytest.warns(UserWarning, match="SESSION_TYPE = 'filesystem'"):
        flask_session_app(SESSION_TYPE="filesystem")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # What this extension does anyway: nothing to say.
        flask_session_app(SESSION_PERMANENT=False, SESSION_TYPE="redis")


def test_invalid_flask_session_key_prefix_fails_at_init_app() -> None:
    with pytest.warns(DeprecationWarning):
        with pytest.raises(SessionConfigError, match="RELAY_SESSION_KEY_PREFIX"):
            flask_session_app(SESSION_KEY_PREFIX="{tenant}:")


def test_flask_session_app_config_moves_over_unchanged(redis_url: str) -> None:
    """The anchor app's Flask-Session configuration, with RelaySession."""
    client_for_app = redis.Redis.from_url(redis_url)
    try:
        with pytest.warns(DeprecationWarning):
            app = flask_session_app(
                SESSION_TYPE="redis",
                SESSION_REDIS=client_for_app,
                SESSION_PERMANENT=False,
                SESSION_USE_SIGNER=True,
                SESSION_COOKIE_NAME="sid",
            )
        client = app.test_client()
        response = client.get("/set/a")
        assert cookie(response, "sid")
        assert client.get("/get").text == "a"
        assert client_for_app.keys("sess:{*")
    finally:
        client_for_app.close()
