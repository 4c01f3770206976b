"""The user a session is bound to, as one request sees it.

:class:`BindingMixin` gives a :class:`~flask_relay_session.Session` its
user API (:attr:`~BindingMixin.user_id`, :meth:`~BindingMixin.bind_user`,
:meth:`~BindingMixin.unbind_user`); :class:`UserBinding` keeps the state.
A stored session is bound in the store at once
(:meth:`~flask_relay_session.stores.users.SessionStoreUsers.register`); a
new session is bound by the save that stores it. While a bound session is
used, the request records that its user was seen, at most once per
``RELAY_SESSION_LAST_SEEN_INTERVAL``: with the write the request makes
anyway when it makes one, else on its own at the end of the request.
"""

from __future__ import annotations

import typing as t

from .stores.base import MergeResult
from .stores.base import MergeStatus
from .stores.users import Registration
from .stores.users import check_user_id
from .stores.users import supports_users
from .users import users_store

if t.TYPE_CHECKING:
    from .changes import Changes
    from .locking import Write
    from .policy import SessionPolicy
    from .stores.base import StoredSession

__all__ = ["BindingMixin", "UserBinding"]


class UserBinding:
    """The user one session is bound to, as one request sees it, and what
    its writes record of that user.

    :param policy: the app's settings and store.
    """

    def __init__(self, policy: SessionPolicy) -> None:
        self._policy = policy
        #: The user the session is bound to.
        self.user_id: str | None = None
        #: When its user was last recorded as seen.
        self.seen: int | None = None
        #: The binding is not stored yet: the session is new.
        self.pending = False
        #: This request recorded a visit already.
        self.visited = False

    def loaded(self, stored: StoredSession) -> None:
        """Take on the binding of the session as loaded."""
        self.user_id, self.seen = stored.user_id, stored.last_seen
        self.pending = False

    def learned(self, result: MergeResult) -> None:
        """Take on the binding a write that is done found in the store."""
        self.user_id, self.seen = result.user_id, result.last_seen
        self.pending = False

    def reset(self) -> None:
        """The session goes on as a new, unbound one."""
        self.user_id, self.seen, self.pending = None, None, False

    def bind_later(self, user_id: str | None) -> None:
        """Bind a new session, or unbind it (``None``), with its first save."""
        self.user_id, self.seen, self.pending = user_id, None, user_id is not None

    def registration(self, user_id: str, *, bind: bool) -> Registration:
        """Return what a write records for ``user_id`` now."""
        policy = self._policy
        now = policy.now()
        agent, ip = policy.client or (None, None)
        return Registration(
            user_id,
            bind=bind,
            seen=now,
            until=policy.registered_until(now),
            agent=agent,
            ip=ip,
        )

    def due(self) -> Registration | None:
        """What a request that uses the bound, stored session records, when
        ``RELAY_SESSION_LAST_SEEN_INTERVAL`` has passed since it was last
        seen; else ``None``.
        """
        if self.user_id is None or self.pending or self.visited:
            return None
        interval = self._policy.settings.last_seen_interval
        if self.seen is not None and self._policy.now() - self.seen < interval:
            return None
        return self.registration(self.user_id, bind=False)

    def for_save(self, *, new: bool) -> Registration | None:
        """What the save of the session records along with its changes."""
        if new:
            if not self.pending or self.user_id is None:
                return None
            return self.registration(self.user_id, bind=True)
        return self.due()

    def recorded(self, registration: Registration) -> None:
        """A write recorded ``registration``."""
        self.user_id, self.seen = registration.user_id, registration.seen
        self.pending = False
        self.visited = True


