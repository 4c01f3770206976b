"""Reading and validating the configuration at ``init_app``."""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import subprocess
import sys
import textwrap
import types
import typing as t
import warnings
from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask import session

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session import SessionConfigError
from flask_relay_session import SessionStore
from flask_relay_session.config import MAX_DURATION

DOCS = Path(__file__).resolve().parent.parent / "docs"


def app_with(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="secret", TESTING=True, **config)
    return app


def test_defaults_use_the_memory_store() -> None:
    app = app_with()
    RelaySession(app)
    state = app.extensions["relay_session"]
    assert isinstance(state.store, MemorySessionStore)
    assert app.session_interface is state.interface
    settings = state.settings
    assert settings.key_prefix == "sess:"
    assert settings.lock_prefix == "lock:"
    assert settings.lock_ttl == 5000
    assert settings.lock_retries == 10
    assert settings.lock_backoff == 50
    assert settings.rotation_grace_period is None
    assert settings.rolling is True
    assert settings.max_size == 1024 * 1024
    assert settings.layout == "json"


def test_init_app_supports_app_factories() -> None:
    relay = RelaySession()
    first, second = app_with(), app_with(RELAY_SESSION_LOCK_RETRIES=3)
    relay.init_app(first)
    relay.init_app(second)
    assert first.extensions["relay_session"].extension is relay
    assert second.extensions["relay_session"].settings.lock_retries == 3
    assert first.extensions["relay_session"].settings.lock_retries == 10
    assert not hasattr(relay, "app")


def test_durations_accept_seconds_and_timedeltas() -> None:
    app = app_with(
        RELAY_SESSION_LOCK_TTL=timedelta(seconds=2),
        RELAY_SESSION_LOCK_BACKOFF=0.2,
        RELAY_SESSION_ROTATION_GRACE_PERIOD=30,
    )
    RelaySession(app)
    settings = app.extensions["relay_session"].settings
    assert (settings.lock_ttl, settings.lock_backoff) == (2000, 200)
    assert settings.rotation_grace_period == 30000


def test_redis_url_builds_a_redis_store() -> None:
    app = app_with(
        RELAY_SESSION_REDIS="redis://127.0.0.1:1/0",
        RELAY_SESSION_KEY_PREFIX="app:",
        RELAY_SESSION_LOCK_PREFIX="mutex:",
    )
    RelaySession(app)
    store = app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    assert store.session_key("abc") == "app:{abc}"
    assert store.lock_key("abc") == "app:mutex:{abc}"


def test_redis_client_is_used_as_given() -> None:
    client = redis.Redis(port=1)
    app = app_with(RELAY_SESSION_REDIS=client)
    RelaySession(app)
    assert app.extensions["relay_session"].store.redis is client


def test_custom_store_wins_over_redis() -> None:
    store = MemorySessionStore()
    app = app_with(RELAY_SESSION_STORE=store, RELAY_SESSION_REDIS="redis://x")
    RelaySession(app)
    assert app.extensions["relay_session"].store is store


