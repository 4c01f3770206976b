"""Sessions in Redis, merged by Lua scripts.

Every session has a key, ``<prefix>{<sid>}``, whose Redis TTL is the
session's remaining lifetime, and a lock, ``<prefix><lock_prefix>{<sid>}``.
A merge that releases the lock leaves a receipt for a minute,
``<prefix><lock_prefix>released:{<sid>}``, so that a re-sent merge gets the
same reply. The braces are a Redis Cluster hash tag: a session and its lock
live in one slot, and every script touches the keys of one session only, so
every operation works on a cluster. What the session key holds depends on the
layout, ``"json"`` or ``"hash"`` (see :mod:`flask_relay_session.stores.layouts`).
"""

from __future__ import annotations

import logging
import time
import typing as t

from redis.exceptions import RedisError
from redis.exceptions import ResponseError

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from ..errors import SessionStoreError
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import MergeResult
from .base import MergeStatus
from .base import StoredSession
from .base import too_large
from .layouts import LAYOUTS
from .layouts import NotASession
from .scripts import LuaScript
from .scripts import RedisClient
from .scripts import store_failed
from .scripts import text

logger = logging.getLogger("flask_relay_session")

#: How often a rotation copies a session that keeps changing before it
#: gives up and lets the caller wait and retry.
ROTATE_ATTEMPTS = 5


def _now_ms() -> int:
    return int(time.time() * 1000)


def _wrong_type(reply: object) -> bool:
    """Whether a reply is Redis's error for a key of another type than its
    command reads: the session key holds something that is not a session.
    """
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


def _foreign(sid: str, what: str) -> None:
    """Log that the key of the session ``sid`` holds ``what``, which is not
    a session; ``what`` says what in words, never quoting the data.
    """
    logger.error(
        "session %s… holds something that is not a session (%s); it is left"
        " in place for inspection and the request goes on with a new session",
        sid[:8],
        what,
    )


