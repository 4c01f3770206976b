"""The extension's settings, read from ``app.config`` and validated once.

Every ``RELAY_SESSION_*`` key, and Flask's ``PERMANENT_SESSION_LIFETIME``,
is checked at ``init_app``. A wrong value raises
:class:`~flask_relay_session.SessionConfigError` naming the key and the
values it accepts, so a typo or a value no store can honour fails at
start-up instead of on every request.

Durations are a number of seconds or a :class:`~datetime.timedelta`, at
most :data:`MAX_DURATION`. NaN, infinities, booleans and negative numbers
are refused.

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
        read as ``RELAY_SESSION_KEY_PREFIX``. Flask-Session's old keys then
        share the prefix of live sessions, so the warning says to clean them
        up only with a pattern that skips keys containing ``{``. A value
        starting with Flask-Session's default, ``session:``
        (:data:`FLASK_SESSION_PREFIX`), is refused: live sessions and locks
        would match ``session:*``, the pattern its keys are cleaned up with.
        Remove the key (the prefix becomes ``sess:``) or set
        ``RELAY_SESSION_KEY_PREFIX``. With
        ``RELAY_SESSION_MIGRATE_FLASK_SESSION``, it is not read as this
        extension's prefix: it says where Flask-Session's sessions are, which
        then move over on their first request (:class:`MigrationSettings`).
    ``SESSION_PERMANENT``
        not mapped; ``True`` warns, since sessions are permanent only when
        the app sets ``session.permanent = True``.
    ``SESSION_TYPE``
        not mapped; anything but ``"redis"`` warns.

    Other Flask-Session keys are ignored without a word: they have no
    effect here (``SESSION_USE_SIGNER``: cookies are always signed;
    ``SESSION_ID_LENGTH``, ``SESSION_SERIALIZATION_FORMAT``,
    ``SESSION_CLEANUP_N_REQUESTS`` and the other backends' keys), except
    that ``RELAY_SESSION_MIGRATE_FLASK_SESSION`` reads
    ``SESSION_USE_SIGNER`` and ``SESSION_SERIALIZATION_FORMAT`` to read the
    cookies and sessions Flask-Session wrote.
    ``SESSION_COOKIE_*``, ``SESSION_REFRESH_EACH_REQUEST`` and
    ``PERMANENT_SESSION_LIFETIME`` are Flask's own keys, which this
    extension follows.
"""

from __future__ import annotations

import importlib.util
import sys
import typing as t
import urllib.parse
import warnings
from dataclasses import dataclass
from datetime import timedelta

from .errors import SessionConfigError

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request

#: A callable that returns the request values a cookie is bound to.
SignWith = t.Callable[["Request"], "str | None | t.Sequence[str | None]"]

#: The smallest rotation grace period, in seconds.
MIN_GRACE_PERIOD = 5.0

#: The longest duration a setting may give: 3650 days, about ten years.
#: Much longer ones break: Redis refuses an expiry that does not fit a
#: signed 64-bit count of milliseconds once added to the current time, and
#: a permanent session's cookie cannot expire after the year 9999. Ten years
#: keeps every expiry far inside both, and inside what the Lua scripts'
#: numbers and ``cjson`` hold exactly.
MAX_DURATION = timedelta(days=3650)

_MAX_DURATION_TEXT = f"{MAX_DURATION.days} days"

#: Flask-Session's default ``SESSION_KEY_PREFIX``. Read as
#: ``RELAY_SESSION_KEY_PREFIX``, a prefix starting with it is refused.
FLASK_SESSION_PREFIX = "session:"

LAYOUTS = ("json", "hash")

