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

import contextlib
import logging
import re
import time
import typing as t

import redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError
from redis.exceptions import ResponseError

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from ..errors import SessionStoreError
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import EntryKind
from .base import MergeResult
from .base import MergeStatus
from .base import SessionRecord
from .base import StoredSession
from .base import too_large
from .layouts import LAYOUTS
from .layouts import LAYOUTS_BY_TYPE
from .layouts import Command
from .layouts import NotASession
from .layouts import text
from .scripts import LuaScript
from .scripts import ScriptCall
from .users import Registration
from .users import UserSession
from .users import escape_user_id
from .wire import round_trip

logger = logging.getLogger("flask_relay_session")

#: A standalone, Sentinel or cluster client of redis-py.
RedisClient = t.Union["redis.Redis", "redis.cluster.RedisCluster"]

#: How often a rotation copies a session that keeps changing before it
#: gives up and lets the caller wait and retry.
ROTATE_ATTEMPTS = 5


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def redis_errors(script: LuaScript | None = None) -> t.Iterator[None]:
    """Raise a failure of Redis as :class:`SessionStoreError`, saying what to
    check: the one way the store reports one.

    :param script: the script being run, whose error messages then name the
        file and line of ``stores/lua`` they mean (see
        :meth:`LuaScript.where`).
    """
    try:
        yield
    except RedisError as error:
        message = f"{type(error).__name__}: {str(error).rstrip('.')}"
        if script is not None:
            message = script.where(message)
        raise SessionStoreError(
            f"the session store failed: {message}. Check that Redis is running"
            " and reachable with RELAY_SESSION_REDIS."
        ) from error


class _NotLocked:
    """What a load that had to take the lock first answers when it was not
    taken (see :meth:`RedisSessionStore.lock_and_load`).
    """


_NOT_LOCKED = _NotLocked()


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


def _glob_escape(pattern: str) -> str:
    """Escape the characters that are special in a ``SCAN MATCH`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", pattern)


def _is_cluster(client: t.Any) -> bool:
    """Whether ``client`` is a Redis Cluster client."""
    return hasattr(client, "get_primaries")


def _registration_args(registration: Registration) -> list[t.Any]:
    """The arguments of ``record_user`` in ``lua/common.lua``."""
    return [
        "bind" if registration.bind else "seen",
        registration.user_id,
        registration.seen,
        registration.agent or "",
        registration.ip or "",
    ]


def _pttl(value: int) -> int | None:
    """``PTTL``'s answer, with ``None`` for no key (-2) or no expiry (-1)."""
    return None if value < 0 else int(value)


