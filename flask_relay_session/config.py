"""The extension's settings, read from ``app.config`` and validated once.

Every ``RELAY_SESSION_*`` key is checked at ``init_app``. A wrong value
raises :class:`~flask_relay_session.SessionConfigError` naming the key and
what it should be, so a typo fails at start-up instead of on the first
request.

Migrating from Flask-Session
    Its configuration keys that have an exact equivalent here are read as
    that key, with a :class:`DeprecationWarning` naming the new key
    (:data:`FLASK_SESSION_KEYS`). A ``RELAY_SESSION_*`` key that is set (not
    ``None``) wins over its Flask-Session alias. Flask-Session keys whose
    behaviour this extension does not offer are not mapped; the two that
    would silently change how an app behaves warn when they are set to a
    value this extension does not follow (:data:`FLASK_SESSION_UNSUPPORTED`).

    ``SESSION_REDIS``
        read as ``RELAY_SESSION_REDIS`` (a client, as Flask-Session takes;
        a URL works too).
    ``SESSION_KEY_PREFIX``
        read as ``RELAY_SESSION_KEY_PREFIX``. The stored layout differs from
        Flask-Session's, so sessions stored by Flask-Session are not read:
        users sign in again once.
    ``SESSION_PERMANENT``
        not mapped; ``True`` warns, since sessions are permanent only when
        the app sets ``session.permanent = True``.
    ``SESSION_TYPE``
        not mapped; anything but ``"redis"`` warns.

    ``SESSION_USE_SIGNER`` needs no equivalent (cookies are always signed),
    and ``SESSION_COOKIE_*`` and ``PERMANENT_SESSION_LIFETIME`` are Flask's
    own keys, which this extension follows.
"""

from __future__ import annotations

import sys
import typing as t
import warnings
from dataclasses import dataclass
from datetime import timedelta

from .errors import SessionConfigError

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request

#: A callable that returns the request values a cookie is bound to.
SignWith = t.Callable[["Request"], "str | t.Sequence[str]"]

#: The smallest rotation grace period, in seconds.
MIN_GRACE_PERIOD = 5.0

LAYOUTS = ("json", "hash")

#: Flask-Session keys read as the ``RELAY_SESSION_*`` key they stand for.
FLASK_SESSION_KEYS: t.Mapping[str, str] = {
    "SESSION_REDIS": "RELAY_SESSION_REDIS",
    "SESSION_KEY_PREFIX": "RELAY_SESSION_KEY_PREFIX",
}

#: Flask-Session keys with no equivalent: a predicate on the value that is
#: true when ignoring it changes the app's behaviour, and what to do instead.
FLASK_SESSION_UNSUPPORTED: t.Mapping[str, tuple[t.Callable[[t.Any], bool], str]] = {
    "SESSION_PERMANENT": (
        lambda value: bool(value),
        "sessions are not permanent unless the app sets session.permanent ="
        " True (in a before_request function, for all of them)",
    ),
    "SESSION_TYPE": (
        lambda value: value != "redis",
        "sessions are kept in Redis (RELAY_SESSION_REDIS), in a custom"
        " RELAY_SESSION_STORE, or in memory",
    ),
}


