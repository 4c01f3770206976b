"""Signing and verifying the session cookie.

The cookie value is ``<sid>.<signature>.<flags>``:

- ``sid``: the session id, 64 hex digits (32 bytes from :mod:`secrets`);
- ``signature``: base64url (no padding) HMAC-SHA256 over the sid, the flags
  and, with ``RELAY_SESSION_SIGN_WITH``, the hex SHA-256 of the bound values;
- ``flags``: ``1`` or ``0`` for a permanent session, then the Unix time the
  session expires. They let a request that never touches the session decide
  whether its expiry is due for a refresh without asking the store.

Any change to any character makes the cookie invalid. A cookie that does not
verify is treated as no cookie at all: it never causes a store lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import typing as t
from dataclasses import dataclass

#: The longest cookie value worth looking at; anything longer is not ours.
MAX_COOKIE_LENGTH = 160

_COOKIE = re.compile(r"([0-9a-f]{64})\.([A-Za-z0-9_-]{43})\.([01])([0-9]{1,12})")
_KEY_CONTEXT = b"flask-relay-session.cookie"


def new_session_id() -> str:
    """Return a fresh session id: 256 random bits from :mod:`secrets`."""
    return secrets.token_hex(32)


def bind_values(values: str | None | t.Sequence[str | None]) -> str:
    """Return the hex SHA-256 of request values a cookie is bound to.

    Each value is hashed with its length in front (``<length>:<value>``,
    the length in UTF-8 bytes), so that no two different lists of values
    hash alike: ``["a|b", "c"]`` and ``["a", "b|c"]`` differ. ``None``, a
    header the request did not send, is hashed as ``-``, unlike any string.
    One value is the same as a list holding only that value.

    :param values: what ``RELAY_SESSION_SIGN_WITH`` returned.
    :raises TypeError: a value is neither a string nor ``None``.
    """
    items = [values] if values is None or isinstance(values, str) else values
    digest = hashlib.sha256()
    for value in items:
        if value is None:
            digest.update(b"-")
        elif isinstance(value, str):
            encoded = value.encode("utf-8", "surrogatepass")
            digest.update(b"%d:%s" % (len(encoded), encoded))
        else:
            raise TypeError(
                "RELAY_SESSION_SIGN_WITH must return a string, None or a list"
                f" of them; got an item of type {type(value).__name__}"
            )
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CookieContent:
    """What a verified cookie says.

    :param sid: the session id.
    :param permanent: the session cookie outlives the browser session.
    :param expires_at: when the session expires, in seconds since the epoch.
    :param stale_key: it was signed with a fallback secret key, so it should be
        signed again with the current one.
    """

    sid: str
    permanent: bool
    expires_at: int
    stale_key: bool = False


class CookieSigner:
    """Signs and verifies session cookies with HMAC-SHA256.

    :param secret_keys: the accepted secret keys, oldest first; new cookies
        are signed with the last one, as with Flask's ``SECRET_KEY`` and
        ``SECRET_KEY_FALLBACKS``.
    """

    def __init__(self, secret_keys: t.Sequence[str | bytes]) -> None:
        self._keys = [
            hmac.digest(
                key.encode() if isinstance(key, str) else key, _KEY_CONTEXT, "sha256"
            )
            for key in reversed(secret_keys)
        ]

    def _signature(self, key: bytes, message: str) -> str:
        digest = hmac.digest(key, message.encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, content: CookieContent, bound: str | None = None) -> str:
        """Return the cookie value for ``content``.

        :param bound: the :func:`bind_values` digest the cookie is bound to.
        """
        flags = f"{int(content.permanent)}{content.expires_at}"
        signature = self._signature(self._keys[0], _message(content.sid, flags, bound))
        return f"{content.sid}.{signature}.{flags}"

    def verify(self, value: str, bound: str | None = None) -> CookieContent | None:
        """Return what the cookie ``value`` says, or ``None`` if it is invalid.

        Every accepted key is tried, each compared in constant time. The
        signature is compared as text, so that no two spellings of one
        signature are both accepted.
        """
        if len(value) > MAX_COOKIE_LENGTH:
            return None
        match = _COOKIE.fullmatch(value)
        if match is None:
            return None
        sid, signature, permanent, expires = match.groups()
        message = _message(sid, permanent + expires, bound)
        for position, key in enumerate(self._keys):
            if hmac.compare_digest(self._signature(key, message), signature):
                return CookieContent(
                    sid, permanent == "1", int(expires), stale_key=position > 0
                )
        return None


def _message(sid: str, flags: str, bound: str | None) -> str:
    if bound is None:
        return f"{sid}.{flags}"
    return f"{sid}.{flags}.{bound}"
