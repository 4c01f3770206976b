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
import json
import math
import typing as t
from datetime import datetime
from uuid import UUID

from markupsafe import Markup

from .errors import SessionSerializationError

#: A path into the session: the keys from the top level down.
Path = tuple[str, ...]

#: Integers with a magnitude below this survive ``cjson``'s 14 digits.
_SAFE_INT_LIMIT = 10**14

#: Deeper nesting than this is refused with a clear error; ``cjson`` and
#: Python's own JSON modules give up a little above 1000 levels.
MAX_DEPTH = 256

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
    """Turns one Python value into a tree that ``cjson`` keeps intact."""

    def __init__(self, path: t.Sequence[object]) -> None:
        self.path = list(path)

    def fail(self, problem: str) -> t.NoReturn:
        raise SessionSerializationError(
            f"cannot store {format_path(self.path)}: {problem}"
        )

    def encode(self, value: t.Any, depth: int = 0) -> t.Any:
        kind = type(value)
        if kind is str or value is None or kind is bool:
            return value
        if kind is int:
            if -_SAFE_INT_LIMIT < value < _SAFE_INT_LIMIT:
                return value
            return {_TAG_INT: _int_payload(value)}
        if kind is float:
            return self.encode_float(value)
        if depth >= MAX_DEPTH:
            self.fail(f"nesting is deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            return self.encode_dict(value, depth + 1)
        if isinstance(value, list):
            return self.encode_list(value, depth + 1)
        return self.encode_other(value, depth)

    def encode_float(self, value: float) -> t.Any:
        if (
            math.isfinite(value)
            and not value.is_integer()
            and float(f"{value:.14g}") == value
        ):
            return value
        return {_TAG_FLOAT: repr(value)}

    def encode_dict(self, value: dict[t.Any, t.Any], depth: int) -> dict[str, t.Any]:
        out = {}
        path = self.path
        for key, item in value.items():
            try:
                stored_key = encode_key(key)
            except SessionSerializationError:
                self.fail(
                    f"keys must be str, int, float, bool or None, not"
                    f" {type(key).__name__} ({key!r:.100})"
                )
            path.append(key)
            out[stored_key] = self.encode(item, depth)
            path.pop()
        return out

    def encode_list(self, value: t.Sequence[t.Any], depth: int) -> t.Any:
        if not value:
            return {_TAG_EMPTY_LIST: 0}
        path = self.path
        out = []
        for index, item in enumerate(value):
            path.append(index)
            out.append(self.encode(item, depth))
            path.pop()
        return out

    def encode_other(self, value: t.Any, depth: int) -> t.Any:
        if isinstance(value, tuple):
            return {_TAG_TUPLE: self.encode_list(value, depth + 1)}
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


class _SurrogateEncoder(_Encoder):
    """The slow path, for values holding strings with lone surrogates."""

    def encode(self, value: t.Any, depth: int = 0) -> t.Any:
        if type(value) is str and _has_surrogate(value):
            return {_TAG_STRING: _surrogate_payload(value)}
        return super().encode(value, depth)


def dumps(value: t.Any, path: t.Sequence[object] = ()) -> bytes:
    """Encode a session value as UTF-8 JSON bytes safe for Lua ``cjson``.

    :param value: the value to encode.
    :param path: where the value lives in the session, for error messages.
    :raises SessionSerializationError: the value, or something inside it,
        cannot be stored. The message names its path.
    """
    try:
        try:
            return _DUMP(_Encoder(path).encode(value)).encode("utf-8")
        except UnicodeEncodeError:
            # Only lone surrogates cannot be encoded: tag them, slowly.
            return _DUMP(_SurrogateEncoder(path).encode(value)).encode("utf-8")
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


def loads_fields(fields: t.Mapping[str, bytes]) -> dict[str, t.Any]:
    """Decode a mapping of stored top-level keys to their JSON."""
    return {
        (decode_key(key) if key[:1] == " " else key): loads(value)
        for key, value in fields.items()
    }


_DECODE_TAGGED = json.JSONDecoder(object_hook=_decode_object).decode


def loads(data: bytes | str) -> t.Any:
    """Decode JSON written by :func:`dumps`, or a merge of it, to Python.

    Every tag and every escaped key is a string that starts with a space, so
    JSON without ``" `` in it holds neither and is decoded by the plain C
    decoder, with no Python call per object.
    """
    if isinstance(data, bytes):
        if b'" ' not in data:
            return json.loads(data)
        data = data.decode("utf-8")
    elif '" ' not in data:
        return json.loads(data)
    return _DECODE_TAGGED(data)
