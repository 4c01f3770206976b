"""flask-relay-session on Redis with a rotating login and a bare logout.

Everything of :mod:`tests.apps.relay_app` (the views of
:func:`tests.apps.register_views`, ``POST /init`` among them), plus:

``POST /login``   ``session["user"] = ?user=`` without loading the session,
                  then ``session.rotate_id(grace_period=60)``, then sleeps
                  ``?sleep=``: the rotation is done while the response is
                  still in flight. Returns ``{"old", "sid"}``, the id before
                  and after the rotation.
``POST /logout``  ``session.destroy()`` and nothing else: the session is
                  not read first, as in most logout views.
``GET /whoami``   ``{"user", "sid", "new"}`` of the session the cookie
                  leads to.
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

    @app.post("/login")
    def login() -> t.Any:
        current = _session()
        old = current.sid
        current["user"] = request.args.get("user", "ada")
        current.rotate_id(grace_period=60)
        _sleep()
        return jsonify(pid=os.getpid(), old=old, sid=current.sid)

    @app.post("/logout")
    def logout() -> t.Any:
        _session().destroy()
        return jsonify(pid=os.getpid())

    @app.get("/whoami")
    def whoami() -> t.Any:
        current = _session()
        return jsonify(
            pid=os.getpid(), user=current.get("user"), sid=current.sid, new=current.new
        )

    return app
