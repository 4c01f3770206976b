"""How a session is kept under its Redis key: the JSON and hash layouts.

The session key ``<prefix>{<sid>}`` holds one of two layouts
(``RELAY_SESSION_LAYOUT``), both with the same guarantees:

``"json"`` (:class:`JsonLayout`)
    A string, the JSON document ``{"data": {...}, "meta": {"id": ...,
    "createdAt": ..., "expiresAt": ...}}``. A rotated-away id holds
    ``{"data": null, "meta": {"redirectTo": <new sid>, "expiresAt": <end of
    the grace period>}}``. A merge decodes
    and re-encodes the whole document inside Redis, which blocks the server
    for about 15 µs per KB.

``"hash"`` (:class:`HashLayout`)
    A hash with a field per top-level key of the data, holding that value's
    tagged JSON, plus the meta fields ``" created"`` and ``" expires"``
    (milliseconds since the epoch), ``" size"`` (the sum of the lengths of
    the data fields' names and values, in bytes, which
    ``RELAY_SESSION_MAX_SIZE`` limits) and ``" version"`` (bumped by every
    write). A rotated-away id is a hash too, whose only fields are
    ``" redirect"``, the id it leads to, and ``" expires"``, the end of the
    grace period. Meta
    names are a space and a letter, which no stored key can be (see
    :func:`~flask_relay_session.serialization.encode_key`). A merge stores
    a replaced top-level value as sent, without ``cjson``; a deeper path
    decodes and re-encodes its own field only; the size is updated from the
    lengths of the fields written, never summed over the session. So a
    write costs Redis work in proportion to the fields it changes.

A load reads the key with a plain ``GET`` or ``HGETALL``, pipelined with
``PEXPIRE`` (or ``PTTL``), not with a script: a script's reply costs Redis
about 1.4 µs per KB to build. That ``PEXPIRE`` also hits a redirect, so a
redirect carries the end of its grace period, by the server's clock, and the
load that follows it sets it back with ``PEXPIREAT``; writes that find a
redirect past its end treat it as gone.

The layouts cannot read each other's keys: switching a running app to the
other layout needs another ``RELAY_SESSION_KEY_PREFIX`` (users sign in
again), or its requests fail with ``WRONGTYPE`` errors.
"""

from __future__ import annotations

import json
import typing as t

from redis.exceptions import RedisError

from ..serialization import loads
from ..serialization import loads_fields
from .base import Change
from .base import too_large
from .paths import apply_change
from .paths import apply_change_to_fields
from .paths import dumps
from .scripts import LuaScript
from .scripts import as_bytes
from .scripts import sha1
from .scripts import store_failed
from .scripts import text

if t.TYPE_CHECKING:
    from .redis import RedisSessionStore

#: A session as read from Redis: a JSON document, or a hash's fields and
#: values (a dict from ``HGETALL``, or one flat list from a script).
Snapshot = t.Any