class BindingMixin:
    """The user API of :class:`~flask_relay_session.Session`.

    The session provides the members declared here.
    """

    _policy: SessionPolicy
    _user: UserBinding
    _changes: Changes
    _loaded: bool
    #: Nothing is stored under :attr:`sid` yet.
    new: bool
    #: The session id.
    sid: str

    def _ensure_loaded(self) -> None:
        raise NotImplementedError

    def _write(self, write: Write, operation: str) -> MergeResult:
        raise NotImplementedError

    def _continue_as_new(self) -> None:
        raise NotImplementedError

    def _start_fresh(self) -> None:
        raise NotImplementedError

    @property
    def user_id(self) -> str | None:
        """The user the session is bound to (:meth:`bind_user`), or ``None``.

        .. versionadded:: 0.1.0
        """
        self._ensure_loaded()
        return self._user.user_id

    def bind_user(self, user_id: str) -> None:
        """Bind the session to the user ``user_id``, after a login.

        :meth:`~flask_relay_session.RelaySession.sessions_of` then lists it
        and :meth:`~flask_relay_session.RelaySession.revoke_all` ends it.
        Binding it to another user moves it. A stored session is bound at
        once, in one round trip to Redis; a new one by the save that stores
        it (a session that stores nothing stays unbound). With Flask-Login,
        ``RELAY_SESSION_TRACK_USERS`` binds on each login.

        :param user_id: any string of up to 256 bytes in UTF-8.
        :raises ValueError: ``user_id`` is empty or too long.

        .. versionadded:: 0.1.0
        """
        user_id = check_user_id(user_id)
        store = users_store(self._policy.store)
        if not self.new:
            registration = self._user.registration(user_id, bind=True)
            result = self._write(
                lambda _: store.register(self.sid, registration), "bind"
            )
            if result.status is MergeStatus.DONE:
                self._user.recorded(registration)
                return
            self._continue_as_new()
        self._user.bind_later(user_id)

    def unbind_user(self) -> None:
        """Bind the session to no user any more, after a logout that keeps
        the session. :meth:`destroy` unbinds too.

        .. versionadded:: 0.1.0
        """
        if self.new:
            self._user.bind_later(None)
            return
        if self._loaded and self._user.user_id is None:
            return
        store = users_store(self._policy.store)
        result = self._write(lambda _: store.unregister(self.sid), "unbind")
        if result.status is MergeStatus.MISSING:
            self._continue_as_new()
        self._user.reset()

    def _revoked(self) -> None:
        """The session was revoked by this request: go on as a new one."""
        self._changes.drop()
        self._start_fresh()

    def _user_saved(
        self, registration: Registration | None, result: MergeResult
    ) -> None:
        """Take on what a save that is done did to the binding:
        ``registration`` went with it, or a write that loaded nothing learns
        the binding from the store's reply.
        """
        if registration is not None and not result.emptied:
            self._user.recorded(registration)
        elif not self._loaded:
            self._user.learned(result)
            self._record_seen()

    def _rotate_options(self, now: int) -> dict[str, t.Any]:
        """The options a rotation at ``now`` gives the store for the
        sessions of users: how long the new id stays registered.
        """
        if not supports_users(self._policy.store):
            return {}
        return {"until": self._policy.registered_until(now)}

    def _touch(self, ttl: int) -> bool:
        """Extend the session's lifetime without loading it, and record a
        visit of its user if one is due; return whether it exists.
        """
        store = self._policy.store
        if not supports_users(store):
            return store.touch(self.sid, ttl=ttl)
        owner = users_store(store).touch_owner(self.sid, ttl=ttl)
        if owner is None:
            return False
        self._user.user_id, self._user.seen = owner
        self._record_seen()
        return True

    def _record_seen(self) -> None:
        """Record that the user of the bound, stored session was seen, when
        ``RELAY_SESSION_LAST_SEEN_INTERVAL`` has passed: for a request that
        wrote nothing (a write records it with the write).
        """
        registration = self._user.due()
        if registration is not None and not self.new:
            store = users_store(self._policy.store)
            if store.register(self.sid, registration).status is MergeStatus.DONE:
                self._user.recorded(registration)
