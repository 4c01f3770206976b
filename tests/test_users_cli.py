"""``flask relay-session user`` and ``revoke-user``: the sessions of a user
from the command line, on every store (``store_config``).
"""

from __future__ import annotations

import re
import typing as t

import pytest
from flask import Flask
from flask import session

from flask_relay_session import RelaySession
from flask_relay_session import Session
from flask_relay_session import signals
from flask_relay_session.cli import EXIT_UNSUPPORTED

from .helpers import CustomStore
from .helpers import sid_of
from .test_cli import run

MakeApp = t.Callable[..., Flask]


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app(RELAY_SESSION_TRACK_CLIENT=True)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        t.cast(Session, session).bind_user(user)
        return "ok"

    @app.get("/whoami")
    def whoami() -> t.Any:
        return {"user": session.get("user")}

    return app


def test_user_lists_handles_and_times_never_ids(app: Flask) -> None:
    browsers = [app.test_client() for _ in range(2)]
    for browser in browsers:
        browser.post(
            "/login/ada {x}",
            headers={"User-Agent": "Firefox"},
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        )
    result = run(app, "user", "ada {x}")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "user 'ada {x}' has 2 live sessions:"
    with app.app_context():
        infos = app.extensions["relay_session"].extension.sessions_of("ada {x}")
    for line, info in zip(lines[1:], infos, strict=True):
        assert line.startswith(info.handle + "  created ")
        assert re.search(r"last seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line)
        assert "expires " in line and line.endswith(", 192.0.2.7, Firefox")
    for browser in browsers:
        assert sid_of(browser) not in result.output


def test_user_without_sessions_says_so(app: Flask) -> None:
    result = run(app, "user", "nobody")
    assert result.exit_code == 0
    assert result.output == "user 'nobody' has no live sessions\n"


def test_revoke_user_ends_every_session_and_says_how_many(app: Flask) -> None:
    browsers = [app.test_client() for _ in range(3)]
    for browser in browsers:
        browser.post("/login/ada")
    bob = app.test_client()
    bob.post("/login/bob")
    ended: list[t.Any] = []

    def on_revoked(sender: Flask, **extra: t.Any) -> None:
        ended.append(extra)

    with signals.session_revoked.connected_to(on_revoked, app):
        result = run(app, "revoke-user", "ada")
    assert result.exit_code == 0, result.output
    assert result.output == "ended 3 sessions of user 'ada'\n"
    assert len(ended) == 3 and {event["session"] for event in ended} == {None}
    for browser in browsers:
        assert browser.get("/whoami").json == {"user": None}
    assert bob.get("/whoami").json == {"user": "bob"}
    assert run(app, "user", "ada").output == "user 'ada' has no live sessions\n"
    assert run(app, "revoke-user", "ada").output == "ended 0 sessions of user 'ada'\n"


@pytest.mark.parametrize("command", ["user", "revoke-user"])
def test_a_bad_user_id_is_a_usage_error(app: Flask, command: str) -> None:
    for bad in ("", "x" * 257):
        result = run(app, command, bad)
        assert result.exit_code == 2
        assert "USER_ID" in result.output


@pytest.mark.parametrize("command", ["user", "revoke-user"])
def test_a_store_without_users_exits_4(command: str) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="s", RELAY_SESSION_STORE=CustomStore())
    RelaySession(app)
    result = run(app, command, "ada")
    assert result.exit_code == EXIT_UNSUPPORTED


def test_an_app_without_a_secret_key_is_a_usage_error() -> None:
    app = Flask(__name__)
    RelaySession(app)
    result = run(app, "user", "ada")
    assert result.exit_code == 2
    assert "SECRET_KEY" in result.output
