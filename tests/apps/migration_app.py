"""One app on Flask-Session 0.8, then on flask-relay-session moving
Flask-Session's sessions over: see ``tests/test_migration*.py``.

Users sign in with Flask-Login; the session also holds a cart, flashed
messages, a datetime and bytes, as a real shop's would.

:func:`build` makes either app in process: ``build("flask-session",
**config)`` or ``build("relay", **config)``, with the configuration on top
of a secret key. :func:`create_app` is the relay app for gunicorn,
configured from the ``RELAY_TEST_*`` environment (see :mod:`tests.apps`),
with ``RELAY_SESSION_MIGRATE_FLASK_SESSION`` on.

``POST /login/<name>``  signs ``name`` in, puts ``["apple"]`` in the cart
                        and ``since`` and ``token`` in the session, and
                        flashes ``welcome <name>`` (category ``success``).
``POST /cart/<item>``   appends ``item`` to the cart, in ``session.lock()``
                        on flask-relay-session.
``POST /write/<key>``   reads the user, sleeps ``?sleep=``, sets
                        ``session[key] = key``; returns what it read.
``GET /me``             the signed-in user and the whole session: ``user``,
                        ``cart``, ``flashes`` (read, so consumed), ``data``
                        (every other key, bytes and datetimes as
                        ``repr``), ``permanent`` and ``sid`` (the session
                        id; Flask-Session's has one too).
``GET /peek``           the ``repr`` of the session's data as the app sees
                        it, plain dicts, lists and tuples, keys sorted,
                        without Flask-Session's ``_permanent``; consumes
                        nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import typing as t
import warnings

from flask import Flask
from flask import flash
from flask import get_flashed_messages
from flask import jsonify
from flask import session
from flask_login import LoginManager
from flask_login import UserMixin
from flask_login import current_user
from flask_login import login_user

from flask_relay_session import RelaySession

from . import _sleep
from . import base_app

#: When every ``/login`` says the user signed in.
SINCE = datetime.datetime(2024, 5, 17, 9, 30, 15, 250000, tzinfo=datetime.timezone.utc)
#: The bytes every ``/login`` stores.
TOKEN = b"\x00\x01\xfe\xff"


class User(UserMixin):
    """A user whose id is their name."""

    def __init__(self, name: str) -> None:
        self.id = name


def _shown(value: t.Any) -> t.Any:
    if isinstance(value, (bytes, datetime.datetime)):
        return repr(value)
    return value


def plain(value: t.Any) -> t.Any:
    """``value`` with every dict, list and tuple in it a plain one."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain(item) for item in value)
    return value


def _views(app: Flask, lock: t.Callable[[], t.ContextManager[t.Any]]) -> None:
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.after_request
    def tag_response(response: t.Any) -> t.Any:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.get("/")
    def health() -> t.Any:
        return jsonify(pid=os.getpid())

    @app.post("/login/<name>")
    def login(name: str) -> t.Any:
        login_user(User(name))
        session["cart"] = ["apple"]
        session["since"] = SINCE
        session["token"] = TOKEN
        flash(f"welcome {name}", "success")
        return jsonify(user=name)

    @app.post("/cart/<item>")
    def add_to_cart(item: str) -> t.Any:
        with lock():
            cart = session.get("cart", [])
            cart.append(item)
            session["cart"] = cart
        return jsonify(cart=session["cart"])

    @app.post("/write/<key>")
    def write(key: str) -> t.Any:
        user = current_user.get_id() if current_user.is_authenticated else None
        cart = list(session.get("cart", []))
        _sleep()
        session[key] = key
        return jsonify(user=user, cart=cart, sid=getattr(session, "sid", None))

    @app.get("/peek")
    def peek() -> str:
        keys = sorted((key for key in session if key != "_permanent"), key=repr)
        return repr({key: plain(session[key]) for key in keys})

    @app.get("/me")
    def me() -> t.Any:
        user = current_user.get_id() if current_user.is_authenticated else None
        flashes = get_flashed_messages(with_categories=True)
        data = {key: _shown(value) for key, value in session.items()}
        return jsonify(
            user=user,
            cart=data.pop("cart", None),
            flashes=flashes,
            data=data,
            permanent=session.permanent,
            sid=getattr(session, "sid", None),
        )


def build(kind: str, **config: t.Any) -> Flask:
    """The app on ``"flask-session"`` or on ``"relay"``, with ``config``."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="migration tests: the same in both apps")
    app.config.update(config)
    return _install(app, kind)


def relay_app(client: t.Any, **config: t.Any) -> Flask:
    """The relay app on the Redis ``client``, moving Flask-Session's
    sessions, with ``config`` on top.
    """
    settings: dict[str, t.Any] = {
        "TESTING": True,
        "RELAY_SESSION_REDIS": client,
        "RELAY_SESSION_MIGRATE_FLASK_SESSION": True,
    }
    settings.update(config)
    return build("relay", **settings)


def _install(app: Flask, kind: str) -> Flask:
    if kind == "flask-session":
        from flask_session import Session

        with warnings.catch_warnings():
            # SESSION_USE_SIGNER is deprecated in Flask-Session 0.8.
            warnings.simplefilter("ignore", DeprecationWarning)
            Session(app)
        _views(app, contextlib.nullcontext)
    elif kind == "relay":
        RelaySession(app)
        _views(app, lambda: session.lock())
    else:
        raise ValueError(kind)
    return app


def create_app() -> Flask:
    """The relay app for gunicorn, moving Flask-Session's sessions over."""
    app = base_app(__name__)
    app.config.setdefault("RELAY_SESSION_REDIS", app.config["REDIS_URL"])
    app.config["RELAY_SESSION_MIGRATE_FLASK_SESSION"] = True
    return _install(app, "relay")
