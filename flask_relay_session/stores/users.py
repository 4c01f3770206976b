"""The optional store protocol for the sessions of a user, and its values.

A store that implements :class:`SessionStoreUsers` keeps, beside the
sessions, a *registry* per user: the ids of the sessions bound to that user
(:meth:`flask_relay_session.Session.bind_user`). A bound session records its
user, and when its user was last seen, in its own meta data, so that a
rotation, a logout or a revocation knows whose registry to keep up to date.

The registry is exact in one direction, which is the one that matters for a
"log out everywhere": every live session bound to a user is in that user's
registry, whatever step fails. The registry may also hold entries of
sessions that are gone, or that were bound to another user since; those are
never shown and are dropped when they are next looked at. Three rules keep
it so, in every store (the Redis store runs the registry and the session in
different cluster slots, so it keeps them by the order of its steps):

1. A session is registered before anybody can reach it bound to the user.
   Binding a stored session writes the registry entry, then the session's
   meta data. A write that creates a session, or a rotation's copy, writes
   the session first, then the entry, then hands the id out (the response's
   cookie, or the redirect of the old id): nobody holds the id in between.
2. An entry is removed only once its session is gone for good (deleted,
   expired, rotated away), or bound to another user or to nobody. An id
   that was gone never comes back, but for a rotation's retried copy, which
   registers it again.
3. Each entry carries a time (:attr:`Registration.until`) that its session
   cannot outlive without registering again: the registry drops entries
   past it without looking at their sessions, and the registry itself
   expires after the last of them. A bound session registers again at
   least once per ``RELAY_SESSION_LAST_SEEN_INTERVAL`` while it is used,
   and the time left is twice the session lifetime plus that interval, so
   that one failed registration is covered too.

All times are integer milliseconds since the epoch.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from .base import Change
from .base import MergeResult
from .base import SessionStore
from .base import missing_methods

#: The longest user id, in bytes of UTF-8.
MAX_USER_ID_LENGTH = 256

#: The longest user agent and IP address kept with
#: ``RELAY_SESSION_TRACK_CLIENT``, in characters; longer ones are cut.
MAX_AGENT_LENGTH = 200
MAX_IP_LENGTH = 64


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` if it can name a user, else raise.

    Any string can: it is escaped wherever it names a key. It must not be
    empty, must be valid Unicode (no lone surrogates) and must be at most
    :data:`MAX_USER_ID_LENGTH` bytes long in UTF-8.

    :raises TypeError: it is not a string.
    :raises ValueError: it is empty, too long or not valid Unicode.
    """
    if not isinstance(user_id, str):
        raise TypeError(
            f"a user id must be a string, not {type(user_id).__name__};"
            " pass str(user.id)"
        )
    if not user_id:
        raise ValueError("a user id must not be empty")
    try:
        size = len(user_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("a user id must be valid Unicode") from None
    if size > MAX_USER_ID_LENGTH:
        raise ValueError(
            f"a user id must be at most {MAX_USER_ID_LENGTH} bytes in UTF-8;"
            f" this one is {size}"
        )
    return user_id


def escape_user_id(user_id: str) -> str:
    """Return ``user_id`` as it appears in a key: ``%``, the braces of a
    Redis Cluster hash tag and control characters as ``%XX`` (their UTF-8
    bytes in hex), everything else as it is. No two user ids escape alike.
    """
    return "".join(
        "".join(f"%{byte:02X}" for byte in char.encode())
        if char in "%{}" or ord(char) < 0x20 or ord(char) == 0x7F
        else char
        for char in user_id
    )


@dataclass(frozen=True, slots=True)
class Registration:
    """What a write records of the user a session belongs to.

    :param user_id: the user.
    :param bind: bind the session to ``user_id``, moving it from the user it
        was bound to; when false, only refresh :attr:`seen` and the client,
        and only if the session is still bound to ``user_id``.
    :param seen: when the user was last seen with the session.
    :param until: how long the registry entry lasts: the session cannot
        outlive it without registering again (rule 3 of the module).
    :param agent: the user agent to record, with
        ``RELAY_SESSION_TRACK_CLIENT``.
    :param ip: the client's address to record, likewise.
    """

    user_id: str
    bind: bool
    seen: int
    until: int
    agent: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class UserSession:
    """A live session of a user, as :meth:`SessionStoreUsers.sessions_of`
    finds it.

    :param sid: its id.
    :param created_at: when it was created.
    :param last_seen: when its user was last seen with it.
    :param expires_at: when it expires.
    :param agent: the user agent recorded, if any.
    :param ip: the client's address recorded, if any.
    """

    sid: str
    created_at: int
    last_seen: int
    expires_at: int
    agent: str | None = None
    ip: str | None = None


class SessionStoreUsers(SessionStore, t.Protocol):
    """A store that keeps the sessions of each user (see the module).

    Optional: :meth:`flask_relay_session.RelaySession.sessions_of` and
    the rest of the user API need it; the Redis and memory stores implement
    it. Each method is one atomic step for the session, as with
    :class:`~flask_relay_session.SessionStore`; the registry may be
    written in a step of its own, in the order the module's rules give.
    """

    def merge(
        self,
        sid: str,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int | None,
        create: bool,
        lock_token: str | None,
        max_size: int,
        release_lock: bool = False,
        registration: Registration | None = None,
    ) -> MergeResult:
        """Merge as :meth:`SessionStore.merge
        <flask_relay_session.SessionStore.merge>` does, and record
        ``registration`` with the write when it is done.

        The registry entry is written before the session when the session
        exists, after it when this write creates it (rule 1).
        """

    def rotate(
        self,
        sid: str,
        new_sid: str,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        grace: int,
        lock_token: str | None,
        max_size: int,
        until: int | None = None,
    ) -> MergeResult:
        """Rotate as :meth:`SessionStore.rotate
        <flask_relay_session.SessionStore.rotate>` does; a bound session
        stays bound under ``new_sid``, seen ``now``.

        ``new_sid`` is registered with ``until`` after its copy is written
        and before ``sid`` redirects to it (rule 1); the entry of ``sid``
        is removed once it redirects.
        """

    def touch_owner(self, sid: str, *, ttl: int) -> tuple[str | None, int] | None:
        """Touch as :meth:`SessionStore.touch
        <flask_relay_session.SessionStore.touch>` does, and return the user
        the session is bound to (``None`` for nobody) and when that user was
        last seen with it; ``None`` when the session does not exist. A
        request that only refreshes the session records a visit with it when
        one is due, so that an entry does not end before its session.
        """

    def register(self, sid: str, registration: Registration) -> MergeResult:
        """Record ``registration`` on the session ``sid``, and nothing else.

        It does not wait for the lock: it changes no data. The outcomes are
        those of a merge but for the lock's: :attr:`MergeStatus.DONE
        <flask_relay_session.stores.MergeStatus.DONE>`, with the user the
        session was bound to before as ``previous_user``;
        :attr:`~flask_relay_session.stores.MergeStatus.MISSING`, or
        :attr:`~flask_relay_session.stores.MergeStatus.REDIRECTED` for an id
        rotated away. The registry entry is written first, then the
        session; the entry of a previous, other user is removed last.
        """

    def unregister(self, sid: str) -> MergeResult:
        """Unbind the session ``sid`` from its user, then remove its entry.

        The outcomes are those of :meth:`register`.
        """

    def sessions_of(self, user_id: str, *, now: int) -> list[UserSession]:
        """Return the live sessions bound to ``user_id``, in no particular
        order, and drop the entries of those that are gone.
        """

    def registered(self, user_id: str, *, now: int) -> list[str]:
        """Return the ids in the registry of ``user_id``, having dropped
        those past their :attr:`Registration.until`. They may include
        sessions that are gone or bound to another user since.
        """

    def end_sessions(
        self, user_id: str, sids: t.Sequence[str], *, keep: str | None = None
    ) -> list[str]:
        """End each session of ``sids`` that is bound to ``user_id``, and
        return the ids of those ended.

        An id rotated away is followed to the session it leads to, as
        :meth:`SessionStore.delete <flask_relay_session.SessionStore.delete>`
        follows it, and that session and the redirects on the way are
        deleted, so that no cookie of the session reaches it any more. A
        session bound to another user or to nobody is left alone, and so is
        ``keep`` and every id that leads to it. The entries of the sessions
        ended, and of those found gone, are removed from the registry.
        """


def supports_users(store: object) -> bool:
    """Whether ``store`` implements :class:`SessionStoreUsers`."""
    return not missing_methods(store, SessionStoreUsers)