def test_memory_store_warns_outside_testing_and_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "flask_relay_session"):
        RelaySession(app_with())
        assert caplog.records == []
        production = app_with()
        production.testing = False
        RelaySession(production)
    assert "RELAY_SESSION_REDIS" in caplog.records[0].message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RELAY_SESSION_LOCK_TTL", 0, "from 1 millisecond"),
        ("RELAY_SESSION_LOCK_TTL", "5", "number of seconds"),
        ("RELAY_SESSION_LOCK_BACKOFF", -1, "from 0 seconds"),
        ("RELAY_SESSION_LOCK_RETRIES", -1, "whole number"),
        ("RELAY_SESSION_LOCK_RETRIES", 2.5, "whole number"),
        ("RELAY_SESSION_LOCK_RETRIES", True, "whole number"),
        ("RELAY_SESSION_ROTATION_GRACE_PERIOD", 4, "from 5 seconds"),
        ("RELAY_SESSION_ROTATION_GRACE_PERIOD", timedelta(seconds=1), "from 5"),
        ("RELAY_SESSION_ROLLING", 1.5, "fraction"),
        ("RELAY_SESSION_ROLLING", 0, "fraction"),
        ("RELAY_SESSION_ROLLING", "yes", "fraction"),
        ("RELAY_SESSION_SIGN_WITH", "user-agent", "callable"),
        ("RELAY_SESSION_MAX_SIZE", 0, "whole number"),
        ("RELAY_SESSION_LAYOUT", "xml", '"json" or "hash"'),
        ("RELAY_SESSION_KEY_PREFIX", "", "non-empty string"),
        ("RELAY_SESSION_KEY_PREFIX", "a{b}", "braces"),
        ("RELAY_SESSION_LOCK_PREFIX", 3, "non-empty string"),
        ("RELAY_SESSION_PRELOAD_SCRIPT", "yes", "True or False"),
        ("RELAY_SESSION_REDIS", 42, "redis-py client or a URL"),
        ("RELAY_SESSION_REDIS", "http://nope", "not a valid Redis URL"),
        ("RELAY_SESSION_STORE", object(), "SessionStore protocol"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_wrong(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(SessionConfigError) as info:
        RelaySession(app_with(**{key: value}))
    assert key in str(info.value)
    assert message in str(info.value)


def test_interface_class_can_be_replaced() -> None:
    from flask_relay_session.interface import RelaySessionInterface

    class TenantInterface(RelaySessionInterface):
        def get_cookie_name(self, app: Flask) -> str:
            return "tenant-session"

    class TenantSession(RelaySession):
        interface_class = TenantInterface

    app = app_with()
    TenantSession(app)
    assert isinstance(app.session_interface, TenantInterface)

    @app.get("/set")
    def set_value() -> str:
        from flask import session

        session["a"] = 1
        return "ok"

    response = app.test_client().get("/set")
    assert response.headers["Set-Cookie"].startswith("tenant-session=")


# -- Ranges: values no store can honour fail at init_app --------------------------

#: The shortest and longest value each duration key accepts.
DURATION_RANGES = {
    "PERMANENT_SESSION_LIFETIME": (timedelta(seconds=1), MAX_DURATION),
    "RELAY_SESSION_LOCK_TTL": (timedelta(milliseconds=1), MAX_DURATION),
    "RELAY_SESSION_LOCK_BACKOFF": (timedelta(0), MAX_DURATION),
    "RELAY_SESSION_ROTATION_GRACE_PERIOD": (timedelta(seconds=5), MAX_DURATION),
}

#: Each duration key's range, as its error message states it.
RANGE_TEXTS = {
    "PERMANENT_SESSION_LIFETIME": "from 1 second to 3650 days",
    "RELAY_SESSION_LOCK_TTL": "from 1 millisecond to 3650 days",
    "RELAY_SESSION_LOCK_BACKOFF": "from 0 seconds to 3650 days",
    "RELAY_SESSION_ROTATION_GRACE_PERIOD": "from 5 seconds to 3650 days",
}

#: What no duration key accepts.
NONSENSE_DURATIONS = [
    math.inf,
    -math.inf,
    math.nan,
    -1,
    timedelta(seconds=-1),
    True,
    1e20,
    10**400,
    timedelta.max,
    MAX_DURATION + timedelta(microseconds=1),
    MAX_DURATION.total_seconds() + 1,
]


def duration_case(key: str, value: object) -> t.Any:
    text = f"timedelta({value})" if isinstance(value, timedelta) else repr(value)
    return pytest.param(key, value, id=f"{key}={text if len(text) < 60 else '10**400'}")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        duration_case(key, value)
        for key in DURATION_RANGES
        for value in NONSENSE_DURATIONS
    ]
    + [
        duration_case(key, shortest - timedelta(microseconds=1))
        for key, (shortest, _) in DURATION_RANGES.items()
        if shortest
    ]
    + [
        # Less than 1 ms. 1e-9 and 0.0004 were rounded to 0 ms: Redis refused
        # every lock, and memory took locks that had already expired.
        duration_case("RELAY_SESSION_LOCK_TTL", 1e-9),
        duration_case("RELAY_SESSION_LOCK_TTL", 0.0004),
        duration_case("RELAY_SESSION_LOCK_TTL", 0.0009),
        # Redis refused every write; memory answered 200 and kept nothing.
        duration_case("PERMANENT_SESSION_LIFETIME", 0),
        duration_case("PERMANENT_SESSION_LIFETIME", timedelta(0)),
        duration_case("PERMANENT_SESSION_LIFETIME", 0.5),
        duration_case("PERMANENT_SESSION_LIFETIME", None),
        duration_case("PERMANENT_SESSION_LIFETIME", "31 days"),
    ],
)
def test_durations_outside_their_range_are_refused_naming_the_range(
    key: str, value: object
) -> None:
    with pytest.raises(SessionConfigError) as info:
        RelaySession(app_with(**{key: value}))
    assert str(info.value) == (
        f"{key} must be a number of seconds or a timedelta, {RANGE_TEXTS[key]};"
        f" got {value!r}"
    )


