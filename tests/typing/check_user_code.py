"""A small user app, type-checked with ``mypy --strict`` by test_typing.py.

It uses the session's own members through :attr:`RelaySession.session`,
with no casts and no ``type: ignore``. ``assert_type`` fails the check if a
member's type is ``Any`` or wrong. The module also runs: test_typing.py
imports it and sends it requests.
"""

from __future__ import annotations

import sys
import typing as t
from datetime import datetime

from flask import Flask
from flask import jsonify
from flask import session
from flask.typing import ResponseReturnValue

from flask_relay_session import RelaySession
from flask_relay_session import Session
from flask_relay_session import SessionChainError

if sys.version_info >= (3, 11):
    from typing import assert_type
elif t.TYPE_CHECKING:
    from typing_extensions import assert_type
else:

    def assert_type(value: object, expected: object) -> object:
        return value


relay = RelaySession()


@relay.broken_chain_handler
def session_gone(error: SessionChainError) -> ResponseReturnValue:
    return jsonify(error=str(error)), 410


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "typed"
    app.config["TESTING"] = True
    relay.init_app(app)

    @app.post("/login/<name>")
    def login(name: str) -> ResponseReturnValue:
        current = relay.session
        assert_type(current, Session)
        old_sid: str = current.sid
        current["user"] = name
        current.rotate_id()
        assert_type(current.sid, str)
        assert_type(current.is_redirected, bool)
        return jsonify(rotated=old_sid != current.sid)

    @app.post("/visit")
    def visit() -> ResponseReturnValue:
        with relay.session.lock() as locked:
            assert_type(locked, Session)
            assert_type(locked.is_lock_owner, bool)
            locked["visits"] = t.cast(int, locked.get("visits", 0)) + 1
        assert_type(relay.session.is_locked(), bool)
        return jsonify(visits=session["visits"])

    @app.get("/info")
    def info() -> ResponseReturnValue:
        current = relay.session
        created: datetime = current.created_at
        expires: datetime = current.expires_at
        assert_type(current.created_at, datetime)
        assert_type(current.dirty_paths, frozenset[tuple[str, ...]])
        assert_type(current.new, bool)
        assert_type(current.permanent, bool)
        return jsonify(lifetime=(expires - created).total_seconds())

    @app.post("/checkpoint")
    def checkpoint() -> ResponseReturnValue:
        current = relay.session
        current["step"] = 1
        current.save()
        current["draft"] = "dropped"
        current.clear_dirty()
        return jsonify(saved=True)

    @app.post("/logout")
    def logout() -> ResponseReturnValue:
        relay.session.destroy()
        return jsonify(ok=True)

    return app
