"""The exceptions raised by flask-relay-session.

Every error derives from :class:`RelaySessionError`, so an application can
catch them all at once. The extension registers error handlers that turn the
ones a client can cause into proper HTTP responses: a lock that could not be
acquired is ``409 Conflict``, an unreachable store is ``503 Service
Unavailable`` and a broken rotation chain is ``410 Gone``.
"""

from __future__ import annotations


class RelaySessionError(Exception):
    """Base class of every error raised by flask-relay-session."""


class SessionConfigError(RelaySessionError, ValueError):
    """A ``RELAY_SESSION_*`` configuration value is invalid.

    Raised by :meth:`~flask_relay_session.RelaySession.init_app`; the message
    names the key and says what is expected.
    """


class SessionLockError(RelaySessionError):
    """The session lock could not be acquired, or was lost while held.

    Rendered as ``409 Conflict`` when the application does not handle it.
    """

    #: HTTP status code used by the default error handler.
    code = 409


class SessionChainError(RelaySessionError):
    """A rotated session id could not be followed to a live session."""

    #: HTTP status code used by the default broken-chain handler.
    code = 410


class SessionChainBrokenError(SessionChainError):
    """A rotation redirect points to a session that no longer exists."""


class SessionDepthError(SessionChainError):
    """A chain of rotation redirects is longer than the allowed depth."""


class SessionStoreError(RelaySessionError):
    """The session store could not be reached or failed to answer.

    Rendered as ``503 Service Unavailable``. Nothing of the failed operation
    was written, and the next request tries the store again.
    """

    #: HTTP status code used by the default error handler.
    code = 503


class SessionSerializationError(RelaySessionError, TypeError):
    """A session value cannot be stored.

    The message names the path of the value (``session['cart']['items']``)
    and what is wrong with it. Nothing of the save that raised it is written.
    """
