"""The exceptions raised by flask-relay-session, and how clients see them.

Every error derives from :class:`RelaySessionError`, so an application can
catch them all at once. The ones a client can cause or run into are answered
with an HTTP error (:func:`error_response`): a lock that could not be
acquired is ``409 Conflict``, an unreachable store is ``503 Service
Unavailable`` and a broken rotation chain is ``410 Gone``.

The message of an exception is for the server's log: it may name the Redis
host or say which setting to raise. A client is told only
:attr:`~RelaySessionError.public_message`, what happened and what to do.
"""

from __future__ import annotations

import typing as t

from flask import json
from werkzeug.wrappers import Response

if t.TYPE_CHECKING:
    from flask import Response as FlaskResponse


class RelaySessionError(Exception):
    """Base class of every error raised by flask-relay-session."""

    #: The HTTP status of the error response.
    code: int = 500
    #: The ``error`` member of the JSON error response.
    error_code: str = "session_error"
    #: The ``message`` member of the JSON error response: safe to show to
    #: anyone, never the details of the exception.
    public_message: str = "The session could not be used. Try again later."


class SessionConfigError(RelaySessionError, ValueError):
    """A ``RELAY_SESSION_*`` configuration value is invalid.

    Raised by :meth:`~flask_relay_session.RelaySession.init_app`; the message
    names the key and says what is expected.
    """


class SessionLockError(RelaySessionError):
    """The session lock could not be acquired, or was lost while held.

    Answered with ``409 Conflict`` when the application does not handle it.
    """

    code = 409
    error_code = "session_locked"
    public_message = (
        "Another request is changing this session. Nothing was saved; try"
        " again in a moment."
    )


class SessionChainError(RelaySessionError):
    """A rotated session id could not be followed to a live session.

    Answered with ``410 Gone`` (see
    :meth:`~flask_relay_session.RelaySession.broken_chain_handler`); the
    response drops the cookie.
    """

    code = 410
    error_code = "session_chain_broken"
    public_message = (
        "This session has ended and a new one was started. Sign in again if"
        " you were signed in."
    )


class SessionChainBrokenError(SessionChainError):
    """A rotation redirect points to a session that no longer exists."""


class SessionDepthError(SessionChainError):
    """A chain of rotation redirects is longer than the allowed depth."""


class SessionStoreError(RelaySessionError):
    """The session store could not be reached or failed to answer.

    Answered with ``503 Service Unavailable``. Nothing of the failed
    operation was written, and the next request tries the store again.
    """

    code = 503
    error_code = "session_store_unavailable"
    public_message = (
        "Sessions are unavailable right now. Nothing was saved; try again in a moment."
    )


class SessionSerializationError(RelaySessionError, TypeError):
    """A session value cannot be stored.

    The message names the path of the value (``session['cart']['items']``)
    and what is wrong with it. Nothing of the save that raised it is written.
    """


#: Headers of a view's response that describe its body or say how to cache
#: or follow it. An error response that replaces the view's drops them.
_VIEW_HEADERS = frozenset(
    name.lower()
    for name in (
        "Age",
        "Cache-Control",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Location",
        "Content-MD5",
        "Content-Range",
        "Content-Security-Policy",
        "Digest",
        "ETag",
        "Expires",
        "Last-Modified",
        "Link",
        "Location",
        "Pragma",
        "Refresh",
        "Retry-After",
    )
)


def _body(error: RelaySessionError) -> str:
    return json.dumps({"error": error.error_code, "message": error.public_message})


def error_response(error: RelaySessionError) -> Response:
    """Return the JSON error response that answers ``error``.

    ``{"error": <error_code>, "message": <public_message>}`` with the
    error's status and ``Cache-Control: no-store``, so that no shared cache
    keeps it. The details of the error belong in the server's log.
    """
    response = Response(_body(error), error.code, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def replace_response(response: FlaskResponse, error: RelaySessionError) -> None:
    """Turn a view's ``response`` into the error response of ``error``, in place.

    Used where the response object must be kept: the session is saved after
    the view returned. The view's body goes, and so do the headers that
    describe it or say how to cache or follow it; others, such as cookies
    and ``Vary``, stay.
    """
    for name in {name.lower() for name in response.headers.keys()}:
        if name in _VIEW_HEADERS:
            del response.headers[name]
    response.status_code = error.code
    response.set_data(_body(error))
    response.mimetype = "application/json"
    response.headers["Cache-Control"] = "no-store"
