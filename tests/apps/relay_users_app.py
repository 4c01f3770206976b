"""flask-relay-session on Redis with the views of the sessions-of-a-user
tests (``tests/test_users_concurrency.py``).

Everything of :mod:`tests.apps.relay_app`, plus:

``POST /login/<user>``  ``session["user"]`` and ``session["marker"] =
                        ?marker=``, then ``bind_user(user)``; returns
                        ``{"sid"}``.
``POST /put/<key>``     reads the session, sleeps ``?sleep=``, then sets
                        ``session[key]``; returns ``{"sid", "user"}`` as
                        loaded.
``POST /blind/<key>``   ``session[key] = key`` without loading the session.
``POST /count``         ``with session.lock(): session["n"] += 1``, with
                        ``?sleep=`` in the locked section.
``POST /rotate``        ``rotate_id(grace_period=?grace=)`` after reading
                        the session; returns ``{"sid"}``.
``GET /state``          ``{"data", "sid", "user_id", "new"}``.
``POST /revoke-all/<user>``  ``relay.revoke_all(user)``; returns
                        ``{"ended"}``.
``GET /devices/<user>`` ``relay.sessions_of(user)`` as dicts.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask
from flask import jsonify
from flask import request
from flask import session

from flask_relay_session import Session

from . import _sleep
from .relay_app import create_app as create_relay_app


def _session() -> Session:
    return t.cast(Session, session._get_current_object())  # type: ignore[attr-defined]


def create_app() -> Flask:
    app = create_relay_app()
    relay = app.extensions["relay_session"].extension

    @app.post("/login/<user>")
    def login(user: str) -> t.Any:
        current = _session()
        current["user"] = user
        current["marker"] = request.args.get("marker", "")
        current.bind_user(user)
        return jsonify(pid=os.getpid(), sid=current.sid)

    @app.post("/put/<key>")
    def put(key: str) -> t.Any:
        current = _session()
        user = current.get("user")
        _sleep()
        current[key] = key
        return jsonify(pid=os.getpid(), sid=current.sid, user=user)

    @app.post("/blind/<key>")
    def blind(key: str) -> t.Any:
        _session()[key] = key
        return jsonify(pid=os.getpid())

    @app.post("/count")
    def count() -> t.Any:
        current = _session()
        with current.lock():
            current["n"] = current.get("n", 0) + 1
            _sleep()
        return jsonify(pid=os.getpid(), n=current.get("n"))

    @app.post("/rotate")
    def rotate() -> t.Any:
        current = _session()
        current.get("user")
        current.rotate_id(grace_period=request.args.get("grace", 60, type=float))
        return jsonify(pid=os.getpid(), sid=current.sid)

    @app.get("/state")
    def state() -> t.Any:
        current = _session()
        return jsonify(
            pid=os.getpid(),
            data=dict(current),
            sid=current.sid,
            user_id=current.user_id,
            new=current.new,
        )

    @app.post("/revoke-all/<user>")
    def revoke_all(user: str) -> t.Any:
        return jsonify(pid=os.getpid(), ended=relay.revoke_all(user))

    @app.get("/devices/<user>")
    def devices(user: str) -> t.Any:
        return jsonify([info.as_dict() for info in relay.sessions_of(user)])

    return app
