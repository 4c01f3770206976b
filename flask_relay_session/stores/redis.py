"""Sessions in Redis, merged by Lua scripts.

Every session has a key, ``<prefix>{<sid>}``, whose Redis TTL is the
session's remaining lifetime, and a lock, ``<prefix><lock_prefix>{<sid>}``.
The braces are a Redis Cluster hash tag: a session and its lock live in one
slot, and every script touches the keys of one session only, so every
operation works on a cluster. The session key holds one of two layouts
(``RELAY_SESSION_LAYOUT``), both with the same guarantees:

``"json"`` (:class:`JsonLayout`)
    A string, the JSON document ``{"data": {...}, "meta": {"id": ...,
    "createdAt": ..., "expiresAt": ...}}``. A rotated-away id holds
    ``{"data": null, "meta": {"redirectTo": <new sid>}}``. A merge decodes
    and re-encodes the whole document inside Redis, which blocks the server
    for about 15 µs per KB.

``"hash"`` (:class:`HashLayout`)
    A hash with a field per top-level key of the data, holding that value's
    tagged JSON, plus the meta fields ``" created"`` and ``" expires"``
    (milliseconds since the epoch), ``" size"`` (the sum of the lengths of
    the data fields' names and values, in bytes, which
    ``RELAY_SESSION_MAX_SIZE`` limits) and ``" version"`` (bumped by every
    write). A rotated-away id is a hash too, whose only field is
    ``" redirect"``, the id it leads to; the grace period is its TTL. Meta
    names are a space and a letter, which no stored key can be (see
    :func:`~flask_relay_session.serialization.encode_key`). A merge stores
    a replaced top-level value as sent, without ``cjson``; a deeper path
    decodes and re-encodes its own field only; the size is updated from the
    lengths of the fields written, never summed over the session. So a
    write costs Redis work in proportion to the fields it changes.

The layouts cannot read each other's keys: switching a running app to the
other layout needs another ``RELAY_SESSION_KEY_PREFIX`` (users sign in
again), or its requests fail with ``WRONGTYPE`` errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from ..serialization import loads_fields
from .base import MAX_REDIRECT_DEPTH
from .base import Change
from .base import MergeResult
from .base import MergeStatus
from .base import StoredSession
from .base import too_large
from .paths import apply_change
from .paths import apply_change_to_fields
from .paths import dumps

logger = logging.getLogger("flask_relay_session")

#: How often a rotation copies a session that keeps changing before it
#: gives up and lets the caller wait and retry.
ROTATE_ATTEMPTS = 5

#: A standalone, Sentinel or cluster client of redis-py.
RedisClient = t.Union["redis.Redis", "redis.cluster.RedisCluster"]

#: What a load or rotate script returns for a session: a JSON document, or
#: a hash's fields and values in one flat list.
Snapshot = t.Any


def _text(value: bytes | str) -> str:
    """Return a reply string as ``str``, whatever ``decode_responses`` is."""
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    """Return a reply string as ``bytes``, whatever ``decode_responses`` is."""
    return value.encode() if isinstance(value, str) else value


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
    :param includes: the files of shared functions and names to send in
        front of it, such as ``("common",)``.
    """

    def __init__(self, name: str, *, includes: t.Sequence[str] = ()) -> None:
        #: The script's file name, without ``.lua``.
        self.name = name
        #: The Lua source.
        self.source = "\n".join(
            (resources.files(__package__) / "lua" / f"{file}.lua").read_text()
            for file in (*includes, name)
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


class Layout:
    """How a session is kept under its key: the scripts and the format.

    Every ``load`` script answers ``false`` (missing), ``{"redirect", sid}``
    or ``{"found", snapshot, ttl}``; every ``merge`` and ``rotate`` script
    takes the same arguments and gives the same replies as the JSON layout's
    (see the ``.lua`` files). What differs is the snapshot and how a
    rotation copies it, which subclasses define.
    """

    def __init__(
        self,
        *,
        load: LuaScript,
        merge: LuaScript,
        rotate: LuaScript,
        repoint: LuaScript,
        extra: t.Sequence[LuaScript] = (),
    ) -> None:
        self.load = load
        self.merge = merge
        self.rotate = rotate
        self.repoint = repoint
        #: Every script of the layout.
        self.scripts = (load, merge, rotate, repoint, *extra)

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int]:
        """Return the decoded data and the creation time of a snapshot."""
        raise NotImplementedError

    def fingerprint(self, snapshot: Snapshot) -> str:
        """Return what the rotate script compares to see if a session changed."""
        raise NotImplementedError

    def copy(
        self,
        store: RedisSessionStore,
        sid: str,
        snapshot: Snapshot,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        max_size: int,
    ) -> int:
        """Write ``snapshot`` with ``changes`` as the session ``sid``.

        Return the creation time it keeps.

        :raises SessionSerializationError: the copy would be larger than
            ``max_size``; nothing was written.
        """
        raise NotImplementedError


class JsonLayout(Layout):
    """One JSON string per session."""

    def __init__(self) -> None:
        super().__init__(
            load=LuaScript("load", includes=["common"]),
            merge=LuaScript("merge", includes=["common"]),
            rotate=LuaScript("rotate", includes=["common"]),
            repoint=LuaScript("repoint", includes=["common"]),
        )

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int]:
        document = loads(snapshot)
        return document["data"], int(document["meta"]["createdAt"])

    def fingerprint(self, snapshot: Snapshot) -> str:
        return _sha1(snapshot)

    def copy(
        self,
        store: RedisSessionStore,
        sid: str,
        snapshot: Snapshot,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        max_size: int,
    ) -> int:
        document = json.loads(snapshot)
        data = document["data"]
        for change in changes:
            apply_change(data, change)
        created_at = int(document["meta"]["createdAt"])
        meta = {"id": sid, "createdAt": created_at, "expiresAt": now + ttl}
        encoded = dumps({"data": data, "meta": meta}).encode()
        if len(encoded) > max_size:
            raise too_large(len(encoded), max_size)
        try:
            store.redis.set(store.session_key(sid), encoded, px=ttl)
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error
        return created_at