def test_a_lock_wait_longer_than_the_longest_duration_is_refused() -> None:
    longest = dict(
        RELAY_SESSION_LOCK_BACKOFF=MAX_DURATION, RELAY_SESSION_LOCK_RETRIES=1
    )
    RelaySession(app_with(**longest))
    for config in (
        dict(longest, RELAY_SESSION_LOCK_RETRIES=2),
        dict(RELAY_SESSION_LOCK_BACKOFF=MAX_DURATION),  # 10 retries by default
        dict(RELAY_SESSION_LOCK_RETRIES=10**9),  # 0.05 seconds by default
        dict(RELAY_SESSION_LOCK_RETRIES=10**400),
    ):
        with pytest.raises(SessionConfigError) as info:
            RelaySession(app_with(**config))
        message = str(info.value)
        assert "RELAY_SESSION_LOCK_RETRIES and RELAY_SESSION_LOCK_BACKOFF" in message
        assert "at most 3650 days" in message


def session_app(make_app: Callable[..., Flask], **config: object) -> Flask:
    """An app whose views write, read, lock and rotate a permanent session."""
    app = make_app(**config)

    @app.get("/set/<value>")
    def set_value(value: str) -> str:
        session.permanent = True
        session["value"] = value
        return "ok"

    @app.get("/get")
    def get_value() -> dict[str, t.Any]:
        relay_session = app.extensions["relay_session"].extension.session
        return {
            "value": session.get("value"),
            "locked_owner": session.get("locked_owner"),
            "redirected": relay_session.is_redirected,
            "seconds_left": (
                relay_session.expires_at - datetime.now(timezone.utc)
            ).total_seconds(),
        }

    @app.get("/lock")
    def lock() -> str:
        relay_session = app.extensions["relay_session"].extension.session
        # Nothing is written inside the block: with a 1 ms lock TTL, the
        # lock may expire before a save in the block, as documented.
        with relay_session.lock():
            owner = relay_session.is_lock_owner
        session["locked_owner"] = owner
        return "ok"

    @app.get("/rotate")
    def rotate() -> str:
        app.extensions["relay_session"].extension.session.rotate_id()
        return "ok"

    return app


def test_the_shortest_and_longest_lifetime_keep_sessions(
    make_app: Callable[..., Flask],
) -> None:
    shortest, longest = DURATION_RANGES["PERMANENT_SESSION_LIFETIME"]
    for lifetime in (shortest, shortest.total_seconds(), longest):
        client = session_app(
            make_app, PERMANENT_SESSION_LIFETIME=lifetime
        ).test_client()
        assert client.get("/set/kept").status_code == 200
        response = client.get("/get")
        assert response.status_code == 200
        assert response.json is not None
        assert response.json["value"] == "kept"
    assert response.json["seconds_left"] > longest.total_seconds() - 60
    for outside in (
        shortest - timedelta(milliseconds=1),
        longest + timedelta(seconds=1),
    ):
        with pytest.raises(SessionConfigError, match="PERMANENT_SESSION_LIFETIME"):
            make_app(PERMANENT_SESSION_LIFETIME=outside)


