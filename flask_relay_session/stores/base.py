"""The protocol every session store implements, and the values it exchanges.

A store keeps sessions as documents of tagged JSON (see
:mod:`flask_relay_session.serialization`) and never sees Python objects other
than the decoded data it returns from :meth:`SessionStore.load`. Writes are
merges: a list of :class:`Change` objects, each a path and the JSON of its
new value, applied atomically together with a check of the session lock.

A store may also implement :class:`SessionStoreAdmin`, the operator's view
that the ``flask relay-session`` commands use.

All times are integer milliseconds since the epoch, all durations integer
milliseconds.
"""

from __future__ import annotations

import enum
import json
import typing as t
from dataclasses import dataclass

from ..errors import SessionSerializationError
from ..serialization import LazyValue

#: A path of stored (escaped) keys, from the top level of the data down.
Path = tuple[str, ...]

#: How many rotation redirects a load follows before giving up.
MAX_REDIRECT_DEPTH = 10


def too_large(size: int, max_size: int) -> SessionSerializationError:
    """The error of a write that would make a session exceed ``max_size``."""
    return SessionSerializationError(
        f"the session would grow to {size} bytes, more than"
        f" RELAY_SESSION_MAX_SIZE ({max_size} bytes); nothing was saved"
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One change to a session's data.

    :param path: the stored keys leading to the value, top level first. Keys
        are the escaped form from
        :func:`~flask_relay_session.serialization.encode_key`; a key may
        contain dots or look like a number.
    :param value: the JSON of the new value, or ``None`` to delete the path.
        Deleting is not the same as storing ``null``.
    """

    path: Path
    value: bytes | None


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as loaded from a store.

    :param sid: the id the data was found under. It differs from the id that
        was asked for when the load followed a rotation redirect.
    :param data: the session data. A value may be given still encoded, as a
        :class:`~flask_relay_session.serialization.LazyValue`, which the
        session decodes when the request first reads its key.
    :param created_at: when the session was created.
    :param expires_at: when the store will drop it.
    :param redirected: the load followed at least one rotation redirect.
    :param user_id: the user the session is bound to (see
        :class:`SessionStoreUsers`), ``None`` when it is bound to nobody.
    :param last_seen: when its user's activity was last recorded, for a
        bound session.
    """

    sid: str
    data: dict[str, t.Any]
    created_at: int
    expires_at: int
    redirected: bool = False
    user_id: str | None = None
    last_seen: int | None = None

    def decoded(self) -> dict[str, t.Any]:
        """Return the data with every value decoded.

        :raises ~flask_relay_session.serialization.StoredValueError: a value
            does not decode.
        """
        return {
            key: value.decode() if type(value) is LazyValue else value
            for key, value in self.data.items()
        }


class MergeStatus(enum.Enum):
    """The outcome of :meth:`SessionStore.merge`."""

    #: The changes were applied.
    DONE = "done"
    #: The session does not exist (expired or destroyed); nothing was written.
    MISSING = "missing"
    #: The id was rotated away; nothing was written. Merge into
    #: :attr:`MergeResult.redirect_to` instead.
    REDIRECTED = "redirected"
    #: Another owner holds the lock; nothing was written. Wait and retry.
    LOCKED = "locked"
    #: A lock token was given, but the lock expired or has another owner
    #: now; nothing was written.
    LOCK_LOST = "lock_lost"


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What :meth:`SessionStore.merge` did.

    :param status: the outcome.
    :param redirect_to: the id to merge into instead, with
        :attr:`MergeStatus.REDIRECTED`.
    :param created_at: when the session was created, with
        :attr:`MergeStatus.DONE`.
    :param expires_at: when the store will drop it, with
        :attr:`MergeStatus.DONE`.
    :param emptied: the merge left no data, so the session was deleted.
    :param previous_user: for :meth:`SessionStoreUsers.register` and
        :meth:`SessionStoreUsers.unregister`, the user the session was bound
        to before.
    :param user_id: for a merge that is done, by a store that keeps the
        sessions of users, the user the session is bound to, if any.
    :param last_seen: likewise, when that user was last seen with it.
    """

    status: MergeStatus
    redirect_to: str | None = None
    created_at: int = 0
    expires_at: int = 0
    emptied: bool = False
    previous_user: str | None = None
    user_id: str | None = None
    last_seen: int | None = None


class SessionStore(t.Protocol):
    """What the session interface needs from a store.

    Implement this to keep sessions somewhere other than Redis or memory.
    Each method is one atomic step: a concurrent request sees it entirely or
    not at all. Errors of the backend must be raised as
    :class:`~flask_relay_session.SessionStoreError`.
    """

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Return the session ``sid``, or ``None`` if it does not exist.

        Follows rotation redirects, at most :data:`MAX_REDIRECT_DEPTH` of
        them, and returns the session under its current id. A redirect's
        grace period must not grow.

        :param ttl: extend the session's lifetime to this many milliseconds
            in the same step; ``None`` leaves the expiry as it is.
        :raises SessionChainBrokenError: a redirect leads to a missing
            session.
        :raises SessionDepthError: the redirects go on for too long.
        """

    def touch(self, sid: str, *, ttl: int) -> bool:
        """Extend the lifetime of ``sid`` to ``ttl`` milliseconds.

        Return whether the session exists. A rotated-away id is left alone:
        its grace period must not grow. This must not read or rewrite the
        session: it is the only store call an untouched request makes.
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
    ) -> MergeResult:
        """Apply ``changes`` to the session ``sid`` in one atomic step.

        Setting a path creates the dicts above it that are missing, and
        replaces anything above it that is not a dict. Deleting a path that
        does not exist does nothing.

        The lock is checked in the same step: with ``lock_token``, the merge
        happens only if that token holds the lock (else
        :attr:`MergeStatus.LOCK_LOST`); without one, only if nobody holds it
        (else :attr:`MergeStatus.LOCKED`).

        :param now: the current time, written as the document's meta data.
        :param ttl: the session's new lifetime in milliseconds; ``None``
            keeps the current expiry.
        :param create: create the session from the changes if it does not
            exist, instead of answering :attr:`MergeStatus.MISSING`.
        :param max_size: the largest the stored session may become, in
            bytes.
        :param release_lock: with a ``lock_token``, also release the lock in
            the same atomic step once the write is done
            (:attr:`MergeStatus.DONE`); with any other outcome the lock stays
            as it was. A locked section ends with such a merge, which saves
            it the round trip of :meth:`unlock`. A store whose calls may be
            sent twice (a retry after a lost reply) must answer the second
            call as the first, not with :attr:`MergeStatus.LOCK_LOST`.
        :raises SessionSerializationError: the session would become larger
            than ``max_size``; nothing was written.
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
    ) -> MergeResult:
        """Move the session ``sid`` to ``new_sid``, applying ``changes``.

        Afterwards ``new_sid`` holds the session, created when ``sid`` was,
        expiring after ``ttl`` milliseconds, and ``sid`` holds a redirect to
        ``new_sid`` for ``grace`` milliseconds. With a ``grace`` of 0, ``sid``
        ends at once: it is deleted, or (for a store whose calls may be
        sent twice) becomes a redirect whose grace period is already over,
        which counts as gone, so that a re-sent call finds its own rotation
        done. No write to ``sid`` may be lost: one that lands while the
        rotation runs must end up under ``new_sid``. The lock of ``sid`` is
        checked as in :meth:`merge`, and the outcomes are the same.
        """

    def delete(self, sid: str) -> None:
        """Delete the session ``sid``; deleting a missing session is fine.

        A rotated-away id reaches the session it redirects to during its
        grace period, so deleting it deletes that session too, following the
        redirects as :meth:`load` does, and then the redirects on the way:
        no redirect may be gone while the session it leads to lives. A
        redirect past its grace period counts as gone: it is deleted, not
        followed. A chain too long for :meth:`load` is not followed either:
        only ``sid`` is deleted.
        """

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        """Take the lock of ``sid`` for ``token`` unless somebody holds it.

        The lock expires after ``ttl`` milliseconds. Return whether it was
        taken.

        A ``with session.lock()`` block takes the lock, then loads the
        session: two round trips to a remote store. A store that can do both
        in one implements :class:`SessionStoreLockLoad` as well.
        """

    def unlock(self, sid: str, token: str) -> bool:
        """Release the lock of ``sid`` if ``token`` still holds it.

        Return whether it was released. A lock that expired and was taken by
        another owner is left alone.
        """

    def is_locked(self, sid: str) -> bool:
        """Return whether anybody holds the lock of ``sid``."""


