"""An application factory configured from environment variables.

On the embedded in-memory store::

    flask --app examples/factory.py run

On Redis, with one variable set::

    RELAY_SESSION_REDIS=redis://localhost:6379/0 flask --app examples/factory.py run

Every ``RELAY_SESSION_*`` variable of the environment becomes the config key
of the same name; values that parse as JSON are used parsed, as Flask's
``from_prefixed_env`` does (``RELAY_SESSION_LOCK_TTL=10``,
``RELAY_SESSION_ROLLING=0.5``), anything else as a string. ``SECRET_KEY``
comes from the environment too. In production, run it with a WSGI server,
for example ``gunicorn 'examples.factory:create_app()'``.

The extension object is created once, at import, and bound to each app by
``init_app``: it holds no reference to an app, so tests can create as many
apps as they like.
"""

from __future__ import annotations

import json
import os
import secrets
import typing as t

from flask import Blueprint
from flask import Flask
from flask import current_app
from flask import jsonify
from flask import redirect
from flask import request
from flask import session
from flask import url_for

from flask_relay_session import RelaySession
from flask_relay_session import SessionChainError

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

relay = RelaySession()
bp = Blueprint("account", __name__)


def config_from_env(prefix: str = "RELAY_SESSION_") -> dict[str, t.Any]:
    """Return the environment variables starting with ``prefix``, parsed."""
    config = {}
    for name, text in os.environ.items():
        if name.startswith(prefix):
            try:
                config[name] = json.loads(text)
            except ValueError:
                config[name] = text
    return config


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Create the app: environment first, then ``test_config`` on top."""
    app = Flask(__name__)
    secret = os.environ.get("SECRET_KEY")
    if not secret:
        # Fine for one development process; every restart signs out everyone.
        app.logger.warning("SECRET_KEY is not set; using a random one")
        secret = secrets.token_hex(32)
    app.config["SECRET_KEY"] = secret
    app.config.update(config_from_env())
    if test_config is not None:
        app.config.update(test_config)
    relay.init_app(app)
    app.register_blueprint(bp)
    return app


@relay.broken_chain_handler
def session_gone(error: SessionChainError) -> ResponseReturnValue:
    """An old cookie leads to a session that no longer exists.

    The default answer is ``410 Gone``; a site with pages would rather send
    the visitor to the start. The response drops the dead cookie either way.
    """
    return redirect(url_for("account.whoami"))


@bp.get("/")
def whoami() -> ResponseReturnValue:
    store = type(current_app.extensions["relay_session"].store).__name__
    return jsonify(
        user=session.get("user"),
        role=session.get("role", "guest"),
        counter=session.get("counter", 0),
        sid=session.sid,
        expires_at=session.expires_at.isoformat(),
        store=store,
    )


@bp.post("/counter")
def increment() -> ResponseReturnValue:
    # relay.session is flask.session typed as flask_relay_session.Session,
    # so a type checker knows about lock(), rotate_id() and the rest.
    with relay.session.lock():
        session["counter"] = session.get("counter", 0) + 1
    return jsonify(counter=session["counter"])


@bp.post("/login")
def login() -> ResponseReturnValue:
    session["user"] = request.form.get("name", "anonymous")
    session["role"] = "member"
    session.permanent = True  # keep the cookie PERMANENT_SESSION_LIFETIME long
    relay.session.rotate_id(grace_period=0)  # against fixation: no redirect
    return jsonify(user=session["user"], role=session["role"])


@bp.post("/sudo")
def sudo() -> ResponseReturnValue:
    if session.get("role") != "member":
        return jsonify(error="sign in first"), 403
    # A privilege change is a reason to rotate, like a login.
    session["role"] = "admin"
    relay.session.rotate_id()
    return jsonify(role="admin")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    relay.session.destroy()
    return jsonify(user=None)
