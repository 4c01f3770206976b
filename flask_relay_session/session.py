"""The session object behind ``flask.session``.

A :class:`Session` is a mutable mapping that loads itself from the store the
first time a request reads it, and records the paths a request changes
(:mod:`~flask_relay_session.changes`). At the end of the request, or on
:meth:`Session.save`, only those paths are sent to the store, which merges
them into the stored session atomically, so requests that change different
parts of one session never undo each other. Locking is in
:mod:`~flask_relay_session.locking`, log lines and signals in
:mod:`~flask_relay_session.events`.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from . import events
from .binding import BindingMixin
from .binding import UserBinding
from .changes import Changes
from .cookies import new_session_id
from .errors import SessionChainError
from .errors import SessionStoreError
from .locking import LockMixin
from .locking import SessionLock
from .locking import Write
from .mapping import SessionMapping
from .policy import SessionPolicy
from .serialization import StoredValueError
from .stores.base import MergeResult
from .stores.base import MergeStatus
from .stores.base import StoredSession

__all__ = ["Session", "SessionPolicy"]

#: Loads a session for :meth:`Session._reload`: ``load(sid, ttl)``.
Load = t.Callable[[str, "int | None"], "StoredSession | None"]


class Session(SessionMapping, BindingMixin, LockMixin):
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

    def __init__(
        self,
        policy: SessionPolicy,
        sid: str | None = None,
        *,
        permanent: bool = False,
        expires_at: int | None = None,
    ) -> None:
        self._policy = policy
        self._changes = Changes()
        self._lock = SessionLock(policy, self)
        self._user = UserBinding(policy)
        self._permanent = permanent
        self.accessed = False
        # For the interface: the cookie must be sent again (its id or flags
        # changed); the stored session was deleted as it became empty; the
        # expiry was extended; the id the client holds once the response is
        # sent (None while none was sent, or when it holds none).
        self.cookie_outdated = False
        self.emptied = False
        self.refreshed = False
        self.client_sid: str | None = None
        #: The session was loaded by following a rotation redirect.
        self.is_redirected = False
        now = policy.now()
        #: The session id.
        self.sid = new_session_id() if sid is None else sid
        #: Nothing is stored under :attr:`sid` yet.
        self.new = sid is None
        self._loaded = self.new
        self._created_at = now
        self._expires_at = now + policy.lifetime if expires_at is None else expires_at

    # -- state -----------------------------------------------------------

    @functools.cached_property
    def log_id(self) -> str:
        """Names this session object, and so the request, in log lines: 8
        random hex digits, drawn when a line first needs them, or the request's
        ``X-Request-ID`` (see :attr:`.RelaySessionInterface.log_id_header`).
        """
        return secrets.token_hex(4)

    @property
    def created_at(self) -> datetime:
        """When the session was created, as an aware UTC datetime."""
        self._ensure_loaded()
        return datetime.fromtimestamp(self._created_at / 1000, timezone.utc)

    @property
    def expires_at(self) -> datetime:
        """When the store will drop the session, as an aware UTC datetime."""
        return datetime.fromtimestamp(self._expires_at / 1000, timezone.utc)

    # -- loading ---------------------------------------------------------

    def _reload(self, load: Load | None = None) -> None:
        """Load from the store (with ``load(sid, ttl)`` if given), keeping
        pending changes on top. A new session has nothing stored yet.
        """
        if self.new:
            self._loaded = True
            return
        policy = self._policy
        refresh = policy.refresh_due(self._permanent, self._expires_at)
        try:
            ttl = policy.lifetime if refresh else None
            stored = (
                policy.store.load(self.sid, ttl=ttl)
                if load is None
                else load(self.sid, ttl)
            )
        except SessionStoreError:
            # A request that could not read its session must not write part
            # of it: the changes it made before the read are dropped.
            self.clear_dirty()
            raise
        except SessionChainError as error:
            raise self._chain_broken("load", error) from None
        try:
            self._changes.show({} if stored is None else stored.data)
        except StoredValueError as error:
            self._loaded = True
            self._drop_unreadable(error)
            return
        self._loaded = True
        if stored is None:
            events.load_missing(self)
            self._start_fresh()
            return
        events.loaded(self, len(stored.data), refreshed=refresh)
        self.refreshed = self.refreshed or refresh
        if stored.redirected:
            events.followed_redirect(self, "load", stored.sid)
            self._follow(stored.sid)
            if self._lock.held:
                # The data was read before this request held the new id's
                # lock: read it again under the lock.
                self._reload()
                return
        self._created_at = stored.created_at
        self._expires_at = stored.expires_at
        self._user.loaded(stored)

    def _drop_unreadable(self, error: StoredValueError) -> None:
        """Go on as a new session with this request's own changes: a stored
        value does not decode. The stored session is left as it is.
        """
        events.unreadable(self, error)
        self._continue_as_new()

    def _continue_as_new(self) -> None:
        """Go on as a new session holding only this request's own changes,
        when the stored one vanished (expired, or a concurrent logout): what
        the request loaded must not come back under a new id, even with
        :attr:`modified` set by hand.
        """
        own = self._changes.own()
        self._start_fresh()
        self._changes.restore(own)

    def _chain_broken(
        self, operation: str, error: SessionChainError
    ) -> SessionChainError:
        """Go on as a new, empty session after ``error``, and return it: the
        cookie leads to no live session, so this request's changes are
        dropped and the response drops the cookie.
        """
        events.chain_broken(self, operation, error)
        self._changes.drop()
        self._start_fresh()
        return error

    def _start_fresh(self) -> None:
        """Go on as a new session, under a new id, with nothing stored."""
        now = self._policy.now()
        self.new = True
        self._loaded = True
        self._created_at = now
        self._expires_at = now + self._policy.lifetime
        self._user.reset()
        self._switch_to(new_session_id())

    def _switch_to(self, sid: str) -> None:
        """Go on under ``sid``, taking the lock along if this request holds it."""
        self.sid = sid
        self.cookie_outdated = True
        self._lock.follow(sid)

    # -- saving ----------------------------------------------------------

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
        self._save(release_lock=False)

    def _save(self, *, release_lock: bool) -> None:
        """Save; with ``release_lock``, the merge also releases the lock."""
        policy = self._policy
        changes = self._changes.to_store(
            new=self.new, max_size=policy.settings.max_size
        )
        if not changes:
            self.clear_dirty()
            return
        release = release_lock and self._lock.held
        registration = self._user.for_save(new=self.new)
        extra = {} if registration is None else {"registration": registration}
        ttl = policy.write_ttl(
            new=self.new,
            refreshed=self.refreshed,
            permanent=self._permanent,
            expires_at=self._expires_at,
        )
        result = self._write(
            lambda lock_token: policy.store.merge(
                self.sid,
                changes,
                now=policy.now() if registration is None else registration.seen,
                ttl=ttl,
                create=self.new,
                lock_token=lock_token,
                max_size=policy.settings.max_size,
                release_lock=release,
                **extra,
            ),
            "save",
        )
        if result.status is MergeStatus.MISSING:
            # The session expired or was destroyed under this request.
            events.save_missing(self)
            self._continue_as_new()
            self._save(release_lock=release_lock)
            return
        if release:
            self._lock.released_by_write()
        self._user_saved(registration, result)
        created = self.new
        self._saved(result, expiry_moved=ttl is not None)
        events.saved(self, changes, created=created, emptied=result.emptied)

    def _saved(self, result: MergeResult, *, expiry_moved: bool) -> None:
        """Take on what a write that is done did. The cookie is sent again
        for a new or emptied session, and for a permanent one when its expiry
        moved (a browser-session cookie's expiry only tells when to refresh,
        and an older one refreshes no later).
        """
        if self.new or result.emptied:
            self.cookie_outdated = True
        if expiry_moved:
            self.refreshed = True
        self._created_at = result.created_at
        self._expires_at = result.expires_at
        self.emptied = result.emptied
        self.new = False
        self.clear_dirty()

    def _write(self, write: Write, operation: str) -> MergeResult:
        """Run a merge or rotation until it is done or the session is gone
        (see :meth:`SessionLock.write`); a broken chain starts afresh.
        """
        try:
            return self._lock.write(write, follow=self._follow, operation=operation)
        except SessionChainError as error:
            raise self._chain_broken(operation, error) from None

    def _follow(self, sid: str) -> None:
        """Go on under the id a rotation redirect led to."""
        self.is_redirected = True
        self._switch_to(sid)

    def refresh_untouched(self) -> None:
        """Extend the expiry of a permanent session this request never
        loaded, when it is due: one ``touch`` of the store, at the end of the
        request. A session that is gone is left for the next request to find.
        """
        policy = self._policy
        if self._loaded:
            self._record_seen()
            return
        if not self._permanent:
            return
        if not policy.refresh_due(True, self._expires_at):
            return
        if self._touch(policy.lifetime):
            self._expires_at = policy.now() + policy.lifetime
            self.refreshed = True

    # -- lifecycle -------------------------------------------------------

    def rotate_id(self, *, grace_period: float | timedelta | None = None) -> None:
        """Move the session to a new id, against session fixation.

        Call it after login and whenever privileges change. The data, with
        this request's pending changes, moves to a new id and the response
        carries a new cookie. The old id redirects to the new one for the
        grace period, so that requests still in flight with the old cookie
        are served the new session, and their writes land there. Waits like
        :meth:`save` while another request holds the lock.

        Whoever holds the old id during the grace period is served the new
        session too. Where the old id may be known to an attacker (a login
        after an anonymous visit, against session fixation), pass a grace
        period of 0: the old id ends at once instead of redirecting, and
        requests in flight with it get a fresh session.

        :param grace_period: how long the old id redirects, in seconds or as
            a timedelta, up to 3650 days; by default
            ``RELAY_SESSION_ROTATION_GRACE_PERIOD``, itself by default the
            session lifetime.
        :raises ValueError: ``grace_period`` is negative or too long.
        """
        policy = self._policy
        grace = policy.grace(grace_period)
        new_sid = new_session_id()
        if self.new:
            self._switch_to(new_sid)
            events.rotated(self, None)
            return
        if self._loaded and not self._changes.data:
            # Emptied by this request: empty sessions are never stored. The
            # save deletes it, unless a concurrent request added to it.
            self._save(release_lock=False)
            if self.emptied:
                self._start_fresh()
                events.rotated(self, None)
                return
        changes = self._changes.to_store(new=False, max_size=policy.settings.max_size)
        now = policy.now()
        extra = self._rotate_options(now)
        result = self._write(
            lambda lock_token: policy.store.rotate(
                self.sid,
                new_sid,
                changes,
                now=now,
                ttl=policy.lifetime,
                grace=grace,
                lock_token=lock_token,
                max_size=policy.settings.max_size,
                **extra,
            ),
            "rotate",
        )
        if result.status is MergeStatus.MISSING:
            self._continue_as_new()
            events.rotated(self, None)
            return
        old_sid = self.sid
        self._switch_to(new_sid)
        self._saved(result, expiry_moved=True)
        events.rotated(self, old_sid)

    def destroy(self) -> None:
        """Delete the session from the store: log out.

        Through an id rotated away whose grace period still runs (a cookie
        from before a login), the live session it leads to is deleted too,
        so a logout through any cookie that reaches the session ends it.
        The rest of the request sees a new, empty session with a new id, and
        the response replaces the cookie. The old id is never used again.
        """
        old_sid = self.sid
        self._policy.store.delete(old_sid)
        self._changes.drop()
        self._start_fresh()
        events.destroyed(self, old_sid)

    @contextlib.contextmanager
    def lock(self) -> t.Iterator[Session]:
        """Hold the session lock for a read-modify-write section.

        ::

            with session.lock():
                session["balance"] += amount

        Acquiring retries ``RELAY_SESSION_LOCK_RETRIES`` times, waiting
        ``attempt * RELAY_SESSION_LOCK_BACKOFF`` ± 50 % between tries. Once
        held, the session is loaded again, so the block sees every write
        committed before it, with this request's unsaved changes on top.
        Leaving the block saves and releases the lock in one step of the
        store: two round trips in all with Redis, which takes the lock and
        loads in one (three with a store that cannot, see
        :meth:`~flask_relay_session.stores.SessionStore.lock`). If the block
        raises, the lock is released and the changes made inside the block
        are dropped; changes made before the block stay pending. Nesting is
        allowed; only the outermost block locks and saves.

        :raises SessionLockError: the lock could not be acquired, or it
            expired before the block ended and another request took it.
        """
        if self._lock.held:
            yield self
            return
        changes = self._changes
        before = changes.encode(changes.pending(new=self.new))
        try:
            if self.new:
                self._lock.acquire(self.sid)
            else:
                self._reload(self._lock.acquire_and_load)
            yield self
            self._save(release_lock=True)
        except SessionChainError:
            # The session is gone: nothing of this request is kept.
            raise
        except BaseException:
            changes.restore(before)
            self._loaded = self.new
            raise
        finally:
            self.release_lock()
