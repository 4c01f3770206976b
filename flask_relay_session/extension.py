"""The Flask extension: reads the configuration and installs the interface."""

from __future__ import annotations

import importlib.util
import logging
import typing as t
from dataclasses import dataclass

import flask
from flask import Flask
from flask import current_app
from flask import has_request_context
from flask import request

from .cli import cli as relay_session_cli
from .config import Settings
from .errors import SessionChainError
from .errors import SessionConfigError
from .errors import SessionLockError
from .errors import SessionStoreError
from .errors import error_response
from .interface import RelaySessionInterface
from .interface import finish_request
from .interface import request_session
from .login import track_flask_login_users
from .migration import FlaskSessionMigration
from .session import Session
from .stores.base import SessionStore
from .stores.base import missing_methods
from .stores.memory import MemorySessionStore
from .stores.redis import RedisSessionStore
from .stores.users import supports_users
from .users import SessionHandles
from .users import SessionInfo
from .users import UserSessions

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

logger = logging.getLogger("flask_relay_session")

#: A function that answers a :class:`SessionChainError`.
ChainHandler = t.Callable[[SessionChainError], "ResponseReturnValue"]


@dataclass(frozen=True)
class RelaySessionState:
    """What the extension keeps for one app, in
    ``app.extensions["relay_session"]``.
    """

    #: The extension that configured the app.
    extension: RelaySession
    #: The validated settings.
    settings: Settings
    #: The store sessions are kept in.
    store: SessionStore
    #: The installed session interface.
    interface: RelaySessionInterface


def default_broken_chain_handler(error: SessionChainError) -> ResponseReturnValue:
    """Answer a broken rotation chain with ``410 Gone`` and a JSON error.

    The response says the session ended, and is never cached
    (:func:`~flask_relay_session.errors.error_response`).
    """
    return error_response(error)


