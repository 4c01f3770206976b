"""The session object behind ``flask.session``.

A :class:`Session` is a mutable mapping that loads itself from the store the
first time a request reads it, and records the paths a request changes. At
the end of the request, or on :meth:`Session.save`, only those paths are sent
to the store, which merges them into the stored session atomically, so
requests that change different parts of one session never undo each other.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask.sessions import SessionMixin

from . import signals
from .config import MAX_DURATION
from .config import Settings
from .cookies import new_session_id
from .errors import SessionChainBrokenError
from .errors import SessionChainError
from .errors import SessionDepthError
from .errors import SessionLockError
from .errors import SessionSerializationError
from .errors import SessionStoreError
from .serialization import decode_key
from .serialization import dumps
from .serialization import encode_key
from .serialization import format_path
from .serialization import loads
from .stores.base import MAX_REDIRECT_DEPTH
from .stores.base import Change
from .stores.base import MergeResult
from .stores.base import MergeStatus
from .stores.base import SessionStore
from .tracking import DirtyPaths
from .tracking import Path
from .tracking import TrackedDict

_MISSING = object()

#: Debug lines name the session by the first 8 hex digits of its id and the
#: request by :attr:`Session.log_id`: ``[<log id>] <event> session <sid>…``.
logger = logging.getLogger("flask_relay_session")


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

    def wait(self, attempt: int) -> None:
        """Sleep before lock attempt ``attempt``: linear backoff with jitter.

        Attempt n waits n × ``RELAY_SESSION_LOCK_BACKOFF`` on average, spread
        over ±50 % so that requests that collided once do not retry at the
        same instants again.
        """
        time.sleep(
            self.settings.lock_backoff * attempt * random.uniform(0.5, 1.5) / 1000
        )

    def refresh_due(
        self, permanent: bool, expires_at: int, *, writing: bool = False
    ) -> bool:
        """Whether a session expiring at ``expires_at`` should be extended.

        ``RELAY_SESSION_ROLLING`` decides: always, never, or once less than
        ``(1 - r) * lifetime`` remains. As with Flask's cookie sessions,
        ``SESSION_REFRESH_EACH_REQUEST = False`` limits the refresh of a
        permanent session to requests that write to it, since its cookie
        must be sent again whenever its expiry moves.
        """
        rolling = self.settings.rolling
        if rolling is False:
            return False
        if permanent and not writing and not self.refresh_each_request:
            return False
        if rolling is True:
            return True
        return expires_at - self.now() < (1 - rolling) * self.lifetime


def _milliseconds(duration: float | timedelta) -> int:
    """Return a grace period in milliseconds, checked like the settings'."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if not 0 <= seconds <= MAX_DURATION.total_seconds():
        raise ValueError(
            "a grace period must be from 0 seconds to"
            f" {MAX_DURATION.days} days; got {duration!r}"
        )
    return round(seconds * 1000)


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

    #: Whether the request used the session. Flask 3.1.3's proxy sets it on
    #: every use; the mapping methods set it too, for older Flask.
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
        #: The id the lock was taken on, and the token that owns it.
        self._lock: tuple[str, str] | None = None
        self._forced = False
        self._read_keys: set[str] | None = set()
        self.accessed = False
        #: The session id sent in the response cookie differs from the one
        #: the request carried, or the cookie must be sent again. Set for
        #: the interface.
        self.cookie_outdated = False
        #: The stored session was deleted because it became empty. Set for
        #: the interface.
        self.emptied = False
        #: The expiry was extended during this request. Set for the
        #: interface.
        self.refreshed = False
        #: The id the client holds once the response is sent, ``None`` while
        #: none was sent or when it holds none. Set for the interface.
        self.client_sid: str | None = None
        #: The session was loaded by following a rotation redirect.
        self.is_redirected = False
        #: Names this session object, and so the request, in log lines: 8
        #: random hex digits, or the request's ``X-Request-ID`` (see
        #: :attr:`~flask_relay_session.interface.RelaySessionInterface.log_id_header`).
        self.log_id = secrets.token_hex(4)
        now = policy.now()
        #: The session id.
        self.sid = new_session_id() if sid is None else sid
        #: Nothing is stored under :attr:`sid` yet.
        self.new = sid is None
        self._loaded = self.new
        self._created_at = now
        self._expires_at = now + policy.lifetime if expires_at is None else expires_at

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
        return self._lock is not None

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
        self.accessed = True
        self._ensure_loaded()
        if self._read_keys is not None:
            self._read_keys.add(key)
        return self._root[key]

    def __setitem__(self, key: str, value: t.Any) -> None:
        self.accessed = True
        self._root[key] = value

    def __delitem__(self, key: str) -> None:
        self.accessed = True
        self._ensure_loaded()
        del self._root[key]

    def __iter__(self) -> t.Iterator[str]:
        self.accessed = True
        self._ensure_loaded()
        self._read_keys = None
        return iter(list(self._root))

    def __len__(self) -> int:
        self.accessed = True
        self._ensure_loaded()
        return len(self._root)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        self._ensure_loaded()
        return key in self._root

    def __reversed__(self) -> t.Iterator[str]:
        self.accessed = True
        self._ensure_loaded()
        self._read_keys = None
        return reversed(list(self._root))

    def __or__(self, other: t.Any) -> dict[str, t.Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: t.Any) -> dict[str, t.Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = dict(other)
        merged.update(self.copy())
        return merged

    def __ior__(self, other: t.Any) -> Session:
        self.update(other)
        return self

    def copy(self) -> dict[str, t.Any]:
        """Return a shallow copy as a plain ``dict``, as Flask's session does.

        The values it shares with the session are tracked, so changing them
        through the copy changes the session too.
        """
        return {key: self[key] for key in self}

    def popitem(self) -> tuple[str, t.Any]:
        """Remove and return the item set last, as ``dict.popitem`` does.

        :raises KeyError: the session is empty.
        """
        self.accessed = True
        self._ensure_loaded()
        if not self._root:
            raise KeyError("popitem(): the session is empty")
        return self._root.popitem()

    def clear(self) -> None:
        """Remove every key; the save deletes the stored session."""
        self.accessed = True
        self._ensure_loaded()
        self._root.clear()

    def __repr__(self) -> str:
        state = dict(self._root) if self._loaded else "not loaded"
        return f"<{type(self).__name__} {self.sid[:8]}… {state}>"

    # -- loading ---------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._reload()

    def _reload(self) -> None:
        """Load from the store, keeping pending changes on top.

        A new session has nothing stored yet, so there is nothing to load.
        """
        if self.new:
            self._loaded = True
            return
        policy = self._policy
        refresh = policy.refresh_due(self._permanent, self._expires_at)
        try:
            stored = policy.store.load(
                self.sid, ttl=policy.lifetime if refresh else None
            )
        except SessionStoreError:
            # A request that could not read its session must not write part
            # of it: the changes it made before the read are dropped.
            self.clear_dirty()
            raise
        except SessionChainError as error:
            raise self._chain_broken("load", error) from None
        self._replace_data({} if stored is None else stored.data)
        if stored is None:
            logger.debug(
                "[%s] load session %s…: missing, going on as a new session",
                self.log_id,
                self.sid[:8],
            )
            self._start_fresh()
            return
        logger.debug(
            "[%s] load session %s…: found, top-level keys: %d%s",
            self.log_id,
            self.sid[:8],
            len(stored.data),
            ", expiry refreshed" if refresh else "",
        )
        self.refreshed = self.refreshed or refresh
        if stored.redirected:
            logger.debug(
                "[%s] load session %s…: followed a rotation redirect to %s…",
                self.log_id,
                self.sid[:8],
                stored.sid[:8],
            )
            self.is_redirected = True
            self._switch_to(stored.sid)
            if self._lock is not None:
                # The data was read before this request held the new id's
                # lock: read it again under the lock.
                self._reload()
                return
        self._created_at = stored.created_at
        self._expires_at = stored.expires_at

    def _replace_data(self, data: dict[str, t.Any]) -> None:
        """Show ``data`` with this request's pending changes on top."""
        root = TrackedDict(data, self._dirty)
        for path in self._dirty:
            _place(root, path, _lookup(self._root, path))
        self._root = root
        self._loaded = True

    def _continue_as_new(self) -> None:
        """Go on as a new session holding only this request's own changes.

        Used when the stored session vanished under the request: it expired,
        or a concurrent logout destroyed it. What the request loaded from it
        must not come back under a new id, even when :attr:`modified` was
        set by hand: only the paths it changed are kept.
        """
        pending = self._encode(list(self._dirty))
        self._start_fresh()
        self._restore(pending)

    def _chain_broken(
        self, operation: str, error: SessionChainError
    ) -> SessionChainError:
        """Go on as a new, empty session after ``error``, and return it.

        The cookie leads to no live session: this request's changes are
        dropped, as the session they were meant for is gone, and the
        response drops the cookie. Reads and writes answer alike.
        """
        logger.debug(
            "[%s] %s session %s…: %s", self.log_id, operation, self.sid[:8], error
        )
        self.clear_dirty()
        self._root = TrackedDict({}, self._dirty)
        self._start_fresh()
        return error

    def _start_fresh(self) -> None:
        """Go on as a new session, under a new id, with nothing stored."""
        now = self._policy.now()
        self.new = True
        self._loaded = True
        self._created_at = now
        self._expires_at = now + self._policy.lifetime
        self._switch_to(new_session_id())

    def _switch_to(self, sid: str) -> None:
        """Go on under ``sid``, taking the lock along if this request holds it."""
        self.sid = sid
        self.cookie_outdated = True
        if self._lock is not None and self._lock[0] != sid:
            old_sid, token = self._lock
            self._lock = None
            try:
                self._acquire()
            finally:
                self._policy.store.unlock(old_sid, token)

    # -- saving ----------------------------------------------------------

    def _pending_paths(self) -> list[Path]:
        if self.new:
            return [(key,) for key in self._root] if self._dirty else []
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

    def _changes(self) -> list[Change]:
        """The pending changes, encoded for the store."""
        changes = [
            Change(tuple(encode_key(key) for key in path), value)
            for path, value in self._encode(self._pending_paths())
        ]
        size = sum(len(change.value or b"") for change in changes)
        limit = self._policy.settings.max_size
        if size > limit:
            raise SessionSerializationError(
                f"the changes to save are {size} bytes, more than"
                f" RELAY_SESSION_MAX_SIZE ({limit} bytes); nothing was saved"
            )
        return changes

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
        changes = self._changes()
        if not changes:
            self.clear_dirty()
            return
        policy = self._policy
        release = release_lock and self._lock is not None
        result = self._write(
            lambda lock_token: policy.store.merge(
                self.sid,
                changes,
                now=policy.now(),
                ttl=self._write_ttl(),
                create=self.new,
                lock_token=lock_token,
                max_size=policy.settings.max_size,
                release_lock=release,
            )
        )
        if result.status is MergeStatus.MISSING:
            # The session expired or was destroyed under this request.
            logger.debug(
                "[%s] save session %s…: missing, saving as a new session",
                self.log_id,
                self.sid[:8],
            )
            self._continue_as_new()
            self._save(release_lock=release_lock)
            return
        if release:
            self._lock = None
            logger.debug("[%s] unlock session %s…: released", self.log_id, self.sid[:8])
        created = self.new
        self._saved(result)
        self._announce_save(changes, created=created, emptied=result.emptied)

    def _announce_save(
        self, changes: list[Change], *, created: bool, emptied: bool
    ) -> None:
        """Log a save and send the signals about it, if anyone listens."""
        if created and not emptied and signals.wanted(signals.session_created):
            signals.send(signals.session_created, session=self, sid=self.sid)
        debug = logger.isEnabledFor(logging.DEBUG)
        if not (debug or signals.wanted(signals.session_saved)):
            return
        paths = frozenset(
            tuple(decode_key(key) if key[:1] == " " else key for key in change.path)
            for change in changes
        )
        if debug:
            logger.debug(
                "[%s] save session %s…: %s%s",
                self.log_id,
                self.sid[:8],
                ", ".join(sorted(format_path(path) for path in paths)),
                " (new session)"
                if created
                else " (emptied, deleted)"
                if emptied
                else "",
            )
        if signals.wanted(signals.session_saved):
            signals.send(
                signals.session_saved,
                session=self,
                sid=self.sid,
                paths=paths,
                created=created,
                emptied=emptied,
            )

    def _write_ttl(self) -> int | None:
        """The lifetime a write sets, or ``None`` to keep the expiry.

        An expiry this request already refreshed (when it loaded the session,
        or in an earlier save) is kept.
        """
        policy = self._policy
        if self.new:
            return policy.lifetime
        if not self.refreshed and policy.refresh_due(
            self._permanent, self._expires_at, writing=True
        ):
            return policy.lifetime
        return None

    def _saved(self, result: MergeResult) -> None:
        self._created_at = result.created_at
        self._expires_at = result.expires_at
        self.emptied = result.emptied
        self.new = False
        self.refreshed = True
        self.cookie_outdated = True
        self.clear_dirty()

    def _write(
        self, write: t.Callable[[str | None], MergeResult], operation: str = "save"
    ) -> MergeResult:
        """Run a merge or rotation until it is done or the session is gone.

        Follows rotation redirects and, without the lock, waits while another
        request holds it. ``operation`` names the write in logs and signals.
        """
        settings = self._policy.settings
        waits = redirects = 0
        while True:
            lock_token = self._lock[1] if self._lock is not None else None
            result = write(lock_token)
            status = result.status
            if status is MergeStatus.DONE:
                return result
            if status is MergeStatus.MISSING:
                if redirects:
                    # As a load that follows a redirect to a missing session.
                    raise self._chain_broken(
                        operation,
                        SessionChainBrokenError(
                            "a rotated session id leads to a session that no"
                            " longer exists"
                        ),
                    )
                return result
            if status is MergeStatus.REDIRECTED:
                redirects += 1
                if redirects > MAX_REDIRECT_DEPTH:
                    raise self._chain_broken(
                        operation,
                        SessionDepthError(
                            "a rotated session id was rotated more than"
                            f" {MAX_REDIRECT_DEPTH} times in a row"
                        ),
                    )
                assert result.redirect_to is not None
                logger.debug(
                    "[%s] %s session %s…: followed a rotation redirect to %s…",
                    self.log_id,
                    operation,
                    self.sid[:8],
                    result.redirect_to[:8],
                )
                self.is_redirected = True
                self._switch_to(result.redirect_to)
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
                self._lock_timed_out(operation)
                raise SessionLockError(
                    "another request held the session lock for too long; gave"
                    f" up saving after {settings.lock_retries} retries. Raise"
                    " RELAY_SESSION_LOCK_RETRIES or RELAY_SESSION_LOCK_BACKOFF"
                    " to wait longer."
                )
            logger.debug(
                "[%s] %s session %s…: locked by another request, wait %d",
                self.log_id,
                operation,
                self.sid[:8],
                waits,
            )
            self._policy.wait(waits)

    def _lock_timed_out(self, operation: str) -> None:
        """Warn that a lock wait ran out, and send :data:`~.signals.lock_timeout`."""
        retries = self._policy.settings.lock_retries
        logger.warning(
            "[%s] %s session %s…: gave up waiting for the session lock after"
            " %d retries",
            self.log_id,
            operation,
            self.sid[:8],
            retries,
        )
        if signals.wanted(signals.lock_timeout):
            signals.send(
                signals.lock_timeout,
                session=self,
                sid=self.sid,
                operation=operation,
                retries=retries,
            )

    def refresh_untouched(self) -> None:
        """Extend the expiry of a session this request never loaded.

        Called by the interface at the end of a request.

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
            a timedelta; by default ``RELAY_SESSION_ROTATION_GRACE_PERIOD``,
            itself by default the session lifetime.
        """
        policy = self._policy
        new_sid = new_session_id()
        if self.new:
            self._switch_to(new_sid)
            self._announce_rotation(None)
            return
        if self._loaded and not self._root:
            # Emptied by this request: empty sessions are never stored. The
            # save deletes it, unless a concurrent request added to it.
            self._save(release_lock=False)
            if self.emptied:
                self._start_fresh()
                self._announce_rotation(None)
                return
        changes = self._changes()
        if grace_period is None:
            grace = policy.settings.rotation_grace_period or policy.lifetime
        else:
            grace = _milliseconds(grace_period)
        result = self._write(
            lambda lock_token: policy.store.rotate(
                self.sid,
                new_sid,
                changes,
                now=policy.now(),
                ttl=policy.lifetime,
                grace=grace,
                lock_token=lock_token,
                max_size=policy.settings.max_size,
            ),
            "rotate",
        )
        if result.status is MergeStatus.MISSING:
            self._continue_as_new()
            self._announce_rotation(None)
            return
        old_sid = self.sid
        self._switch_to(new_sid)
        self._saved(result)
        self._announce_rotation(old_sid)

    def _announce_rotation(self, old_sid: str | None) -> None:
        """Log a rotation and send :data:`~.signals.session_rotated`.

        ``old_sid`` is the id left redirecting to the new one, or ``None``
        when nothing was stored under the old id.
        """
        logger.debug(
            "[%s] rotate session %s… to %s…%s",
            self.log_id,
            "(new)" if old_sid is None else old_sid[:8],
            self.sid[:8],
            "" if old_sid is None else ", the old id redirects",
        )
        if signals.wanted(signals.session_rotated):
            signals.send(
                signals.session_rotated, session=self, sid=self.sid, old_sid=old_sid
            )

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
        self.clear_dirty()
        self._root = TrackedDict({}, self._dirty)
        self._start_fresh()
        logger.debug("[%s] destroy session %s…", self.log_id, old_sid[:8])
        if signals.wanted(signals.session_destroyed):
            signals.send(signals.session_destroyed, session=self, sid=old_sid)

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
        store (three round trips in all: lock, load, save). If the block
        raises, the lock is released and the changes made inside the block
        are dropped; changes made before the block stay pending. Nesting is
        allowed; only the outermost block locks and saves.

        :raises SessionLockError: the lock could not be acquired, or it
            expired before the block ended and another request took it.
        """
        if self._lock is not None:
            yield self
            return
        before = self._encode(self._pending_paths())
        self._acquire()
        try:
            self._reload()
            yield self
            self._save(release_lock=True)
        except SessionChainError:
            # The session is gone: nothing of this request is kept.
            raise
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
                policy.wait(attempt)
            if policy.store.lock(self.sid, token, settings.lock_ttl):
                self._lock = (self.sid, token)
                logger.debug(
                    "[%s] lock session %s…: acquired, attempt %d",
                    self.log_id,
                    self.sid[:8],
                    attempt + 1,
                )
                return
        self._lock_timed_out("acquire")
        raise SessionLockError(
            f"could not acquire the session lock after {settings.lock_retries}"
            " retries. Raise RELAY_SESSION_LOCK_RETRIES or"
            " RELAY_SESSION_LOCK_BACKOFF to wait longer."
        )

    def release_lock(self) -> None:
        """Release the session lock if this request holds it."""
        lock, self._lock = self._lock, None
        if lock is not None:
            released = self._policy.store.unlock(*lock)
            logger.debug(
                "[%s] unlock session %s…: %s",
                self.log_id,
                lock[0][:8],
                "released" if released else "not held any more (it expired)",
            )

    def _restore(self, pending: list[tuple[Path, bytes | None]]) -> None:
        """Drop every change but ``pending``; the next read loads again."""
        self.clear_dirty()
        self._root = TrackedDict({}, self._dirty)
        for path, value in pending:
            _place(self._root, path, _MISSING if value is None else loads(value))
            self._dirty.mark(path)
        self._loaded = self.new