#: The Flask-Session settings that describe its stored sessions, by the
#: ``RELAY_SESSION_MIGRATE_FLASK_SESSION_*`` key that overrides each, and the
#: default of each when neither is set (Flask-Session's own).
MIGRATION_KEYS: t.Mapping[str, tuple[str, t.Any]] = {
    "SESSION_KEY_PREFIX": (
        "RELAY_SESSION_MIGRATE_FLASK_SESSION_KEY_PREFIX",
        "session:",
    ),
    "SESSION_USE_SIGNER": ("RELAY_SESSION_MIGRATE_FLASK_SESSION_USE_SIGNER", False),
    "SESSION_SERIALIZATION_FORMAT": (
        "RELAY_SESSION_MIGRATE_FLASK_SESSION_SERIALIZATION_FORMAT",
        "msgpack",
    ),
    "SESSION_REDIS": ("RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS", None),
}

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
class MigrationSettings:
    """Where and how Flask-Session stored the sessions that
    ``RELAY_SESSION_MIGRATE_FLASK_SESSION`` moves over (see
    :mod:`flask_relay_session.migration`).

    Each is the ``RELAY_SESSION_MIGRATE_FLASK_SESSION_*`` key of its name,
    else Flask-Session's own key (:data:`MIGRATION_KEYS`), else
    Flask-Session's default.

    .. versionadded:: 0.1.0
    """

    #: ``SESSION_KEY_PREFIX``: a session is stored at ``<prefix><sid>``.
    key_prefix: str
    #: ``SESSION_USE_SIGNER``: the cookie holds the signed sid.
    use_signer: bool
    #: ``SESSION_SERIALIZATION_FORMAT``: ``"msgpack"`` or ``"json"``.
    serialization_format: str
    #: ``SESSION_REDIS``: a redis-py client or a URL; ``None`` for the
    #: client of this extension's own store.
    redis: t.Any
    #: How long, in milliseconds, the old key leads requests that still
    #: carry the old cookie to the new session, once a request moved it.
    grace_period: int


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
    #: ``RELAY_SESSION_ROLLING``, when a request extends the session's
    #: expiry: ``True``, on every request that loads or writes it (and
    #: every request of a permanent session); ``False``, never; a
    #: fraction r with 0 < r < 1, only once less than (1 - r) × the
    #: lifetime remains (``SessionPolicy.refresh_due`` in session.py).
    rolling: bool | float
    sign_with: SignWith | None
    max_size: int
    layout: str
    #: ``RELAY_SESSION_MIGRATE_FLASK_SESSION``: how to read Flask-Session's
    #: sessions, or ``None`` when they are not moved over.
    migrate_flask_session: MigrationSettings | None = None
    #: ``RELAY_SESSION_TRACK_USERS``: bind sessions to Flask-Login's users;
    #: ``None``, the default, when the store can keep the sessions of users
    #: and Flask-Login is installed.
    track_users: bool | None = None
    #: ``RELAY_SESSION_TRACK_CLIENT``: record the user agent and address of
    #: the sessions of users.
    track_client: bool = False
    #: ``RELAY_SESSION_LAST_SEEN_INTERVAL``: how often, at most, a bound
    #: session records that its user was seen.
    last_seen_interval: int = 60_000

    @classmethod
    def from_app(cls, app: Flask) -> Settings:
        """Read and validate the settings from ``app.config``.

        ``PERMANENT_SESSION_LIFETIME`` is checked too, though Flask keeps it
        and the interface reads it on each request: an app that changes it
        after ``init_app`` is not checked again.

        :raises SessionConfigError: a value is invalid.
        """
        config = _with_flask_session_keys(app.config)
        _duration(
            config,
            "PERMANENT_SESSION_LIFETIME",
            None,
            minimum=1,
            minimum_text="1 second",
        )
        grace = None
        if config.get("RELAY_SESSION_ROTATION_GRACE_PERIOD") is not None:
            grace = _duration(
                config,
                "RELAY_SESSION_ROTATION_GRACE_PERIOD",
                None,
                minimum=MIN_GRACE_PERIOD,
                minimum_text=f"{MIN_GRACE_PERIOD:g} seconds",
            )
        lock_retries = _count(config, "RELAY_SESSION_LOCK_RETRIES", 10)
        lock_backoff = _duration(
            config,
            "RELAY_SESSION_LOCK_BACKOFF",
            0.05,
            minimum=0,
            minimum_text="0 seconds",
        )
        # Attempt n waits n × backoff on average (± 50 % jitter): the whole
        # average wait has the same limit.
        wait = lock_backoff * lock_retries * (lock_retries + 1) // 2
        if wait > MAX_DURATION // timedelta(milliseconds=1):
            raise SessionConfigError(
                "RELAY_SESSION_LOCK_RETRIES and RELAY_SESSION_LOCK_BACKOFF must"
                " make a lock wait, backoff × (1 + 2 + … + retries), of at most"
                f" {_MAX_DURATION_TEXT}; got {lock_retries} retries of"
                f" {lock_backoff / 1000:g} seconds, {wait // 86_400_000} days"
            )
        return cls(
            redis=config.get("RELAY_SESSION_REDIS"),
            store=config.get("RELAY_SESSION_STORE"),
            key_prefix=_string(config, "RELAY_SESSION_KEY_PREFIX", "sess:"),
            lock_prefix=_string(config, "RELAY_SESSION_LOCK_PREFIX", "lock:"),
            preload_script=_bool(config, "RELAY_SESSION_PRELOAD_SCRIPT", False),
            lock_ttl=_duration(
                config,
                "RELAY_SESSION_LOCK_TTL",
                5,
                minimum=0.001,
                minimum_text="1 millisecond",
            ),
            lock_retries=lock_retries,
            lock_backoff=lock_backoff,
            rotation_grace_period=grace,
            rolling=_rolling(config),
            sign_with=_sign_with(config),
            max_size=_count(config, "RELAY_SESSION_MAX_SIZE", 1024 * 1024, minimum=1),
            layout=_layout(config),
            migrate_flask_session=_migration(app.config),
            track_users=_track_users(config),
            track_client=_bool(config, "RELAY_SESSION_TRACK_CLIENT", False),
            last_seen_interval=_duration(
                config,
                "RELAY_SESSION_LAST_SEEN_INTERVAL",
                60,
                minimum=0,
                minimum_text="0 seconds",
            ),
        )


