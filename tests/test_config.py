"""Reading and validating the configuration at ``init_app``."""

from __future__ import annotations

import logging
import typing as t
from datetime import timedelta

import pytest
import redis
from flask import Flask

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session import SessionConfigError


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
        ("RELAY_SESSION_LOCK_TTL", 0, "more than zero"),
        ("RELAY_SESSION_LOCK_TTL", "5", "number of seconds"),
        ("RELAY_SESSION_LOCK_BACKOFF", -1, "zero or more"),
        ("RELAY_SESSION_LOCK_RETRIES", -1, "whole number"),
        ("RELAY_SESSION_LOCK_RETRIES", 2.5, "whole number"),
        ("RELAY_SESSION_LOCK_RETRIES", True, "whole number"),
        ("RELAY_SESSION_ROTATION_GRACE_PERIOD", 4, "at least 5 seconds"),
        ("RELAY_SESSION_ROTATION_GRACE_PERIOD", timedelta(seconds=1), "at least 5"),
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