class Layout:
    """How a session is kept under its key: the scripts and the format.

    A session key is read with one plain command (:meth:`fetch`); every
    ``merge`` and ``rotate`` script takes the same arguments and gives the
    same replies as the JSON layout's (see the ``.lua`` files). What differs
    is the snapshot, how a redirect looks and how a rotation copies a
    session, which subclasses define.
    """

    def __init__(
        self,
        *,
        touch: LuaScript,
        merge: LuaScript,
        rotate: LuaScript,
        repoint: LuaScript,
        extra: t.Sequence[LuaScript] = (),
    ) -> None:
        self.touch = touch
        self.merge = merge
        self.rotate = rotate
        self.repoint = repoint
        #: Every script of the layout.
        self.scripts = (touch, merge, rotate, repoint, *extra)

    def fetch(self, client: t.Any, key: str) -> t.Any:
        """Read the key with ``client``, a client or a pipeline to queue on."""
        raise NotImplementedError

    def missing(self, snapshot: Snapshot) -> bool:
        """Whether what :meth:`fetch` read says the key does not exist."""
        raise NotImplementedError

    def redirect(self, snapshot: Snapshot) -> tuple[str, int | None] | None:
        """Return the id a redirect leads to and when its grace period ends
        (``None`` when it does not say), or ``None`` for anything else.
        """
        raise NotImplementedError

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
            touch=LuaScript("touch", includes=["common"]),
            merge=LuaScript("merge", includes=["common"]),
            rotate=LuaScript("rotate", includes=["common"]),
            repoint=LuaScript("repoint", includes=["common"]),
        )

    def fetch(self, client: t.Any, key: str) -> t.Any:
        return client.get(key)

    def missing(self, snapshot: Snapshot) -> bool:
        return snapshot is None

    def redirect(self, snapshot: Snapshot) -> tuple[str, int | None] | None:
        # As redirect_target in common.lua: only short documents can be
        # redirects; a session is never decoded here.
        raw = as_bytes(snapshot)
        if len(raw) >= 512 or b'"redirectTo"' not in raw:
            return None
        try:
            document = json.loads(raw)
            meta = document["meta"]
            if document["data"] is not None or not isinstance(meta, dict):
                return None
            target = meta["redirectTo"]
            expires = meta.get("expiresAt")
            if not isinstance(target, str):
                return None
            return target, None if expires is None else int(expires)
        except (ValueError, KeyError, TypeError):
            # Not a redirect: read() says what it is.
            return None

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int]:
        document = loads(snapshot)
        return document["data"], int(document["meta"]["createdAt"])

    def fingerprint(self, snapshot: Snapshot) -> str:
        return sha1(snapshot)

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
            raise store_failed(error) from error
        return created_at


#: The meta fields of a session hash (see ``lua/hash_common.lua``).
CREATED, EXPIRES, SIZE, VERSION = " created", " expires", " size", " version"
HASH_META = frozenset({CREATED, EXPIRES, SIZE, VERSION})
#: The field of a rotated-away id's hash that names the id it leads to; the
#: hash's other field is :data:`EXPIRES`, the end of its grace period.
REDIRECT = " redirect"


class HashLayout(Layout):
    """One Redis hash per session, a field per top-level key."""

    def __init__(self) -> None:
        includes = ["common", "hash_common"]
        #: Writes a whole session hash: a rotation's copy.
        self.write_copy = LuaScript("hash_copy")
        super().__init__(
            touch=LuaScript("hash_touch", includes=includes),
            merge=LuaScript("hash_merge", includes=includes),
            rotate=LuaScript("hash_rotate", includes=includes),
            repoint=LuaScript("hash_repoint", includes=includes),
            extra=[self.write_copy],
        )

    @staticmethod
    def fields(snapshot: Snapshot) -> dict[str, bytes]:
        """Return a snapshot's fields, meta fields included, by name."""
        pairs = (
            snapshot.items()
            if isinstance(snapshot, dict)
            else zip(snapshot[::2], snapshot[1::2], strict=True)
        )
        return {text(name): as_bytes(value) for name, value in pairs}

    @staticmethod
    def data_fields(fields: t.Mapping[str, bytes]) -> dict[str, bytes]:
        """Return the fields that hold session data, without the meta fields."""
        return {name: value for name, value in fields.items() if name not in HASH_META}

    def fetch(self, client: t.Any, key: str) -> t.Any:
        return client.hgetall(key)

    def missing(self, snapshot: Snapshot) -> bool:
        return not snapshot

    def redirect(self, snapshot: Snapshot) -> tuple[str, int | None] | None:
        fields = self.fields(snapshot)
        target = fields.get(REDIRECT)
        if target is None:
            return None
        expires = fields.get(EXPIRES)
        try:
            return target.decode(), None if expires is None else int(expires)
        except ValueError:
            # Not a redirect: read() says what it is.
            return None

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int]:
        fields = self.fields(snapshot)
        created_at = int(fields.get(CREATED, 0))
        data = self.data_fields(fields)
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
        data = self.data_fields(fields)
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
