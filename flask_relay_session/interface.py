"""The Flask session interface: from cookie to session and back.

:meth:`RelaySessionInterface.open_session` verifies the cookie and returns a
:class:`~flask_relay_session.session.Session` that has not touched the store
yet. :meth:`RelaySessionInterface.save_session` saves what the request
changed and sets, refreshes or deletes the cookie.
"""

from __future__ import annotations

import logging
import re
import time
import typing as t

from flask import after_this_request
from flask import has_request_context
from flask import request
from flask.sessions import SessionInterface
from flask.sessions import SessionMixin

from .config import Settings
from .cookies import CookieContent
from .cookies import CookieSigner
from .cookies import bind_values
from .errors import RelaySessionError
from .errors import SessionChainError
from .errors import SessionLockError
from .errors import SessionSerializationError
from .errors import SessionStoreError
from .errors import error_response
from .errors import replace_response
from .policy import SessionPolicy
from .session import Session
from .stores.base import SessionStore
from .users import client_of

if t.TYPE_CHECKING:
    from datetime import datetime

    from flask import Flask
    from flask import Request
    from flask import Response

    from .migration import FlaskSessionMigration

logger = logging.getLogger("flask_relay_session")

#: What a request id must look like to appear in log lines.
_LOG_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

#: The WSGI environ key under which a request keeps its session, for the
#: end of the request (:func:`request_session`).
ENVIRON_KEY = "flask_relay_session.session"


class RelaySessionInterface(SessionInterface):
    """Keeps ``flask.session`` in a :class:`~flask_relay_session.SessionStore`.

    Installed by :class:`~flask_relay_session.RelaySession`; you rarely
    create one yourself. Subclass it to change how cookies are named or
    issued, with the same ``get_cookie_*`` methods as Flask's interface.

    :param store: where sessions are kept.
    :param settings: the validated ``RELAY_SESSION_*`` settings.
    """

    #: The class of the session objects.
    session_class = Session

    #: The request header that names a request in the extension's debug log
    #: lines (:attr:`Session.log_id`), so that they can be matched with the
    #: logs of a proxy or of the app. A value of up to 64 letters, digits and
    #: ``._:-`` is used as is; without one, or with ``None`` here, each
    #: session gets 8 random hex digits.
    log_id_header: str | None = "X-Request-ID"

    def __init__(self, store: SessionStore, settings: Settings) -> None:
        #: The store sessions are kept in.
        self.store = store
        #: The validated ``RELAY_SESSION_*`` settings.
        self.settings = settings
        #: Returns the current time in seconds; tests replace it.
        self.clock: t.Callable[[], float] = time.time
        #: Moves sessions stored by Flask-Session on their first request
        #: (``RELAY_SESSION_MIGRATE_FLASK_SESSION``), or ``None``.
        self.migration: FlaskSessionMigration | None = None
        self._signers: dict[tuple[str | bytes, ...], CookieSigner] = {}

    def get_signer(self, app: Flask) -> CookieSigner | None:
        """Return the signer for the app's secret keys, or ``None``.

        Cookies are signed with ``SECRET_KEY``; ``SECRET_KEY_FALLBACKS``
        are still accepted.
        """
        if not app.secret_key:
            return None
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key)
        signer = self._signers.get(keys)
        if signer is None:
            signer = self._signers[keys] = CookieSigner(keys)
        return signer

    def get_bound_values(self, request: Request) -> str | None:
        """Return the digest of the request values the cookie is bound to."""
        sign_with = self.settings.sign_with
        if sign_with is None:
            return None
        return bind_values(sign_with(request))

    def make_policy(self, app: Flask) -> SessionPolicy:
        """Return what a session of ``app`` needs to know for one request."""
        return SessionPolicy(
            store=self.store,
            settings=self.settings,
            lifetime=int(app.permanent_session_lifetime.total_seconds() * 1000),
            refresh_each_request=app.config["SESSION_REFRESH_EACH_REQUEST"],
            clock=self.clock,
            client=client_of(request) if self.settings.track_client else None,
        )

    def open_session(self, app: Flask, request: Request) -> Session | None:
        """Return the request's session, without touching the store but to
        move a Flask-Session session.

        A missing, forged or malformed cookie gives a new, empty session;
        with ``RELAY_SESSION_MIGRATE_FLASK_SESSION``, a Flask-Session cookie
        gives the session it moves to (:attr:`migration`). Without a secret
        key, return ``None`` so that Flask installs its null
        session, which explains the problem on first write.
        """
        signer = self.get_signer(app)
        if signer is None:
            return None
        policy = self.make_policy(app)
        value = request.cookies.get(self.get_cookie_name(app))
        content = None
        if value:
            content = signer.verify(value, self.get_bound_values(request))
        if content is None:
            session: Session | None = None
            if value and self.migration is not None:
                # Maybe a Flask-Session cookie: see migration/mover.py.
                session = self.migration.open_session(
                    app, value, policy, self.session_class
                )
            if session is None:
                session = self.session_class(policy)
        else:
            session = self.session_class(
                policy,
                content.sid,
                permanent=content.permanent,
                expires_at=content.expires_at * 1000,
            )
            session.cookie_outdated = content.stale_key
        if self.log_id_header is not None:
            log_id = request.headers.get(self.log_id_header)
            if log_id is not None and _LOG_ID.fullmatch(log_id):
                session.log_id = log_id
        request.environ[ENVIRON_KEY] = session
        if has_request_context():
            after_this_request(_finishing(session))
        return session

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        """Whether the response sets the session cookie.

        When the session changed, and when the expiry of a permanent session
        was refreshed (see ``RELAY_SESSION_ROLLING``).
        """
        if isinstance(session, Session):
            return session.modified or (session.permanent and session.refreshed)
        return super().should_set_cookie(app, session)

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        """The cookie's expiry: the store's, for a permanent session."""
        if isinstance(session, Session):
            return session.expires_at if session.permanent else None
        return super().get_expiration_time(app, session)

    def save_session(
        self, app: Flask, session: SessionMixin | None, response: Response
    ) -> None:
        """Save the request's changes, then set or delete the cookie.

        Flask runs no error handler for exceptions raised here, so the
        response is replaced here when the save fails: a store that cannot
        be reached gives a ``503``, a lock that stays taken a ``409``, and
        a rotation chain that leads nowhere the response of
        :meth:`~flask_relay_session.RelaySession.broken_chain_handler`
        (``410`` by default) and drops the cookie, as when the view read the
        session. Nothing is written in any of these cases.
        """
        if not isinstance(session, Session):
            return
        try:
            if session.modified or session.accessed:
                response.vary.add("Cookie")
            try:
                self._persist(session)
            except SessionStoreError as error:
                logger.error(
                    "[%s] the session could not be saved: %s", session.log_id, error
                )
                replace_response(response, error)
                return
            except SessionLockError as error:
                logger.warning(
                    "[%s] the session could not be saved: %s", session.log_id, error
                )
                replace_response(response, error)
                return
            except SessionChainError as error:
                _adopt_response(response, self.chain_error_response(app, error))
            except SessionSerializationError:
                # A bug of the app's (a value that cannot be stored): Flask
                # answers 500. Nothing was written, and the 500 response's
                # own save must not fail on the same changes again.
                session.clear_dirty()
                raise
            session.client_sid = self._write_cookie(app, session, response)
        finally:
            # A streamed body reads after this, as a view does: its errors
            # are its own again.
            session.finishing = False
            release_lock(session)

    def chain_error_response(self, app: Flask, error: SessionChainError) -> Response:
        """Return the response to a broken rotation chain found while saving.

        It is the response of the handler registered with
        :meth:`~flask_relay_session.RelaySession.broken_chain_handler`, as for
        a chain found broken while the view read the session.
        """
        state = app.extensions.get("relay_session")
        if state is None:
            return app.make_response(error_response(error))
        return app.make_response(state.extension.handle_chain_error(error))

    def _persist(self, session: Session) -> None:
        if session.finishing_error is not None:
            raise session.finishing_error
        if session.modified:
            session.save()
        else:
            session.refresh_untouched()

    def _write_cookie(
        self, app: Flask, session: Session, response: Response
    ) -> str | None:
        """Set or delete the cookie; return the id the client holds after.

        Most responses do neither: the cookie's attributes are looked up
        only for those that do.
        """
        name = self.get_cookie_name(app)
        if session.emptied or session.new:
            # Nothing is stored under this id: drop the client's cookie, if
            # it sent one.
            if session.modified and name in request.cookies:
                response.delete_cookie(name, **self._cookie_attributes(app))
                response.vary.add("Cookie")
            return None
        if not self.should_set_cookie(app, session):
            return session.sid
        signer = self.get_signer(app)
        assert signer is not None
        expires_at = int(session.expires_at.timestamp())
        content = CookieContent(session.sid, session.permanent, expires_at)
        value = signer.sign(content, self.get_bound_values(request))
        response.set_cookie(
            name,
            value,
            expires=self.get_expiration_time(app, session),
            **self._cookie_attributes(app),
        )
        response.vary.add("Cookie")
        return session.sid

    def _cookie_attributes(self, app: Flask) -> dict[str, t.Any]:
        """The attributes of the session cookie, as Flask's settings give
        them, for setting or deleting it.
        """
        attributes = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
        }
        # The Partitioned attribute came with Flask 3.1 and Werkzeug 3.1.
        if hasattr(self, "get_cookie_partitioned"):
            attributes["partitioned"] = self.get_cookie_partitioned(app)
        return attributes


