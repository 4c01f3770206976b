"""Signals sent during a session's life, with :mod:`blinker`, as Flask does.

Connect to them to audit logins, count lock contention or invalidate caches::

    from flask_relay_session import signals

    @signals.session_rotated.connect_via(app)
    def audit_rotation(app, session, old_sid, sid, **extra):
        audit_log.info("session rotated for user %s", session.get("user_id"))

The sender is the current app (``current_app._get_current_object()``), or
``None`` outside an app context. Every signal passes the
:class:`~flask_relay_session.Session` as ``session`` and the id concerned as
``sid``; receivers should accept ``**extra`` so that later versions can add
keyword arguments. Session ids are bearer credentials: do not log them whole.

Nothing is built or sent while a signal has no receivers, so unused signals
cost one attribute check.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing as t

from blinker import Namespace
from flask import current_app
from flask import has_app_context

if t.TYPE_CHECKING:
    from blinker import NamedSignal

_signals = Namespace()

#: A new session was stored for the first time (its first successful save).
#: Keyword arguments: ``session``, ``sid``.
session_created = _signals.signal("relay-session-created")

#: Changes were saved to the store. Keyword arguments: ``session``, ``sid``
#: (the id saved under, after any redirect), ``paths`` (the saved paths, a
#: frozenset of key tuples), ``created`` (this save stored the session for
#: the first time) and ``emptied`` (the save left no data, so the stored
#: session was deleted).
session_saved = _signals.signal("relay-session-saved")

#: :meth:`~flask_relay_session.Session.rotate_id` moved the session to a new
#: id. Keyword arguments: ``session``, ``sid`` (the new id) and ``old_sid``
#: (which redirects to the new one for the grace period; ``None`` when
#: nothing was stored yet, so no redirect was left).
session_rotated = _signals.signal("relay-session-rotated")

#: :meth:`~flask_relay_session.Session.destroy` deleted the session.
#: Keyword arguments: ``session`` (already switched to a fresh, empty
#: session) and ``sid`` (the id that was deleted).
session_destroyed = _signals.signal("relay-session-destroyed")

#: :meth:`~flask_relay_session.RelaySession.revoke` or
#: :meth:`~flask_relay_session.RelaySession.revoke_all` ended a session of a
#: user; sent once per session ended. Keyword arguments: ``session`` (the
#: session of the request that revoked, ``None`` outside a request, as in
#: ``flask relay-session revoke-user``), ``sid`` (the id ended),
#: ``user_id`` and ``handle`` (the session's
#: :attr:`~flask_relay_session.users.SessionInfo.handle`).
session_revoked = _signals.signal("relay-session-revoked")

#: A request gave up waiting for the session lock; a
#: :class:`~flask_relay_session.SessionLockError` follows. Keyword
#: arguments: ``session``, ``sid``, ``operation`` (``"acquire"`` for
#: :meth:`~flask_relay_session.Session.lock`, ``"save"`` or ``"rotate"``
#: for a write waiting on another request's lock) and ``retries``.
lock_timeout = _signals.signal("relay-session-lock-timeout")


def _sender() -> t.Any:
    """The current app, or ``None`` outside an app context."""
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    return None


def wanted(signal: NamedSignal) -> bool:
    """Whether anybody listens to ``signal`` from the current app.

    Checked before a send, so that nothing is computed for a signal nobody
    listens to: receivers connected to other apps do not count.
    """
    return bool(signal.receivers) and signal.has_receivers_for(_sender())


def send(signal: NamedSignal, **kwargs: t.Any) -> None:
    """Send ``signal`` from the current app, or ``None`` outside an app.

    Callers check :func:`wanted` first.
    """
    app = _sender()
    if app is not None:
        signal.send(app, _async_wrapper=app.ensure_sync, **kwargs)
    else:
        signal.send(None, **kwargs)
