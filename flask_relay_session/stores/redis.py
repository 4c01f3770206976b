"""Sessions in Redis, merged by Lua scripts.

Every session has a key, ``<prefix>{<sid>}``, whose Redis TTL is the
session's remaining lifetime, and a lock, ``<prefix><lock_prefix>{<sid>}``.
A merge that releases the lock leaves a receipt for a minute,
``<prefix><lock_prefix>released:{<sid>}``, so that a re-sent merge gets the
same reply. The braces are a Redis Cluster hash tag: a session and its lock
live in one slot, and every script touches the keys of one session only, so
every operation works on a cluster. What the session key holds depends on the
layout, ``"json"`` or ``"hash"`` (see :mod:`flask_relay_session.stores.layouts`).

This module holds :class:`RedisSessionStore` and the path of the session
data: the keys, the scripts, loads, writes, rotations and the lock. The
registries of users are in :mod:`~flask_relay_session.stores.redis_users`,
the operator's view in :mod:`~flask_relay_session.stores.redis_admin`, and
what they all share, :func:`~.redis_common.redis_errors` first, in
:mod:`~flask_relay_session.stores.redis_common`.
"""

from __future__ import annotations

import typing as t

from redis.exceptions import NoScriptError
from redis.exceptions import RedisError
from redis.exceptions import ResponseError

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import MergeResult
from .base import MergeStatus
from .base import StoredSession
from .base import too_large
from .layouts import LAYOUTS
from .layouts import Command
from .layouts import NotASession
from .layouts import text
from .redis_admin import RedisAdminMixin
from .redis_common import RedisClient
from .redis_common import _foreign
from .redis_common import _now_ms
from .redis_common import _registration_args
from .redis_common import _wrong_type
from .redis_common import redis_errors
from .redis_users import RedisUsersMixin
from .scripts import LuaScript
from .scripts import ScriptCall
from .users import Registration
from .users import escape_user_id
from .wire import round_trip

#: How often a rotation copies a session that keeps changing before it
#: gives up and lets the caller wait and retry.
ROTATE_ATTEMPTS = 5


class _NotLocked:
    """What a load that had to take the lock first answers when it was not
    taken (see :meth:`RedisSessionStore.lock_and_load`).
    """


_NOT_LOCKED = _NotLocked()


