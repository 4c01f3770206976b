"""Sessions in Redis, merged by Lua scripts.

Each session is one key, ``<prefix>{<sid>}``, holding the JSON document
``{"data": {...}, "meta": {"id": ..., "createdAt": ..., "expiresAt": ...}}``
with the session's remaining lifetime as its Redis TTL. Its lock is
``<prefix><lock_prefix>{<sid>}``. The braces are a Redis Cluster hash tag:
a session and its lock live in one slot, and every script touches the keys of
one session only, so every operation works on a cluster.
"""

from __future__ import annotations

import hashlib
import time
import typing as t
from importlib import resources

import redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from ..errors import SessionSerializationError
from ..errors import SessionStoreError
from ..serialization import loads
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import MergeResult
from .base import MergeStatus
from .base import StoredSession

#: A standalone, Sentinel or cluster client of redis-py.
RedisClient = t.Union["redis.Redis", "redis.cluster.RedisCluster"]


def _text(value: bytes | str) -> str:
    """Return a reply string as ``str``, whatever ``decode_responses`` is."""
    return value.decode() if isinstance(value, bytes) else value


def _now_ms() -> int:
    return int(time.time() * 1000)


class LuaScript:
    """A Lua script shipped with the package, run by its SHA1.

    The first call sends the script's source with ``EVAL``, which also makes
    the server cache it; later calls send only ``EVALSHA``. A server that
    forgot the script (``SCRIPT FLUSH``, a restart, a failover, another
    cluster node) answers ``NOSCRIPT``, and the call is repeated with
    ``EVAL``.

    :param name: the script's file name in the ``lua`` folder, without
        ``.lua``.
    """

    def __init__(self, name: str) -> None:
        #: The script's file name, without ``.lua``.
        self.name = name
        #: The Lua source.
        self.source = (resources.files(__package__) / "lua" / f"{name}.lua").read_text()
        #: The SHA1 digest ``EVALSHA`` names the script by.
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self._sent = False

    def load(self, client: RedisClient) -> None:
        """Load the script into the server with ``SCRIPT LOAD``."""
        client.script_load(self.source)
        self._sent = True

    def __call__(
        self, client: RedisClient, keys: t.Sequence[str], args: t.Sequence[t.Any]
    ) -> t.Any:
        """Run the script with ``keys`` and ``args`` and return its reply."""
        if self._sent:
            try:
                return client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        reply = client.eval(self.source, len(keys), *keys, *args)
        self._sent = True
        return reply


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
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "sess:",
        lock_prefix: str = "lock:",
        preload_script: bool = False,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lock_prefix = lock_prefix
        self._load = LuaScript("load")
        self._merge = LuaScript("merge")
        self._unlock = LuaScript("unlock")
        if preload_script:
            self.load_scripts()

    @property
    def scripts(self) -> tuple[LuaScript, ...]:
        """The Lua scripts this store runs."""
        return (self._load, self._merge, self._unlock)

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

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Load the session ``sid``, following rotation redirects.

        One round trip, expiry refresh included, unless the id was rotated.
        """
        requested = sid
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            reply = self._call(
                self._load, [self.session_key(sid)], ["" if ttl is None else ttl]
            )
            if not reply:
                if sid == requested:
                    return None
                raise SessionChainBrokenError(
                    f"session {requested[:8]}… was rotated to a session that no"
                    " longer exists"
                )
            if _text(reply[0]) == "found":
                document = loads(reply[1])
                return StoredSession(
                    sid=sid,
                    data=document["data"],
                    created_at=int(document["meta"]["createdAt"]),
                    expires_at=_now_ms() + int(reply[2]),
                    redirected=sid != requested,
                )
            sid = _text(reply[1])
        raise SessionDepthError(
            f"session {requested[:8]}… was rotated more than"
            f" {MAX_REDIRECT_DEPTH} times in a row"
        )

    def touch(self, sid: str, *, ttl: int) -> bool:
        """Extend the lifetime of ``sid`` with one ``PEXPIRE``."""
        try:
            return bool(self.redis.pexpire(self.session_key(sid), ttl))
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error

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
        """Apply ``changes`` with one run of the merge script."""
        args: list[t.Any] = [
            lock_token or "",
            now,
            "" if ttl is None else ttl,
            "1" if create else "0",
            max_size,
            sid,
            len(changes),
        ]
        for change in changes:
            if change.value is None:
                args += ("d", len(change.path), *change.path)
            else:
                args += ("s", len(change.path), *change.path, change.value)
        reply = self._call(
            self._merge, [self.session_key(sid), self.lock_key(sid)], args
        )
        status = _text(reply[0])
        if status == "done":
            return MergeResult(
                MergeStatus.DONE,
                created_at=int(reply[1]),
                expires_at=int(reply[2]),
                emptied=bool(int(reply[3])),
            )
        if status == "redirected":
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=_text(reply[1]))
        if status == "too_large":
            raise SessionSerializationError(
                f"the session would grow to {int(reply[1])} bytes, more than"
                f" RELAY_SESSION_MAX_SIZE ({max_size} bytes); nothing was saved"
            )
        return MergeResult(MergeStatus(status))

    def delete(self, sid: str) -> None:
        """Delete the session ``sid``."""
        try:
            self.redis.delete(self.session_key(sid))
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        """Take the lock with ``SET <lock key> <token> NX PX <ttl>``."""
        try:
            return bool(self.redis.set(self.lock_key(sid), token, nx=True, px=ttl))
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error

    def unlock(self, sid: str, token: str) -> bool:
        """Release the lock if ``token`` holds it, with a compare-and-delete."""
        return bool(self._call(self._unlock, [self.lock_key(sid)], [token]))

    def is_locked(self, sid: str) -> bool:
        """Return whether the lock key exists."""
        try:
            return bool(self.redis.exists(self.lock_key(sid)))
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error

    def _call(
        self, script: LuaScript, keys: t.Sequence[str], args: t.Sequence[t.Any]
    ) -> t.Any:
        try:
            return script(self.redis, keys, args)
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error


def _store_failed(error: RedisError) -> str:
    return (
        f"the session store failed: {type(error).__name__}: {error}. Check"
        " that Redis is running and reachable with RELAY_SESSION_REDIS."
    )
