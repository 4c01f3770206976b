"""Every log line and signal of a session's life.

Debug lines name the request by :attr:`Session.log_id
<flask_relay_session.Session.log_id>` and the session by the first 8 hex
digits of its id: ``[<log id>] <event> session <sid>…``. Signals (see
:mod:`flask_relay_session.signals`) are sent only when the current app has
receivers for them, so that nothing is computed for nobody.
"""

from __future__ import annotations

import logging
import typing as t

from . import signals
from .serialization import decode_key
from .serialization import format_path

if t.TYPE_CHECKING:
    from .errors import SessionChainError
    from .stores.base import Change

logger = logging.getLogger("flask_relay_session")


class Session(t.Protocol):
    """What an event needs of the session it is about (a
    :class:`~flask_relay_session.Session`), which signals also carry.
    """

    #: The session id.
    sid: str

    @property
    def log_id(self) -> str:
        """Names the request in log lines."""


def _debug(session: Session, event: str, sid: str, detail: str, *args: t.Any) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "[%s] %s session %s…" + detail, session.log_id, event, sid[:8], *args
        )


def loaded(session: Session, keys: int, *, refreshed: bool) -> None:
    """The session was found: ``keys`` top-level keys."""
    _debug(
        session,
        "load",
        session.sid,
        ": found, top-level keys: %d%s",
        keys,
        ", expiry refreshed" if refreshed else "",
    )


def load_missing(session: Session) -> None:
    """The session asked for does not exist (any more)."""
    _debug(session, "load", session.sid, ": missing, going on as a new session")


def unreadable(session: Session, error: Exception) -> None:
    """A value of the stored session does not decode: the request goes on
    with a new session. ``error`` says why in words, never quoting the data.
    """
    logger.error(
        "[%s] session %s… holds something that is not a session (%s); it is"
        " left in place for inspection and the request goes on with a new"
        " session",
        session.log_id,
        session.sid[:8],
        error,
    )


def followed_redirect(session: Session, operation: str, target: str) -> None:
    """A load, save or rotation followed a rotation redirect to ``target``."""
    _debug(
        session,
        operation,
        session.sid,
        ": followed a rotation redirect to %s…",
        target[:8],
    )


def chain_broken(session: Session, operation: str, error: SessionChainError) -> None:
    """The session's id leads through redirects to no live session."""
    _debug(session, operation, session.sid, ": %s", error)


def save_missing(session: Session) -> None:
    """The session vanished under the request; its own changes go on."""
    _debug(session, "save", session.sid, ": missing, saving as a new session")


def saved(
    session: Session, changes: t.Sequence[Change], *, created: bool, emptied: bool
) -> None:
    """A save wrote ``changes``: log them, send ``session_created`` and
    ``session_saved``.
    """
    if created and not emptied and signals.wanted(signals.session_created):
        signals.send(signals.session_created, session=session, sid=session.sid)
    debug = logger.isEnabledFor(logging.DEBUG)
    listened = signals.wanted(signals.session_saved)
    if not (debug or listened):
        return
    paths = frozenset(
        tuple(decode_key(key) if key[:1] == " " else key for key in change.path)
        for change in changes
    )
    if debug:
        note = " (new session)" if created else " (emptied, deleted)" if emptied else ""
        _debug(
            session,
            "save",
            session.sid,
            ": %s%s",
            ", ".join(sorted(format_path(path) for path in paths)),
            note,
        )
    if listened:
        signals.send(
            signals.session_saved,
            session=session,
            sid=session.sid,
            paths=paths,
            created=created,
            emptied=emptied,
        )


def rotated(session: Session, old_sid: str | None) -> None:
    """The session moved to :attr:`Session.sid`; ``old_sid`` is the id left
    redirecting to it, or ``None`` when nothing was stored under it.
    """
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "[%s] rotate session %s… to %s…%s",
            session.log_id,
            "(new)" if old_sid is None else old_sid[:8],
            session.sid[:8],
            "" if old_sid is None else ", the old id redirects",
        )
    if signals.wanted(signals.session_rotated):
        signals.send(
            signals.session_rotated, session=session, sid=session.sid, old_sid=old_sid
        )


def destroyed(session: Session, old_sid: str) -> None:
    """The session ``old_sid`` was deleted."""
    _debug(session, "destroy", old_sid, "")
    if signals.wanted(signals.session_destroyed):
        signals.send(signals.session_destroyed, session=session, sid=old_sid)


def lock_acquired(session: Session, sid: str, attempt: int) -> None:
    """The request took the lock of ``sid`` at its ``attempt``-th try."""
    _debug(session, "lock", sid, ": acquired, attempt %d", attempt)


def lock_released(session: Session, sid: str, *, held: bool = True) -> None:
    """The request let go of the lock of ``sid``; ``held`` is false when it
    had expired already.
    """
    _debug(
        session,
        "unlock",
        sid,
        ": %s",
        "released" if held else "not held any more (it expired)",
    )


def lock_waiting(session: Session, operation: str, waits: int) -> None:
    """A write found the session locked by another request, for the
    ``waits``-th time.
    """
    _debug(
        session, operation, session.sid, ": locked by another request, wait %d", waits
    )


def lock_timed_out(session: Session, operation: str, retries: int) -> None:
    """A lock wait ran out: warn and send ``lock_timeout``."""
    logger.warning(
        "[%s] %s session %s…: gave up waiting for the session lock after %d retries",
        session.log_id,
        operation,
        session.sid[:8],
        retries,
    )
    if signals.wanted(signals.lock_timeout):
        signals.send(
            signals.lock_timeout,
            session=session,
            sid=session.sid,
            operation=operation,
            retries=retries,
        )
