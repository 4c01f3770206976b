"""flask-relay-session on Redis with extra views for rotation and soak tests.

Everything of :mod:`tests.apps.relay_app` (the views of
:func:`tests.apps.register_views`), plus the views below, all of which load
the session before they change it (like a real view), except ``/blind``:

``POST /login``       ``session["user"] = ?user=``, sleeps ``?sleep=``, then
                      ``session.rotate_id()``; returns ``{"old", "sid"}``
                      (the id before and after the rotation).
``POST /put``         a JSON body ``{"set": {key: value}, "delete": [key]}``
                      applied to the session after ``?sleep=``; returns
                      ``{"sid", "redirected", "new"}`` as of the load.
``POST /blind/<key>`` ``session[key] = ?value=`` without loading the session.
``POST /nested``      ``session["profile"]["visits"] += 1`` and appends
                      ``?tag=`` to ``session["profile"]["tags"]`` (nested
                      changes, unlocked); returns ``{"visits"}``.
``GET /state``        the whole session: ``{"data", "sid", "redirected",
                      "new"}``; sleeps ``?sleep=`` after loading it.
``POST /logout``      sleeps ``?sleep=``, then ``session.destroy()`` without
                      loading the session.
``POST /touch``       reads ``session["user"]``, sleeps ``?sleep=``, sets
                      ``session["seen"]`` and ``session.modified = True``
                      (an app that forces every save); returns ``{"user"}``
                      as read.

The id a write finally landed in is the one of the response's
``Set-Cookie`` (a save that meets a rotation redirect moves on to the new
id while the response is being finished).
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
        current.get("init")  # load it, like a login view checking state
        current["user"] = request.args.get("user", "ada")
        _sleep()
        old = current.sid
        current.rotate_id()
        return jsonify(pid=os.getpid(), old=old, sid=current.sid)

    @app.post("/put")
    def put() -> t.Any:
        current = _session()
        current.get("init")
        loaded = {
            "sid": current.sid,
            "redirected": current.is_redirected,
            "new": current.new,
        }
        _sleep()
        body = request.get_json(force=True) or {}
        for key, value in (body.get("set") or {}).items():
            current[key] = value
        for key in body.get("delete") or ():
            current.pop(key, None)
        return jsonify(pid=os.getpid(), **loaded)

    @app.post("/blind/<key>")
    def blind(key: str) -> t.Any:
        _session()[key] = request.args.get("value", key)
        return jsonify(pid=os.getpid())

    @app.post("/nested")
    def nested() -> t.Any:
        current = _session()
        profile = current["profile"]
        profile["visits"] += 1
        profile["tags"].append(request.args.get("tag", "t"))
        return jsonify(pid=os.getpid(), visits=profile["visits"])

    @app.post("/logout")
    def logout() -> t.Any:
        _sleep()
        _session().destroy()
        return jsonify(pid=os.getpid())

    @app.post("/touch")
    def touch() -> t.Any:
        current = _session()
        user = current.get("user")
        _sleep()
        current["seen"] = True
        current.modified = True
        return jsonify(pid=os.getpid(), user=user)

    @app.get("/state")
    def state() -> t.Any:
        current = _session()
        data = dict(current)
        _sleep()
        return jsonify(
            pid=os.getpid(),
            data=data,
            sid=current.sid,
            redirected=current.is_redirected,
            new=current.new,
        )

    return app
