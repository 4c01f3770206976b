"""How a session is kept under its Redis key: the JSON and hash layouts.

This module is about data only and sends nothing to Redis: a layout says
which command reads a key and which scripts write it, reads what the key
held, and builds what a rotation's copy writes (:meth:`Layout.copy`);
:class:`~.redis.RedisSessionStore` sends it all.

The session key ``<prefix>{<sid>}`` holds one of two layouts
(``RELAY_SESSION_LAYOUT``), both with the same guarantees:

``"json"`` (:class:`JsonLayout`)
    A string, the JSON document ``{"data": {...}, "meta": {"id": ...,
    "createdAt": ..., "expiresAt": ...}}``. A rotated-away id holds
    ``{"data": null, "meta": {"redirectTo": <new sid>, "expiresAt": <end of
    the grace period>}}``. A merge decodes and re-encodes the whole document
    inside Redis, which blocks the server for about 20 to 40 µs per KB (see
    docs/performance.rst), and writes it as Python's :mod:`json` would. A
    load splits the document without decoding its values when ``msgspec``
    is installed (:data:`split_document`), and decodes it whole otherwise.

``"hash"`` (:class:`HashLayout`)
    A hash with a field per top-level key of the data, holding that value's
    tagged JSON, plus the meta fields ``" created"`` and ``" expires"``
    (milliseconds since the epoch), ``" size"`` (the sum of the lengths of
    the data fields' names and values, in bytes: the session's size, see
    :func:`~.paths.session_size`) and ``" version"`` (bumped by every
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

A key that holds something else than a session or a redirect of its layout
(:exc:`NotASession`: corrupt data, a key another program wrote, a key of the
other layout) is never changed: a load logs it and answers ``None``, a
merge or a rotation answers :attr:`~.base.MergeStatus.MISSING`, and the
request goes on with a new session under a new id. A load checks every part
of it; the scripts check its type, its framing and whatever they decode
(see ``session_document`` in ``lua/merge.lua`` and ``hash_state`` in
``lua/hash_common.lua``). So the layouts cannot read each other's keys:
switching a running app to the other layout with the same
``RELAY_SESSION_KEY_PREFIX`` starts every session afresh.
"""

from __future__ import annotations

import json
import re
import typing as t
from dataclasses import dataclass

from ..serialization import DECODE_ERRORS
from ..serialization import StoredValueError
from ..serialization import decode_key
from ..serialization import encode_key
from ..serialization import loads
from ..serialization import loads_fields
from .base import Change
from .base import as_shown
from .paths import apply_change
from .paths import apply_changes_to_fields
from .paths import checked_size
from .paths import dumps
from .scripts import LuaScript
from .scripts import ScriptCall
from .scripts import sha1

try:
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - the test extra installs it
    _msgspec = None  # type: ignore[assignment]

#: A session as read from Redis: a JSON document, or a hash's fields and
#: values (a dict from ``HGETALL``, or one flat list from a script).
Snapshot = t.Any


def text(value: bytes | str) -> str:
    """Return a reply string as ``str``, whatever ``decode_responses`` is."""
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    """Return a reply string as ``bytes``, whatever ``decode_responses`` is."""
    return value.encode() if isinstance(value, str) else value


#: A meta field of a session hash. Twin: ``meta_number`` in
#: ``lua/hash_common.lua``.
_META_NUMBER = re.compile(rb"-?[0-9]{1,14}")

#: How much of the end of a JSON document holds its meta data, at most
#: (see :func:`split_meta`).
META_WINDOW = 8192


def split_meta(raw: bytes) -> dict[str, t.Any] | None:
    """Return the meta data that a JSON session document, or the end of one
    (its last :data:`META_WINDOW` bytes), ends with; ``None`` for anything
    else. Twin: ``split_meta`` in ``lua/common.lua``, which says why the last
    ``,"meta":{`` starts it.
    """
    at = raw.rfind(b',"meta":{')
    if at < 0 or not raw.endswith(b"}"):
        return None
    try:
        meta = json.loads(raw[at + 8 : -1])
    except DECODE_ERRORS:
        return None
    return meta if isinstance(meta, dict) else None


class NotASession(Exception):
    """A session key holds something that is neither a session nor a
    redirect of its layout.

    Its message says what, in words; it never quotes the data.
    """