class RedisSessionStore:
    """A :class:`~flask_relay_session.SessionStore` in Redis.

    Works with a standalone :class:`redis.Redis` client, a
    :class:`redis.cluster.RedisCluster` and a Sentinel master, speaking RESP2
    or RESP3, with ``decode_responses`` on or off.

    :param redis: the client.
    :param prefix: the prefix of session keys.
    :param lock_prefix: the prefix of lock keys, after ``prefix``.
    :param preload_script: load the scripts now, instead of sending them
        with the first call that needs them.
    :param layout: ``"json"``, one JSON string per session, or ``"hash"``,
        one hash per session with a field per top-level key (see the
        module's documentation).
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "sess:",
        lock_prefix: str = "lock:",
        preload_script: bool = False,
        layout: str = "json",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f'layout must be "json" or "hash", not {layout!r}')
        self.redis = redis
        self.prefix = prefix
        self.lock_prefix = lock_prefix
        #: How sessions are kept: ``"json"`` or ``"hash"``.
        self.layout = layout
        self._layout = LAYOUTS[layout]()
        self._lock = LuaScript("lock")
        self._unlock = LuaScript("unlock")
        if preload_script:
            self.load_scripts()

    @property
    def scripts(self) -> tuple[LuaScript, ...]:
        """The Lua scripts this store runs."""
        return (*self._layout.scripts, self._lock, self._unlock)

    def load_scripts(self) -> None:
        """Load every script into the server with ``SCRIPT LOAD``."""
        try:
            for script in self.scripts:
                script.load(self.redis)
        except RedisError as error:
            raise SessionStoreError(f"cannot load the Lua scripts: {error}") from error

    def session_key(self, sid: str) -> str:
        """Return the key of the session ``sid``."""
        return f"{self.prefix}{{{sid}}}"

    def lock_key(self, sid: str) -> str:
        """Return the key of the lock of the session ``sid``."""
        return f"{self.prefix}{self.lock_prefix}{{{sid}}}"

    def receipt_key(self, sid: str) -> str:
        """Return the key of the receipt a merge that released the lock of
        the session ``sid`` leaves (see :meth:`merge`).
        """
        return f"{self.prefix}{self.lock_prefix}released:{{{sid}}}"

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Load the session ``sid``, following rotation redirects.

        One round trip, expiry refresh included, unless the id was rotated:
        a pipeline of ``GET`` (``HGETALL`` for the hash layout) and
        ``PEXPIRE`` (or ``PTTL`` when no refresh is due). Plain commands, not
        a script: Redis builds a script's reply at about 1.4 µs per KB.

        The pipeline is not a transaction (a cluster cannot pipeline one
        across slots, and the hops of a chain are in different slots), so a
        rotation may land between the read and the ``PEXPIRE``, and that
        ``PEXPIRE`` may hit a redirect. A redirect carries the end of its
        grace period: each hop's pipeline sets it back with ``PEXPIREAT``
        and asks ``PTTL``, and a redirect past its end counts as gone. The
        scripts that write check that end too. A chain of several redirects
        is shortened: each id on it is pointed straight at the session.

        A key that holds something that is not a session (see
        :mod:`~flask_relay_session.stores.layouts`) is logged and left as it
        is, and the load answers ``None``. The ``PEXPIRE`` pipelined with the
        read reaches it before it is read, so it lives on as long as the
        session would have.
        """
        layout = self._layout
        visited: list[str] = []
        #: The redirect followed last, and the end of its grace period.
        previous: tuple[str, int] | None = None
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            key = self.session_key(sid)
            try:
                pipe = self.redis.pipeline(transaction=False)
                if previous is not None:
                    pipe.pexpireat(*previous)
                    pipe.pttl(previous[0])
                layout.fetch(pipe, key)
                if ttl is None:
                    pipe.pttl(key)
                else:
                    pipe.pexpire(key, ttl)
                # A key of the wrong type answers WRONGTYPE, which is no
                # failure of the store.
                replies = pipe.execute(raise_on_error=False)
            except RedisError as error:
                raise store_failed(error) from error
            for reply in replies:
                if isinstance(reply, RedisError) and not _wrong_type(reply):
                    raise store_failed(reply) from reply
            if previous is not None:
                # PTTL -2: the redirect followed last was past its grace
                # period, and PEXPIREAT dropped it.
                redirect_gone = replies[1] == -2
                replies = replies[2:]
            else:
                redirect_gone = False
            snapshot, remaining = replies
            if _wrong_type(snapshot):
                _foreign(sid, f"a key that is not a Redis {layout.redis_type}")
                return None
            if redirect_gone or layout.missing(snapshot):
                # The id asked for is gone, or a link of its chain is.
                if not visited or (redirect_gone and len(visited) == 1):
                    return None
                raise SessionChainBrokenError(
                    f"session {visited[0][:8]}… was rotated to a session that"
                    " no longer exists"
                )
            try:
                redirect = layout.redirect(snapshot)
                if redirect is not None:
                    visited.append(sid)
                    sid, expires = redirect
                    previous = None if expires is None else (key, expires)
                    continue
                data, created_at = layout.read(snapshot)
            except NotASession as error:
                _foreign(sid, str(error))
                return None
            for rotated in visited[:-1]:
                self._call(layout.repoint, [self.session_key(rotated)], [sid])
            return StoredSession(
                sid=sid,
                data=data,
                created_at=created_at,
                expires_at=_now_ms() + (int(remaining) if ttl is None else ttl),
                redirected=bool(visited),
            )
        raise SessionDepthError(
            f"session {visited[0][:8]}… was rotated more than"
            f" {MAX_REDIRECT_DEPTH} times in a row"
        )

    def touch(self, sid: str, *, ttl: int) -> bool:
        """Extend the lifetime of ``sid`` with one script that ends in a
        ``PEXPIRE``; a redirect's grace period is left as it is.
        """
        return bool(self._call(self._layout.touch, [self.session_key(sid)], [ttl]))

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
        """Apply ``changes`` with one run of the merge script.

        With ``release_lock``, the script also deletes the lock once the
        write is done, and leaves a receipt of its reply for a minute: a
        merge re-sent after a lost reply finds the lock gone and answers
        with the receipt instead of :attr:`MergeStatus.LOCK_LOST`.

        A key that holds something that is not a session is logged and left
        as it is, and the merge answers :attr:`MergeStatus.MISSING`, even
        with ``create``: the caller goes on with a new id.
        """
        args: list[t.Any] = [
            lock_token or "",
            now,
            "" if ttl is None else ttl,
            "1" if create else "0",
            max_size,
            len(changes),
        ]
        for change in changes:
            if change.value is None:
                args += ("d", len(change.path), *change.path)
            else:
                args += ("s", len(change.path), *change.path, change.value)
        keys = [self.session_key(sid), self.lock_key(sid)]
        if release_lock and lock_token:
            keys.append(self.receipt_key(sid))
        reply = self._call(self._layout.merge, keys, args)
        status = text(reply[0])
        if status == "done":
            return MergeResult(
                MergeStatus.DONE,
                created_at=int(reply[1]),
                expires_at=int(reply[2]),
                emptied=bool(int(reply[3])),
            )
        if status == "redirected":
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=text(reply[1]))
        if status == "too_large":
            raise too_large(int(reply[1]), max_size)
        if status == "foreign":
            _foreign(sid, text(reply[1]))
            return MergeResult(MergeStatus.MISSING)
        return MergeResult(MergeStatus(status))

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
        """Move the session to ``new_sid`` and leave a redirect behind.

        The two ids hash to different cluster slots, so this takes three
        steps, ordered so that nothing is lost and no reader is ever sent to
        a missing session: read the session, write its copy (with
        ``changes``) under ``new_sid``, then replace the old session with
        the redirect, but only if it did not change since it was read; if it
        did, copy it again.

        A key that holds something that is not a session is logged and left
        as it is, and the rotation answers :attr:`MergeStatus.MISSING`.
        """
        layout = self._layout
        key = self.session_key(sid)
        try:
            snapshot = layout.fetch(self.redis, key)
        except RedisError as error:
            if not _wrong_type(error):
                raise store_failed(error) from error
            _foreign(sid, f"a key that is not a Redis {layout.redis_type}")
            return MergeResult(MergeStatus.MISSING)
        if layout.missing(snapshot):
            return MergeResult(MergeStatus.MISSING)
        try:
            redirect = layout.redirect(snapshot)
        except NotASession as error:
            _foreign(sid, str(error))
            return MergeResult(MergeStatus.MISSING)
        if redirect is not None:
            target, expires = redirect
            if expires is not None and not self._restore_grace(key, expires):
                return MergeResult(MergeStatus.MISSING)
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=target)
        for attempt in range(ROTATE_ATTEMPTS):
            try:
                created_at = layout.copy(
                    self,
                    new_sid,
                    snapshot,
                    changes,
                    now=now,
                    ttl=ttl,
                    max_size=max_size,
                )
            except NotASession as error:
                if attempt:
                    # The copy of an earlier attempt.
                    self.delete(new_sid)
                _foreign(sid, str(error))
                return MergeResult(MergeStatus.MISSING)
            reply = self._call(
                layout.rotate,
                [self.session_key(sid), self.lock_key(sid)],
                [lock_token or "", layout.fingerprint(snapshot), new_sid, grace],
            )
            status = text(reply[0])
            if status == "done" or (
                # A client that re-sent the script after a lost reply finds
                # its own rotation already done.
                status == "redirected" and text(reply[1]) == new_sid
            ):
                return MergeResult(
                    MergeStatus.DONE, created_at=created_at, expires_at=now + ttl
                )
            if status != "changed":
                self.delete(new_sid)
                if status == "redirected":
                    return MergeResult(
                        MergeStatus.REDIRECTED, redirect_to=text(reply[1])
                    )
                if status == "foreign":
                    _foreign(sid, text(reply[1]))
                    return MergeResult(MergeStatus.MISSING)
                return MergeResult(MergeStatus(status))
            snapshot = reply[1]
        self.delete(new_sid)
        return MergeResult(MergeStatus.LOCKED)

    def _restore_grace(self, key: str, expires: int) -> bool:
        """Set the end of a redirect's grace period back to ``expires``, in
        case a load's ``PEXPIRE`` extended it; return whether it lasts.
        """
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.pexpireat(key, expires)
            pipe.pttl(key)
            return bool(pipe.execute()[1] != -2)
        except RedisError as error:
            raise store_failed(error) from error

    def delete(self, sid: str) -> None:
        """Delete the session ``sid``, following rotation redirects.

        One run of the destroy script per hop: it deletes a session, or a
        redirect past its grace period, and names the target of a redirect
        within it, which it leaves in place. The hops of a chain are in
        different cluster slots; the redirects are deleted last, in one
        pipeline, once the session they lead to is gone, so that no
        redirect is ever gone while its session lives. A session that was
        never rotated costs one round trip, as a ``DEL`` would.

        A rotation of the session racing this leaves no copy behind. If the
        script deletes the session before the rotation turns it into a
        redirect, the rotation finds it missing and deletes its copy (see
        :meth:`rotate`); if after, the script finds the redirect and the
        next hop deletes the copy.
        """
        redirects: list[str] = []
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            reply = self._call(self._layout.destroy, [self.session_key(sid)], [])
            if text(reply[0]) != "redirected":
                break
            redirects.append(sid)
            sid = text(reply[1])
        else:
            # Too long a chain leads nowhere, as for load: only the id's own
            # redirect goes, and the ids further on keep theirs.
            del redirects[1:]
        if not redirects:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for rotated in redirects:
                pipe.delete(self.session_key(rotated))
            pipe.execute()
        except RedisError as error:
            raise store_failed(error) from error

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        """Take the lock with ``SET <lock key> <token> NX PX <ttl>``.

        A script, so that a client that re-sent it after a lost reply finds
        its own token and does not wait for its own lock to expire.
        """
        return bool(self._call(self._lock, [self.lock_key(sid)], [token, ttl]))

    def unlock(self, sid: str, token: str) -> bool:
        """Release the lock if ``token`` holds it, with a compare-and-delete."""
        return bool(self._call(self._unlock, [self.lock_key(sid)], [token]))

    def is_locked(self, sid: str) -> bool:
        """Return whether the lock key exists."""
        try:
            return bool(self.redis.exists(self.lock_key(sid)))
        except RedisError as error:
            raise store_failed(error) from error

    def _call(
        self, script: LuaScript, keys: t.Sequence[str], args: t.Sequence[t.Any]
    ) -> t.Any:
        try:
            return script(self.redis, keys, args)
        except RedisError as error:
            raise store_failed(error) from error
