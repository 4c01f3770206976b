"""Sessions in the memory of one process, for development and tests.

It behaves like the Redis store, expiry, redirects, locks and merge rules
included, so that an app developed against it behaves the same in
production. It is not shared between processes: use Redis as soon as more
than one process serves the app.
"""

from __future__ import annotations

import itertools
import threading
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from ..serialization import loads_fields
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import EntryKind
from .base import MergeResult
from .base import MergeStatus
from .base import SessionRecord
from .base import StoredSession
from .base import as_shown
from .paths import apply_changes_to_fields
from .paths import checked_size
from .users import Registration
from .users import UserSession


class _Sweep:
    """Visits the keys of a dict a few at a time, in rounds: each round
    walks a copy of the keys taken as it starts, so that a visit costs the
    same however many keys were deleted or added since. (Walking the dict
    itself from its start would step over every key deleted there since it
    was last resized.)
    """

    def __init__(self, items: dict[str, t.Any]) -> None:
        self._items = items
        self._round: t.Iterator[str] = iter(())

    def next(self, count: int) -> list[str]:
        """The next ``count`` keys of the round, starting the next round
        when this one ends; fewer only when the dict holds fewer. A key
        deleted since its round began may be among them.
        """
        keys = list(itertools.islice(self._round, count))
        if len(keys) < count:
            self._round = iter(list(self._items))
            keys += itertools.islice(self._round, count - len(keys))
        return keys


@dataclass
class _Entry:
    """A stored session: each top-level key's JSON, or a redirect; and the
    user it is bound to, when it was last seen and with which client.
    """

    created_at: int
    expires_at: int
    fields: dict[str, bytes] = field(default_factory=dict)
    redirect_to: str | None = None
    user: str | None = None
    seen: int = 0
    agent: str | None = None
    ip: str | None = None

    def moved(self, expires_at: int) -> _Entry:
        """A copy of the session, its data and its user, expiring then."""
        return _Entry(
            self.created_at,
            expires_at,
            dict(self.fields),
            user=self.user,
            seen=self.seen,
            agent=self.agent,
            ip=self.ip,
        )

    def record(self, registration: Registration) -> bool:
        """Record ``registration`` (see :class:`SessionStoreUsers
        <flask_relay_session.stores.users.SessionStoreUsers>`); return
        whether it applied.
        """
        if not registration.bind and self.user != registration.user_id:
            return False
        self.user = registration.user_id
        self.seen = registration.seen
        self.agent = registration.agent
        self.ip = registration.ip
        return True


