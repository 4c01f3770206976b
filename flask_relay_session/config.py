"""The extension's settings, read from ``app.config`` and validated once.

Every ``RELAY_SESSION_*`` key is checked at ``init_app``. A wrong value
raises :class:`~flask_relay_session.SessionConfigError` naming the key and
what it should be, so a typo fails at start-up instead of on the first
request.
"""

from __future__ import annotations

import typing as t
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
        config = app.config
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