def _finishing(session: Session) -> t.Callable[[Response], Response]:
    """The function that tells ``session`` that the view has returned: the
    first to get the response, before the ``after_request`` functions of
    the app (Flask runs those of ``after_this_request`` first).
    """

    def finishing(response: Response) -> Response:
        session.finishing = True
        return response

    return finishing


def request_session(request: Request) -> Session | None:
    """Return the session :meth:`~RelaySessionInterface.open_session` opened
    for ``request``, or ``None``.

    Unlike :data:`flask.session`, this does not mark the session as
    accessed, needs no request context of a particular Flask version, and
    gives ``None`` when opening the session failed.
    """
    session = request.environ.get(ENVIRON_KEY)
    return session if isinstance(session, Session) else None


def finish_request(session: Session) -> None:
    """End the request's use of ``session``, at teardown.

    A streamed response (:func:`flask.stream_with_context`) can change the
    session after :meth:`~RelaySessionInterface.save_session` ran. Those
    changes are saved now if the client already holds the session's id; no
    cookie can be sent any more. Then the lock, if still held, is released.
    """
    try:
        if session.dirty_paths and session.client_sid == session.sid:
            session.save()
    except RelaySessionError as error:
        logger.error(
            "[%s] changes made while streaming the response could not be saved: %s",
            session.log_id,
            error,
        )
    finally:
        release_lock(session)


def release_lock(session: Session) -> None:
    """Release the session's lock, logging instead of raising on failure."""
    try:
        session.release_lock()
    except SessionStoreError as error:
        logger.error("The session lock could not be released: %s", error)


def _adopt_response(response: Response, replacement: Response) -> None:
    """Make ``response`` the same as ``replacement``, in place."""
    vary = response.vary
    response.status_code = replacement.status_code
    response.headers.clear()
    response.headers.extend(replacement.headers)
    response.set_data(replacement.get_data())
    for value in vary:
        response.vary.add(value)
