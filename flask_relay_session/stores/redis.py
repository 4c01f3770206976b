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
import json
import time
import typing as t
from importlib import resources

import redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError

from ..errors import SessionChainBrokenError
from ..errors import SessionDepthError
from ..errors import SessionStoreError
from ..serialization import loads
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import MergeResult
from .base import MergeStatus
from .base import StoredSession
from .base import too_large
from .paths import apply_change
from .paths import dumps

#: How often a rotation copies a session that keeps changing before it
#: gives up and lets the caller wait and retry.
ROTATE_ATTEMPTS = 5

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
    :param uses_common: send ``common.lua``, the shared functions, in front
        of it.
    """

    def __init__(self, name: str, *, uses_common: bool = False) -> None:
        #: The script's file name, without ``.lua``.
        self.name = name
        files = ["common", name] if uses_common else [name]
        #: The Lua source.
        self.source = "\n".join(
            (resources.files(__package__) / "lua" / f"{file}.lua").read_text()
            for file in files
        )
        #: The SHA1 digest ``EVALSHA`` names the script by.
        self.sha = _sha1(self.source)
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
        self._load = LuaScript("load", uses_common=True)
        self._merge = LuaScript("merge")
        self._rotate = LuaScript("rotate", uses_common=True)
        self._repoint = LuaScript("repoint", uses_common=True)
        self._unlock = LuaScript("unlock")
        if preload_script:
            self.load_scripts()

    @property
    def scripts(self) -> tuple[LuaScript, ...]:
        """The Lua scripts this store runs."""
        return (self._load, self._merge, self._rotate, self._repoint, self._unlock)

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
        A chain of several redirects is shortened: each id on it is pointed
        straight at the session.
        """
        visited: list[str] = []
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            reply = self._call(
                self._load, [self.session_key(sid)], ["" if ttl is None else ttl]
            )
            if not reply:
                if not visited:
                    return None
                raise SessionChainBrokenError(
                    f"session {visited[0][:8]}… was rotated to a session that"
                    " no longer exists"
                )
            if _text(reply[0]) == "found":
                for rotated in visited[:-1]:
                    self._call(self._repoint, [self.session_key(rotated)], [sid])
                document = loads(reply[1])
                return StoredSession(
                    sid=sid,
                    data=document["data"],
                    created_at=int(document["meta"]["createdAt"]),
                    expires_at=_now_ms() + int(reply[2]),
                    redirected=bool(visited),
                )
            visited.append(sid)
            sid = _text(reply[1])
        raise SessionDepthError(
            f"session {visited[0][:8]}… was rotated more than"
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
            raise too_large(int(reply[1]), max_size)
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
        ``changes``) under ``new_sid``, then replace the old document with
        the redirect, but only if it did not change since it was read; if it
        did, copy it again.
        """
        reply = self._call(self._load, [self.session_key(sid)], [""])
        if not reply:
            return MergeResult(MergeStatus.MISSING)
        if _text(reply[0]) == "redirect":
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=_text(reply[1]))
        raw = reply[1]
        new_key = self.session_key(new_sid)
        for _ in range(ROTATE_ATTEMPTS):
            document, created_at = _successor(raw, new_sid, changes, now, ttl)
            if len(document) > max_size:
                raise too_large(len(document), max_size)
            try:
                self.redis.set(new_key, document, px=ttl)
            except RedisError as error:
                raise SessionStoreError(_store_failed(error)) from error
            reply = self._call(
                self._rotate,
                [self.session_key(sid), self.lock_key(sid)],
                [lock_token or "", _sha1(raw), new_sid, grace],
            )
            status = _text(reply[0])
            if status == "done":
                return MergeResult(
                    MergeStatus.DONE, created_at=created_at, expires_at=now + ttl
                )
            if status != "changed":
                self.delete(new_sid)
                if status == "redirected":
                    return MergeResult(
                        MergeStatus.REDIRECTED, redirect_to=_text(reply[1])
                    )
                return MergeResult(MergeStatus(status))
            raw = reply[1]
        self.delete(new_sid)
        return MergeResult(MergeStatus.LOCKED)

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


def _sha1(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha1(data).hexdigest()


def _successor(
    raw: bytes | str, new_sid: str, changes: t.Sequence[Change], now: int, ttl: int
) -> tuple[bytes, int]:
    """The document of ``new_sid``: a copy of ``raw`` with ``changes``."""
    document = json.loads(raw)
    data = document["data"]
    for change in changes:
        apply_change(data, change)
    created_at = int(document["meta"]["createdAt"])
    meta = {"id": new_sid, "createdAt": created_at, "expiresAt": now + ttl}
    return dumps({"data": data, "meta": meta}).encode(), created_at


def _store_failed(error: RedisError) -> str:
    return (
        f"the session store failed: {type(error).__name__}: {error}. Check"
        " that Redis is running and reachable with RELAY_SESSION_REDIS."
    )