@dataclass(frozen=True)
class Settings:
    """The validated ``RELAY_SESSION_*`` settings of one app.

    Durations are in milliseconds.
    """

    #: A redis-py client or URL (``RELAY_SESSION_REDIS``).
    redis: t.Any
    #: A store object (``RELAY_SESSION_STORE``).
    store: t.Any
    key_prefix: str
    lock_prefix: str
    preload_script: bool
    lock_ttl: int
    lock_retries: int
    lock_backoff: int
    #: The rotation grace period; ``None`` means the session lifetime.
    rotation_grace_period: int | None
    #: ``True``, ``False`` or the fraction r of §3.
    rolling: bool | float
    sign_with: SignWith | None
    max_size: int
    layout: str

    @classmethod
    def from_app(cls, app: Flask) -> Settings:
        """Read and validate the settings from ``app.config``.

        :raises SessionConfigError: a value is invalid.
        """
        config = _with_flask_session_keys(app.config)
        grace = None
        if config.get("RELAY_SESSION_ROTATION_GRACE_PERIOD") is not None:
            grace = _duration(config, "RELAY_SESSION_ROTATION_GRACE_PERIOD", None)
            if grace < MIN_GRACE_PERIOD * 1000:
                raise _invalid(
                    "RELAY_SESSION_ROTATION_GRACE_PERIOD",
                    f"at least {MIN_GRACE_PERIOD:g} seconds, so that requests in"
                    " flight can follow a rotation",
                    config["RELAY_SESSION_ROTATION_GRACE_PERIOD"],
                )
        return cls(
            redis=config.get("RELAY_SESSION_REDIS"),
            store=config.get("RELAY_SESSION_STORE"),
            key_prefix=_string(config, "RELAY_SESSION_KEY_PREFIX", "sess:"),
            lock_prefix=_string(config, "RELAY_SESSION_LOCK_PREFIX", "lock:"),
            preload_script=_bool(config, "RELAY_SESSION_PRELOAD_SCRIPT", False),
            lock_ttl=_duration(config, "RELAY_SESSION_LOCK_TTL", 5),
            lock_retries=_count(config, "RELAY_SESSION_LOCK_RETRIES", 10),
            lock_backoff=_duration(
                config, "RELAY_SESSION_LOCK_BACKOFF", 0.05, zero=True
            ),
            rotation_grace_period=grace,
            rolling=_rolling(config),
            sign_with=_sign_with(config),
            max_size=_count(config, "RELAY_SESSION_MAX_SIZE", 1024 * 1024, minimum=1),
            layout=_layout(config),
        )


def _with_flask_session_keys(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Return ``config`` with Flask-Session keys read as their equivalents.

    Warns once per Flask-Session key that is used, and once per key that is
    ignored in a way that changes behaviour.
    """
    result = dict(config)
    stacklevel = _user_stacklevel()
    for old, new in FLASK_SESSION_KEYS.items():
        if config.get(old) is None or config.get(new) is not None:
            continue
        warnings.warn(
            f"{old} is a Flask-Session setting; flask-relay-session reads it"
            f" as {new} for now. Rename it to {new}.",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        result[new] = config[old]
    for key, (matters, instead) in FLASK_SESSION_UNSUPPORTED.items():
        if key in config and matters(config[key]):
            warnings.warn(
                f"{key} = {config[key]!r} is a Flask-Session setting that"
                f" flask-relay-session does not follow: {instead}.",
                UserWarning,
                stacklevel=stacklevel,
            )
    return result


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the caller's own code."""
    level = 1
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "flask_relay_session"
    ):
        frame = frame.f_back
        level += 1
    return level


def _invalid(key: str, expected: str, value: object) -> SessionConfigError:
    return SessionConfigError(f"{key} must be {expected}; got {value!r}")


def _string(config: t.Mapping[str, t.Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value:
        raise _invalid(key, "a non-empty string", value)
    if "{" in value or "}" in value:
        raise _invalid(key, "a string without braces (they are the hash tag)", value)
    return value


def _bool(config: t.Mapping[str, t.Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(key, "True or False", value)
    return value


def _count(
    config: t.Mapping[str, t.Any], key: str, default: int, minimum: int = 0
) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(key, f"a whole number of at least {minimum}", value)
    return value


def _duration(
    config: t.Mapping[str, t.Any],
    key: str,
    default: float | None,
    zero: bool = False,
) -> int:
    value = config.get(key, default)
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or seconds < 0
        or (seconds == 0 and not zero)
        or seconds != seconds
    ):
        limit = "zero or more" if zero else "more than zero"
        raise _invalid(key, f"a number of seconds or a timedelta, {limit}", value)
    return round(seconds * 1000)


def _rolling(config: t.Mapping[str, t.Any]) -> bool | float:
    value = config.get("RELAY_SESSION_ROLLING", True)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and 0 < value < 1:
        return float(value)
    raise _invalid(
        "RELAY_SESSION_ROLLING", "True, False or a fraction between 0 and 1", value
    )


def _sign_with(config: t.Mapping[str, t.Any]) -> SignWith | None:
    value = config.get("RELAY_SESSION_SIGN_WITH")
    if value is not None and not callable(value):
        raise _invalid(
            "RELAY_SESSION_SIGN_WITH",
            "None or a callable taking the request and returning a string or a"
            " list of strings",
            value,
        )
    return t.cast("SignWith | None", value)


def _layout(config: t.Mapping[str, t.Any]) -> str:
    value = config.get("RELAY_SESSION_LAYOUT", "json")
    if value not in LAYOUTS:
        raise _invalid("RELAY_SESSION_LAYOUT", '"json" or "hash"', value)
    return t.cast(str, value)
