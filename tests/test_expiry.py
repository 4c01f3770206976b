"""Expiry, rolling refresh and bound signatures (SPEC §3, §4, §7).

Time is controlled: the interface's clock decides when a refresh is due, and
the memory store runs on the same clock. On Redis the TTL itself runs in real
time, so the tests compare it with the lifetime, not with the fake clock.
"""

from __future__ import annotations

import typing as t
from datetime import datetime
from datetime import timezone

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession

MakeApp = t.Callable[..., Flask]
LIFETIME = 1000  # seconds


class Clock:
    """A clock that moves only when told to.

    Moving it also moves time in the Redis servers it is told about, by
    shortening the TTL of every key, so that Redis expiry and the app's clock
    stay in step.
    """

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.servers: list[t.Any] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for server in self.servers:
            for key in server.scan_iter():
                ttl = server.pttl(key)
                if ttl > 0:
                    server.pexpire(key, max(1, ttl - int(seconds * 1000)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed_app(make_app: MakeApp, clock: Clock) -> t.Callable[..., Flask]:
    def make(**config: t.Any) -> Flask:
        probe = make_app()
        if isinstance(probe.extensions["relay_session"].store, MemorySessionStore):
            config.setdefault("RELAY_SESSION_STORE", MemorySessionStore(clock=clock))
        app = make_app(PERMANENT_SESSION_LIFETIME=LIFETIME, **config)
        app.session_interface.clock = clock  # type: ignore[attr-defined]
        store = app.extensions["relay_session"].store
        if isinstance(store, RedisSessionStore):
            clock.servers.append(store.redis)

        @app.get("/login")
        def login() -> str:
            session.permanent = True
            session["user"] = "ada"
            return "ok"

        @app.get("/guest")
        def guest() -> str:
            session["cart"] = []
            return "ok"

        @app.get("/noop")
        def noop() -> str:
            return "ok"

        @app.get("/read")
        def read() -> t.Any:
            return jsonify(dict(session))

        @app.get("/write")
        def write() -> str:
            session["written"] = True
            return "ok"

        @app.get("/expires")
        def expires() -> t.Any:
            return jsonify(session.expires_at.timestamp())  # type: ignore[attr-defined]

        return app

    return make


def cookie_expiry(client: FlaskClient) -> float:
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.expires is not None
    return cookie.expires.replace(tzinfo=timezone.utc).timestamp()


def stored_ttl(app: Flask, client: FlaskClient, clock: Clock) -> float:
    """The store's remaining lifetime of the client's session, in seconds."""
    store = app.extensions["relay_session"].store
    cookie = client.get_cookie("session")
    assert cookie is not None
    sid = cookie.value[:64]
    if isinstance(store, MemorySessionStore):
        return store._sessions[sid].expires_at / 1000 - clock()
    assert isinstance(store, RedisSessionStore)
    return int(store.redis.pttl(store.session_key(sid))) / 1000


def test_permanent_session_refreshes_on_every_request_by_default(
    timed_app: t.Callable[..., Flask], clock: Clock
) -> None:
    app = timed_app()
    client = app.test_client()
    client.get("/login")
    first = cookie_expiry(client)
    clock.advance(100)
    response = client.get("/noop")
    assert "Set-Cookie" in response.headers
    assert cookie_expiry(client) == pytest.approx(first + 100, abs=1)
    assert stored_ttl(app, client, clock) == pytest.approx(LIFETIME, abs=2)


def test_rolling_false_never_extends_the_expiry(
    timed_app: t.Callable[..., Flask], clock: Clock
) -> None:
    app = timed_app(RELAY_SESSION_ROLLING=False)
    client = app.test_client()
    client.get("/login")
    first = cookie_expiry(client)
    clock.advance(100)
    for path in ("/noop", "/read"):
        assert "Set-Cookie" not in client.get(path).headers
    # The write keeps the expiry, so the cookie, which carries it, stays.
    assert "Set-Cookie" not in client.get("/write").headers
    assert cookie_expiry(client) == pytest.approx(first, abs=1)
    assert client.get("/expires").json == pytest.approx(first, abs=1)


def test_rolling_fraction_refreshes_only_past_the_threshold(
    timed_app: t.Callable[..., Flask], clock: Clock
) -> None:
    app = timed_app(RELAY_SESSION_ROLLING=0.5)
    client = app.test_client()
    client.get("/login")
    first = cookie_expiry(client)
    clock.advance(400)  # 600 s of 1000 left: more than half
    for path in ("/noop", "/read"):
        assert "Set-Cookie" not in client.get(path).headers
    assert cookie_expiry(client) == pytest.approx(first, abs=1)
    clock.advance(200)  # 400 s left: less than half
    assert "Set-Cookie" in client.get("/noop").headers
    assert cookie_expiry(client) == pytest.approx(first + 600, abs=1)
    assert stored_ttl(app, client, clock) == pytest.approx(LIFETIME, abs=2)
    clock.advance(100)
    assert "Set-Cookie" not in client.get("/read").headers


def test_without_refresh_each_request_only_writes_extend_a_permanent_session(
    timed_app: t.Callable[..., Flask], clock: Clock
) -> None:
    app = timed_app(SESSION_REFRESH_EACH_REQUEST=False)
    client = app.test_client()
    client.get("/login")
    first = cookie_expiry(client)
    clock.advance(100)
    for path in ("/noop", "/read"):
        assert "Set-Cookie" not in client.get(path).headers
    assert client.get("/write").headers.get("Set-Cookie")
    assert cookie_expiry(client) == pytest.approx(first + 100, abs=1)


def test_store_expiry_session_expiry_and_cookie_expiry_agree(
    timed_app: t.Callable[..., Flask], clock: Clock
) -> None:
    app = timed_app()
    client = app.test_client()
    client.get("/login")
    clock.advance(30)
    client.get("/write")
    cookie = cookie_expiry(client)
    reported = client.get("/expires").json
    assert reported == pytest.approx(cookie, abs=1)
    assert reported - clock() == pytest.approx(stored_ttl(app, client, clock), abs=2)


def test_non_permanent_session_keeps_a_browser_session_cookie(
    timed_app: t.Callable[..., Flask], clock: Clock
) -> None:
    app = timed_app()
    client = app.test_client()
    client.get("/guest")
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.expires is None
    clock.advance(100)
    assert "Set-Cookie" not in client.get("/noop").headers
    assert "Set-Cookie" not in client.get("/read").headers


def test_memory_store_forgets_expired_sessions(clock: Clock) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret",
        RELAY_SESSION_STORE=MemorySessionStore(clock=clock),
        PERMANENT_SESSION_LIFETIME=60,
    )
    RelaySession(app)
    app.session_interface.clock = clock  # type: ignore[attr-defined]

    @app.get("/set")
    def set_value() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    client = app.test_client()
    client.get("/set")
    clock.advance(59)
    assert client.get("/read").json == {"a": 1}
    clock.advance(61)
    assert client.get("/read").json == {}


def test_sign_with_binds_the_cookie_to_request_values(make_app: MakeApp) -> None:
    app = make_app(
        RELAY_SESSION_SIGN_WITH=lambda req: [
            req.headers.get("User-Agent", ""),
            req.headers.get("X-Tenant", ""),
        ]
    )

    @app.get("/set")
    def set_value() -> str:
        session["secret"] = "for this browser only"
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    client = app.test_client()
    headers = {"User-Agent": "Browser/1.0", "X-Tenant": "a"}
    client.get("/set", headers=headers)
    assert client.get("/read", headers=headers).json == {
        "secret": "for this browser only"
    }
    assert client.get("/read", headers={**headers, "User-Agent": "Evil/1.0"}).json == {}
    assert client.get("/read", headers={**headers, "X-Tenant": "b"}).json == {}
    assert client.get("/read", headers=headers).json == {
        "secret": "for this browser only"
    }


def test_sign_with_uses_the_request_it_is_given(make_app: MakeApp) -> None:
    seen: list[str] = []

    def bind(req: t.Any) -> str:
        seen.append(req.path)
        return str(req.remote_addr)

    app = make_app(RELAY_SESSION_SIGN_WITH=bind)

    @app.get("/set")
    def set_value() -> str:
        session["a"] = request.path
        return "ok"

    app.test_client().get("/set")
    assert seen and set(seen) == {"/set"}


def test_expires_at_is_an_aware_utc_datetime(timed_app: t.Callable[..., Flask]) -> None:
    app = timed_app()
    seen: list[datetime] = []

    @app.get("/when")
    def when() -> str:
        seen.append(session.expires_at)  # type: ignore[attr-defined]
        return "ok"

    client = app.test_client()
    client.get("/login")
    client.get("/when")
    assert seen[0].tzinfo is timezone.utc
