"""What Flask-Session wrote: its cookies and its stored sessions, read
without ever unpickling.

Flask-Session 0.7 and 0.8 keep a session on Redis under
``<SESSION_KEY_PREFIX><sid>`` (``session:`` by default), as the msgpack or
the JSON that :mod:`msgspec` makes of the session dict, with no extension
hook. Its cookie holds the sid, 43 characters of :func:`secrets.token_urlsafe`
by default, or with ``SESSION_USE_SIGNER`` the sid signed by
:class:`itsdangerous.Signer` (``salt="flask-session"``, HMAC key
derivation): ``<sid>.<27 characters of HMAC-SHA1>``.

Reading it, Flask-Session tries its format, then the other one, then falls
back to unpickling, which runs whatever code the stored bytes ask
for. :meth:`Decoder.decode` tries the same two formats with the same decoders, so
the values come out exactly as Flask-Session gave them to the app (tuples as
lists, msgpack timestamps as aware UTC datetimes, msgpack binary as bytes),
and stops there: anything else is :exc:`Unreadable`, and a value that looks
like a pickle is only named so.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from itsdangerous import BadSignature
from itsdangerous import Signer

from ..errors import SessionConfigError
from ..errors import SessionSerializationError
from ..serialization import MAX_DEPTH
from ..serialization import dumps
from ..serialization import encode_key
from ..stores.base import Change
from ..stores.paths import session_size

if t.TYPE_CHECKING:
    import msgspec

#: A Flask-Session session id: what :func:`secrets.token_urlsafe` makes (43
#: characters for the default ``SESSION_ID_LENGTH`` of 32 bytes), or the
#: uuid4 of versions before 0.6. Anything else in a cookie, or after the
#: prefix of a key, is no Flask-Session session and is never looked up.
SID = re.compile(r"[A-Za-z0-9_-]{16,256}")

#: A cookie signed with ``SESSION_USE_SIGNER``: the sid, a dot and the
#: base64url HMAC-SHA1 that :class:`itsdangerous.Signer` appends.
_SIGNED = re.compile(r"([A-Za-z0-9_-]{16,256})\.[A-Za-z0-9_-]{27}")

#: The formats of ``SESSION_SERIALIZATION_FORMAT``.
FORMATS = ("msgpack", "json")

#: The key of Flask-Session's session dict that holds ``session.permanent``.
PERMANENT_KEY = "_permanent"


class Unreadable(Exception):
    """A stored value that is not a Flask-Session session this extension
    reads. Its message says why in words; it never quotes the data.

    :param pickled: the value looks like a pickle, which is never loaded.
    """

    def __init__(self, message: str, *, pickled: bool = False) -> None:
        super().__init__(message)
        self.pickled = pickled


@dataclass(frozen=True, slots=True)
class FlaskSessionData:
    """A decoded Flask-Session session.

    :param data: the session dict as Flask-Session gave it to the app,
        without ``_permanent``.
    :param permanent: ``session.permanent`` (the ``_permanent`` key).
    """

    data: dict[t.Any, t.Any]
    permanent: bool


def cookie_sid(
    value: str, *, use_signer: bool, secret_keys: t.Sequence[str | bytes]
) -> str | None:
    """Return the Flask-Session sid a cookie value holds, or ``None`` when
    it is no well-formed Flask-Session cookie.

    With ``use_signer``, the signature is verified, with every key of
    ``secret_keys`` (oldest first, as ``SECRET_KEY_FALLBACKS`` then
    ``SECRET_KEY``) and in constant time; a cookie that does not verify is
    ``None``. Nothing here asks Redis: a cookie that is not Flask-Session's
    costs no lookup.
    """
    if not use_signer:
        return value if SID.fullmatch(value) else None
    match = _SIGNED.fullmatch(value)
    if match is None or not secret_keys:
        return None
    keys = [key.encode() if isinstance(key, str) else key for key in secret_keys]
    signer = Signer(keys, salt="flask-session", key_derivation="hmac")
    try:
        signer.unsign(value)
    except BadSignature:
        return None
    return match[1]


def looks_pickled(raw: bytes) -> bool:
    """Whether ``raw`` looks like a pickle, as Flask-Session 0.6 and older
    wrote sessions.

    Only to name what is skipped: a pickle is recognised by its first
    opcodes (``PROTO`` 2 to 5, or the ``(dp`` of protocol 0 dicts) and its
    last one (``STOP``), never by loading it.
    """
    if not raw.endswith(b"."):
        return False
    if raw[:1] == b"\x80":
        return raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return raw.startswith(b"(dp")


class Decoder:
    """Decodes stored Flask-Session sessions as Flask-Session 0.7 and 0.8 do,
    without the pickle fallback.

    :param serialization_format: ``SESSION_SERIALIZATION_FORMAT``,
        ``"msgpack"`` or ``"json"``: tried first, then the other, as
        Flask-Session does.
    :raises SessionConfigError: :mod:`msgspec` is not installed (the
        ``flask-session`` extra).
    """

    def __init__(self, serialization_format: str) -> None:
        try:
            import msgspec
        except ImportError:
            raise SessionConfigError(
                "RELAY_SESSION_MIGRATE_FLASK_SESSION needs msgspec to read the"
                " sessions Flask-Session stored; install it with"
                " pip install 'flask-relay-session[flask-session]'"
            ) from None
        msgpack = msgspec.msgpack.Decoder()
        json = msgspec.json.Decoder()
        decoders: list[msgspec.msgpack.Decoder[t.Any] | msgspec.json.Decoder[t.Any]]
        decoders = (
            [msgpack, json] if serialization_format == "msgpack" else [json, msgpack]
        )
        self._decoders = decoders
        # DecodeError is what msgspec raises on any input it cannot decode;
        # the others are a safety net: what a decoder raises means only that
        # the value is not a session.
        self._errors = (msgspec.DecodeError, ValueError, OverflowError)

    def decode(self, raw: bytes) -> FlaskSessionData:
        """Return the session stored as ``raw``.

        :raises Unreadable: ``raw`` is neither msgpack nor JSON (a pickle
            among others), or not a dict.
        """
        too_deep = False
        for decoder in self._decoders:
            try:
                value = decoder.decode(raw)
            except RecursionError:
                too_deep = True
            except self._errors:
                continue
            else:
                break
        else:
            if looks_pickled(raw):
                raise Unreadable(
                    "a pickle, which is never loaded (Flask-Session 0.6 or older"
                    " wrote it)",
                    pickled=True,
                )
            if too_deep:
                raise Unreadable("msgpack or JSON that nests too deeply to decode")
            raise Unreadable("neither msgpack nor JSON")
        if not isinstance(value, dict):
            raise Unreadable(f"msgpack or JSON of a {type(value).__name__}, not a dict")
        data = dict(value)
        permanent = bool(data.pop(PERMANENT_KEY, False))
        return FlaskSessionData(data, permanent)


class TooLarge(Exception):
    """A Flask-Session session larger than ``RELAY_SESSION_MAX_SIZE``. Its
    message says how large, in words.
    """


def to_changes(data: t.Mapping[t.Any, t.Any], max_size: int) -> list[Change]:
    """Return the changes that create a session of this extension's holding
    ``data``: one per top-level key, as a request's first save sends them.

    :raises Unreadable: a key or value cannot be stored.
    :raises TooLarge: the session would be larger than ``max_size``.
    """
    fields: dict[str, bytes] = {}
    try:
        for key, value in data.items():
            fields[encode_key(key)] = dumps(value, (key,))
    except SessionSerializationError:
        # The error names the path, and may quote a key: not for the log.
        raise Unreadable(
            "a session this extension cannot store: it holds a msgpack extension"
            " value, a key that is neither a string nor a number, or values"
            f" nested deeper than {MAX_DEPTH} levels"
        ) from None
    size = session_size(fields)
    if size > max_size:
        raise TooLarge(
            f"{size} bytes, more than RELAY_SESSION_MAX_SIZE ({max_size} bytes)"
        )
    return [Change((name,), value) for name, value in fields.items()]
