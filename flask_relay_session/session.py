"""The session object behind ``flask.session``.

A :class:`Session` is a mutable mapping that loads itself from the store the
first time a request reads it, and records the paths a request changes. At
the end of the request, or on :meth:`Session.save`, only those paths are sent
to the store, which merges them into the stored session atomically, so
requests that change different parts of one session never undo each other.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import typing as t
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from flask.sessions import SessionMixin

from .config import Settings
from .cookies import new_session_id
from .errors import SessionLockError
from .errors import SessionSerializationError
from .serialization import dumps
from .serialization import encode_key
from .serialization import loads
from .stores.base import Change
from .stores.base import MergeResult
from .stores.base import MergeStatus
from .stores.base import SessionStore
from .stores.base import StoredSession
from .tracking import DirtyPaths
from .tracking import Path
from .tracking import TrackedDict

_MISSING = object()


@dataclass(frozen=True)
class SessionPolicy:
    """What a session needs to know about its app, fixed for one request.

    :param store: where sessions are kept.
    :param settings: the extension's settings.
    :param lifetime: ``PERMANENT_SESSION_LIFETIME`` in milliseconds.
    :param refresh_each_request: ``SESSION_REFRESH_EACH_REQUEST``.
    :param clock: returns the current time in seconds.
    """

    store: SessionStore
    settings: Settings
    lifetime: int
    refresh_each_request: bool
    clock: t.Callable[[], float] = time.time

    def now(self) -> int:
        """The current time in milliseconds."""
        return int(self.clock() * 1000)

    def refresh_due(self, permanent: bool, expires_at: int) -> bool:
        """Whether a session expiring at ``expires_at`` should be extended.

        Permanent sessions are extended only with
        ``SESSION_REFRESH_EACH_REQUEST``, because their cookie's expiry must
        move with the store's. ``RELAY_SESSION_ROLLING`` then decides: always,
        never, or once less than ``(1 - r) * lifetime`` remains.
        """
        rolling = self.settings.rolling
        if rolling is False or (permanent and not self.refresh_each_request):
            return False
        if rolling is True:
            return True
        return expires_at - self.now() < (1 - rolling) * self.lifetime


def _lookup(root: dict[str, t.Any], path: Path) -> t.Any:
    """Return the value at ``path``, or ``_MISSING``; nothing is wrapped."""
    node: t.Any = root
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = dict.__getitem__(node, key)
    return node


def _place(root: dict[str, t.Any], path: Path, value: t.Any) -> None:
    """Set or, with ``_MISSING``, delete the value at ``path``, unrecorded."""
    node: t.Any = root
    for key in path[:-1]:
        child = dict.get(node, key)
        if not isinstance(child, dict):
            if value is _MISSING:
                return
            child = {}
            dict.__setitem__(node, key, child)
        node = child
    if value is _MISSING:
        dict.pop(node, path[-1], None)
    else:
        dict.__setitem__(node, path[-1], value)


class Session(SessionMixin):
    """A server-side session that saves only what changed.

    Reading it loads it from the store, once per request; a request that never
    reads it costs no store access at all. Assigning a key does not need a
    load either. Nested dicts and lists are tracked, so
    ``session["cart"]["items"].append(item)`` is saved without setting
    :attr:`modified`.

    :param policy: the app's settings and store.
    :param sid: the session id from a verified cookie, or ``None`` for a new
        session.
    :param permanent: the permanence the cookie carried.
    :param expires_at: when the cookie says the session expires, in
        milliseconds; used before the session is loaded.
    """

    #: Set by Flask whenever ``flask.session`` is used in a request.
    accessed: bool

    def __init__(
        self,
        policy: SessionPolicy,
        sid: str | None = None,
        *,
        permanent: bool = False,
        expires_at: int | None = None,
    ) -> None:
        self._policy = policy
        self._dirty = DirtyPaths()
        self._root = TrackedDict({}, self._dirty)
        self._permanent = permanent
        self._lock_token: str | None = None
        self._forced = False
        self._read_keys: set[str] | None = set()
        self.accessed = False
        #: The session id sent in the response cookie differs from the one
        #: the request carried, or the cookie must be sent again.
        self.cookie_outdated = False
        #: The stored session was deleted because it became empty.
        self.emptied = False
        #: The expiry was extended during this request.
        self.refreshed = False
        #: The session was loaded by following a rotation redirect.
        self.is_redirected = False
        now = policy.now()
        if sid is None:
            self._start_fresh()
        else:
            self.sid = sid
            self.new = False
            self._loaded = False
            self._created_at = now
            self._expires_at = (
                now + policy.lifetime if expires_at is None else expires_at
            )

    def _start_fresh(self) -> None:
        now = self._policy.now()
        self.sid = new_session_id()
        self.new = True
        self._loaded = True
        self._created_at = now
        self._expires_at = now + self._policy.lifetime

    # -- state -----------------------------------------------------------

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser session.

        Kept in the signed cookie, not in the session data.
        """
        return self._permanent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) != self._permanent:
            self._permanent = bool(value)
            self.cookie_outdated = True

    @property
    def modified(self) -> bool:
        """Whether the session or its cookie changed during this request.

        Setting it to ``True`` by hand saves every top-level key this request
        read, for changes made where tracking cannot see them.
        """
        return bool(self._dirty) or self._forced or self.cookie_outdated

    @modified.setter
    def modified(self, value: bool) -> None:
        self._forced = bool(value)

    @property
    def dirty_paths(self) -> frozenset[Path]:
        """The changed paths not saved yet, each a tuple of keys."""
        return frozenset(self._dirty)

    @property
    def created_at(self) -> datetime:
        """When the session was created, as an aware UTC datetime."""
        self._ensure_loaded()
        return datetime.fromtimestamp(self._created_at / 1000, timezone.utc)

    @property
    def expires_at(self) -> datetime:
        """When the store will drop the session, as an aware UTC datetime."""
        return datetime.fromtimestamp(self._expires_at / 1000, timezone.utc)

    @property
    def is_lock_owner(self) -> bool:
        """Whether this request holds the session lock."""
        return self._lock_token is not None

    def is_locked(self) -> bool:
        """Ask the store whether any request holds the session lock."""
        return self._policy.store.is_locked(self.sid)

    def clear_dirty(self) -> None:
        """Forget the pending changes without saving them.

        The session keeps showing them until it is loaded again.
        """
        self._dirty.clear()
        self._forced = False

    # -- mapping ---------------------------------------------------------

    def __getitem__(self, key: str) -> t.Any:
        self._ensure_loaded()
        if self._read_keys is not None:
            self._read_keys.add(key)
        return self._root[key]

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._root[key] = value

    def __delitem__(self, key: str) -> None:
        self._ensure_loaded()
        del self._root[key]

    def __iter__(self) -> t.Iterator[str]:
        self._ensure_loaded()
        self._read_keys = None
        return iter(list(self._root))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._root)

    def __contains__(self, key: object) -> bool:
        self._ensure_loaded()
        return key in self._root

    def __ior__(self, other: t.Any) -> Session:
        self.update(other)
        return self

    def __repr__(self) -> str:
        state = dict(self._root) if self._loaded else "not loaded"
        return f"<{type(self).__name__} {self.sid[:8]}… {state}>"

    # -- loading ---------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._reload()

    def _reload(self) -> None:
        """Load from the store, keeping pending changes on top."""
        policy = self._policy
        refresh = policy.refresh_due(self._permanent, self._expires_at)
        stored = policy.store.load(self.sid, ttl=policy.lifetime if refresh else None)
        if stored is None:
            self._replace_data({}, fresh=True)
            return
        self.refreshed = self.refreshed or refresh
        self._adopt(stored)

    def _adopt(self, stored: StoredSession) -> None:
        if stored.sid != self.sid:
            self.sid = stored.sid
            self.cookie_outdated = True
        self.is_redirected = self.is_redirected or stored.redirected
        self._created_at = stored.created_at
        self._expires_at = stored.expires_at
        self._replace_data(stored.data, fresh=False)

    def _replace_data(self, data: dict[str, t.Any], *, fresh: bool) -> None:
        """Show ``data`` with this request's pending changes on top."""
        root = TrackedDict(data, self._dirty)
        for path in self._dirty:
            _place(root, path, _lookup(self._root, path))
        self._root = root
        self._loaded = True
        if fresh:
            self._start_fresh()
            self.cookie_outdated = True

    # -- saving ----------------------------------------------------------

    def _pending_paths(self) -> list[Path]:
        if not self._forced:
            return list(self._dirty)
        paths = DirtyPaths()
        for path in self._dirty:
            paths.mark(path)
        read = self._root.keys() if self._read_keys is None else self._read_keys
        for key in read:
            paths.mark((key,))
        return list(paths)

    def _encode(self, paths: t.Iterable[Path]) -> list[tuple[Path, bytes | None]]:
        """Return each path with the JSON of its value, or ``None`` if gone."""
        encoded = []
        for path in paths:
            value = _lookup(self._root, path)
            encoded.append((path, None if value is _MISSING else dumps(value, path)))
        return encoded

    def _changes(self, paths: t.Iterable[Path]) -> list[Change]:
        return [
            Change(tuple(encode_key(key) for key in path), value)
            for path, value in self._encode(paths)
        ]

    def save(self) -> None:
        """Send the pending changes to the store now.

        The end of the request saves too; call this to make changes visible to
        concurrent requests earlier. Without the lock, waits while another
        request holds it.

        :raises SessionSerializationError: a value cannot be stored; nothing
            was written.
        :raises SessionLockError: the lock stayed taken, or this request's
            lock was lost.
        :raises SessionStoreError: the store cannot be reached.
        """
        paths = self._pending_paths()
        if not paths:
            return
        if self.new and not dict.__len__(self._root):
            self.clear_dirty()
            return
        changes = self._changes(paths)
        self._check_size(changes)
        result = self._merge(changes, create=self.new)
        if result.status is MergeStatus.MISSING:
            # The session expired or was destroyed under us: start a new one
            # from what this request sees, never reusing the old id.
            self._start_fresh()
            self.cookie_outdated = True
            everything = [(key,) for key in self._root]
            result = self._merge(self._changes(everything), create=True)
        self._created_at = result.created_at
        self._expires_at = result.expires_at
        self.emptied = result.emptied
        self.new = False
        self.cookie_outdated = True
        self.clear_dirty()

    def _check_size(self, changes: list[Change]) -> None:
        size = sum(len(change.value or b"") for change in changes)
        limit = self._policy.settings.max_size
        if size > limit:
            raise SessionSerializationError(
                f"the changes to save are {size} bytes, more than"
                f" RELAY_SESSION_MAX_SIZE ({limit} bytes); nothing was saved"
            )

    def _merge(self, changes: list[Change], *, create: bool) -> MergeResult:
        """Merge ``changes``, following redirects and waiting out locks."""
        policy = self._policy
        settings = policy.settings
        attempt = 0
        while True:
            ttl = policy.lifetime if create else None
            if ttl is None and policy.refresh_due(self._permanent, self._expires_at):
                ttl = policy.lifetime
            result = policy.store.merge(
                self.sid,
                changes,
                now=policy.now(),
                ttl=ttl,
                create=create,
                lock_token=self._lock_token,
                max_size=settings.max_size,
            )
            if result.status is MergeStatus.DONE:
                self.refreshed = self.refreshed or ttl is not None
                return result
            if result.status is MergeStatus.MISSING:
                return result
            if result.status is MergeStatus.REDIRECTED:
                assert result.redirect_to is not None
                self.sid = result.redirect_to
                self.cookie_outdated = True
                continue
            if result.status is MergeStatus.LOCK_LOST:
                raise SessionLockError(
                    "the session lock expired and was taken by another request"
                    " before this request saved; nothing was written. Raise"
                    " RELAY_SESSION_LOCK_TTL above the longest locked section."
                )
            attempt += 1
            if attempt > settings.lock_retries:
                raise SessionLockError(
                    "another request held the session lock for too long;"
                    f" gave up saving after {settings.lock_retries} retries."
                    " Raise RELAY_SESSION_LOCK_RETRIES or"
                    " RELAY_SESSION_LOCK_BACKOFF to wait longer."
                )
            time.sleep(settings.lock_backoff * attempt / 1000)

    def refresh_untouched(self) -> None:
        """Extend the expiry of a session this request never loaded.

        One ``touch`` of the store, only when the expiry is due for a
        refresh; a session that is gone is left for the next request to find.
        """
        policy = self._policy
        if self._loaded or not self._permanent:
            return
        if not policy.refresh_due(self._permanent, self._expires_at):
            return
        if policy.store.touch(self.sid, ttl=policy.lifetime):
            self._expires_at = policy.now() + policy.lifetime
            self.refreshed = True

    # -- lifecycle -------------------------------------------------------

    def destroy(self) -> None:
        """Delete the session from the store.

        The rest of the request sees a new, empty session with a new id, and
        the response replaces the cookie.
        """
        self._policy.store.delete(self.sid)
        self.release_lock()
        self._dirty.clear()
        self._forced = False
        self._root = TrackedDict({}, self._dirty)
        self._start_fresh()
        self.cookie_outdated = True

    @contextlib.contextmanager
    def lock(self) -> t.Iterator[Session]:
        """Hold the session lock for a read-modify-write section.

        ::

            with session.lock():
                session["balance"] += amount

        Acquiring retries ``RELAY_SESSION_LOCK_RETRIES`` times, waiting
        ``attempt * RELAY_SESSION_LOCK_BACKOFF`` between tries. Once held,
        the session is loaded again, so the block sees every write committed
        before it, with this request's unsaved changes on top. Leaving the
        block saves, then releases the lock. If the block raises, the lock is
        released and the changes made inside the block are dropped; changes
        made before the block stay pending. Nesting is allowed; only the
        outermost block locks and saves.

        :raises SessionLockError: the lock could not be acquired.
        """
        if self._lock_token is not None:
            yield self
            return
        before = self._encode(self._pending_paths())
        self._acquire()
        try:
            self._reload()
            yield self
            self.save()
        except BaseException:
            self._restore(before)
            raise
        finally:
            self.release_lock()

    def _acquire(self) -> None:
        policy = self._policy
        settings = policy.settings
        token = secrets.token_hex(16)
        for attempt in range(settings.lock_retries + 1):
            if attempt:
                time.sleep(settings.lock_backoff * attempt / 1000)
            if policy.store.lock(self.sid, token, settings.lock_ttl):
                self._lock_token = token
                return
        raise SessionLockError(
            f"could not acquire the session lock after {settings.lock_retries}"
            " retries. Raise RELAY_SESSION_LOCK_RETRIES or"
            " RELAY_SESSION_LOCK_BACKOFF to wait longer."
        )

    def release_lock(self) -> None:
        """Release the session lock if this request holds it."""
        token, self._lock_token = self._lock_token, None
        if token is not None:
            self._policy.store.unlock(self.sid, token)

    def _restore(self, pending: list[tuple[Path, bytes | None]]) -> None:
        """Drop every change but ``pending``; the next read loads again."""
        self._dirty.clear()
        self._forced = False
        self._root = TrackedDict({}, self._dirty)
        for path, value in pending:
            _place(self._root, path, _MISSING if value is None else loads(value))
            self._dirty.mark(path)
        self._loaded = self.new