def test_the_shortest_and_longest_lock_ttl_take_the_lock(
    make_app: Callable[..., Flask],
) -> None:
    shortest, longest = DURATION_RANGES["RELAY_SESSION_LOCK_TTL"]
    for ttl in (shortest, shortest.total_seconds(), longest):
        app = session_app(make_app, RELAY_SESSION_LOCK_TTL=ttl)
        client = app.test_client()
        assert client.get("/set/kept").status_code == 200
        assert client.get("/lock").status_code == 200
        response = client.get("/get")
        assert response.status_code == 200
        assert response.json is not None
        assert (response.json["value"], response.json["locked_owner"]) == ("kept", True)
    for outside in (shortest / 2, longest + timedelta(seconds=1)):
        with pytest.raises(SessionConfigError, match="RELAY_SESSION_LOCK_TTL"):
            make_app(RELAY_SESSION_LOCK_TTL=outside)


def test_the_shortest_and_longest_grace_period_redirect_the_old_id(
    make_app: Callable[..., Flask],
) -> None:
    shortest, longest = DURATION_RANGES["RELAY_SESSION_ROTATION_GRACE_PERIOD"]
    for grace in (shortest, longest):
        app = session_app(make_app, RELAY_SESSION_ROTATION_GRACE_PERIOD=grace)
        client = app.test_client()
        assert client.get("/set/kept").status_code == 200
        old_cookie = t.cast(t.Any, client.get_cookie("session")).value
        assert client.get("/rotate").status_code == 200
        late = app.test_client()
        late.set_cookie("session", old_cookie)
        response = late.get("/get")
        assert response.status_code == 200
        assert response.json is not None
        assert (response.json["value"], response.json["redirected"]) == ("kept", True)
    for outside in (
        shortest - timedelta(milliseconds=1),
        longest + timedelta(seconds=1),
    ):
        with pytest.raises(
            SessionConfigError, match="RELAY_SESSION_ROTATION_GRACE_PERIOD"
        ):
            make_app(RELAY_SESSION_ROTATION_GRACE_PERIOD=outside)


# -- The store protocol check -----------------------------------------------------


def test_a_custom_store_without_rotate_is_refused_naming_it() -> None:
    class StoreWithoutRotate:
        def __init__(self) -> None:
            inner = MemorySessionStore()
            self.load = inner.load
            self.touch = inner.touch
            self.merge = inner.merge
            self.delete = inner.delete
            self.lock = inner.lock
            self.unlock = inner.unlock
            self.is_locked = inner.is_locked

    with pytest.raises(SessionConfigError) as info:
        RelaySession(app_with(RELAY_SESSION_STORE=StoreWithoutRotate()))
    assert str(info.value).endswith("StoreWithoutRotate has no callable rotate")

    store = StoreWithoutRotate()
    store.rotate = None  # type: ignore[attr-defined]
    with pytest.raises(SessionConfigError, match="has no callable rotate"):
        RelaySession(app_with(RELAY_SESSION_STORE=store))


def test_the_store_check_requires_every_method_of_the_protocol() -> None:
    protocol = [
        name
        for name in dir(SessionStore)
        if not name.startswith("_") and callable(getattr(SessionStore, name))
    ]
    assert set(protocol) >= {
        "load",
        "touch",
        "merge",
        "rotate",
        "delete",
        "lock",
        "unlock",
        "is_locked",
    }
    inner = MemorySessionStore()
    for lacking in protocol:
        store = types.SimpleNamespace(
            **{name: getattr(inner, name) for name in protocol if name != lacking}
        )
        with pytest.raises(SessionConfigError, match=f"has no callable {lacking}$"):
            RelaySession(app_with(RELAY_SESSION_STORE=store))
    RelaySession(
        app_with(
            RELAY_SESSION_STORE=types.SimpleNamespace(
                **{name: getattr(inner, name) for name in protocol}
            )
        )
    )