class RelaySession:
    """Server-side sessions in Redis for a Flask app.

    ::

        app = Flask(__name__)
        app.config["RELAY_SESSION_REDIS"] = "redis://localhost:6379/0"
        RelaySession(app)

    or, with an app factory::

        relay = RelaySession()

        def create_app():
            app = Flask(__name__)
            relay.init_app(app)
            return app

    The extension keeps no reference to an app; one instance can serve many.

    :param app: the app to configure now, if any.
    """

    #: The session interface installed on each app. Subclass
    #: :class:`RelaySessionInterface` to change how cookies are named or
    #: issued (``get_cookie_name`` and the other ``get_cookie_*`` methods),
    #: and set the subclass here.
    interface_class: type[RelaySessionInterface] = RelaySessionInterface

    def __init__(self, app: Flask | None = None) -> None:
        self._broken_chain_handler: ChainHandler = default_broken_chain_handler
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the ``RELAY_SESSION_*`` settings and install the interface.

        :raises SessionConfigError: a setting is invalid, or
            ``RELAY_SESSION_MIGRATE_FLASK_SESSION`` is on without the
            ``flask-session`` extra installed.
        """
        settings = Settings.from_app(app)
        store = self.make_store(app, settings)
        interface = self.interface_class(store, settings)
        if settings.migrate_flask_session is not None:
            interface.migration = FlaskSessionMigration.for_app(
                settings.migrate_flask_session, store, max_size=settings.max_size
            )
        app.session_interface = interface
        app.extensions["relay_session"] = RelaySessionState(
            self, settings, store, interface
        )
        app.register_error_handler(SessionLockError, _lock_error)
        app.register_error_handler(SessionStoreError, _store_error)
        app.register_error_handler(SessionChainError, self.handle_chain_error)
        app.teardown_request(_finish_request)
        app.cli.add_command(relay_session_cli)
        track_users = settings.track_users
        if track_users is None:
            track_users = _flask_login_installed() and supports_users(store)
        elif track_users and not supports_users(store):
            raise SessionConfigError(
                "RELAY_SESSION_TRACK_USERS needs a store that keeps the sessions"
                " of users (flask_relay_session.stores.users.SessionStoreUsers);"
                f" {type(store).__qualname__} does not"
            )
        if track_users:
            track_flask_login_users(app)

    def make_store(self, app: Flask, settings: Settings) -> SessionStore:
        """Return the store configured for ``app``.

        ``RELAY_SESSION_STORE`` wins; then ``RELAY_SESSION_REDIS``, a client
        or a URL; without either, a :class:`MemorySessionStore`.
        """
        if settings.store is not None:
            missing = missing_methods(settings.store, SessionStore)
            if missing:
                raise SessionConfigError(
                    "RELAY_SESSION_STORE must implement the SessionStore"
                    f" protocol; {type(settings.store).__name__} has no"
                    f" callable {', '.join(missing)}"
                )
            return t.cast(SessionStore, settings.store)
        if settings.redis is not None:
            return RedisSessionStore(
                _redis_client(settings.redis),
                prefix=settings.key_prefix,
                lock_prefix=settings.lock_prefix,
                preload_script=settings.preload_script,
                layout=settings.layout,
            )
        if not (app.testing or app.debug):
            logger.warning(
                "flask-relay-session is keeping sessions in the memory of this"
                " process. They are lost on restart and not shared between"
                " processes: set RELAY_SESSION_REDIS for production."
            )
        return MemorySessionStore()

    def broken_chain_handler(self, handler: ChainHandler) -> ChainHandler:
        """Register the function that answers a broken rotation chain.

        It receives the :class:`SessionChainError` and returns a response,
        for a chain found broken when the view reads the session or when
        the session is saved after the view; the view's response is then
        replaced. The default answers ``410 Gone`` with a JSON error. ::

            @relay.broken_chain_handler
            def session_gone(error):
                return redirect(url_for("login"))
        """
        self._broken_chain_handler = handler
        return handler

    def handle_chain_error(self, error: SessionChainError) -> ResponseReturnValue:
        """Answer ``error`` with the registered :meth:`broken_chain_handler`.

        Called for a chain found broken while the view reads the session and
        while the session is saved after it.
        """
        logger.info("Session chain: %s", error)
        return self._broken_chain_handler(error)

    # -- the sessions of a user ------------------------------------------

    def _users(self) -> UserSessions:
        """The user API on the current app's store, for the current request."""
        state = current_app.extensions.get("relay_session")
        if state is None:
            raise RuntimeError(
                "flask-relay-session is not set up for this app: call"
                " RelaySession(app) or relay.init_app(app)"
            )
        app = current_app
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key)
        if not app.secret_key:
            raise RuntimeError("the sessions of users need SECRET_KEY to be set")
        current = request_session(request) if has_request_context() else None
        now = int(state.interface.clock() * 1000)
        return UserSessions(state.store, SessionHandles(keys), current, now)

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """Return the live sessions of the user ``user_id``, newest activity
        first: those bound to the user with
        :meth:`~flask_relay_session.Session.bind_user` (or by Flask-Login,
        see ``RELAY_SESSION_TRACK_USERS``). Sessions that expired, were
        destroyed or revoked never appear. In an app context.

        Two round trips to Redis, however many sessions the user has.

        :raises ValueError: ``user_id`` is empty or too long.

        .. versionadded:: 0.1.0
        """
        return self._users().sessions_of(user_id)

    def revoke(self, user_id: str, handle: str) -> bool:
        """End the session of the user ``user_id`` that ``handle`` names (a
        :attr:`SessionInfo.handle <flask_relay_session.users.SessionInfo.handle>`):
        its cookies no longer reach it. Return ``False`` when the handle
        names no live session of that user. Sends
        :data:`~flask_relay_session.signals.session_revoked`. In an app
        context.

        :raises ValueError: ``user_id`` is empty or too long.

        .. versionadded:: 0.1.0
        """
        return self._users().revoke(user_id, handle)

    def revoke_all(self, user_id: str, *, except_current: bool = False) -> int:
        """End every session of the user ``user_id``: log out everywhere.
        Return how many sessions were ended (a session caught half-way
        through a rotation may count twice). Sends
        :data:`~flask_relay_session.signals.session_revoked` for each. In an
        app context.

        Sessions ended are deleted, as :meth:`~flask_relay_session.Session.destroy`
        deletes them, through any id they were rotated from, so no cookie of
        theirs logs anybody in again; requests in flight with one of them go
        on with a new, empty session. A rotation racing this ends too.

        :param except_current: keep the session of the request asking, for
            "log out my other devices" after a password change.
        :raises ValueError: ``user_id`` is empty or too long.

        .. versionadded:: 0.1.0
        """
        return self._users().revoke_all(user_id, except_current=except_current)

    @property
    def session(self) -> Session:
        """The current request's session, typed as :class:`Session`.

        The same object as :data:`flask.session`, for code that wants the
        session's own members (``rotate_id``, ``lock``) checked by a type
        checker without a cast.
        """
        session = flask.session._get_current_object()  # type: ignore[attr-defined]
        if not isinstance(session, Session):
            raise RuntimeError(
                "the current session is not a flask-relay-session session; is"
                " SECRET_KEY set, and was RelaySession.init_app called for this"
                " app?"
            )
        session.accessed = True
        return session


def _flask_login_installed() -> bool:
    return importlib.util.find_spec("flask_login") is not None


def _redis_client(value: t.Any) -> t.Any:
    if isinstance(value, str):
        import redis

        try:
            return redis.Redis.from_url(value)
        except ValueError as error:
            raise SessionConfigError(
                f"RELAY_SESSION_REDIS is not a valid Redis URL: {error}"
            ) from error
    if not hasattr(value, "evalsha"):
        raise SessionConfigError(
            "RELAY_SESSION_REDIS must be a redis-py client or a URL such as"
            f" 'redis://localhost:6379/0'; got {value!r}"
        )
    return value


def _lock_error(error: SessionLockError) -> ResponseReturnValue:
    logger.warning("Session lock: %s", error)
    return error_response(error)


def _store_error(error: SessionStoreError) -> ResponseReturnValue:
    logger.error("Session store: %s", error)
    return error_response(error)


def _finish_request(error: BaseException | None) -> None:
    session = request_session(request)
    if session is not None:
        finish_request(session)