class RedisSessionStore(RedisUsersMixin, RedisAdminMixin):
    """A :class:`~flask_relay_session.SessionStore` in Redis.

    Works with a standalone :class:`redis.Redis` client, a
    :class:`redis.cluster.RedisCluster` and a Sentinel master, speaking RESP2
    or RESP3, with ``decode_responses`` on or off. It also implements
    :class:`~flask_relay_session.stores.users.SessionStoreUsers`, with the
    methods of :class:`.redis_users.RedisUsersMixin`, and
    :class:`~flask_relay_session.stores.SessionStoreAdmin`, for the
    ``flask relay-session`` commands, with those of
    :class:`.redis_admin.RedisAdminMixin`.

    :param redis: the client.
    :param prefix: the prefix of session keys.
    :param lock_prefix: the prefix of lock keys, after ``prefix``.
    :param preload_script: load the scripts now, instead of sending them
        with the first call that needs them.
    :param layout: ``"json"``, one JSON string per session, or ``"hash"``,
        one hash per session with a field per top-level key (see the
        module's documentation).
    :param user_prefix: the prefix of the registries of users
        (:class:`~flask_relay_session.stores.users.SessionStoreUsers`),
        after ``prefix``: ``<prefix><user_prefix>{<user id>}``. It must
        differ from the lock keys' prefix.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "sess:",
        lock_prefix: str = "lock:",
        preload_script: bool = False,
        layout: str = "json",
        user_prefix: str = "user:",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f'layout must be "json" or "hash", not {layout!r}')
        self.redis = redis
        self.prefix = prefix
        self.lock_prefix = lock_prefix
        if user_prefix in (lock_prefix, f"{lock_prefix}released:"):
            raise ValueError(
                f"user_prefix {user_prefix!r} must differ from the lock keys'"
                f" prefixes, {lock_prefix!r} and {lock_prefix + 'released:'!r}"
            )
        #: The prefix of the registries of users, after ``prefix``.
        self.user_prefix = user_prefix
        #: How sessions are kept: ``"json"`` or ``"hash"``.
        self.layout = layout
        self._layout = LAYOUTS[layout]()
        self._lock = LuaScript("lock")
        self._unlock = LuaScript("unlock")
        self._user_register = LuaScript("user_register")
        #: The SHA1 digests of the scripts sent to the server already.
        self._sent: set[str] = set()
        if preload_script:
            self.load_scripts()

    @property
    def scripts(self) -> tuple[LuaScript, ...]:
        """The Lua scripts this store runs."""
        return (*self._layout.scripts, self._lock, self._unlock, self._user_register)

    def load_scripts(self) -> None:
        """Load every script into the server with ``SCRIPT LOAD``."""
        for script in self.scripts:
            with redis_errors(script):
                self.redis.script_load(script.source)
            self._sent.add(script.sha)

    def session_key(self, sid: str) -> str:
        """Return the key of the session ``sid``."""
        return f"{self.prefix}{{{sid}}}"

    def lock_key(self, sid: str) -> str:
        """Return the key of the lock of the session ``sid``."""
        return f"{self.prefix}{self.lock_prefix}{{{sid}}}"

    def user_key(self, user_id: str) -> str:
        """Return the key of the registry of the user ``user_id``: the user
        id, escaped (:func:`~.users.escape_user_id`), is its hash tag.
        """
        return f"{self.prefix}{self.user_prefix}{{{escape_user_id(user_id)}}}"

    def receipt_key(self, sid: str) -> str:
        """Return the key of the receipt a merge that released the lock of
        the session ``sid`` leaves (see :meth:`merge`).
        """
        return f"{self.prefix}{self.lock_prefix}released:{{{sid}}}"

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Load the session ``sid``, following rotation redirects.

        One round trip, expiry refresh included, unless the id was rotated:
        the layout's :meth:`~.layouts.Layout.load_commands`, plain commands,
        not a script (Redis builds a script's reply at about 1.4 µs per KB):
        one ``GETEX`` for the JSON layout, ``HGETALL`` and ``PEXPIRE`` for
        the hash layout; with no refresh due, the read and a ``PTTL``. They
        go in one write (:func:`~.wire.round_trip`).

        Several commands are not a transaction (a cluster cannot pipeline
        one across slots, and the hops of a chain are in different slots),
        so a rotation may land between the read and the ``PEXPIRE``, and
        that ``PEXPIRE`` may hit a redirect. A redirect carries the end of
        its grace period: each hop's pipeline sets it back with
        ``PEXPIREAT`` and asks ``PTTL``, and a redirect past its end counts
        as gone. The scripts that write check that end too. A chain of
        several redirects is shortened: each id on it is pointed straight
        at the session.

        A key that holds something that is not a session (see
        :mod:`~flask_relay_session.stores.layouts`) is logged and left as it
        is, and the load answers ``None``. A ``PEXPIRE`` sent with the read
        reaches it before it is read, so it lives on as long as the session
        would have; a ``GETEX`` leaves a key of another type untouched.
        """
        stored = self._load(sid, ttl, lock=None)
        assert not isinstance(stored, _NotLocked)
        return stored

    def lock_and_load(
        self, sid: str, token: str, lock_ttl: int, *, ttl: int | None
    ) -> tuple[bool, StoredSession | None]:
        """Take the lock as :meth:`lock` does and load the session as
        :meth:`load` does, in one round trip: the lock script pipelined in
        front of the load's commands, which Redis runs after it, on the same
        node (the lock key and the session key share a hash slot). When the
        lock is taken by another request, what the load read is dropped.
        """
        lock = self._lock([self.lock_key(sid)], [token, lock_ttl])
        if lock.script.sha in self._sent:
            try:
                stored = self._load(sid, ttl, lock=lock)
            except NoScriptError:
                pass  # The server forgot the script: run it on its own.
            else:
                if isinstance(stored, _NotLocked):
                    return False, None
                return True, stored
        if not self._send(lock):
            return False, None
        return True, self.load(sid, ttl=ttl)

    def _load(
        self, sid: str, ttl: int | None, *, lock: ScriptCall | None
    ) -> StoredSession | None | _NotLocked:
        """:meth:`load`, after taking ``lock`` in the same pipeline if given:
        :data:`_NOT_LOCKED` when it was not taken.

        :raises NoScriptError: the server did not know the lock script.
        """
        layout = self._layout
        visited: list[str] = []
        #: The redirect followed last, and the end of its grace period.
        previous: tuple[str, int] | None = None
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            key = self.session_key(sid)
            commands: list[tuple[t.Any, ...]] = []
            if lock is not None:
                # EVALSHA as a plain command: redis-py's cluster pipeline
                # refuses its evalsha(), though every key here is in one slot.
                commands.append(
                    ("EVALSHA", lock.script.sha, len(lock.keys), *lock.keys, *lock.args)
                )
            if previous is not None:
                commands += [("PEXPIREAT", *previous), ("PTTL", previous[0])]
            commands += layout.load_commands(key, ttl)
            with redis_errors():
                # A key of the wrong type answers WRONGTYPE, which is no
                # failure of the store.
                replies = round_trip(self.redis, commands)
            if lock is not None and isinstance(replies[0], NoScriptError):
                raise replies[0]
            with redis_errors(None if lock is None else lock.script):
                for reply in replies:
                    if isinstance(reply, RedisError) and not _wrong_type(reply):
                        raise reply
            if lock is not None:
                if not replies[0]:
                    return _NOT_LOCKED
                replies = replies[1:]
                # The lock is held: later hops need not take it again.
                lock = None
            if previous is not None:
                # PTTL -2: the redirect followed last was past its grace
                # period, and PEXPIREAT dropped it.
                redirect_gone = replies[1] == -2
                replies = replies[2:]
            else:
                redirect_gone = False
            snapshot = replies[0]
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
                data, created_at, owner = layout.read(snapshot)
            except NotASession as error:
                _foreign(sid, str(error))
                return None
            for rotated in visited[:-1]:
                self._send(layout.repoint([self.session_key(rotated)], [sid]))
            return StoredSession(
                sid=sid,
                data=data,
                created_at=created_at,
                expires_at=_now_ms() + (int(replies[1]) if ttl is None else ttl),
                redirected=bool(visited),
                user_id=owner.user,
                last_seen=None if owner.user is None else owner.seen,
            )
        raise SessionDepthError(
            f"session {visited[0][:8]}… was rotated more than"
            f" {MAX_REDIRECT_DEPTH} times in a row"
        )

    def touch(self, sid: str, *, ttl: int) -> bool:
        """Extend the lifetime of ``sid`` with one script that ends in a
        ``PEXPIRE``; a redirect's grace period is left as it is.
        """
        return self.touch_owner(sid, ttl=ttl) is not None

    def touch_owner(self, sid: str, *, ttl: int) -> tuple[str | None, int] | None:
        """Touch as :meth:`touch` does, in the same script run, and return
        the user the session is bound to and when it was last seen;
        ``None`` when the session does not exist.
        """
        reply = self._send(self._layout.touch([self.session_key(sid)], [ttl]))
        if not reply:
            return None
        return text(reply[1]) or None, int(reply[2])

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
        """Apply ``changes`` with one run of the merge script.

        With ``release_lock``, the script also deletes the lock once the
        write is done, and leaves a receipt of its reply for a minute: a
        merge re-sent after a lost reply finds the lock gone and answers
        with the receipt instead of :attr:`MergeStatus.LOCK_LOST`.

        With ``registration``, the script records it too, and the user's
        registry is written in the same round trip (two on a cluster, see
        :meth:`_in_order`): before the session, or after it for a session
        the merge creates (see :mod:`~flask_relay_session.stores.users`).

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
        if registration is None:
            reply = self._send(self._layout.merge(keys, args))
        else:
            args += _registration_args(registration)
            write = self._layout.merge(keys, args)
            entry = self._registry_add(registration.user_id, sid, registration)
            if create:
                reply, added = self._in_order(write, entry)
            else:
                added, reply = self._in_order(entry, write)
            self._registered(added, registration.user_id)
        status = text(reply[0])
        if status == "done":
            user = text(reply[4]) if len(reply) > 4 else ""
            return MergeResult(
                MergeStatus.DONE,
                created_at=int(reply[1]),
                expires_at=int(reply[2]),
                emptied=bool(int(reply[3])),
                user_id=user or None,
                last_seen=int(reply[5]) if user else None,
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
        until: int | None = None,
    ) -> MergeResult:
        """Move the session to ``new_sid`` and leave a redirect behind.

        The two ids hash to different cluster slots, so this takes three
        steps, ordered so that nothing is lost and no reader is ever sent to
        a missing session: read the session, write its copy (with
        ``changes``) under ``new_sid``, then replace the old session with
        the redirect, but only if it did not change since it was read; if it
        did, copy it again. A session bound to a user is registered under
        ``new_sid``, with ``until``, right after each copy (pipelined with
        it but on a cluster): rule 1 of
        :mod:`~flask_relay_session.stores.users`. Its entry under ``sid``
        stays while ``sid`` redirects, and is removed at once without a
        grace period.

        A key that holds something that is not a session is logged and left
        as it is, and the rotation answers :attr:`MergeStatus.MISSING`.
        """
        layout = self._layout
        key = self.session_key(sid)
        with redis_errors():
            try:
                snapshot = self._execute(layout.read_command, key)
            except ResponseError as error:
                if not _wrong_type(error):
                    raise
                snapshot = error
        if _wrong_type(snapshot):
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
                copy = layout.copy(
                    self.session_key(new_sid),
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
            user = copy.owner.user
            if user is None:
                self._send(copy.write)
            else:
                registration = Registration(
                    user, bind=True, seen=now, until=until or now + 3 * ttl
                )
                _, added = self._in_order(
                    copy.write, self._registry_add(user, new_sid, registration)
                )
                self._registered(added, user)
            reply = self._send(
                layout.rotate(
                    [key, self.lock_key(sid)],
                    [lock_token or "", layout.fingerprint(snapshot), new_sid, grace],
                )
            )
            status = text(reply[0])
            if status == "done" or (
                # A client that re-sent the script after a lost reply finds
                # its own rotation already done.
                status == "redirected" and text(reply[1]) == new_sid
            ):
                if user is not None and not grace:
                    # Gone at once: a tombstone. An old id that redirects
                    # keeps its entry, for revoke_all to delete it too.
                    with redis_errors():
                        self.redis.zrem(self.user_key(user), sid)
                return MergeResult(
                    MergeStatus.DONE, created_at=copy.created_at, expires_at=now + ttl
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
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.pexpireat(key, expires)
            pipe.pttl(key)
            return bool(pipe.execute()[1] != -2)

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

        The entry of a session bound to a user goes from its user's registry
        in that pipeline too, once the session is gone: a logout of a bound
        session that was never rotated costs two round trips.
        """
        redirects: list[str] = []
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            reply = self._send(self._layout.destroy([self.session_key(sid)], []))
            if text(reply[0]) != "redirected":
                break
            redirects.append(sid)
            sid = text(reply[1])
        else:
            # Too long a chain leads nowhere, as for load: only the id's own
            # redirect goes, and the ids further on keep theirs.
            del redirects[1:]
            reply = [b"deleted", b""]
        user = text(reply[1]) if len(reply) > 1 else ""
        if not redirects and not user:
            return
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for rotated in redirects:
                pipe.delete(self.session_key(rotated))
            if user:
                # The session is gone: its entry goes too (rule 2 of
                # stores/users.py).
                pipe.zrem(self.user_key(user), sid)
            pipe.execute()

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        """Take the lock with ``SET <lock key> <token> NX PX <ttl>``.

        A script, so that a client that re-sent it after a lost reply finds
        its own token and does not wait for its own lock to expire.
        """
        return bool(self._send(self._lock([self.lock_key(sid)], [token, ttl])))

    def unlock(self, sid: str, token: str) -> bool:
        """Release the lock if ``token`` holds it, with a compare-and-delete."""
        return bool(self._send(self._unlock([self.lock_key(sid)], [token])))

    def is_locked(self, sid: str) -> bool:
        """Return whether the lock key exists."""
        with redis_errors():
            return bool(self.redis.exists(self.lock_key(sid)))

    def _send(self, write: Command | ScriptCall) -> t.Any:
        """Send a plain command or run a script, and return its reply.

        The first run of a script sends its source with ``EVAL``, which also
        makes the server cache it; later runs send only ``EVALSHA``. A
        server that forgot the script (``SCRIPT FLUSH``, a restart, a
        failover, another cluster node) answers ``NOSCRIPT``, and the run is
        repeated with ``EVAL``.
        """
        if isinstance(write, Command):
            with redis_errors():
                return self._execute(*write.args)
        script, keys = write.script, write.keys
        with redis_errors(script):
            if script.sha in self._sent:
                try:
                    return self.redis.evalsha(script.sha, len(keys), *keys, *write.args)
                except NoScriptError:
                    pass
            reply = self.redis.eval(script.source, len(keys), *keys, *write.args)
        self._sent.add(script.sha)
        return reply

    def _execute(self, *args: t.Any) -> t.Any:
        """Send the command ``args`` and return its reply."""
        client: t.Any = self.redis  # RedisCluster's execute_command is untyped.
        return client.execute_command(*args)