class MemorySessionStore:
    """A :class:`~flask_relay_session.SessionStore` in this process's memory.

    Thread-safe: every operation holds one lock. Expired sessions and locks
    are dropped when they are next looked at, and every write that may add
    one looks at a few more, so that they do not pile up (see
    :attr:`eviction_batch`). It also implements
    :class:`~flask_relay_session.stores.SessionStoreAdmin`, for the
    ``flask relay-session`` commands.

    :param clock: returns the current time in seconds; tests replace it to
        move time forward.
    """

    #: How many stored sessions, and how many locks, each write that may add
    #: one checks for expiry. They are checked in rounds over all of them,
    #: each round over those held when it starts, and an expired one is
    #: dropped. So a write never checks more than this many of each, and an
    #: expired session or lock is dropped within ``2 n / eviction_batch``
    #: writes, ``n`` the number held; a write adds at most one of each, so
    #: expired ones cannot pile up.
    eviction_batch = 4

    def __init__(self, clock: t.Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sessions: dict[str, _Entry] = {}
        self._locks: dict[str, tuple[str, int]] = {}
        #: The registry of each user: the ids of their sessions, each with
        #: the time its entry lasts until.
        self._users: dict[str, dict[str, int]] = {}
        self._mutex = threading.RLock()
        self._sweeps = (
            _Sweep(self._sessions),
            _Sweep(self._locks),
            _Sweep(self._users),
        )

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _entry(self, sid: str) -> _Entry | None:
        entry = self._sessions.get(sid)
        if entry is not None and entry.expires_at <= self._now():
            del self._sessions[sid]
            return None
        return entry

    def _holder(self, sid: str) -> str | None:
        lock = self._locks.get(sid)
        if lock is not None and lock[1] <= self._now():
            del self._locks[sid]
            return None
        return lock[0] if lock else None

    def _evict_expired(self) -> None:
        """Check the next :attr:`eviction_batch` sessions, locks and user
        registries of their rounds, and drop what expired.
        """
        sessions, locks, users = self._sweeps
        for sid in sessions.next(self.eviction_batch):
            self._entry(sid)
        for sid in locks.next(self.eviction_batch):
            self._holder(sid)
        for user in users.next(self.eviction_batch):
            self._registry(user)

    def _registry(self, user: str) -> dict[str, int]:
        """The registry of ``user`` without the entries past their end;
        an empty one is dropped.
        """
        now = self._now()
        entries = self._users.get(user, {})
        for sid in [sid for sid, until in entries.items() if until < now]:
            del entries[sid]
        if not entries:
            self._users.pop(user, None)
        return entries

    def _register(self, user: str, sid: str, until: int) -> None:
        entries = self._registry(user)
        entries[sid] = max(until, entries.get(sid, until))
        self._users[user] = entries

    def _unregister(self, user: str | None, sid: str) -> None:
        if user is not None and sid in self._users.get(user, {}):
            del self._users[user][sid]
            self._registry(user)

    def _lock_refusal(self, sid: str, token: str | None) -> MergeResult | None:
        holder = self._holder(sid)
        if token is not None:
            if holder != token:
                return MergeResult(MergeStatus.LOCK_LOST)
        elif holder is not None:
            return MergeResult(MergeStatus.LOCKED)
        return None

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Return the session ``sid``, following and shortening redirects."""
        visited: list[_Entry] = []
        with self._mutex:
            for _ in range(MAX_REDIRECT_DEPTH + 1):
                entry = self._entry(sid)
                if entry is None:
                    if not visited:
                        return None
                    raise SessionChainBrokenError(
                        "a rotated session id leads to a session that no longer exists"
                    )
                if entry.redirect_to is None:
                    for rotated in visited:
                        rotated.redirect_to = sid
                    if ttl is not None:
                        entry.expires_at = self._now() + ttl
                    return StoredSession(
                        sid=sid,
                        data=loads_fields(entry.fields),
                        created_at=entry.created_at,
                        expires_at=entry.expires_at,
                        redirected=bool(visited),
                        user_id=entry.user,
                        last_seen=entry.seen if entry.user is not None else None,
                    )
                visited.append(entry)
                sid = entry.redirect_to
        raise SessionDepthError(
            f"a rotated session id was rotated more than {MAX_REDIRECT_DEPTH}"
            " times in a row"
        )

    def touch(self, sid: str, *, ttl: int) -> bool:
        """Extend the lifetime of ``sid``; a redirect's is left as it is."""
        return self.touch_owner(sid, ttl=ttl) is not None

    def touch_owner(self, sid: str, *, ttl: int) -> tuple[str | None, int] | None:
        """Touch as :meth:`touch` does, and return the user the session is
        bound to and when it was last seen; ``None`` when it does not exist.
        """
        with self._mutex:
            entry = self._entry(sid)
            if entry is None or entry.redirect_to is not None:
                return None
            entry.expires_at = self._now() + ttl
            return entry.user, entry.seen

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
        """Apply ``changes`` atomically, with the same rules as Redis, and
        record ``registration`` with them.
        """
        with self._mutex:
            self._evict_expired()
            refusal = self._lock_refusal(sid, lock_token)
            if refusal is not None:
                return refusal
            entry = self._entry(sid)
            if entry is None:
                if not create:
                    return MergeResult(MergeStatus.MISSING)
                entry = _Entry(created_at=now, expires_at=now)
            elif entry.redirect_to is not None:
                return MergeResult(
                    MergeStatus.REDIRECTED, redirect_to=entry.redirect_to
                )
            updated = entry.moved(entry.expires_at)
            apply_changes_to_fields(updated.fields, changes)
            # The lock check above found ``lock_token`` holding the lock.
            release = release_lock and lock_token is not None
            if not updated.fields:
                self._sessions.pop(sid, None)
                self._unregister(entry.user, sid)
                if release:
                    del self._locks[sid]
                return MergeResult(
                    MergeStatus.DONE,
                    created_at=entry.created_at,
                    expires_at=now,
                    emptied=True,
                )
            if ttl is not None:
                updated.expires_at = now + ttl
            checked_size(updated.fields, max_size)
            self._sessions[sid] = updated
            if registration is not None and updated.record(registration):
                self._register(registration.user_id, sid, registration.until)
            if release:
                del self._locks[sid]
            return MergeResult(
                MergeStatus.DONE,
                created_at=updated.created_at,
                expires_at=updated.expires_at,
                user_id=updated.user,
                last_seen=None if updated.user is None else updated.seen,
            )

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
        """Move the session to ``new_sid``, leaving a redirect for ``grace``;
        a bound session is registered under ``new_sid`` until ``until``.
        """
        with self._mutex:
            self._evict_expired()
            refusal = self._lock_refusal(sid, lock_token)
            if refusal is not None:
                return refusal
            entry = self._entry(sid)
            if entry is None:
                return MergeResult(MergeStatus.MISSING)
            if entry.redirect_to is not None:
                return MergeResult(
                    MergeStatus.REDIRECTED, redirect_to=entry.redirect_to
                )
            moved = entry.moved(now + ttl)
            apply_changes_to_fields(moved.fields, changes)
            checked_size(moved.fields, max_size)
            self._sessions[new_sid] = moved
            if moved.user is not None:
                moved.seen = now
                self._register(moved.user, new_sid, until or now + 3 * ttl)
                if not grace:
                    self._unregister(moved.user, sid)
            if grace > 0:
                self._sessions[sid] = _Entry(
                    entry.created_at, now + grace, redirect_to=new_sid
                )
            else:
                del self._sessions[sid]
            return MergeResult(
                MergeStatus.DONE, created_at=moved.created_at, expires_at=now + ttl
            )

    def delete(self, sid: str) -> None:
        """Delete the session ``sid``, following rotation redirects as
        :meth:`load` does, and every redirect on the way.
        """
        with self._mutex:
            chain = [sid]
            for _ in range(MAX_REDIRECT_DEPTH + 1):
                entry = self._entry(chain[-1])
                if entry is None or entry.redirect_to is None:
                    break
                chain.append(entry.redirect_to)
            else:
                # Too long a chain leads nowhere, as for load: only the id's
                # own redirect goes, and the ids further on keep theirs.
                del chain[1:]
            for hop in chain:
                ended = self._sessions.pop(hop, None)
                if ended is not None:
                    self._unregister(ended.user, hop)

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        """Take the lock of ``sid`` for ``token`` unless somebody holds it."""
        with self._mutex:
            self._evict_expired()
            if self._holder(sid) is not None:
                return False
            self._locks[sid] = (token, self._now() + ttl)
            return True

    def lock_and_load(
        self, sid: str, token: str, lock_ttl: int, *, ttl: int | None
    ) -> tuple[bool, StoredSession | None]:
        """Take the lock of ``sid``, then load it, in one step."""
        with self._mutex:
            if not self.lock(sid, token, lock_ttl):
                return False, None
            return True, self.load(sid, ttl=ttl)

    def unlock(self, sid: str, token: str) -> bool:
        """Release the lock of ``sid`` if ``token`` holds it."""
        with self._mutex:
            if self._holder(sid) != token:
                return False
            del self._locks[sid]
            return True

    def is_locked(self, sid: str) -> bool:
        """Return whether anybody holds the lock of ``sid``."""
        with self._mutex:
            return self._holder(sid) is not None

    # The sessions of a user: SessionStoreUsers.

    def _find(self, sid: str) -> tuple[list[str], _Entry | None]:
        """Follow ``sid``'s redirects as :meth:`delete` does: the ids on
        the way, ``sid`` first, and the session they lead to, if any.
        """
        chain = [sid]
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            entry = self._entry(chain[-1])
            if entry is None or entry.redirect_to is None:
                return chain, entry
            chain.append(entry.redirect_to)
        return chain[:1], None

    def register(self, sid: str, registration: Registration) -> MergeResult:
        """Record ``registration`` on the session ``sid``, moving it from the
        registry of its previous user.
        """
        with self._mutex:
            self._evict_expired()
            entry = self._entry(sid)
            if entry is None:
                return MergeResult(MergeStatus.MISSING)
            if entry.redirect_to is not None:
                return MergeResult(
                    MergeStatus.REDIRECTED, redirect_to=entry.redirect_to
                )
            previous = entry.user
            if entry.record(registration):
                self._register(registration.user_id, sid, registration.until)
                if previous != registration.user_id:
                    self._unregister(previous, sid)
            return MergeResult(
                MergeStatus.DONE,
                created_at=entry.created_at,
                expires_at=entry.expires_at,
                previous_user=previous,
            )

    def unregister(self, sid: str) -> MergeResult:
        """Unbind the session ``sid`` from its user."""
        with self._mutex:
            entry = self._entry(sid)
            if entry is None:
                return MergeResult(MergeStatus.MISSING)
            if entry.redirect_to is not None:
                return MergeResult(
                    MergeStatus.REDIRECTED, redirect_to=entry.redirect_to
                )
            previous = entry.user
            entry.user, entry.seen, entry.agent, entry.ip = None, 0, None, None
            self._unregister(previous, sid)
            return MergeResult(
                MergeStatus.DONE,
                created_at=entry.created_at,
                expires_at=entry.expires_at,
                previous_user=previous,
            )

    def sessions_of(self, user_id: str, *, now: int) -> list[UserSession]:
        """Return the live sessions bound to ``user_id``."""
        found = []
        with self._mutex:
            entries = self._registry(user_id)
            for sid in list(entries):
                entry = self._entry(sid)
                if entry is None:
                    self._unregister(user_id, sid)
                elif entry.user == user_id and entry.redirect_to is None:
                    found.append(
                        UserSession(
                            sid,
                            created_at=entry.created_at,
                            last_seen=entry.seen,
                            expires_at=entry.expires_at,
                            agent=entry.agent,
                            ip=entry.ip,
                        )
                    )
        return found

    def registered(self, user_id: str, *, now: int) -> list[str]:
        """Return the ids in the registry of ``user_id``."""
        with self._mutex:
            return list(self._registry(user_id))

    def end_sessions(
        self, user_id: str, sids: t.Sequence[str], *, keep: str | None = None
    ) -> list[str]:
        """Delete the sessions of ``sids`` bound to ``user_id``, following
        redirects, but ``keep``.
        """
        ended = []
        with self._mutex:
            for sid in sids:
                chain, entry = self._find(sid)
                if keep in chain:
                    continue
                if entry is None:
                    for hop in chain:
                        self._sessions.pop(hop, None)
                        self._unregister(user_id, hop)
                elif entry.user == user_id:
                    for hop in chain:
                        self._sessions.pop(hop, None)
                        self._unregister(user_id, hop)
                    ended.append(sid)
        return ended

    # The operator's view: SessionStoreAdmin.

    def ping(self) -> list[str]:
        """Say what the store is; there is nothing to check or load."""
        return [
            "store: the in-process memory store (MemorySessionStore). Sessions"
            " live in the memory of the process serving the app; a command run"
            " in another process sees only its own, empty store.",
            "scripts: none needed",
        ]

    def scan(self, *, batch: int = 1000) -> t.Iterator[tuple[EntryKind, str]]:
        """Yield the live sessions and locks, as held when it starts;
        ``batch`` is not used.
        """
        with self._mutex:
            sessions = [
                sid for sid in list(self._sessions) if self._entry(sid) is not None
            ]
            locks = [sid for sid in list(self._locks) if self._holder(sid) is not None]
        for sid in sessions:
            yield "session", sid
        for sid in locks:
            yield "lock", sid

    def size_hint(self) -> int:
        """Return the number of sessions and locks held, expired or not."""
        return len(self._sessions) + len(self._locks)

    def show(self, sid: str) -> SessionRecord | None:
        """Return the entry of ``sid`` as the JSON layout would store it."""
        with self._mutex:
            entry = self._entry(sid)
            if entry is None:
                return None
            now = self._now()
            lock = self._locks[sid] if self._holder(sid) is not None else None
            if entry.redirect_to is not None:
                document: dict[str, t.Any] = {
                    "data": None,
                    "meta": {"redirectTo": entry.redirect_to},
                }
            else:
                document = {
                    "data": {
                        key: as_shown(value)
                        for key, value in sorted(entry.fields.items())
                    },
                    "meta": {
                        "id": sid,
                        "createdAt": entry.created_at,
                        "expiresAt": entry.expires_at,
                    },
                }
                if entry.user is not None:
                    document["meta"].update(user=entry.user, seen=entry.seen)
            return SessionRecord(
                document=document,
                ttl=entry.expires_at - now,
                redirect_to=entry.redirect_to,
                lock_ttl=None if lock is None else lock[1] - now,
            )

    def break_lock(self, sid: str) -> bool:
        """Release the lock of ``sid``, whoever holds it."""
        with self._mutex:
            if self._holder(sid) is None:
                return False
            del self._locks[sid]
            return True