#: What :meth:`SessionStoreAdmin.scan` finds: a session (a rotated-away id
#: that still redirects included) or a lock.
EntryKind = t.Literal["session", "lock"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a store holds under a session id, as an operator sees it.

    :param document: the stored document, ``{"data": {...}, "meta":
        {...}}``, its values as stored: tagged JSON decoded with plain
        :mod:`json`, so tags stay tags (see :func:`as_shown`). A
        rotated-away id shows its redirect, whose ``data`` is ``None`` and
        whose ``meta`` has ``redirectTo``; something that is no session
        shows what it is.
    :param ttl: its remaining lifetime in milliseconds, ``None`` without
        one.
    :param redirect_to: the id a rotated-away id leads to.
    :param lock_ttl: the remaining lifetime of the session's lock in
        milliseconds, ``None`` when nobody holds it.
    :param key: where the store keeps it, for a store of named keys such as
        Redis.
    """

    document: dict[str, t.Any]
    ttl: int | None
    redirect_to: str | None = None
    lock_ttl: int | None = None
    key: str | None = None


def as_shown(value: bytes | str) -> t.Any:
    """Return a stored JSON value as :class:`SessionRecord` shows it:
    decoded with plain :mod:`json`, or as text when it does not decode.
    """
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value.decode(errors="replace") if isinstance(value, bytes) else value


class SessionStoreLockLoad(SessionStore, t.Protocol):
    """A store that takes a session's lock and loads the session in one
    step: what ``with session.lock()`` starts with. Optional; the Redis and
    memory stores implement it.
    """

    def lock_and_load(
        self, sid: str, token: str, lock_ttl: int, *, ttl: int | None
    ) -> tuple[bool, StoredSession | None]:
        """Take the lock of ``sid`` as :meth:`~SessionStore.lock` does and,
        once it is taken, load the session as :meth:`~SessionStore.load`
        does, all in one step.

        Return whether the lock was taken and, if it was, what the load
        found (``None`` otherwise). Raises what ``load`` raises.
        """


class SessionStoreAdmin(SessionStore, t.Protocol):
    """A store that also gives operators a view of what it holds.

    The ``flask relay-session`` commands use these methods, and
    :meth:`~SessionStore.delete`, so they work on any store that implements
    them; both stores of the package do. Unlike the methods of
    :class:`SessionStore`, these look at what is stored as it is, whatever
    it holds, and may take several steps. A backend failure is raised as
    :class:`~flask_relay_session.SessionStoreError`, as for the others.
    """

    def ping(self) -> list[str]:
        """Check that the store answers, and make it ready to serve (the
        Redis store loads its scripts); return lines that describe it.
        """

    def scan(self, *, batch: int = 1000) -> t.Iterator[tuple[EntryKind, str]]:
        """Yield each session and each held lock as its kind and its id.

        A rotated-away id that still redirects is a session. An entry that
        comes or goes meanwhile may be missed, and one may be yielded twice
        (Redis's ``SCAN`` promises no better): the count is an estimate.

        :param batch: about how many entries to look at per step, for a
            store that walks them in steps (``SCAN``'s ``COUNT`` for Redis).
        """

    def size_hint(self) -> int:
        """Return about how many entries the store holds, sessions or not:
        the scale of what :meth:`scan` walks, to report progress against.
        """

    def show(self, sid: str) -> SessionRecord | None:
        """Return what is stored under ``sid``, or ``None`` for nothing.

        A rotated-away id shows its redirect: it is not followed.
        """

    def break_lock(self, sid: str) -> bool:
        """Release the lock of ``sid`` whoever holds it; return whether it
        was held.
        """


def missing_methods(store: object, protocol: type) -> list[str]:
    """Return the methods that ``protocol`` declares and ``store`` lacks.

    Only the methods declared in ``protocol`` itself count, not those of
    the protocols it extends.
    """
    return [
        name
        for name, member in vars(protocol).items()
        if callable(member)
        and not name.startswith("_")
        and not callable(getattr(store, name, None))
    ]