class RedisSessionStore:
    """A :class:`~flask_relay_session.SessionStore` in Redis.

    Works with a standalone :class:`redis.Redis` client, a
    :class:`redis.cluster.RedisCluster` and a Sentinel master, speaking RESP2
    or RESP3, with ``decode_responses`` on or off. It also implements
    :class:`~flask_relay_session.stores.SessionStoreAdmin`, for the
    ``flask relay-session`` commands.

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

    # The sessions of users: SessionStoreUsers.

    def _registry_add(
        self, user_id: str, sid: str, registration: Registration
    ) -> ScriptCall:
        """The script run that adds ``sid`` to the registry of ``user_id``."""
        return self._user_register(
            [self.user_key(user_id)], [registration.seen, sid, registration.until]
        )

    def _in_order(self, *calls: Command | ScriptCall) -> list[t.Any]:
        """Send ``calls`` so that Redis runs them in this order, in one
        round trip; on a cluster one after the other, a round trip each,
        since their keys are in different slots and a cluster pipeline
        keeps no order across nodes. Return their replies.

        On one server the pipeline runs them in order, and a connection that
        fails runs a first part of them: never a later call without the
        earlier ones. A script the server forgot answers ``NOSCRIPT`` there
        without running, so it is sent again with ``EVAL``, and so is every
        call after it, in order, though the pipeline ran them already: every
        write here may run twice.
        """
        if _is_cluster(self.redis):
            return [self._send(call) for call in calls]
        return self._batch(calls, ordered=True)

    def _batch(
        self, calls: t.Sequence[Command | ScriptCall], *, ordered: bool = False
    ) -> list[t.Any]:
        """Send ``calls`` in one pipeline and return their replies.

        A script runs with ``EVALSHA`` once the server was sent it, else
        with ``EVAL``. A call that meets ``NOSCRIPT`` is sent again with
        ``EVAL`` on its own; ``ordered``, so is every call after it.

        :raises SessionStoreError: a call failed.
        """
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                if isinstance(call, Command):
                    pipe.execute_command(*call.args)
                    continue
                script = call.script
                body = script.sha if script.sha in self._sent else script.source
                command = "EVALSHA" if body == script.sha else "EVAL"
                pipe.execute_command(
                    command, body, len(call.keys), *call.keys, *call.args
                )
            replies = pipe.execute(raise_on_error=False)
        for position, (call, reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                again = calls[position:] if ordered else [call]
                replies[position : position + len(again)] = map(self._send, again)
                if ordered:
                    break
            elif isinstance(reply, RedisError):
                with redis_errors(None if isinstance(call, Command) else call.script):
                    raise reply
            elif isinstance(call, ScriptCall):
                self._sent.add(call.script.sha)
        return replies

    def _registered(self, reply: t.Any, user_id: str) -> None:
        """Log a registry that held something else, which was replaced."""
        if reply:
            logger.error(
                "the registry of a user (%s) held something that is not a"
                " sorted set; it was replaced",
                self.user_key(user_id)[:40],
            )

    def register(self, sid: str, registration: Registration) -> MergeResult:
        """Add the session to the registry of ``registration.user_id``, then
        record ``registration`` with the register script, in one round trip
        (two on a cluster); then, when the session moved from another user,
        remove it from that user's registry, one more.
        """
        user_id = registration.user_id
        write = self._layout.register(
            [self.session_key(sid)],
            [registration.seen, *_registration_args(registration)],
        )
        entry, reply = self._in_order(
            self._registry_add(user_id, sid, registration), write
        )
        self._registered(entry, user_id)
        result = self._user_result(sid, reply)
        previous = result.previous_user
        if previous and previous != user_id and registration.bind:
            with redis_errors():
                self.redis.zrem(self.user_key(previous), sid)
        return result

    def unregister(self, sid: str) -> MergeResult:
        """Unbind the session with the register script, then remove it from
        its user's registry: two round trips for a bound session.
        """
        now = _now_ms()
        reply = self._send(
            self._layout.register([self.session_key(sid)], [now, "unbind"])
        )
        result = self._user_result(sid, reply)
        if result.previous_user:
            with redis_errors():
                self.redis.zrem(self.user_key(result.previous_user), sid)
        return result

    def _user_result(self, sid: str, reply: t.Any) -> MergeResult:
        """The result of a register script's ``reply``."""
        status = text(reply[0])
        if status == "done":
            return MergeResult(
                MergeStatus.DONE,
                created_at=int(reply[1]),
                expires_at=int(reply[2]),
                previous_user=text(reply[3]) or None,
            )
        if status == "redirected":
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=text(reply[1]))
        if status == "foreign":
            _foreign(sid, text(reply[1]))
        return MergeResult(MergeStatus.MISSING)

    def registered(self, user_id: str, *, now: int) -> list[str]:
        """Drop the entries past their end and read the rest: one pipeline
        of ``ZREMRANGEBYSCORE`` and ``ZRANGE``.
        """
        key = self.user_key(user_id)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", f"({now}")
            pipe.zrange(key, 0, -1)
            replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if _wrong_type(reply):
                self._registered(True, user_id)
                return []
            if isinstance(reply, RedisError):
                with redis_errors():
                    raise reply
        return [text(sid) for sid in replies[1]]

    def sessions_of(self, user_id: str, *, now: int) -> list[UserSession]:
        """Read the registry (:meth:`registered`), then the meta data and
        ``PTTL`` of every session in it, in one pipeline: two round trips
        however many sessions the user has, and a third that drops the
        entries of those found gone. Only the meta data is read: the end of
        a JSON document (``GETRANGE``), the meta fields of a hash. The entry
        of an id rotated away stays, not listed, while it redirects, so that
        :meth:`end_sessions` deletes the redirect too.
        """
        sids = self.registered(user_id, now=now)
        if not sids:
            return []
        layout = self._layout
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for sid in sids:
                key = self.session_key(sid)
                pipe.execute_command(*layout.meta_command(key).args)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
        found: list[UserSession] = []
        gone: list[str] = []
        for position, sid in enumerate(sids):
            reply, ttl = replies[2 * position : 2 * position + 2]
            if isinstance(reply, RedisError) and not _wrong_type(reply):
                with redis_errors():
                    raise reply
            meta = False if isinstance(reply, RedisError) else layout.meta(reply)
            if meta is True:
                # Rotated away: listed under the new id, while this one
                # leads there for revoke_all.
                continue
            if meta is False or not isinstance(ttl, int) or ttl < 0:
                # Gone, or no session at all: never again one.
                gone.append(sid)
                continue
            created_at, owner = meta
            if owner.user == user_id:
                found.append(
                    UserSession(
                        sid,
                        created_at=created_at,
                        last_seen=owner.seen,
                        expires_at=now + ttl,
                        agent=owner.agent,
                        ip=owner.ip,
                    )
                )
        if gone:
            with redis_errors():
                self.redis.zrem(self.user_key(user_id), *gone)
        return found

    def end_sessions(
        self, user_id: str, sids: t.Sequence[str], *, keep: str | None = None
    ) -> list[str]:
        """Delete each session of ``user_id`` among ``sids`` with the destroy
        script, told the user, following redirects as :meth:`delete` does;
        the first hops in one pipeline, further hops one by one. Then one
        pipeline deletes the redirects of the sessions ended and removes the
        entries of the sessions ended or gone.
        """
        sids = [sid for sid in sids if sid != keep]
        if not sids:
            return []
        destroy = self._layout.destroy
        replies = self._batch(
            [destroy([self.session_key(sid)], [user_id]) for sid in sids]
        )
        ended: list[str] = []
        redirects: list[str] = []
        unlisted: list[str] = []
        for sid, reply in zip(sids, replies, strict=True):
            chain = [sid]
            while text(reply[0]) == "redirected" and len(chain) <= MAX_REDIRECT_DEPTH:
                chain.append(text(reply[1]))
                if chain[-1] == keep:
                    break
                reply = self._send(destroy([self.session_key(chain[-1])], [user_id]))
            status = text(reply[0])
            if chain[-1] == keep or status == "kept":
                continue
            if status == "deleted":
                # Redirects that led to a session now gone lead nowhere.
                unlisted += chain
                redirects += chain[:-1]
                if text(reply[1]) == user_id:
                    ended.append(sid)
        if unlisted:
            with redis_errors():
                pipe = self.redis.pipeline(transaction=False)
                for rotated in redirects:
                    pipe.delete(self.session_key(rotated))
                pipe.zrem(self.user_key(user_id), *unlisted)
                pipe.execute()
        return ended

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

    # The operator's view: SessionStoreAdmin.

    def ping(self) -> list[str]:
        """Ping the server, name the version of every Redis node used, and
        load the scripts with ``SCRIPT LOAD``.
        """
        lines = [
            f"store: Redis, {self.layout} layout, sessions"
            f" {self.session_key('<sid>')}, locks {self.lock_key('<sid>')}"
        ]
        with redis_errors():
            self.redis.ping()
            for node, version in self._servers():
                lines.append(f"server: Redis {version} at {node}")
            known = self.redis.script_exists(*(s.sha for s in self.scripts))
        self.load_scripts()
        lines.append(
            f"scripts: {len(self.scripts)} loaded with SCRIPT LOAD"
            f" (already cached: {sum(map(bool, known))})"
        )
        return lines

    def _servers(self) -> list[tuple[str, str]]:
        """Return where each Redis node used is, and its version."""
        client: t.Any = self.redis
        if hasattr(client, "get_primaries"):
            return [
                (
                    f"{node.host}:{node.port} (cluster primary)",
                    client.info("server", target_nodes=node)["redis_version"],
                )
                for node in client.get_primaries()
            ]
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if hasattr(pool, "get_master_address"):
            host, port = pool.get_master_address()
            where = f"{host}:{port} (Sentinel master {pool.service_name!r})"
        elif "path" in kwargs:
            where = kwargs["path"]
        else:
            where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        info = client.info("server")
        return [(f"{where} db {kwargs.get('db', 0)}", info["redis_version"])]

    def scan(self, *, batch: int = 1000) -> t.Iterator[tuple[EntryKind, str]]:
        """Walk the keys under the prefix with incremental ``SCAN`` (every
        primary of a cluster), never ``KEYS``, so that Redis keeps serving.

        :param batch: the ``COUNT`` hint of each ``SCAN`` call.
        """
        # The sid pattern is that of the key methods above.
        session = re.compile(re.escape(self.prefix) + r"\{([^{}]+)\}")
        lock = re.compile(re.escape(self.prefix + self.lock_prefix) + r"\{([^{}]+)\}")
        with redis_errors():
            for raw in self.redis.scan_iter(
                match=_glob_escape(self.prefix) + "*", count=batch
            ):
                key = text(raw)
                if found := lock.fullmatch(key):
                    yield "lock", found[1]
                elif found := session.fullmatch(key):
                    yield "session", found[1]

    def size_hint(self) -> int:
        """Return the number of keys in the database (``DBSIZE``), on every
        primary of a cluster.
        """
        client: t.Any = self.redis
        with redis_errors():
            if hasattr(client, "get_primaries"):
                return int(client.dbsize(target_nodes=client.PRIMARIES))
            return int(client.dbsize())

    def show(self, sid: str) -> SessionRecord | None:
        """Read the key of ``sid`` as its ``TYPE`` says, in either layout,
        with its ``PTTL`` and its lock's.
        """
        key = self.session_key(sid)
        with redis_errors():
            kind = text(self.redis.type(key))
            if kind == "none":
                return None
            layout = LAYOUTS_BY_TYPE.get(kind)
            if layout is None:
                document: dict[str, t.Any] = {"unexpected type": kind}
                redirect_to = None
            else:
                snapshot = self._execute(layout.read_command, key)
                if layout.missing(snapshot):
                    return None
                document, redirect_to = layout.show(snapshot)
            ttl = self.redis.pttl(key)
            lock_ttl = self.redis.pttl(self.lock_key(sid))
        return SessionRecord(
            document=document,
            ttl=_pttl(ttl),
            redirect_to=redirect_to,
            lock_ttl=_pttl(lock_ttl),
            key=key,
        )

    def break_lock(self, sid: str) -> bool:
        """Delete the lock key, whoever holds it."""
        with redis_errors():
            return bool(self.redis.delete(self.lock_key(sid)))
