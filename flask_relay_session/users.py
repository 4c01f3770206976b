"""The sessions of a user: listing them and ending them.

A session is bound with :meth:`Session.bind_user
<flask_relay_session.Session.bind_user>` (see
:mod:`flask_relay_session.binding`), or by Flask-Login (see
:mod:`flask_relay_session.login`). The store keeps a registry per user
(:mod:`flask_relay_session.stores.users` says how it stays exact), which
:class:`UserSessions` reads and ends sessions from, for
:meth:`~flask_relay_session.RelaySession.sessions_of`,
:meth:`~flask_relay_session.RelaySession.revoke` and
:meth:`~flask_relay_session.RelaySession.revoke_all`.

A session is never named by its id outside the store: it is named by a
*handle*, an HMAC of the id under a key derived from ``SECRET_KEY``, which
names it stably while its id lasts and from which neither the id nor a
cookie can be made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import typing as t
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from . import signals
from .errors import SessionConfigError
from .stores.users import MAX_AGENT_LENGTH
from .stores.users import MAX_IP_LENGTH
from .stores.users import SessionStoreUsers
from .stores.users import check_user_id
from .stores.users import supports_users

if t.TYPE_CHECKING:
    from flask import Request

    from .stores.base import SessionStore
    from .stores.users import UserSession

__all__ = ["SessionHandles", "SessionInfo", "UserSessions"]

logger = logging.getLogger("flask_relay_session")

#: How many times :meth:`UserSessions.revoke_all` reads the registry again
#: after ending sessions, for those that rotations racing it registered.
MAX_REVOKE_PASSES = 20


class AskingSession(t.Protocol):
    """What :class:`UserSessions` uses of the session of the request
    that asks: a :class:`~flask_relay_session.Session`, named by its
    interface so that this module does not import the session's.
    """

    #: Nothing is stored under :attr:`sid` yet.
    new: bool
    #: The session id.
    sid: str

    @property
    def user_id(self) -> str | None:
        """The user the session is bound to, loading it first."""

    def save(self) -> None:
        """Send the pending changes to the store now."""

    def _revoked(self) -> None:
        """The session was revoked by this request: go on as a new one."""


_HANDLE_CONTEXT = b"flask-relay-session.handle"
#: A handle is 16 bytes of HMAC-SHA256, base64url without padding.
_HANDLE_LENGTH = 22


def users_store(store: SessionStore) -> SessionStoreUsers:
    """Return ``store`` as a :class:`SessionStoreUsers`.

    :raises SessionConfigError: it does not implement the protocol.
    """
    if not supports_users(store):
        raise SessionConfigError(
            "the sessions of users need a store that implements"
            " flask_relay_session.stores.users.SessionStoreUsers;"
            f" {type(store).__qualname__} does not"
        )
    return t.cast(SessionStoreUsers, store)


def client_of(request: Request) -> tuple[str | None, str | None]:
    """Return the request's user agent and address, cut to the lengths
    kept, for ``RELAY_SESSION_TRACK_CLIENT``.
    """
    agent = request.headers.get("User-Agent")
    ip = request.remote_addr
    return (
        None if agent is None else agent[:MAX_AGENT_LENGTH],
        None if ip is None else ip[:MAX_IP_LENGTH],
    )


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


class SessionHandles:
    """Names sessions by handles, and tells which id a handle names.

    :param secret_keys: the app's secret keys, oldest first, as for
        :class:`~flask_relay_session.cookies.CookieSigner`. Handles are made
        with the newest; those made with the older ones are still accepted.
    """

    def __init__(self, secret_keys: t.Sequence[str | bytes]) -> None:
        self._keys = [
            hmac.digest(
                key.encode() if isinstance(key, str) else key,
                _HANDLE_CONTEXT,
                "sha256",
            )
            for key in reversed(secret_keys)
        ]

    @staticmethod
    def _handle(key: bytes, sid: str) -> str:
        digest = hmac.digest(key, sid.encode(), hashlib.sha256)[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def name(self, sid: str) -> str:
        """Return the handle of the session ``sid``."""
        return self._handle(self._keys[0], sid)

    def names(self, handle: object, sid: str) -> bool:
        """Whether ``handle`` names the session ``sid``, under any accepted
        key; compared in constant time.
        """
        if not isinstance(handle, str) or len(handle) != _HANDLE_LENGTH:
            return False
        return any(
            hmac.compare_digest(self._handle(key, sid), handle) for key in self._keys
        )


@dataclass(frozen=True)
class SessionInfo:
    """A live session of a user, as
    :meth:`~flask_relay_session.RelaySession.sessions_of` lists it.

    It never holds the session id: :attr:`handle` names the session instead.

    .. versionadded:: 0.1.0
    """

    #: An opaque, non-secret name of the session, safe to put in a page or
    #: a URL: pass it to :meth:`~flask_relay_session.RelaySession.revoke`.
    #: It stays the same while the session keeps its id; a rotation gives
    #: the session a new one.
    handle: str
    #: When the session was created, as an aware UTC datetime.
    created_at: datetime
    #: When its user was last seen with it, as an aware UTC datetime; it is
    #: recorded at most once per ``RELAY_SESSION_LAST_SEEN_INTERVAL``.
    last_seen: datetime
    #: When it expires unless it is used again, as an aware UTC datetime.
    expires_at: datetime
    #: It is the session of the request asking.
    current: bool = False
    #: The user agent it was last seen with, with
    #: ``RELAY_SESSION_TRACK_CLIENT``; ``None`` without.
    user_agent: str | None = None
    #: The client address it was last seen from, likewise.
    ip: str | None = None

    def as_dict(self) -> dict[str, t.Any]:
        """Return it as a dict for JSON: the datetimes in ISO 8601."""
        return {
            "handle": self.handle,
            "created_at": self.created_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "current": self.current,
            "user_agent": self.user_agent,
            "ip": self.ip,
        }


class UserSessions:
    """The sessions of users, in one app's store: what the user API of
    :class:`~flask_relay_session.RelaySession` does.

    :param store: the app's store.
    :param handles: names sessions for the app.
    :param current: the session of the request asking, if any.
    :param now: the current time in milliseconds.
    """

    def __init__(
        self,
        store: SessionStore,
        handles: SessionHandles,
        current: AskingSession | None,
        now: int,
    ) -> None:
        self.store = users_store(store)
        self.handles = handles
        self.current = current
        self.now = now

    def _current_sid(self) -> str | None:
        """The id of the asking session, loaded to follow any redirect."""
        current = self.current
        if current is None or current.new:
            return None
        current.user_id  # noqa: B018 - loads it
        return None if current.new else current.sid

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
        user_id = check_user_id(user_id)
        current = self.current
        if current is not None and current.new and current.user_id == user_id:
            # Bound in this request and not stored yet: store it, to list it.
            current.save()
        current_sid = self._current_sid()
        found = self.store.sessions_of(user_id, now=self.now)
        found.sort(key=lambda s: (s.last_seen, s.created_at), reverse=True)
        return [self._info(session, current_sid) for session in found]

    def _info(self, session: UserSession, current_sid: str | None) -> SessionInfo:
        return SessionInfo(
            handle=self.handles.name(session.sid),
            created_at=_datetime(session.created_at),
            last_seen=_datetime(session.last_seen),
            expires_at=_datetime(session.expires_at),
            current=session.sid == current_sid,
            user_agent=session.agent,
            ip=session.ip,
        )

    def revoke(self, user_id: str, handle: str) -> bool:
        """End the session of ``user_id`` named ``handle``."""
        user_id = check_user_id(user_id)
        sids = [
            sid
            for sid in self.store.registered(user_id, now=self.now)
            if self.handles.names(handle, sid)
        ]
        if not sids:
            return False
        return bool(self._end(user_id, sids[:1], keep=None))

    def revoke_all(self, user_id: str, *, except_current: bool = False) -> int:
        """End every session of ``user_id``; return how many.

        The registry is read again after each round of ending sessions,
        until a round ends none: a rotation racing a round registers the
        new id before the old one redirects to it, so a round that ends the
        old id either undoes the rotation or finds the new id next time.
        """
        user_id = check_user_id(user_id)
        keep = self._current_sid() if except_current else None
        ended = 0
        for rounds in range(1, MAX_REVOKE_PASSES + 1):
            sids = [
                sid
                for sid in self.store.registered(user_id, now=self.now)
                if sid != keep
            ]
            done = self._end(user_id, sids, keep=keep) if sids else []
            ended += len(done)
            if not done:
                logger.debug(
                    "revoke_all: ended %d sessions in %d rounds", ended, rounds
                )
                return ended
        logger.warning(
            "revoke_all: still ending sessions after %d rounds (%d so far):"
            " rotations keep racing it; call it again",
            MAX_REVOKE_PASSES,
            ended,
        )
        return ended

    def _end(self, user_id: str, sids: list[str], *, keep: str | None) -> list[str]:
        """End the sessions ``sids`` of ``user_id``; send ``session_revoked``
        for each ended, and start the request's own afresh if it was one.
        """
        ended = self.store.end_sessions(user_id, sids, keep=keep)
        current = self.current
        if current is not None and not current.new and current.sid in ended:
            current._revoked()
        if signals.wanted(signals.session_revoked):
            for sid in ended:
                signals.send(
                    signals.session_revoked,
                    session=current,
                    sid=sid,
                    user_id=user_id,
                    handle=self.handles.name(sid),
                )
        return ended