@dataclass(frozen=True, slots=True)
class Command:
    """A plain Redis command, for a store to send: its name and arguments."""

    args: tuple[t.Any, ...]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a session belongs to, as its meta data says (see
    :mod:`~flask_relay_session.stores.users`).

    :param user: the user it is bound to, ``None`` for nobody.
    :param seen: when that user was last seen with it.
    :param agent: the user agent recorded.
    :param ip: the address recorded.
    """

    user: str | None = None
    seen: int = 0
    agent: str | None = None
    ip: str | None = None

    @classmethod
    def from_meta(cls, meta: t.Mapping[str, t.Any]) -> Owner:
        """Return who a decoded meta dict (or a hash's meta fields, decoded
        to ``str``) says the session belongs to; anything that is not what
        it should be counts as nothing.
        """
        user = meta.get("user")
        if not isinstance(user, str) or not user:
            return NOBODY
        seen = meta.get("seen")
        if isinstance(seen, str):
            seen = int(seen) if _META_NUMBER.fullmatch(seen.encode()) else None
        agent, ip = meta.get("agent"), meta.get("ip")
        return cls(
            user,
            int(t.cast(float, seen)) if _is_meta_number(seen) else 0,
            agent if isinstance(agent, str) else None,
            ip if isinstance(ip, str) else None,
        )

    def as_meta(self, seen: int) -> dict[str, t.Any]:
        """Return the meta data of a session that belongs to this owner,
        seen at ``seen``: nothing for nobody.
        """
        if self.user is None:
            return {}
        meta: dict[str, t.Any] = {"user": self.user, "seen": seen}
        if self.agent is not None:
            meta["agent"] = self.agent
        if self.ip is not None:
            meta["ip"] = self.ip
        return meta


#: The owner of a session bound to nobody.
NOBODY = Owner()


@dataclass(frozen=True, slots=True)
class Copy:
    """What a rotation writes under the new id (see :meth:`Layout.copy`).

    :param created_at: the creation time the copy keeps.
    :param write: the command or script run that writes it.
    :param owner: who the session belongs to.
    """

    created_at: int
    write: Command | ScriptCall
    owner: Owner = NOBODY


def _is_id(value: str | bytes) -> bool:
    """Whether ``value`` is a session id as a redirect names it: ASCII
    letters and digits only. Twin: ``is_id`` in ``lua/common.lua``.
    """
    return value.isascii() and value.isalnum()


def _is_meta_number(value: object) -> bool:
    """Whether a decoded JSON value is a time the meta data can hold: an
    integer of at most 14 digits, all of which ``cjson`` keeps. Twin:
    ``is_meta_number`` in ``lua/common.lua``.
    """
    if type(value) is float:
        return value.is_integer() and abs(value) < 10**14
    return type(value) is int and abs(value) < 10**14


def _is_key_name(name: str) -> bool:
    """Whether ``name`` can be the stored name of a top-level key: a name
    that starts with a space is one only as
    :func:`~flask_relay_session.serialization.encode_key` writes it (meta
    fields and tags are not).

    :raises ValueError: it starts with the prefix of a key that holds a
        lone surrogate, and what follows does not decode.
    """
    return name[:1] != " " or encode_key(decode_key(name)) == name


def _document_splitter() -> (
    t.Callable[[bytes], tuple[dict[str, bytes], bytes] | None] | None
):
    """Return what splits a JSON session document into the JSON of each
    top-level value and the JSON of its meta data, without decoding a
    value: ``msgspec`` walks the document in C, keeping each value's bytes
    (:class:`msgspec.Raw`). ``None`` without ``msgspec``, an optional
    dependency.

    The splitter answers ``None`` for any document it cannot split, well
    formed or not (``msgspec`` refuses some JSON that Python reads, such as
    lone surrogate escapes, which the package never writes): the caller
    then decodes the document whole, which tells what is wrong with it.
    """
    if _msgspec is None:  # pragma: no cover - the test extra installs it
        return None

    class SplitDocument(_msgspec.Struct):
        data: dict[str, _msgspec.Raw]
        meta: _msgspec.Raw

    decode = _msgspec.json.Decoder(SplitDocument).decode
    failures = (_msgspec.DecodeError, _msgspec.ValidationError, RecursionError)

    def split(raw: bytes) -> tuple[dict[str, bytes], bytes] | None:
        try:
            document = decode(raw)
        except failures:
            return None
        data = {name: bytes(value) for name, value in document.data.items()}
        return data, bytes(document.meta)

    return split


#: Splits a JSON session document (see :func:`_document_splitter`), or
#: ``None`` without ``msgspec``.
split_document = _document_splitter()


class Layout:
    """How a session is kept under its key: the format, and the scripts
    that write it.

    A layout reads and builds data only; the store sends what it asks for.
    A session key is read with one plain command (:attr:`read_command`);
    every ``merge`` and ``rotate`` script takes the same arguments and gives
    the same replies as the JSON layout's (see the ``.lua`` files). What
    differs is the snapshot, how a redirect looks and how a rotation copies
    a session, which subclasses define.
    """

    #: The Redis type of a session key: a key of another type is no session.
    redis_type: t.ClassVar[str]
    #: The command that reads a whole session key, such as ``"GET"``.
    read_command: t.ClassVar[str]

    def __init__(
        self,
        *,
        touch: LuaScript,
        merge: LuaScript,
        rotate: LuaScript,
        repoint: LuaScript,
        destroy: LuaScript,
        register: LuaScript,
        extra: t.Sequence[LuaScript] = (),
    ) -> None:
        self.touch = touch
        self.merge = merge
        self.rotate = rotate
        self.repoint = repoint
        self.destroy = destroy
        #: Records who a session belongs to, and nothing else.
        self.register = register
        #: Every script of the layout.
        self.scripts = (touch, merge, rotate, repoint, destroy, register, *extra)

    @classmethod
    def load_commands(cls, key: str, ttl: int | None) -> list[tuple[t.Any, ...]]:
        """The commands that read the session key ``key`` and set its time
        to live to ``ttl`` milliseconds or, with ``ttl=None``, ask for it:
        :attr:`read_command`, then ``PEXPIRE`` or ``PTTL``. The first reply
        is the snapshot; with ``ttl=None``, the second is the ``PTTL``.
        """
        refresh = ("PTTL", key) if ttl is None else ("PEXPIRE", key, ttl)
        return [(cls.read_command, key), refresh]

    @staticmethod
    def missing(snapshot: Snapshot) -> bool:
        """Whether what :attr:`read_command` read says the key does not
        exist.
        """
        raise NotImplementedError

    def redirect(self, snapshot: Snapshot) -> tuple[str, int | None] | None:
        """Return the id a redirect leads to and when its grace period ends
        (``None`` when it does not say), or ``None`` for anything else.

        :raises NotASession: the snapshot cannot even be looked at.
        """
        raise NotImplementedError

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int, Owner]:
        """Return the decoded data, the creation time and the owner of a
        snapshot that is no redirect.

        :raises NotASession: it is no session either.
        """
        raise NotImplementedError

    def meta_command(self, key: str) -> Command:
        """Return the plain command that reads the meta data of the session
        key ``key``, for :meth:`meta`, without its data.
        """
        raise NotImplementedError

    def meta(self, reply: t.Any) -> tuple[int, Owner] | bool:
        """Return the creation time and the owner from the reply to
        :meth:`meta_command`; ``True`` when the key holds a redirect,
        ``False`` when it holds no session (nothing, or anything else).
        """
        raise NotImplementedError

    def fingerprint(self, snapshot: Snapshot) -> str:
        """Return what the rotate script compares to see if a session changed."""
        raise NotImplementedError

    def copy(
        self,
        key: str,
        sid: str,
        snapshot: Snapshot,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        max_size: int,
    ) -> Copy:
        """Return the write of ``snapshot`` with ``changes`` as the session
        ``sid`` under ``key``.

        :raises NotASession: the snapshot is not a session (as for
            :meth:`read`).
        :raises SessionSerializationError: the copy would be larger than
            ``max_size``.
        """
        raise NotImplementedError

    @staticmethod
    def show(snapshot: Snapshot) -> tuple[dict[str, t.Any], str | None]:
        """Return a snapshot as an operator sees it (see
        :class:`~.base.SessionRecord`): its document, and the id it
        redirects to.

        Unlike :meth:`read`, this shows anything, a key that is no session
        included, and never fails.
        """
        raise NotImplementedError


class JsonLayout(Layout):
    """One JSON string per session."""

    redis_type = "string"
    read_command = "GET"

    @classmethod
    def load_commands(cls, key: str, ttl: int | None) -> list[tuple[t.Any, ...]]:
        """As :meth:`Layout.load_commands`; a refresh is one ``GETEX``
        (Redis 6.2), which leaves a key of another type as it is.
        """
        if ttl is None:
            return super().load_commands(key, ttl)
        return [("GETEX", key, "PX", ttl)]

    def __init__(self) -> None:
        super().__init__(
            touch=LuaScript("touch"),
            merge=LuaScript("merge"),
            rotate=LuaScript("rotate"),
            repoint=LuaScript("repoint"),
            destroy=LuaScript("destroy"),
            register=LuaScript("register"),
        )

    @staticmethod
    def missing(snapshot: Snapshot) -> bool:
        return snapshot is None

    def redirect(self, snapshot: Snapshot) -> tuple[str, int | None] | None:
        # Twin: redirect_target in lua/common.lua. Only short documents can
        # be redirects; a session is never decoded here. Anything that is no
        # redirect is left for read() to tell what it is.
        raw = as_bytes(snapshot)
        if len(raw) >= 512 or b'"redirectTo"' not in raw:
            return None
        try:
            document = json.loads(raw)
        except DECODE_ERRORS:
            return None
        if not isinstance(document, dict) or document.get("data", 0) is not None:
            return None
        meta = document.get("meta")
        if not isinstance(meta, dict):
            return None
        target = meta.get("redirectTo")
        if not isinstance(target, str) or not _is_id(target):
            return None
        if "expiresAt" not in meta:
            return target, None
        expires = meta["expiresAt"]
        return (target, int(expires)) if _is_meta_number(expires) else None

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int, Owner]:
        # Twin: session_document in lua/merge.lua, which checks the same
        # framing but decodes no tags.
        lazily = self._read_lazily(as_bytes(snapshot))
        if lazily is not None:
            return lazily
        return self._read_whole(snapshot)

    @staticmethod
    def _read_whole(snapshot: Snapshot) -> tuple[dict[str, t.Any], int, Owner]:
        """:meth:`read` a document by decoding all of it, every value
        checked.
        """
        try:
            document = loads(snapshot)
        except json.JSONDecodeError:
            raise NotASession("a string that is not JSON") from None
        except DECODE_ERRORS as error:
            raise NotASession(
                f"a document with a value that does not decode ({type(error).__name__})"
            ) from None
        if not isinstance(document, dict):
            raise NotASession("JSON that is not a session document")
        data, meta = document.get("data"), document.get("meta")
        if not isinstance(data, dict):
            raise NotASession("a document whose data is not a dict")
        if not isinstance(meta, dict) or not _is_meta_number(meta.get("createdAt")):
            raise NotASession("a document without an integer meta.createdAt")
        return data, int(meta["createdAt"]), Owner.from_meta(meta)

    @staticmethod
    def _read_lazily(raw: bytes) -> tuple[dict[str, t.Any], int, Owner] | None:
        """:meth:`read` a document without decoding its data: each value is
        decoded when the request first reads its key, as with the hash
        layout (:class:`~flask_relay_session.serialization.LazyValue`), and a
        value that does not decode is found by the read that decodes it.
        ``None`` when the document is not plainly a session, or without
        ``msgspec``: :meth:`read` then decodes it whole, and says what is
        wrong with it.
        """
        split = None if split_document is None else split_document(raw)
        if split is None:
            return None
        fields, meta_json = split
        try:
            if not all(_is_key_name(name) for name in fields):
                return None
            meta = loads(meta_json)
        except DECODE_ERRORS:
            return None
        if not isinstance(meta, dict) or not _is_meta_number(meta.get("createdAt")):
            return None
        return loads_fields(fields), int(meta["createdAt"]), Owner.from_meta(meta)

    def meta_command(self, key: str) -> Command:
        return Command(("GETRANGE", key, -META_WINDOW, -1))

    def meta(self, reply: t.Any) -> tuple[int, Owner] | bool:
        if not isinstance(reply, (bytes, str)):
            return False
        meta = split_meta(as_bytes(reply))
        if meta is None:
            return False
        if "redirectTo" in meta:
            return True
        created = meta.get("createdAt")
        if not _is_meta_number(created):
            return False
        return int(t.cast(float, created)), Owner.from_meta(meta)

    def fingerprint(self, snapshot: Snapshot) -> str:
        return sha1(snapshot)

    def copy(
        self,
        key: str,
        sid: str,
        snapshot: Snapshot,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        max_size: int,
    ) -> Copy:
        # A copy is rare (a rotation): check every value, so that no foreign
        # value moves to the new id.
        _, created_at, owner = self._read_whole(snapshot)
        # The stored form, whose tags stay tags.
        data = json.loads(snapshot)["data"]
        for change in changes:
            apply_change(data, change)
        checked_size(
            {name: dumps(value).encode() for name, value in data.items()}, max_size
        )
        meta = {"id": sid, "createdAt": created_at, "expiresAt": now + ttl}
        meta.update(owner.as_meta(now))
        # The meta data last: see split_meta.
        encoded = dumps({"data": data, "meta": meta}).encode()
        return Copy(created_at, Command(("SET", key, encoded, "PX", ttl)), owner)

    @staticmethod
    def show(snapshot: Snapshot) -> tuple[dict[str, t.Any], str | None]:
        document = as_shown(snapshot)
        if not isinstance(document, dict):
            return {"unreadable": document}, None
        meta = document.get("meta")
        if document.get("data") is None and isinstance(meta, dict):
            return document, meta.get("redirectTo")
        return document, None


#: The meta fields of a session hash. Twin: the names in
#: ``lua/hash_common.lua``.
CREATED, EXPIRES, SIZE, VERSION = " created", " expires", " size", " version"
HASH_META = frozenset({CREATED, EXPIRES, SIZE, VERSION})
#: The meta fields of a session bound to a user: who, when last seen, and
#: with which client.
USER, SEEN, AGENT, IP = " user", " seen", " agent", " ip"
USER_META = (USER, SEEN, AGENT, IP)
#: The field of a rotated-away id's hash that names the id it leads to; the
#: hash's other field is :data:`EXPIRES`, the end of its grace period.
REDIRECT = " redirect"
_REDIRECT_BYTES = REDIRECT.encode()


class HashLayout(Layout):
    """One Redis hash per session, a field per top-level key."""

    redis_type = "hash"
    read_command = "HGETALL"

    def __init__(self) -> None:
        #: Writes a whole session hash: a rotation's copy.
        self.write_copy = LuaScript("hash_copy")
        super().__init__(
            touch=LuaScript("hash_touch"),
            merge=LuaScript("hash_merge"),
            rotate=LuaScript("hash_rotate"),
            repoint=LuaScript("hash_repoint"),
            destroy=LuaScript("hash_destroy"),
            register=LuaScript("hash_register"),
            extra=[self.write_copy],
        )

    @staticmethod
    def fields(snapshot: Snapshot) -> dict[str, bytes]:
        """Return a snapshot's fields, meta fields included, by name.

        :raises NotASession: a field's name is not UTF-8.
        """
        pairs = (
            snapshot.items()
            if isinstance(snapshot, dict)
            else zip(snapshot[::2], snapshot[1::2], strict=True)
        )
        try:
            return {
                name.decode() if type(name) is bytes else name: (
                    value if type(value) is bytes else as_bytes(value)
                )
                for name, value in pairs
            }
        except UnicodeDecodeError:
            raise NotASession("a hash with a field name that is not UTF-8") from None

    @staticmethod
    def data_fields(fields: t.Mapping[str, bytes]) -> dict[str, bytes]:
        """Return the fields that hold session data, without the meta fields."""
        return {
            name: value
            for name, value in fields.items()
            if name not in HASH_META and name not in USER_META
        }

    @staticmethod
    def owner(fields: t.Mapping[str, bytes]) -> Owner:
        """Return who the meta fields say the session belongs to."""
        meta = {
            name[1:]: value.decode(errors="replace")
            for name in USER_META
            if (value := fields.get(name)) is not None
        }
        return Owner.from_meta(meta)

    @staticmethod
    def missing(snapshot: Snapshot) -> bool:
        return not snapshot

    def redirect(self, snapshot: Snapshot) -> tuple[str, int | None] | None:
        # Twin: hash_state in lua/hash_common.lua. Anything that is no
        # redirect is left for read() to tell what it is.
        if isinstance(snapshot, dict) and not (
            _REDIRECT_BYTES in snapshot or REDIRECT in snapshot
        ):
            return None
        fields = self.fields(snapshot)
        target = fields.get(REDIRECT)
        if target is None or not _is_id(target):
            return None
        expires = fields.get(EXPIRES)
        if expires is None:
            return target.decode(), None
        if _META_NUMBER.fullmatch(expires):
            return target.decode(), int(expires)
        return None

    def read(self, snapshot: Snapshot) -> tuple[dict[str, t.Any], int, Owner]:
        # Twin: hash_state in lua/hash_common.lua, which checks the meta
        # fields only; the scripts check the data fields they decode.
        fields = self.fields(snapshot)
        for name in HASH_META:
            value = fields.get(name)
            if value is None or not _META_NUMBER.fullmatch(value):
                raise NotASession("a hash without the meta fields of a session")
        data = self.data_fields(fields)
        try:
            for name in data:
                # A name that starts with a space is an escaped key, unless
                # it is a meta field (of a redirect, or unknown).
                if not _is_key_name(name):
                    raise NotASession(
                        "a hash with a field that is neither data nor meta"
                    )
            return loads_fields(data), int(fields[CREATED]), self.owner(fields)
        except DECODE_ERRORS as error:
            raise NotASession(
                f"a hash with a field that does not decode ({type(error).__name__})"
            ) from None

    def fingerprint(self, snapshot: Snapshot) -> str:
        return self.fields(snapshot).get(VERSION, b"").decode()

    def copy(
        self,
        key: str,
        sid: str,
        snapshot: Snapshot,
        changes: t.Sequence[Change],
        *,
        now: int,
        ttl: int,
        max_size: int,
    ) -> Copy:
        stored, created_at, owner = self.read(snapshot)
        for value in stored.values():
            # A copy is rare (a rotation): check every value, so that no
            # foreign value moves to the new id.
            try:
                value.decode()
            except StoredValueError as error:
                raise NotASession(str(error)) from None
        data = self.data_fields(self.fields(snapshot))
        apply_changes_to_fields(data, changes)
        size = checked_size(data, max_size)
        args: list[t.Any] = [ttl, CREATED, created_at, EXPIRES, now + ttl]
        args += [SIZE, size, VERSION, 1]
        for name, value in owner.as_meta(now).items():
            args += (f" {name}", value)
        for name, value in data.items():
            args += (name, value)
        return Copy(created_at, self.write_copy([key], args), owner)

    def meta_command(self, key: str) -> Command:
        return Command(("HMGET", key, REDIRECT, CREATED, *USER_META))

    def meta(self, reply: t.Any) -> tuple[int, Owner] | bool:
        if not isinstance(reply, list):
            return False
        if reply[0] is not None:
            return True
        created = reply[1]
        if created is None or not _META_NUMBER.fullmatch(as_bytes(created)):
            return False
        fields = {
            name: as_bytes(value)
            for name, value in zip(USER_META, reply[2:], strict=True)
            if value is not None
        }
        return int(created), self.owner(fields)

    @staticmethod
    def show(snapshot: Snapshot) -> tuple[dict[str, t.Any], str | None]:
        # Names are shown as they are, not decoded: this never fails.
        fields = {
            as_bytes(name).decode(errors="replace"): value
            for name, value in snapshot.items()
        }
        if REDIRECT in fields:
            target = text(fields[REDIRECT])
            return {"data": None, "meta": {"redirectTo": target}}, target
        # Data fields are top-level keys (a stored key that starts with a
        # space has a second one, or "~"); meta fields are one space and a
        # name.
        data: dict[str, t.Any] = {}
        meta: dict[str, t.Any] = {}
        for name, value in sorted(fields.items()):
            if name[:1] == " " and name[1:2] not in (" ", "~"):
                meta[name[1:]] = as_shown(value)
            else:
                data[name] = as_shown(value)
        return {"data": data, "meta": meta}, None


#: The layouts, by their ``RELAY_SESSION_LAYOUT`` name.
LAYOUTS: dict[str, t.Callable[[], Layout]] = {"json": JsonLayout, "hash": HashLayout}

#: The layout classes, by the Redis type of their session keys.
LAYOUTS_BY_TYPE: dict[str, type[Layout]] = {
    layout.redis_type: layout for layout in (JsonLayout, HashLayout)
}