#: The meta fields of a session hash (see ``lua/hash_common.lua``).
CREATED, EXPIRES, SIZE, VERSION = " created", " expires", " size", " version"
HASH_META = frozenset({CREATED, EXPIRES, SIZE, VERSION})


class HashLayout(Layout):
    """One Redis hash per session, a field per top-level key."""

    def __init__(self) -> None:
        includes = ["common", "hash_common"]
        #: Writes a whole session hash: a rotation's copy.
        self.write_copy = LuaScript("hash_copy")
        super().__init__(
            load=LuaScript("hash_load", includes=includes),
            merge=LuaScript("hash_merge", includes=includes),
            rotate=LuaScript("hash_rotate", includes=includes),
            repoint=LuaScript("hash_repoint", includes=includes),
            extra=[self.write_copy],
        )

    @staticmethod
    def fields(snapshot: Snapshot) -> dict[str, bytes]:
        """Return a snapshot's fields, meta fields included, by name."""
        return {
            _text(name): _bytes(value)
            for name, value in zip(snapshot[::2], snapshot[1::2], strict=True)
        }

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int]:
        fields = self.fields(snapshot)
        created_at = int(fields.get(CREATED, 0))
        data = {name: value for name, value in fields.items() if name not in HASH_META}
        return loads_fields(data), created_at

    def fingerprint(self, snapshot: Snapshot) -> str:
        return self.fields(snapshot).get(VERSION, b"").decode()

    def copy(
        self,
        store: RedisSessionStore,
        sid: str,
        snapshot: Snapshot,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        max_size: int,
    ) -> int:
        fields = self.fields(snapshot)
        created_at = int(fields.get(CREATED, now))
        data = {name: value for name, value in fields.items() if name not in HASH_META}
        for change in changes:
            apply_change_to_fields(data, change)
        size = sum(len(name.encode()) + len(value) for name, value in data.items())
        if size > max_size:
            raise too_large(size, max_size)
        args: list[t.Any] = [ttl, CREATED, created_at, EXPIRES, now + ttl]
        args += [SIZE, size, VERSION, 1]
        for name, value in data.items():
            args += (name, value)
        store._call(self.write_copy, [store.session_key(sid)], args)
        return created_at


#: The layouts, by their ``RELAY_SESSION_LAYOUT`` name.
LAYOUTS: dict[str, t.Callable[[], Layout]] = {"json": JsonLayout, "hash": HashLayout}


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

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        """Load the session ``sid``, following rotation redirects.

        One round trip, expiry refresh included, unless the id was rotated.
        A chain of several redirects is shortened: each id on it is pointed
        straight at the session.
        """
        layout = self._layout
        visited: list[str] = []
        for _ in range(MAX_REDIRECT_DEPTH + 1):
            reply = self._call(
                layout.load, [self.session_key(sid)], ["" if ttl is None else ttl]
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
                    self._call(layout.repoint, [self.session_key(rotated)], [sid])
                try:
                    data, created_at = layout.read(reply[1])
                except (ValueError, KeyError, TypeError) as error:
                    logger.error(
                        "session %s… holds something that is not a session"
                        " (%s: %s); it is left in place for inspection and the"
                        " request goes on with a new session",
                        sid[:8],
                        type(error).__name__,
                        error,
                    )
                    return None
                return StoredSession(
                    sid=sid,
                    data=data,
                    created_at=created_at,
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
            self._layout.merge, [self.session_key(sid), self.lock_key(sid)], args
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
        ``changes``) under ``new_sid``, then replace the old session with
        the redirect, but only if it did not change since it was read; if it
        did, copy it again.
        """
        layout = self._layout
        reply = self._call(layout.load, [self.session_key(sid)], [""])
        if not reply:
            return MergeResult(MergeStatus.MISSING)
        if _text(reply[0]) == "redirect":
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=_text(reply[1]))
        snapshot = reply[1]
        for _ in range(ROTATE_ATTEMPTS):
            created_at = layout.copy(
                self, new_sid, snapshot, changes, now=now, ttl=ttl, max_size=max_size
            )
            reply = self._call(
                layout.rotate,
                [self.session_key(sid), self.lock_key(sid)],
                [lock_token or "", layout.fingerprint(snapshot), new_sid, grace],
            )
            status = _text(reply[0])
            if status == "done" or (
                # A client that re-sent the script after a lost reply finds
                # its own rotation already done.
                status == "redirected" and _text(reply[1]) == new_sid
            ):
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
            snapshot = reply[1]
        self.delete(new_sid)
        return MergeResult(MergeStatus.LOCKED)

    def delete(self, sid: str) -> None:
        """Delete the session ``sid``."""
        try:
            self.redis.delete(self.session_key(sid))
        except RedisError as error:
            raise SessionStoreError(_store_failed(error)) from error

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


def _store_failed(error: RedisError) -> str:
    return (
        f"the session store failed: {type(error).__name__}: {error}. Check"
        " that Redis is running and reachable with RELAY_SESSION_REDIS."
    )