def _with_flask_session_keys(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Return ``config`` with Flask-Session keys read as their equivalents.

    Warns once per Flask-Session key that is used, and once per key that is
    ignored in a way that changes behaviour.

    :raises SessionConfigError: ``SESSION_KEY_PREFIX`` would put live
        sessions under Flask-Session's default prefix.
    """
    result = dict(config)
    stacklevel = _user_stacklevel()
    # Moving Flask-Session's sessions over, SESSION_KEY_PREFIX says where
    # they are (see _migration): it is no alias then.
    migrating = config.get("RELAY_SESSION_MIGRATE_FLASK_SESSION") is True
    prefix = None if migrating else config.get("SESSION_KEY_PREFIX")
    if (
        isinstance(prefix, str)
        and prefix.startswith(FLASK_SESSION_PREFIX)
        and config.get("RELAY_SESSION_KEY_PREFIX") is None
    ):
        raise SessionConfigError(
            f"SESSION_KEY_PREFIX = {prefix!r} is a Flask-Session setting; read"
            " as RELAY_SESSION_KEY_PREFIX it would keep live sessions and locks"
            f" under {FLASK_SESSION_PREFIX!r}, where a clean-up of"
            f" Flask-Session's keys ({FLASK_SESSION_PREFIX}*) deletes them."
            " Remove SESSION_KEY_PREFIX to use the default 'sess:', or set"
            " RELAY_SESSION_KEY_PREFIX to a non-empty string without braces."
        )
    for old, new in FLASK_SESSION_KEYS.items():
        if config.get(old) is None or config.get(new) is not None:
            continue
        if migrating and old == "SESSION_KEY_PREFIX":
            continue
        message = (
            f"{old} is a Flask-Session setting; flask-relay-session reads it"
            f" as {new} for now. Rename it to {new}."
        )
        if old == "SESSION_KEY_PREFIX":
            message += (
                " Live sessions now share this prefix with Flask-Session's old"
                " keys: delete those only with a clean-up that skips keys"
                " containing '{', which all of this extension's keys have."
            )
        warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)
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
    *,
    minimum: float,
    minimum_text: str,
) -> int:
    """Return the duration ``key`` in milliseconds.

    :param minimum: the shortest duration accepted, in seconds; the longest
        is :data:`MAX_DURATION`.
    :param minimum_text: ``minimum`` as the error message states it.
    """
    value = config.get(key, default)
    milliseconds = duration_ms(value, minimum=minimum)
    if milliseconds is None:
        raise _invalid(
            key,
            f"a number of seconds or a timedelta, from {minimum_text} to"
            f" {_MAX_DURATION_TEXT}",
            value,
        )
    return milliseconds


def duration_ms(value: object, *, minimum: float) -> int | None:
    """Return a duration in milliseconds, or ``None`` if it is not one.

    :param value: a number of seconds or a :class:`~datetime.timedelta`;
        booleans, NaN and infinities are not durations.
    :param minimum: the shortest duration accepted, in seconds; the longest
        is :data:`MAX_DURATION`.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        # NaN compares false, so it is refused too.
        or not minimum <= seconds <= MAX_DURATION.total_seconds()
    ):
        return None
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


