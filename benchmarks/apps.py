"""The benchmark app, one per backend, with the same views everywhere.

Backends:

``relay-json``
    flask-relay-session on Redis, ``RELAY_SESSION_LAYOUT = "json"``.
``relay-hash``
    flask-relay-session on Redis, ``RELAY_SESSION_LAYOUT = "hash"``.
``relay-memory``
    flask-relay-session on its in-process ``MemorySessionStore``: the
    library's own CPU cost, with no network.
``flask-session``
    Flask-Session 0.8 on Redis with its defaults.
``flask-session-norefresh``
    the same with ``SESSION_REFRESH_EACH_REQUEST = False``.
``cookie``
    Flask's own signed cookie session.

Views (one per benchmark route, plus ``/seed``):

``GET /noop``         does not touch the session.
``GET /read``         reads one small key (``user``).
``POST /write``       reads one key, then sets one small key (``last_seen``):
                      the usual shape of a view that writes.
``POST /append``      appends one item to a nested list (``cart.items``).
``POST /locked-incr`` ``n += 1`` inside ``session.lock()`` (flask-relay-
                      session); the other backends have no lock and do the
                      plain read-modify-write.
``POST /seed?size=N`` creates a session holding about ``N`` bytes of JSON.

For gunicorn, :func:`create_wsgi` builds the app from the environment
(``BENCH_BACKEND``, ``BENCH_REDIS_URL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import typing as t

import redis
from flask import Flask
from flask import request
from flask import session

SECRET_KEY = "flask-relay-session benchmark: not a secret"

RELAY_BACKENDS = ("relay-json", "relay-hash", "relay-memory")
REDIS_BACKENDS = (
    "relay-json",
    "relay-hash",
    "flask-session",
    "flask-session-norefresh",
)
ALL_BACKENDS = (
    "relay-json",
    "relay-hash",
    "relay-memory",
    "flask-session",
    "flask-session-norefresh",
    "cookie",
)
ROUTES = ("noop", "read", "write", "append", "locked-incr")
ROUTE_METHODS = {
    "noop": "GET",
    "read": "GET",
    "write": "POST",
    "append": "POST",
    "locked-incr": "POST",
}

#: Top-level keys that carry the bulk of a seeded session.
FILLER_KEYS = 8


class BackendUnavailable(Exception):
    """The backend cannot be built with the installed code (a skip)."""


def payload(size: int) -> dict[str, t.Any]:
    """A session of about ``size`` bytes of JSON, shaped like a real one.

    A small ``user`` record, a ``cart`` with an empty ``items`` list, a
    counter ``n``, and :data:`FILLER_KEYS` top-level keys holding lists of
    small records (ints, floats, strings, nested lists) that make up the
    size.
    """
    data: dict[str, t.Any] = {
        "user": {"id": 4242, "name": "Ada Lovelace", "roles": ["admin", "dev"]},
        "cart": {"items": [], "currency": "EUR"},
        "n": 0,
    }
    for index in range(FILLER_KEYS):
        data[f"recent_{index}"] = []
    base = len(json.dumps(data, separators=(",", ":")))
    item = 0
    while base < size:
        record = {
            "id": item,
            "title": f"Viewed product number {item}",
            "price": round(9.99 + item, 2),
            "tags": ["blue", "cotton"],
        }
        data[f"recent_{item % FILLER_KEYS}"].append(record)
        base += len(json.dumps(record, separators=(",", ":"))) + 1
        item += 1
    return data


def create_app(
    backend: str,
    *,
    redis_client: redis.Redis | None = None,
) -> Flask:
    """Build the benchmark app for ``backend``.

    :param redis_client: the (counting) client Redis backends use.
    :raises BackendUnavailable: ``relay-hash`` before the hash layout exists.
    """
    app = Flask(f"bench_{backend.replace('-', '_')}")
    app.config["SECRET_KEY"] = SECRET_KEY
    lock: t.Callable[[], t.ContextManager[t.Any]] = contextlib.nullcontext
    if backend in RELAY_BACKENDS:
        from flask_relay_session import MemorySessionStore
        from flask_relay_session import RelaySession

        if backend == "relay-memory":
            app.config["RELAY_SESSION_STORE"] = MemorySessionStore()
        else:
            assert redis_client is not None
            app.config["RELAY_SESSION_REDIS"] = redis_client
            app.config["RELAY_SESSION_LAYOUT"] = backend.removeprefix("relay-")
        try:
            RelaySession(app)
        except Exception as error:  # an older package without the layout
            raise BackendUnavailable(f"{backend}: {error}") from error
        if backend == "relay-hash" and not _uses_hash_layout(app):
            app = _hash_store_app(backend, redis_client)

        def lock() -> t.ContextManager[t.Any]:
            return session.lock()  # type: ignore[attr-defined, no-any-return]

    elif backend.startswith("flask-session"):
        from flask_session import Session

        assert redis_client is not None
        app.config["SESSION_TYPE"] = "redis"
        app.config["SESSION_REDIS"] = redis_client
        if backend == "flask-session-norefresh":
            app.config["SESSION_REFRESH_EACH_REQUEST"] = False
        Session(app)
    elif backend != "cookie":
        raise ValueError(f"unknown backend {backend!r}")
    register_views(app, lock)
    return app


def _uses_hash_layout(app: Flask) -> bool:
    """Whether the store the extension built uses the hash layout."""
    store = app.extensions["relay_session"].store
    return getattr(store, "layout", None) == "hash"


def _hash_store_app(backend: str, redis_client: redis.Redis | None) -> Flask:
    """The hash-layout app with the store built by hand.

    For a package whose ``RedisSessionStore`` takes ``layout="hash"`` but
    whose extension does not pass ``RELAY_SESSION_LAYOUT`` on yet.
    """
    import inspect

    from flask_relay_session import RedisSessionStore
    from flask_relay_session import RelaySession

    parameters = inspect.signature(RedisSessionStore.__init__).parameters
    if "layout" not in parameters:
        raise BackendUnavailable(
            'relay-hash: RedisSessionStore does not accept layout="hash" yet'
        )
    app = Flask(f"bench_{backend.replace('-', '_')}")
    app.config["SECRET_KEY"] = SECRET_KEY
    store_class: t.Any = RedisSessionStore
    app.config["RELAY_SESSION_STORE"] = store_class(redis_client, layout="hash")
    RelaySession(app)
    return app


def register_views(app: Flask, lock: t.Callable[[], t.ContextManager[t.Any]]) -> None:
    counter = iter(range(1, 1 << 62))

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        user = session.get("user") or {}
        return str(user.get("name"))

    @app.post("/write")
    def write() -> str:
        user = session.get("user")
        session["last_seen"] = next(counter)
        return "ok" if user else "no user"

    @app.post("/append")
    def append() -> str:
        session["cart"]["items"].append(next(counter))
        return "ok"

    @app.post("/locked-incr")
    def locked_incr() -> str:
        with lock():
            n = session.get("n", 0) + 1
            session["n"] = n
        return str(n)

    @app.post("/seed")
    def seed() -> str:
        size = request.args.get("size", default=1024, type=int)
        session.update(payload(size))
        return "ok"


def create_wsgi() -> Flask:
    """The app for gunicorn, configured by ``BENCH_BACKEND``/``BENCH_REDIS_URL``."""
    backend = os.environ["BENCH_BACKEND"]
    client = None
    if backend in REDIS_BACKENDS:
        client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return create_app(backend, redis_client=client)
