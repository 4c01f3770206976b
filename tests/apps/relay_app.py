"""flask-relay-session on Redis, for gunicorn: see :mod:`tests.apps`."""

from __future__ import annotations

from flask import Flask
from flask import session

from flask_relay_session import RelaySession

from . import base_app
from . import register_views


def create_app() -> Flask:
    app = base_app(__name__)
    app.config.setdefault("RELAY_SESSION_REDIS", app.config["REDIS_URL"])
    RelaySession(app)
    register_views(app, lock=lambda: session.lock())
    return app
