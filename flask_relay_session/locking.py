"""The session lock as one request holds it, and writes that wait for it.

:class:`SessionLock` takes the lock with retries and jittered backoff,
releases it, and moves it along when the session's id changes under the
request. :meth:`SessionLock.write` runs a merge or a rotation until the
store has done it: following rotation redirects and, without the lock,
waiting while another request holds it.
"""

from __future__ import annotations

import secrets
import typing as t
import weakref

from . import events
from .errors import SessionChainBrokenError
from .errors import SessionDepthError
from .errors import SessionLockError
from .stores.base import MAX_REDIRECT_DEPTH
from .stores.base import MergeResult
from .stores.base import MergeStatus
from .stores.base import SessionStoreLockLoad
from .stores.base import StoredSession

if t.TYPE_CHECKING:
    from .events import Session
    from .policy import SessionPolicy

#: A write to the store, given the lock token the request holds, if any.
Write = t.Callable[["str | None"], MergeResult]

#: What a store gives along with the lock: the session it loaded, if any.
_Loaded = t.TypeVar("_Loaded")


class SessionLock:
    """The lock of one session, as one request holds it or not.

    :param policy: the store and the lock settings.
    :param session: the session it locks, named in log lines and signals.
    """

    def __init__(self, policy: SessionPolicy, session: Session) -> None:
        self._policy = policy
        # Held weakly: the session holds its lock, and a lock that held the
        # session back would make a reference cycle, which only the garbage
        # collector frees; every request's session would wait for it.
        self._session_ref = weakref.ref(session)
        #: The id the lock was taken on, and the token that owns it.
        self._held: tuple[str, str] | None = None

    @property
    def _session(self) -> Session:
        session = self._session_ref()
        assert session is not None, "a session's lock outlived the session"
        return session

    @property
    def held(self) -> bool:
        """Whether the request holds the lock."""
        return self._held is not None

    @property
    def token(self) -> str | None:
        """The token the request holds the lock with, if it does."""
        return None if self._held is None else self._held[1]

    def acquire(self, sid: str) -> None:
        """Take the lock of ``sid``, retrying with jittered backoff.

        :raises SessionLockError: it stayed taken through every retry.
        """
        store = self._policy.store
        self._take(sid, lambda token, ttl: (store.lock(sid, token, ttl), None))

    def acquire_and_load(self, sid: str, ttl: int | None) -> StoredSession | None:
        """Take the lock of ``sid`` as :meth:`acquire` does, then load the
        session as :meth:`~flask_relay_session.stores.SessionStore.load`
        does, in one step of a store that can
        (:class:`~flask_relay_session.stores.SessionStoreLockLoad`).

        :param ttl: as for ``load``.
        :raises SessionLockError: the lock stayed taken through every retry.
        """
        store = self._policy.store
        if not callable(getattr(store, "lock_and_load", None)):
            self.acquire(sid)
            return store.load(sid, ttl=ttl)
        both = t.cast(SessionStoreLockLoad, store)
        return self._take(
            sid,
            lambda token, lock_ttl: both.lock_and_load(sid, token, lock_ttl, ttl=ttl),
        )

    def _take(
        self, sid: str, attempt: t.Callable[[str, int], tuple[bool, _Loaded]]
    ) -> _Loaded:
        """Run ``attempt(token, lock_ttl)`` until it takes the lock, with
        jittered backoff, and return what came with the lock.

        :raises SessionLockError: it stayed taken through every retry.
        """
        policy = self._policy
        settings = policy.settings
        token = secrets.token_hex(16)
        for number in range(settings.lock_retries + 1):
            if number:
                policy.wait(number)
            taken, loaded = attempt(token, settings.lock_ttl)
            if taken:
                self._held = (sid, token)
                events.lock_acquired(self._session, sid, number + 1)
                return loaded
        events.lock_timed_out(self._session, "acquire", settings.lock_retries)
        raise SessionLockError(
            f"could not acquire the session lock after {settings.lock_retries}"
            " retries. Raise RELAY_SESSION_LOCK_RETRIES or"
            " RELAY_SESSION_LOCK_BACKOFF to wait longer."
        )

    def release(self) -> None:
        """Release the lock if the request holds it."""
        held, self._held = self._held, None
        if held is not None:
            released = self._policy.store.unlock(*held)
            events.lock_released(self._session, held[0], held=released)

    def released_by_write(self) -> None:
        """The write that ended a locked section released the lock itself."""
        held, self._held = self._held, None
        if held is not None:
            events.lock_released(self._session, held[0])

    def follow(self, sid: str) -> None:
        """Hold the lock of ``sid`` instead, if the request holds one.

        The session moved to ``sid`` (a rotation, a redirect followed, a
        fresh start): the new id's lock is taken before the old one is let
        go.
        """
        if self._held is None or self._held[0] == sid:
            return
        old_sid, token = self._held
        self._held = None
        try:
            self.acquire(sid)
        finally:
            self._policy.store.unlock(old_sid, token)

    def write(
        self, write: Write, *, follow: t.Callable[[str], None], operation: str
    ) -> MergeResult:
        """Run ``write`` until it is done or the session is gone.

        :param follow: moves the session to the id a redirect leads to.
        :param operation: names the write in log lines and signals.
        :return: a result that is :attr:`MergeStatus.DONE` or
            :attr:`MergeStatus.MISSING`.
        :raises SessionChainError: a redirect led to a missing session, or
            too many redirects were followed.
        :raises SessionLockError: the lock was lost, or another request held
            it through every retry.
        """
        session = self._session
        settings = self._policy.settings
        waits = redirects = 0
        while True:
            result = write(self.token)
            status = result.status
            if status is MergeStatus.DONE:
                return result
            if status is MergeStatus.MISSING:
                if redirects:
                    # As a load that follows a redirect to a missing session.
                    raise SessionChainBrokenError(
                        "a rotated session id leads to a session that no longer exists"
                    )
                return result
            if status is MergeStatus.REDIRECTED:
                redirects += 1
                if redirects > MAX_REDIRECT_DEPTH:
                    raise SessionDepthError(
                        "a rotated session id was rotated more than"
                        f" {MAX_REDIRECT_DEPTH} times in a row"
                    )
                assert result.redirect_to is not None
                events.followed_redirect(session, operation, result.redirect_to)
                follow(result.redirect_to)
                continue
            if status is MergeStatus.LOCK_LOST:
                raise SessionLockError(
                    "the session lock expired before this request saved (and"
                    " may have been taken by another request); nothing was"
                    " written. Raise RELAY_SESSION_LOCK_TTL above the longest"
                    " locked section."
                )
            waits += 1
            if waits > settings.lock_retries:
                events.lock_timed_out(session, operation, settings.lock_retries)
                raise SessionLockError(
                    "another request held the session lock for too long; gave"
                    f" up saving after {settings.lock_retries} retries. Raise"
                    " RELAY_SESSION_LOCK_RETRIES or RELAY_SESSION_LOCK_BACKOFF"
                    " to wait longer."
                )
            events.lock_waiting(session, operation, waits)
            self._policy.wait(waits)


class LockMixin:
    """The lock methods of :class:`~flask_relay_session.Session`, over its
    :class:`SessionLock`. The session provides the members declared here.
    """

    _policy: SessionPolicy
    _lock: SessionLock
    #: The session id.
    sid: str

    @property
    def is_lock_owner(self) -> bool:
        """Whether this request holds the session lock."""
        return self._lock.held

    def is_locked(self) -> bool:
        """Ask the store whether any request holds the session lock."""
        return self._policy.store.is_locked(self.sid)

    def release_lock(self) -> None:
        """Release the session lock if this request holds it."""
        self._lock.release()
