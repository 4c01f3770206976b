"""Flask-Login integration: sessions bound to the user who logged in.

With ``RELAY_SESSION_TRACK_USERS`` (on by default when Flask-Login is
installed), the extension listens to Flask-Login's signals for the app: a
login (``user_logged_in``, and ``user_loaded_from_cookie`` for a login by
the "remember me" cookie) binds the request's session to
``user.get_id()``, and a logout (``user_logged_out``) unbinds it. Apps
without Flask-Login call :meth:`~flask_relay_session.Session.bind_user`
themselves.
"""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import request

from .interface import request_session


def _logged_in(sender: Flask, user: t.Any = None, **extra: t.Any) -> None:
    """Bind the request's session to the user who logged in."""
    session = request_session(request)
    user_id = None if user is None else user.get_id()
    if session is not None and user_id is not None:
        session.bind_user(str(user_id))


def _logged_out(sender: Flask, user: t.Any = None, **extra: t.Any) -> None:
    """Unbind the request's session from the user who logged out."""
    session = request_session(request)
    if session is not None:
        session.unbind_user()


def track_flask_login_users(app: Flask) -> None:
    """Bind and unbind the sessions of ``app`` on Flask-Login's signals."""
    import flask_login  # type: ignore[import-untyped, unused-ignore]

    flask_login.user_logged_in.connect(_logged_in, app, weak=False)
    flask_login.user_loaded_from_cookie.connect(_logged_in, app, weak=False)
    flask_login.user_logged_out.connect(_logged_out, app, weak=False)
