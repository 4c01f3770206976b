"""Apps that the multi-process tests serve with gunicorn.

Each module has a ``create_app()`` factory, served as
``tests.apps.<module>:create_app()`` (see ``tests/wsgi_servers.py``), and is
configured from environment variables only, so that every worker process
builds the same app:

``RELAY_TEST_REDIS_URL``
    the Redis server, e.g. ``redis://127.0.0.1:7001/0`` (required).
``RELAY_TEST_SECRET_KEY``
    ``SECRET_KEY``; a fixed test value by default, the same in every worker.
``RELAY_TEST_<KEY>``
    any other config key, loaded by Flask's ``from_prefixed_env`` (values are
    parsed as JSON when they can be: ``RELAY_TEST_RELAY_SESSION_LOCK_TTL=2``).

Modules:

- :mod:`tests.apps.relay_app`: flask-relay-session.
- :mod:`tests.apps.flask_session_app`: Flask-Session 0.8, with the same
  views, for comparison.

Both register the views of :func:`register_views`. Every response carries
``X-Worker-Pid`` (which process served it) and ``X-Session-Modified``
(whether the session interface was going to save the request's session).
"""

from __future__ import annotations

import contextlib
import os
import time
import typing as t

from flask import Flask
from flask import jsonify
from flask import request
from flask import session

ENV_PREFIX = "RELAY_TEST"
DEFAULT_SECRET_KEY = "relay-session multi-process tests: same in every worker"

#: Returns the context manager a view holds around a read-modify-write.
LockFactory = t.Callable[[], t.ContextManager[t.Any]]


def base_app(name: str) -> Flask:
    """A Flask app configured from the ``RELAY_TEST_*`` environment."""
    app = Flask(name)
    app.config["SECRET_KEY"] = DEFAULT_SECRET_KEY
    app.config.from_prefixed_env(ENV_PREFIX)
    if not app.config.get("REDIS_URL"):
        raise RuntimeError(f"set {ENV_PREFIX}_REDIS_URL to the Redis server's URL")
    return app


def _sleep() -> None:
    """Sleep ``?sleep=<seconds>``, to make concurrent requests overlap."""
    seconds = request.args.get("sleep", default=0.0, type=float)
    if seconds > 0:
        time.sleep(seconds)


def register_views(app: Flask, lock: LockFactory | None = None) -> None:
    """Add the views the concurrency tests call.

    ``POST /init``        creates the session (``init`` and a nested
                          ``profile``); returns ``{"pid"}``.
    ``POST /write/<key>`` reads the session, sleeps, sets ``session[key]``.
    ``GET /read``         reads everything (nested values too), sleeps,
                          returns ``{"data", "keys"}``; writes nothing.
    ``POST /incr``        ``n += 1`` inside ``lock()`` (a no-op context for
                          a library without locks: the naive version), with
                          the sleep between the read and the write; returns
                          ``{"n"}`` (the value it wrote), ``{"waited"}``
                          (seconds spent getting the lock) and ``{"held"}``
                          (seconds from getting it to the end of the block,
                          the save and the release included).

    ``?sleep=<seconds>`` widens the race windows; 0 by default.
    """
    lock = lock or contextlib.nullcontext

    @app.after_request
    def tag_response(response: t.Any) -> t.Any:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        response.headers["X-Session-Modified"] = str(bool(session.modified)).lower()
        return response

    @app.get("/")
    def health() -> t.Any:
        return jsonify(pid=os.getpid())

    @app.post("/init")
    def init() -> t.Any:
        session["init"] = True
        session["profile"] = {"name": "Ada", "tags": ["a", "b"], "visits": 0}
        return jsonify(pid=os.getpid())

    @app.post("/write/<key>")
    def write(key: str) -> t.Any:
        # Read first, like a real view: a last-write-wins store then writes
        # back everything it read, stale by the time the sleep ends.
        seen = session.get("init")
        _sleep()
        session[key] = f"value of {key}"
        return jsonify(pid=os.getpid(), init=seen)

    @app.get("/read")
    def read() -> t.Any:
        profile = session.get("profile") or {}
        tags = list(profile.get("tags", []))  # nested reads must not mark dirty
        data = {key: session[key] for key in list(session.keys())}
        _sleep()
        return jsonify(pid=os.getpid(), keys=sorted(data), data=data, tags=tags)

    @app.post("/incr")
    def incr() -> t.Any:
        started = time.monotonic()
        with lock():
            acquired = time.monotonic()
            n = session.get("n", 0)
            _sleep()
            session["n"] = n + 1
        released = time.monotonic()
        return jsonify(
            pid=os.getpid(),
            n=n + 1,
            waited=acquired - started,
            held=released - acquired,
        )