def _migration(config: t.Mapping[str, t.Any]) -> MigrationSettings | None:
    """Return the settings of ``RELAY_SESSION_MIGRATE_FLASK_SESSION``, or
    ``None`` when it is off.
    """
    if not _bool(config, "RELAY_SESSION_MIGRATE_FLASK_SESSION", False):
        return None
    values: dict[str, t.Any] = {}
    names: dict[str, str] = {}
    for old, (new, default) in MIGRATION_KEYS.items():
        if config.get(new) is not None:
            values[old], names[old] = config[new], new
        elif config.get(old) is not None:
            values[old], names[old] = config[old], old
        else:
            values[old], names[old] = default, new
    prefix = values["SESSION_KEY_PREFIX"]
    if not isinstance(prefix, str) or not prefix:
        raise _invalid(
            names["SESSION_KEY_PREFIX"],
            "Flask-Session's key prefix, a non-empty string",
            prefix,
        )
    signer = values["SESSION_USE_SIGNER"]
    if not isinstance(signer, bool):
        raise _invalid(names["SESSION_USE_SIGNER"], "True or False", signer)
    serialization = values["SESSION_SERIALIZATION_FORMAT"]
    if serialization not in ("msgpack", "json"):
        raise _invalid(
            names["SESSION_SERIALIZATION_FORMAT"], '"msgpack" or "json"', serialization
        )
    client = values["SESSION_REDIS"]
    if isinstance(client, str):
        valid = urllib.parse.urlsplit(client).scheme in ("redis", "rediss", "unix")
    else:
        valid = client is None or callable(getattr(client, "evalsha", None))
    if not valid:
        raise _invalid(
            names["SESSION_REDIS"],
            "a redis-py client, a redis://, rediss:// or unix:// URL, or None"
            " (this extension's client)",
            client,
        )
    return MigrationSettings(
        key_prefix=prefix,
        use_signer=signer,
        serialization_format=t.cast(str, serialization),
        redis=client,
        grace_period=_duration(
            config,
            "RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD",
            60,
            minimum=MIN_GRACE_PERIOD,
            minimum_text=f"{MIN_GRACE_PERIOD:g} seconds",
        ),
    )


def _layout(config: t.Mapping[str, t.Any]) -> str:
    value = config.get("RELAY_SESSION_LAYOUT", "json")
    if value not in LAYOUTS:
        raise _invalid("RELAY_SESSION_LAYOUT", '"json" or "hash"', value)
    return t.cast(str, value)


def _track_users(config: t.Mapping[str, t.Any]) -> bool | None:
    """``RELAY_SESSION_TRACK_USERS``: ``None`` (the default) leaves it to
    the extension, which tracks users when Flask-Login is installed and the
    store can keep the sessions of users.
    """
    value = config.get("RELAY_SESSION_TRACK_USERS")
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _invalid("RELAY_SESSION_TRACK_USERS", "None, True or False", value)
    if value and importlib.util.find_spec("flask_login") is None:
        raise SessionConfigError(
            "RELAY_SESSION_TRACK_USERS is True, but Flask-Login is not"
            " installed; install it, or bind sessions with"
            " session.bind_user(user_id)"
        )
    return value
