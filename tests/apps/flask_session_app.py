"""Flask-Session 0.8 on Redis, for gunicorn: see :mod:`tests.apps`.

The comparison: the same views as :mod:`tests.apps.relay_app`, on a
last-write-wins store with no locks (``/incr`` is the naive
read-modify-write).
"""

from __future__ import annotations

import redis
from flask import Flask
from flask_session import Session

from . import base_app
from . import register_views


def create_app() -> Flask:
    app = base_app(__name__)
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = redis.Redis.from_url(app.config["REDIS_URL"])
    app.config.setdefault("SESSION_KEY_PREFIX", "flask-session:")
    Session(app)
    register_views(app)
    return app