# -- Flask-Session's key prefix -----------------------------------------------------


@pytest.mark.parametrize("prefix", ["session:", "session:app:"])
def test_a_flask_session_key_prefix_under_its_default_is_refused(prefix: str) -> None:
    with pytest.raises(SessionConfigError) as info:
        RelaySession(app_with(SESSION_KEY_PREFIX=prefix))
    message = str(info.value)
    assert message.startswith(f"SESSION_KEY_PREFIX = {prefix!r}")
    assert "'session:'" in message and "(session:*)" in message
    assert "Remove SESSION_KEY_PREFIX" in message
    assert "set RELAY_SESSION_KEY_PREFIX" in message

    # Either way out works, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = app_with(SESSION_KEY_PREFIX=prefix, RELAY_SESSION_KEY_PREFIX=prefix)
        RelaySession(chosen)
        removed = app_with()
        RelaySession(removed)
    assert chosen.extensions["relay_session"].settings.key_prefix == prefix
    assert removed.extensions["relay_session"].settings.key_prefix == "sess:"


def test_an_aliased_key_prefix_warns_how_to_clean_up_flask_session_keys() -> None:
    app = app_with(SESSION_KEY_PREFIX="flask-session:")
    with pytest.warns(DeprecationWarning, match="Rename it to") as caught:
        RelaySession(app)
    assert "skips keys containing '{'" in str(caught[0].message)
    assert app.extensions["relay_session"].settings.key_prefix == "flask-session:"


def code_block(path: Path, caption: str) -> str:
    """Return the code block of the reST file ``path`` with ``caption``."""
    lines = path.read_text().splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.strip() == f":caption: {caption}"
    )
    body = list(itertools.dropwhile(lambda line: not line.strip(), lines[start + 1 :]))
    indent = body[0][: len(body[0]) - len(body[0].lstrip())]
    block = itertools.takewhile(
        lambda line: not line.strip() or line.startswith(indent), body
    )
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def test_the_migration_guide_deletes_flask_session_keys_and_no_live_key(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # The worst case: this extension's keys under Flask-Session's prefix.
    app = app_with(RELAY_SESSION_REDIS=redis_url, RELAY_SESSION_KEY_PREFIX="session:")
    RelaySession(app)

    @app.get("/set")
    def set_value() -> str:
        session["value"] = "kept"
        return app.extensions["relay_session"].extension.session.sid

    @app.get("/get")
    def get_value() -> str:
        return str(session.get("value"))

    browser = app.test_client()
    sid = browser.get("/set").text
    store = app.extensions["relay_session"].store
    assert store.lock(sid, "token", 60_000)
    live = {store.session_key(sid).encode(), store.lock_key(sid).encode()}
    flask_session = {f"session:{secrets.token_urlsafe(32)}".encode() for _ in range(3)}
    for key in flask_session:
        redis_client.set(key, b"\x81\xa1a\x01", ex=3600)
    redis_client.set("other:session:x", b"1")
    assert set(redis_client.keys("session:*")) == live | flask_session

    script = tmp_path / "delete_flask_session_keys.py"
    script.write_text(
        code_block(DOCS / "migrating.rst", "delete_flask_session_keys.py")
    )
    result = subprocess.run(
        [sys.executable, str(script), redis_url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "deleted 3 Flask-Session keys\n"
    assert set(redis_client.keys("*")) == live | {b"other:session:x"}
    assert store.is_locked(sid)
    store.unlock(sid, "token")
    assert browser.get("/get").text == "kept"
