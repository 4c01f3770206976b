"""Sessions in the memory of one process, for development and tests.

It behaves like the Redis store, expiry, redirects, locks and merge rules
included, so that an app developed against it behaves the same in
production. It is not shared between processes: use Redis as soon as more
than one process serves the app.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from ..errors import SessionSerializationError
from ..serialization import loads_fields
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import MergeResult
from .base import MergeStatus
from .base import StoredSession

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class _Entry:
    """A stored session: each top-level key's JSON, or a redirect."""

    created_at: int
    expires_at: int
    fields: dict[str, bytes] = field(default_factory=dict)
    redirect_to: str | None = None

    def size(self) -> int:
        """The size of the document as JSON, as Redis would store it."""
        return 2 + sum(
            len(_dumps(key).encode()) + 2 + len(value)
            for key, value in self.fields.items()
        )


def _is_dict(value: t.Any) -> bool:
    if not isinstance(value, dict):
        return False
    if len(value) != 1:
        return True
    key = next(iter(value))
    return not (len(key) == 2 and key[0] == " ")


def _apply(fields: dict[str, bytes], change: Change) -> None:
    top, *rest = change.path
    if not rest:
        if change.value is None:
            fields.pop(top, None)
        else:
            fields[top] = change.value
        return
    if change.value is None and top not in fields:
        return
    tree = json.loads(fields[top]) if top in fields else {}
    if not _is_dict(tree):
        if change.value is None:
            return
        tree = {}
    node = tree
    for key in rest[:-1]:
        child = node.get(key)
        if not _is_dict(child):
            if change.value is None:
                return
            child = node[key] = {}
        node = child
    if change.value is None:
        node.pop(rest[-1], None)
    else:
        node[rest[-1]] = json.loads(change.value)
    fields[top] = _dumps(tree).encode()


class MemorySessionStore:
    """A :class:`~flask_relay_session.SessionStore` in this process's memory.

    Thread-safe: every operation holds one lock. Expired sessions and locks
    are dropped when they are next looked at.

    :param clock: returns the current time in seconds; tests replace it to
        move time forward.
    """

    def __init__(self, clock: t.Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sessions: dict[str, _Entry] = {}
        self._locks: dict[str, tuple[str, int]] = {}
        self._mutex = threading.Lock()

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

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Return the session ``sid``, following rotation redirects."""
        requested = sid
        with self._mutex:
            for _ in range(MAX_REDIRECT_DEPTH + 1):
                entry = self._entry(sid)
                if entry is None:
                    if sid == requested:
                        return None
                    raise SessionChainBrokenError(
                        f"session {requested[:8]}… was rotated to a session that"
                        " no longer exists"
                    )
                if entry.redirect_to is None:
                    if ttl is not None:
                        entry.expires_at = self._now() + ttl
                    return StoredSession(
                        sid=sid,
                        data=loads_fields(entry.fields),
                        created_at=entry.created_at,
                        expires_at=entry.expires_at,
                        redirected=sid != requested,
                    )
                sid = entry.redirect_to
        raise SessionDepthError(
            f"session {requested[:8]}… was rotated more than"
            f" {MAX_REDIRECT_DEPTH} times in a row"
        )

    def touch(self, sid: str, *, ttl: int) -> bool:
        """Extend the lifetime of ``sid``."""
        with self._mutex:
            entry = self._entry(sid)
            if entry is None:
                return False
            entry.expires_at = self._now() + ttl
            return True

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
    ) -> MergeResult:
        """Apply ``changes`` atomically, with the same rules as Redis."""
        with self._mutex:
            holder = self._holder(sid)
            if lock_token is not None:
                if holder != lock_token:
                    return MergeResult(MergeStatus.LOCK_LOST)
            elif holder is not None:
                return MergeResult(MergeStatus.LOCKED)
            entry = self._entry(sid)
            if entry is None:
                if not create:
                    return MergeResult(MergeStatus.MISSING)
                entry = _Entry(created_at=now, expires_at=now)
            elif entry.redirect_to is not None:
                return MergeResult(
                    MergeStatus.REDIRECTED, redirect_to=entry.redirect_to
                )
            updated = _Entry(entry.created_at, entry.expires_at, dict(entry.fields))
            for change in changes:
                _apply(updated.fields, change)
            if not updated.fields:
                self._sessions.pop(sid, None)
                return MergeResult(
                    MergeStatus.DONE,
                    created_at=entry.created_at,
                    expires_at=now,
                    emptied=True,
                )
            if ttl is not None:
                updated.expires_at = now + ttl
            size = updated.size()
            if size > max_size:
                raise SessionSerializationError(
                    f"the session would grow to {size} bytes, more than"
                    f" RELAY_SESSION_MAX_SIZE ({max_size} bytes); nothing was saved"
                )
            self._sessions[sid] = updated
            return MergeResult(
                MergeStatus.DONE,
                created_at=updated.created_at,
                expires_at=updated.expires_at,
            )

    def delete(self, sid: str) -> None:
        """Delete the session ``sid``."""
        with self._mutex:
            self._sessions.pop(sid, None)

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        """Take the lock of ``sid`` for ``token`` unless somebody holds it."""
        with self._mutex:
            if self._holder(sid) is not None:
                return False
            self._locks[sid] = (token, self._now() + ttl)
            return True

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
