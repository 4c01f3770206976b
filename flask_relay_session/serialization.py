"""Tagged JSON that survives Redis's Lua ``cjson`` unchanged.

Flask's cookie session stores tuples, bytes, markup, UUIDs and datetimes with
:class:`flask.json.tag.TaggedJSONSerializer`. Stored values here must also
pass through ``cjson`` inside Redis, which is lossy: it turns ``[]`` into
``{}``, keeps only 14 significant digits of a number, writes ``2.0`` as ``2``
and rejects lone surrogates. This module encodes every value into JSON that
``cjson`` decodes and re-encodes to something that reads back equal, by
tagging exactly the values ``cjson`` would change.

A tag is a one-key object whose key is a space and one letter (``" t"``).
Object keys that start with a space are escaped with one more space, so a
user's key can never be mistaken for a tag, even after a merge removes the
other keys of its object.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import typing as t
from datetime import datetime
from uuid import UUID

from markupsafe import Markup

from .errors import SessionSerializationError

#: A path into the session: the keys from the top level down.
Path = tuple[str, ...]

#: Integers with a magnitude below this survive ``cjson``'s 14 digits.
_SAFE_INT_LIMIT = 10**14

#: How deeply dicts, lists and tuples may nest in the value of a top-level
#: key, that value counting as the first level. Deeper values are refused
#: when stored and when read. A tuple's tag doubles its level in the JSON,
#: and ``cjson`` and Python's own JSON modules give up a little above 1000.
MAX_DEPTH = 256

#: The types that count as a level of nesting in a decoded value.
_CONTAINERS = frozenset({dict, list, tuple})

_TAG_TUPLE = " t"
_TAG_BYTES = " b"
_TAG_MARKUP = " m"
_TAG_UUID = " u"
_TAG_DATETIME = " d"
_TAG_FLOAT = " f"
_TAG_INT = " i"
_TAG_EMPTY_LIST = " l"
_TAG_STRING = " s"
#: Prefix of an object key that holds a lone surrogate, base64 encoded.
_SURROGATE_KEY = " ~"

_DUMP = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _untag_bytes(payload: str) -> bytes:
    return base64.b64decode(payload)


def _int_payload(value: int) -> str:
    """Return the digits of a big integer: decimal, or hex when very long.

    Python refuses to convert integers of more than 4300 decimal digits to
    and from strings (``sys.get_int_max_str_digits``); hexadecimal has no
    such limit.
    """
    try:
        return str(value)
    except ValueError:
        return hex(value)


def _untag_int(payload: str) -> int:
    return int(payload, 0)


def _untag_surrogates(payload: str) -> str:
    return base64.b64decode(payload).decode("utf-8", "surrogatepass")


_UNTAG: dict[str, t.Callable[[t.Any], t.Any]] = {
    _TAG_TUPLE: tuple,
    _TAG_BYTES: _untag_bytes,
    _TAG_MARKUP: Markup,
    _TAG_UUID: UUID,
    _TAG_DATETIME: datetime.fromisoformat,
    _TAG_FLOAT: float,
    _TAG_INT: _untag_int,
    _TAG_EMPTY_LIST: lambda _: [],
    _TAG_STRING: _untag_surrogates,
}


def format_path(path: t.Sequence[object]) -> str:
    """Return ``session['a']['b']``, the way a path is shown in messages."""
    return "session" + "".join(f"[{key!r}]" for key in path)


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_payload(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")


def encode_key(key: object) -> str:
    """Return the stored form of an object key.

    Keys that are not strings are converted the way :func:`json.dumps`
    converts them (``1`` becomes ``"1"``), as Flask's own session does.

    :raises SessionSerializationError: the key is of another type, such as
        a tuple.
    """
    if type(key) is not str:
        key = _coerce_key(key)
    if _has_surrogate(key):
        return _SURROGATE_KEY + _surrogate_payload(key)
    if key[:1] == " ":
        return " " + key
    return key


def decode_key(key: str) -> str:
    """Return the key a stored object key stands for."""
    if key[:2] == _SURROGATE_KEY:
        return _untag_surrogates(key[2:])
    return key[1:]


def _coerce_key(key: object) -> str:
    if isinstance(key, str):
        return str(key)
    if key is None or isinstance(key, (bool, int, float)):
        return t.cast(str, json.loads(json.dumps({key: 0})).popitem()[0])
    raise SessionSerializationError(
        f"cannot use {key!r:.100} as a session key: keys must be str, int,"
        f" float, bool or None, not {type(key).__name__}"
    )


class _Encoder:
    """Turns one Python value into a tree that ``cjson`` keeps intact.

    It recurses two calls per level of nesting, whatever the containers, so
    that :data:`MAX_DEPTH` levels fit well within Python's default recursion
    limit.

    :param path: where the value lives in the session, for error messages.
    :param tag_surrogates: tag strings with lone surrogates, which UTF-8
        cannot hold: the slow path, for values that hold some.
    """

    def __init__(self, path: t.Sequence[object], tag_surrogates: bool = False) -> None:
        self.path = list(path)
        self.tag_surrogates = tag_surrogates

    def fail(self, problem: str) -> t.NoReturn:
        raise SessionSerializationError(
            f"cannot store {format_path(self.path)}: {problem}"
        )

    def encode(self, value: t.Any, depth: int) -> t.Any:
        """Return the tree for ``value``, which ``depth`` containers hold."""
        kind = type(value)
        if kind is str:
            if self.tag_surrogates and _has_surrogate(value):
                return {_TAG_STRING: _surrogate_payload(value)}
            return value
        if value is None or kind is bool:
            return value
        if kind is int:
            if -_SAFE_INT_LIMIT < value < _SAFE_INT_LIMIT:
                return value
            return {_TAG_INT: _int_payload(value)}
        if kind is float:
            return self.encode_float(value)
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                self.fail(f"nesting is deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                return self.encode_dict(value, depth + 1)
            if isinstance(value, list):
                return self.encode_list(value, depth + 1)
            return {_TAG_TUPLE: self.encode_list(value, depth + 1)}
        return self.encode_other(value, depth)

    def encode_float(self, value: float) -> t.Any:
        if _is_plain_float(value):
            return value
        return {_TAG_FLOAT: repr(value)}

    def encode_dict(self, value: dict[t.Any, t.Any], depth: int) -> dict[str, t.Any]:
        out = {}
        path = self.path
        strings_plain = not self.tag_surrogates
        for key, item in value.items():
            if type(key) is str and key[:1] != " " and key.isascii():
                stored_key = key  # What encode_key() would give, sooner.
            else:
                try:
                    stored_key = encode_key(key)
                except SessionSerializationError:
                    self.fail(
                        f"keys must be str, int, float, bool or None, not"
                        f" {type(key).__name__} ({key!r:.100})"
                    )
            kind = type(item)
            if (
                (kind is str and strings_plain)
                or (kind is int and -_SAFE_INT_LIMIT < item < _SAFE_INT_LIMIT)
                or item is None
                or kind is bool
                or (kind is float and _is_plain_float(item))
            ):
                # The scalars encode() gives back as they are, tested here
                # to save its call per item (the same test is in
                # encode_list).
                out[stored_key] = item
                continue
            path.append(key)
            out[stored_key] = self.encode(item, depth)
            path.pop()
        return out

    def encode_list(self, value: t.Sequence[t.Any], depth: int) -> t.Any:
        if not value:
            return {_TAG_EMPTY_LIST: 0}
        path = self.path
        strings_plain = not self.tag_surrogates
        out = []
        for index, item in enumerate(value):
            kind = type(item)
            if (
                (kind is str and strings_plain)
                or (kind is int and -_SAFE_INT_LIMIT < item < _SAFE_INT_LIMIT)
                or item is None
                or kind is bool
                or (kind is float and _is_plain_float(item))
            ):
                out.append(item)  # Untagged: see encode_dict.
                continue
            path.append(index)
            out.append(self.encode(item, depth))
            path.pop()
        return out

    def encode_other(self, value: t.Any, depth: int) -> t.Any:
        if isinstance(value, (bytes, bytearray)):
            return {_TAG_BYTES: base64.b64encode(value).decode("ascii")}
        if callable(getattr(value, "__html__", None)):
            # Encoded like any string, so that lone surrogates get tagged.
            return {_TAG_MARKUP: self.encode(str(value.__html__()), depth)}
        if isinstance(value, UUID):
            return {_TAG_UUID: value.hex}
        if isinstance(value, datetime):
            return {_TAG_DATETIME: value.isoformat()}
        if isinstance(value, str):
            return self.encode(str(value), depth)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return self.encode(int(value), depth)
        if isinstance(value, float):
            return self.encode_float(float(value))
        self.fail(
            f"values of type {type(value).__name__!r} cannot be stored; store"
            " dicts, lists, tuples, strings, numbers, booleans, None, bytes,"
            " Markup, UUIDs or datetimes"
        )


def _is_plain_float(value: float) -> bool:
    """Whether a float is stored as it is, untagged: only when cjson, which
    writes numbers with ``"%.14g"``, writes the very text Python does. Then
    it reads back equal, and a value re-encoded inside Redis keeps its
    length (the session's size, see stores/paths.py). Subnormals such as
    5e-324 round-trip through 14 digits but are written longer; they are
    tagged.
    """
    return (
        math.isfinite(value)
        and not value.is_integer()
        and f"{value:.14g}" == repr(value)
    )


def dumps(value: t.Any, path: t.Sequence[object] = ()) -> bytes:
    """Encode a session value as UTF-8 JSON bytes safe for Lua ``cjson``.

    :param value: the value to encode.
    :param path: where the value lives in the session. It names the value in
        error messages, and each dict it leads through (one per key but the
        last) counts as a level toward :data:`MAX_DEPTH`, as it does when
        the session is read.
    :raises SessionSerializationError: the value, or something inside it,
        cannot be stored, or it nests deeper than :data:`MAX_DEPTH`. The
        message names its path.
    """
    depth = max(len(path) - 1, 0)
    try:
        try:
            return _DUMP(_Encoder(path).encode(value, depth)).encode("utf-8")
        except UnicodeEncodeError:
            # Only lone surrogates cannot be encoded: tag them, slowly.
            tree = _Encoder(path, tag_surrogates=True).encode(value, depth)
            return _DUMP(tree).encode("utf-8")
    except RecursionError:
        raise SessionSerializationError(
            f"cannot store {format_path(path)}: nesting is too deep"
        ) from None


def _decode_object(obj: dict[str, t.Any]) -> t.Any:
    if len(obj) == 1:
        key = next(iter(obj))
        untag = _UNTAG.get(key)
        if untag is not None:
            return untag(obj[key])
    for key in obj:
        if key[:1] == " ":
            return {
                (decode_key(key) if key[:1] == " " else key): value
                for key, value in obj.items()
            }
    return obj


class StoredValueError(ValueError):
    """A stored top-level value does not decode: it is not JSON written by
    :func:`dumps`, or it nests deeper than :data:`MAX_DEPTH`.

    Its message says why in words; it never quotes the data.
    """


#: What decoding a stored value can raise on data that :func:`dumps` did
#: not write: JSON that does not parse (:exc:`ValueError`), and tags whose
#: payload has the wrong type or form.
DECODE_ERRORS = (ValueError, TypeError, AttributeError, RecursionError)


class LazyValue:
    """The stored JSON of one top-level value, decoded when first read.

    A store's :meth:`~flask_relay_session.SessionStore.load` may give these
    as values of :attr:`~flask_relay_session.stores.StoredSession.data`:
    the session decodes each one the first time the request reads its key,
    so a request that reads one key of a large session pays for that key
    only. A value that is never read is written back, if at all, as it was
    stored.

    :param json: the value's JSON, as :func:`dumps` wrote it.
    """

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json

    def decode(self) -> t.Any:
        """Return the value.

        :raises StoredValueError: the JSON does not decode.
        """
        try:
            return loads(self.json, max_depth=MAX_DEPTH)
        except StoredValueError:
            raise
        except DECODE_ERRORS as error:
            raise StoredValueError(
                f"a stored value does not decode ({type(error).__name__})"
            ) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.json)} bytes>"


def loads_fields(fields: t.Mapping[str, bytes]) -> dict[str, LazyValue]:
    """Return a mapping of stored top-level keys to their JSON as the data
    of a session, each value decoded when first read (:class:`LazyValue`).
    """
    return {
        (decode_key(key) if key[:1] == " " else key): LazyValue(value)
        for key, value in fields.items()
    }


_DECODE_TAGGED = json.JSONDecoder(object_hook=_decode_object).decode


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH + 2) -> t.Any:
    """Decode JSON written by :func:`dumps`, or a merge of it, to Python.

    Every tag and every escaped key is a string that starts with a space, so
    JSON in which no quote is followed by a space holds neither and is
    decoded by the plain C decoder, with no Python call per object.

    :param data: the JSON.
    :param max_depth: how deeply dicts, lists and tuples may nest in the
        result, the result counting as the first level. The default fits a
        whole stored session, ``{"data": {key: value}, "meta": {...}}``,
        whose values may nest :data:`MAX_DEPTH` levels, as :func:`dumps`
        allows.
    :raises ValueError: ``data`` is not JSON; :exc:`StoredValueError`, a
        :exc:`ValueError`, when it nests deeper than ``max_depth``.
    """
    try:
        if isinstance(data, bytes):
            tagged = b'" ' in data
            value = _DECODE_TAGGED(data.decode("utf-8")) if tagged else json.loads(data)
        else:
            tagged = '" ' in data
            value = _DECODE_TAGGED(data) if tagged else json.loads(data)
    except RecursionError:
        # Far deeper than anything dumps writes.
        raise StoredValueError("the JSON nests too deeply to decode") from None
    if _nests_deeper(data, value, tagged, max_depth):
        raise StoredValueError(f"the value nests deeper than {max_depth} levels")
    return value


#: Maps ``{}`` to ``[]``, for :func:`_json_nests_deeper`.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
#: Every byte but quotes and brackets.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
#: A string, once nothing but quotes and brackets is left of the JSON.
_STRING = re.compile(rb'"[^"]*"')


def _nests_deeper(data: bytes | str, value: t.Any, tagged: bool, levels: int) -> bool:
    """Whether dicts, lists and tuples nest deeper than ``levels`` in
    ``value``, decoded from the JSON ``data``, itself counting as the first
    level.

    The JSON nests at least as deep as the value (a tag is an object, a
    tuple's an object holding an array), so the value is looked at only when
    the JSON is deeper. The text is looked at only when it opens more
    brackets than ``levels``.
    """
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") <= levels:
        return False
    if not _json_nests_deeper(raw, levels):
        return False
    return not tagged or _value_nests_deeper(value, levels)


def _json_nests_deeper(data: bytes, levels: int) -> bool:
    """Whether arrays and objects nest deeper than ``levels`` in the JSON
    ``data``, without decoding it: a few passes over the text, then one per
    level of nesting, up to ``levels``, each at C speed over what is left.
    """
    if b'\\"' in data:
        # An escaped quote is no quote. An escaped backslash can come before
        # a quote that is one: drop those first.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Only quotes and brackets: strings pair up their quotes, and drop out
    # with any brackets inside them.
    shape = data.translate(_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in shape:
        shape = _STRING.sub(b"", shape)
    for _ in range(levels):
        if not shape:
            return False
        # The innermost arrays and objects drop out: one level less.
        shape = shape.replace(b"[]", b"")
    return bool(shape)


def _value_nests_deeper(value: t.Any, levels: int) -> bool:
    """Whether dicts, lists and tuples nest deeper than ``levels`` in the
    decoded ``value``, itself counting as the first level.

    It looks at one level at a time, with no recursion.
    """
    containers = [value] if type(value) in _CONTAINERS else []
    for _ in range(levels):
        if not containers:
            return False
        inner: list[t.Any] = []
        for container in containers:
            items = container.values() if type(container) is dict else container
            is_container = map(_CONTAINERS.__contains__, map(type, items))
            inner.extend(itertools.compress(items, is_container))
        containers = inner
    return bool(containers)
