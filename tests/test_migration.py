"""Switching from Flask-Session without logging anyone out (see
``docs/migrating.rst`` and :mod:`flask_relay_session.migration`).

The end-to-end proof: a real Flask-Session 0.8 app on a real Redis (7 and
6.2), in msgpack and in JSON, with its cookie signed and not, signs users
in with Flask-Login and fills their carts and flashed messages. The same
app then starts on ``RelaySession`` with
``RELAY_SESSION_MIGRATE_FLASK_SESSION``, on every store (memory, and Redis
with the JSON and the hash layout): every old cookie keeps its user signed
in and all of its data, exactly as Flask-Session gave it to the app, and
gets this extension's cookie; the Flask-Session key becomes a marker that
lives for the grace period, then is gone.

Then what each request costs (nothing for cookies that are not
Flask-Session's), a planted pickle that is never loaded, concurrent first
requests, the order of the steps when one of them is interrupted or loses
a race, hostile data, and the settings.
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import session
from redis.backoff import NoBackoff
from redis.retry import Retry

from flask_relay_session import MemorySessionStore
from flask_relay_session import RelaySession
from flask_relay_session import SessionConfigError
from flask_relay_session import SessionStoreError
from flask_relay_session.migration import FlaskSessionMigration
from flask_relay_session.migration import Marker
from flask_relay_session.migration import Outcome
from flask_relay_session.migration.formats import cookie_sid

from .apps.migration_app import SINCE
from .apps.migration_app import TOKEN
from .apps.migration_app import build
from .apps.migration_app import relay_app
from .helpers import client_with
from .helpers import sid_of
from .redis_servers import CountingRedis
from .redis_servers import RedisServer

#: The formats of Flask-Session's ``SESSION_SERIALIZATION_FORMAT``.
FORMATS = ("msgpack", "json")

USERS = ("ada", "bob", "cy")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def encode(data: dict[t.Any, t.Any], serialization_format: str = "msgpack") -> bytes:
    """``data`` as Flask-Session 0.8 stores it."""
    if serialization_format == "json":
        return msgspec.json.Encoder().encode(data)
    return msgspec.msgpack.Encoder().encode(data)


def flask_session_sid() -> str:
    """A sid as Flask-Session makes them."""
    import secrets

    return secrets.token_urlsafe(32)


def set_cookies(response: t.Any) -> list[str]:
    return list(response.headers.getlist("Set-Cookie"))


def drops_cookie(response: t.Any) -> bool:
    """Whether ``response`` deletes the session cookie."""
    return any(
        header.startswith("session=;") and "Expires=Thu, 01 Jan 1970" in header
        for header in set_cookies(response)
    )


def our_session_keys(client: redis.Redis) -> list[bytes]:
    return [key for key in client.keys("sess:{*") if b"lock:" not in key]


def migration_of(app: Flask) -> FlaskSessionMigration:
    migration = app.extensions["relay_session"].interface.migration
    assert migration is not None
    return t.cast(FlaskSessionMigration, migration)


def plant(
    client: redis.Redis,
    data: dict[t.Any, t.Any] | bytes,
    *,
    ttl: int = 3600,
    prefix: str = "session:",
) -> str:
    """Store ``data`` as Flask-Session would; return the sid (= the cookie
    without a signer).
    """
    sid = flask_session_sid()
    raw = data if isinstance(data, bytes) else encode(data)
    client.set(prefix + sid, raw, ex=ttl)
    return sid


# --------------------------------------------------------------------------
# The end-to-end proof
# --------------------------------------------------------------------------


@pytest.fixture
def stores(
    store_config: dict[str, object], request: pytest.FixtureRequest
) -> Iterator[tuple[str, dict[str, t.Any]]]:
    """The Redis Flask-Session stored its sessions on, and the relay app's
    store settings: each store of ``store_config``. With the memory store,
    Flask-Session's sessions are on the suite's Redis 7, named with
    ``RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS``.
    """
    url = t.cast("str | None", store_config.get("RELAY_SESSION_REDIS"))
    if url is not None:
        yield url, dict(store_config)
        return
    server: RedisServer = request.getfixturevalue("redis7_server")
    if not server.is_running():
        server.start()
    client = redis.Redis.from_url(server.url)
    try:
        yield (
            server.url,
            {
                "RELAY_SESSION_STORE": MemorySessionStore(),
                "RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS": client,
            },
        )
    finally:
        client.close()
        server.flush()


@pytest.mark.parametrize("use_signer", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("serialization_format", FORMATS)
def test_every_flask_session_user_stays_signed_in_with_all_their_data(
    stores: tuple[str, dict[str, t.Any]], serialization_format: str, use_signer: bool
) -> None:
    url, store_settings = stores
    client = redis.Redis.from_url(url)
    # The app's Flask-Session configuration, as it was.
    flask_session_config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS": client,
        "SESSION_USE_SIGNER": use_signer,
        "SESSION_SERIALIZATION_FORMAT": serialization_format,
        "PERMANENT_SESSION_LIFETIME": 600,
    }
    before = build("flask-session", **flask_session_config)
    cookies, seen = {}, {}
    for name in USERS:
        browser = before.test_client()
        assert browser.post(f"/login/{name}").status_code == 200
        assert browser.post(f"/cart/pear-{name}").json == {
            "cart": ["apple", f"pear-{name}"]
        }
        seen[name] = browser.get("/peek").text
        cookies[name] = t.cast(t.Any, browser.get_cookie("session")).value
    old_keys = client.keys("session:*")
    assert len(old_keys) == len(USERS)

    # The same app, on flask-relay-session, Flask-Session's keys kept (but
    # for the memory store, which names Flask-Session's Redis explicitly).
    kept = dict(flask_session_config)
    if "RELAY_SESSION_STORE" in store_settings:
        del kept["SESSION_REDIS"]
    after = build(
        "relay",
        TESTING=True,
        RELAY_SESSION_MIGRATE_FLASK_SESSION=True,
        RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD=30,
        **kept,
        **store_settings,
    )
    sids = set()
    for name in USERS:
        browser = client_with(after, cookies[name])
        # Every value exactly as Flask-Session gave it to the app.
        assert browser.get("/peek").text == seen[name]
        me = browser.get("/me")
        assert me.status_code == 200
        assert me.json["user"] == name
        assert me.json["cart"] == ["apple", f"pear-{name}"]
        assert me.json["flashes"] == [["success", f"welcome {name}"]]
        assert me.json["permanent"] is True
        if serialization_format == "msgpack":
            assert me.json["data"]["since"] == repr(SINCE)
            assert me.json["data"]["token"] == repr(TOKEN)
        # This extension's cookie, with the session's expiry.
        sid = sid_of(browser)
        assert len(sid) == 64 and sid == me.json["sid"]
        sids.add(sid)
        cookie = t.cast(t.Any, browser.get_cookie("session"))
        assert cookie.expires is not None
        # From now on it is a session like any other: flashes are gone once
        # read, and writes stick.
        assert browser.post("/cart/plum").json == {
            "cart": ["apple", f"pear-{name}", "plum"]
        }
        again = browser.get("/me").json
        assert (again["user"], again["flashes"], again["sid"]) == (name, [], sid)

        # A request still in flight with the old cookie reaches the same
        # session during the grace period.
        late = client_with(after, cookies[name])
        assert late.get("/me").json["user"] == name
        assert sid_of(late) == sid

    assert len(sids) == len(USERS)
    # Each Flask-Session key is a marker for the grace period only.
    for key in old_keys:
        assert client.get(key).startswith(b"flask-relay-session:moved:")
        assert 0 < client.pttl(key) <= 30_000
    client.close()


@pytest.mark.slow
def test_the_old_keys_are_gone_after_the_grace_period(
    redis_client: redis.Redis,
) -> None:
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS": redis_client,
        "SESSION_USE_SIGNER": True,
    }
    before = build("flask-session", **config)
    browser = before.test_client()
    browser.post("/login/ada")
    old_cookie = t.cast(t.Any, browser.get_cookie("session")).value
    after = relay_app(
        redis_client, RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD=5, **config
    )
    moved = client_with(after, old_cookie)
    assert moved.get("/me").json["user"] == "ada"
    time.sleep(5.2)
    assert redis_client.keys("session:*") == []
    # The new cookie goes on; the old one finds nothing any more.
    assert moved.get("/me").json["user"] == "ada"
    stale = client_with(after, old_cookie)
    response = stale.get("/me")
    assert response.json["user"] is None
    assert drops_cookie(response)


def test_a_session_that_was_not_permanent_stays_so(redis_client: redis.Redis) -> None:
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS": redis_client,
        "SESSION_PERMANENT": False,
    }
    browser = build("flask-session", **config).test_client()
    browser.post("/login/ada")
    cookie = t.cast(t.Any, browser.get_cookie("session"))
    assert cookie.expires is None
    moved = client_with(relay_app(redis_client, **config), cookie.value)
    me = moved.get("/me").json
    assert (me["user"], me["permanent"]) == ("ada", False)
    ours = t.cast(t.Any, moved.get_cookie("session"))
    assert len(sid_of(moved)) == 64 and ours.expires is None


def test_the_remaining_time_to_live_is_kept(redis_client: redis.Redis) -> None:
    sid = plant(redis_client, {"_permanent": True, "user": "ada"}, ttl=100)
    app = relay_app(
        redis_client, PERMANENT_SESSION_LIFETIME=3600, RELAY_SESSION_ROLLING=False
    )
    browser = client_with(app, sid)
    assert browser.get("/peek").text == "{'user': 'ada'}"
    (key,) = our_session_keys(redis_client)
    assert 95_000 < redis_client.pttl(key) <= 100_000
    cookie = t.cast(t.Any, browser.get_cookie("session"))
    assert cookie.expires is not None
    assert abs(cookie.expires.timestamp() - time.time() - 100) < 5
    # A TTL longer than this app's lifetime is cut to it.
    long_lived = plant(redis_client, {"user": "bob"}, ttl=10 * 3600)
    client_with(app, long_lived).get("/peek")
    key = next(
        k for k in our_session_keys(redis_client) if redis_client.pttl(k) > 100_000
    )
    assert redis_client.pttl(key) <= 3_600_000


def test_values_come_over_as_flask_session_gave_them(redis_client: redis.Redis) -> None:
    import datetime
    import uuid

    data = {
        "str": "é ü 💥 \u2028",
        "int": 2**63 - 1,
        "big": 2**64 - 1,
        "float": 0.1,
        "none": None,
        "bools": [True, False],
        "tuple": (1, ("a", "b")),
        "nested": {"deep": {"deeper": [{"x": 1}, []]}, "": "empty key"},
        "bytes": b"\x00\xffbinary",
        "aware": datetime.datetime(
            2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc
        ),
        "naive": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "uuid": uuid.UUID(int=7),
        "date": datetime.date(2024, 1, 2),
        "_flashes": [("error", "careful"), ("message", "hi")],
        " spaced": {" t": "not a tag"},
    }
    for serialization_format in FORMATS:
        fs_config = {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS": redis_client,
            "SESSION_SERIALIZATION_FORMAT": serialization_format,
        }
        before = build("flask-session", **fs_config)
        sid = flask_session_sid()
        redis_client.set("session:" + sid, encode(data, serialization_format), ex=60)
        expected = client_with(before, sid).get("/peek").text
        after = relay_app(redis_client, **fs_config)
        browser = client_with(after, sid)
        assert browser.get("/peek").text == expected
        # ... and stay so, stored and read back by this extension.
        ours = client_with(after, t.cast(t.Any, browser.get_cookie("session")).value)
        assert ours.get("/peek").text == expected
        me = browser.get("/me").json
        assert me["flashes"] == [["error", "careful"], ["message", "hi"]]


def test_int_keys_become_strings_as_in_flask_own_session(
    redis_client: redis.Redis,
) -> None:
    sid = plant(redis_client, {"user": "ada", "counts": {1: "one", 2: "two"}})
    browser = client_with(relay_app(redis_client), sid)
    assert browser.get("/peek").text == (
        "{'counts': {'1': 'one', '2': 'two'}, 'user': 'ada'}"
    )


def test_secret_key_fallbacks_verify_signed_cookies(redis_client: redis.Redis) -> None:
    config = {"SESSION_TYPE": "redis", "SESSION_REDIS": redis_client}
    browser = build(
        "flask-session", SESSION_USE_SIGNER=True, SECRET_KEY="the old key", **config
    ).test_client()
    browser.post("/login/ada")
    old = t.cast(t.Any, browser.get_cookie("session")).value
    app = relay_app(
        redis_client,
        SESSION_USE_SIGNER=True,
        SECRET_KEY="the new key",
        SECRET_KEY_FALLBACKS=["the old key"],
        **config,
    )
    assert client_with(app, old).get("/me").json["user"] == "ada"


# --------------------------------------------------------------------------
# What it costs
# --------------------------------------------------------------------------


def minimal_app(client: t.Any, **config: t.Any) -> Flask:
    """A relay app moving Flask-Session's sessions, without Flask-Login,
    whose after-request function reads the session on every request.
    """
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="migration tests: the same in both apps",
        TESTING=True,
        RELAY_SESSION_REDIS=client,
        RELAY_SESSION_MIGRATE_FLASK_SESSION=True,
    )
    app.config.update(config)
    RelaySession(app)

    @app.get("/")
    def untouched() -> str:
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.post("/write/<key>")
    def write(key: str) -> str:
        session[key] = key
        return "ok"

    return app


@pytest.fixture
def counted(counting_redis: CountingRedis) -> tuple[CountingRedis, Flask]:
    app = minimal_app(counting_redis, SESSION_USE_SIGNER=True)
    return counting_redis, app


def signed(app: Flask, sid: str, key: str | None = None) -> str:
    from itsdangerous import Signer

    signer = Signer(
        key or t.cast(str, app.secret_key), salt="flask-session", key_derivation="hmac"
    )
    return signer.sign(sid.encode()).decode()


def test_a_request_with_our_cookie_pays_nothing_for_the_migration(
    counted: tuple[CountingRedis, Flask],
) -> None:
    client, app = counted
    browser = app.test_client()
    browser.post("/write/a")
    client.counter.reset()
    assert browser.get("/").status_code == 200
    assert client.counter.round_trips == 0
    assert browser.get("/read").json == {"a": "a"}
    assert client.counter.batches == [["GETEX"]]


@pytest.mark.parametrize(
    "cookie",
    [
        "short",
        "x" * 300,
        "not/a;flask session",
        "a" * 43,  # unsigned, while SESSION_USE_SIGNER is on
        "a" * 43 + "." + "b" * 27,  # signed with another key
        "a" * 64 + "." + "b" * 43 + ".11700000000",  # ours, forged
    ],
    ids=["short", "long", "characters", "unsigned", "forged", "ours-forged"],
)
def test_a_cookie_that_is_no_flask_session_cookie_costs_no_lookup(
    counted: tuple[CountingRedis, Flask], cookie: str
) -> None:
    client, app = counted
    client.counter.reset()
    response = client_with(app, cookie).get("/read")
    assert response.json == {}
    assert client.counter.round_trips == 0
    assert not set_cookies(response)


def test_a_forged_flask_session_cookie_costs_no_lookup_even_for_a_live_session(
    counted: tuple[CountingRedis, Flask],
) -> None:
    client, app = counted
    sid = plant(client, {"_user_id": "ada", "_fresh": True})
    forged = signed(app, sid, key="not the secret key")
    client.counter.reset()
    response = client_with(app, forged).get("/read")
    assert response.json == {}
    assert client.counter.round_trips == 0
    assert client.get("session:" + sid) is not None


def test_a_flask_session_cookie_costs_one_lookup_then_the_move(
    counted: tuple[CountingRedis, Flask], report: Callable[[str], None]
) -> None:
    client, app = counted
    # A missing session: one lookup, and the cookie is dropped so that the
    # next request does not look again.
    client.counter.reset()
    response = client_with(app, signed(app, flask_session_sid())).get("/read")
    assert client.counter.batches == [["GET", "PTTL"]]
    assert drops_cookie(response)

    # The move: the lookup, the creation of the new session, the swap; then
    # the view's load, as for any session.
    sid = plant(client, {"_user_id": "ada", "cart": ["apple"]})
    browser = client_with(app, signed(app, sid))
    client.counter.reset()
    assert browser.get("/read").json == {"_user_id": "ada", "cart": ["apple"]}
    move = client.counter.batches
    assert move == [["GET", "PTTL"], ["EVAL"], ["EVAL"], ["GETEX"]]
    report(f"first request of a moved session: {len(move)} round trips {move}")

    # A request that follows the marker: the lookup only, then as usual.
    late = client_with(app, signed(app, sid))
    client.counter.reset()
    assert late.get("/read").json == {"_user_id": "ada", "cart": ["apple"]}
    assert client.counter.batches == [["GET", "PTTL"], ["GETEX"]]
    report(f"a request that follows a marker: {client.counter.batches}")

    # Once moved, this extension's cookie costs what it always does.
    client.counter.reset()
    browser.get("/read")
    assert client.counter.batches == [["GETEX"]]

    # Later moves send both scripts by their digest; a request that does
    # not use the session still moves it (and sets the cookie).
    other = plant(client, {"_user_id": "bob"})
    client.counter.reset()
    response = client_with(app, signed(app, other)).get("/")
    assert client.counter.batches == [["GET", "PTTL"], ["EVALSHA"], ["EVALSHA"]]
    assert set_cookies(response)


def test_a_permanent_session_moved_by_an_untouched_request_gets_its_expiry(
    redis_client: redis.Redis,
) -> None:
    sid = plant(redis_client, {"_permanent": True, "_user_id": "ada"}, ttl=500)
    browser = client_with(minimal_app(redis_client), sid)
    response = browser.get("/")
    assert len(sid_of(browser)) == 64
    assert "Expires=" in set_cookies(response)[0]
    assert browser.get("/read").json == {"_user_id": "ada"}


# --------------------------------------------------------------------------
# Never unpickle
# --------------------------------------------------------------------------


class CreatesFile:
    """Unpickled, it creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (open, (self.path, "w"))


def pickle_payload(path: Path) -> bytes:
    """A session as Flask-Session 0.6 pickled it, whose loading creates
    ``path``.
    """
    return pickle.dumps({"_user_id": "mallory", "x": CreatesFile(str(path))})


def test_the_planted_pickle_payload_is_live(tmp_path: Path) -> None:
    # What the proof below relies on: loading the payload runs its code.
    proof = tmp_path / "proof"
    pickle.loads(pickle_payload(proof)).get("x").close()
    assert proof.exists()


def test_a_planted_pickle_is_never_loaded(
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = tmp_path / "pwned"
    sid = plant(redis_client, pickle_payload(target))

    def refuse(*args: object, **kwargs: object) -> t.NoReturn:
        raise AssertionError("pickle was called")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    app = relay_app(redis_client)
    with caplog.at_level(logging.WARNING, "flask_relay_session"):
        for _ in range(3):
            response = client_with(app, sid).get("/me")
            # A fresh session: the user signs in again.
            assert response.status_code == 200
            assert response.json["user"] is None
            assert drops_cookie(response)
    assert not target.exists()
    warnings = [r for r in caplog.records if "pickle" in r.getMessage()]
    assert len(warnings) == 1, "logged once"
    assert sid[:8] in warnings[0].getMessage()
    assert "skipped as pickled" in warnings[0].getMessage()
    # The pickle is left as it is, never rewritten.
    assert redis_client.get("session:" + sid) == pickle_payload(target)
    assert our_session_keys(redis_client) == []


# --------------------------------------------------------------------------
# Concurrent first requests, and the order of the steps
# --------------------------------------------------------------------------


def test_concurrent_first_requests_end_in_one_session_with_every_write(
    store_config: dict[str, object], request: pytest.FixtureRequest
) -> None:
    url = t.cast("str | None", store_config.get("RELAY_SESSION_REDIS"))
    server: RedisServer | None = None
    if url is None:
        server = request.getfixturevalue("redis7_server")
        url = t.cast(RedisServer, server).url
    client = redis.Redis.from_url(url)
    try:
        settings: dict[str, t.Any] = dict(store_config)
        if server is not None:
            settings["RELAY_SESSION_STORE"] = MemorySessionStore()
        settings.update(
            RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS=client,
            RELAY_SESSION_LOCK_RETRIES=200,
            RELAY_SESSION_LOCK_BACKOFF=0.005,
        )
        app = build(
            "relay", TESTING=True, RELAY_SESSION_MIGRATE_FLASK_SESSION=True, **settings
        )
        sid = plant(client, {"_permanent": True, "_user_id": "ada", "cart": []})
        count = 24
        barrier = threading.Barrier(count)
        results: list[tuple[int, str, t.Any]] = []

        def first_request(number: int) -> None:
            browser = client_with(app, sid)
            barrier.wait()
            response = browser.post(f"/cart/item-{number}")
            results.append((response.status_code, sid_of(browser), response.json))

        threads = [
            threading.Thread(target=first_request, args=(n,)) for n in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {status for status, _, _ in results} == {200}
        sids = {new for _, new, _ in results}
        assert len(sids) == 1
        (new,) = sids
        store = app.extensions["relay_session"].store
        assert [sid for kind, sid in store.scan() if kind == "session"] == [new]
        browser = client_with(app, sid)
        me = browser.get("/me").json
        assert me["user"] == "ada" and me["sid"] == new
        assert sorted(me["cart"]) == sorted(f"item-{n}" for n in range(count))
    finally:
        client.close()
        if server is not None:
            server.flush()


def test_a_move_that_loses_the_race_deletes_its_copy_and_follows_the_winner(
    redis_client: redis.Redis,
) -> None:
    app = relay_app(redis_client)
    migration = migration_of(app)
    sid = plant(redis_client, {"_user_id": "ada"})
    (stale,) = migration.read([sid])
    # Another request moves it first.
    winner = client_with(app, sid)
    winner.get("/me")
    assert len(our_session_keys(redis_client)) == 1
    move = migration.move(
        sid,
        stale,
        lifetime=60_000,
        now=lambda: int(time.time() * 1000),
        marker_ttl=5000,
    )
    assert move.outcome is Outcome.ALREADY_MOVED
    assert move.marker is not None and move.marker.sid == sid_of(winner)
    assert len(our_session_keys(redis_client)) == 1


def test_a_move_starts_again_when_the_old_session_changed(
    redis_client: redis.Redis,
) -> None:
    app = relay_app(redis_client)
    migration = migration_of(app)
    sid = plant(redis_client, {"_user_id": "ada", "cart": ["apple"]})
    (stale,) = migration.read([sid])
    # Flask-Session, still serving it somewhere, writes it again.
    redis_client.set("session:" + sid, encode({"_user_id": "ada", "cart": ["fig"]}))
    move = migration.move(
        sid,
        stale,
        lifetime=60_000,
        now=lambda: int(time.time() * 1000),
        marker_ttl=5000,
    )
    assert move.outcome is Outcome.MOVED
    assert client_with(app, sid).get("/me").json["cart"] == ["fig"]
    assert len(our_session_keys(redis_client)) == 1


def test_a_move_interrupted_before_the_swap_loses_nothing(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = minimal_app(redis_client)
    migration = migration_of(app)
    sid = plant(redis_client, {"_user_id": "ada"})
    raw = redis_client.get("session:" + sid)

    def crash(*args: object, **kwargs: object) -> t.NoReturn:
        raise SessionStoreError("the connection broke before the swap")

    monkeypatch.setattr(migration, "_run_swap", crash)
    assert client_with(app, sid).get("/read").status_code == 503
    # The Flask-Session session is untouched; the copy is named by nothing
    # and expires with its TTL.
    assert redis_client.get("session:" + sid) == raw
    assert len(our_session_keys(redis_client)) == 1
    monkeypatch.undo()
    browser = client_with(app, sid)
    assert browser.get("/read").json == {"_user_id": "ada"}
    assert len(our_session_keys(redis_client)) == 2


def test_a_store_failure_answers_503_and_keeps_the_old_cookie(
    redis_client: redis.Redis,
) -> None:
    down = redis.Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    app = minimal_app(redis_client, RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS=down)
    sid = flask_session_sid()
    response = client_with(app, sid).get("/read")
    assert response.status_code == 503
    assert response.json["error"] == "session_store_unavailable"
    assert not set_cookies(response)
    # A view that does not use the session is served, the cookie kept.
    response = client_with(app, sid).get("/")
    assert response.status_code == 200
    assert not set_cookies(response)
    # Writes fail too, and nothing is written.
    assert client_with(app, sid).post("/write/a").status_code == 503
    assert our_session_keys(redis_client) == []


# --------------------------------------------------------------------------
# Hostile data
# --------------------------------------------------------------------------


def marker_value(sid: str, permanent: bool = True, expires: int = 0) -> bytes:
    return Marker(sid, permanent, expires or int(time.time() * 1000) + 60_000).encode()


@pytest.mark.parametrize(
    ("stored", "outcome"),
    [
        (b"\x00garbage", Outcome.UNDECODABLE),
        (encode(["a", "list"]), Outcome.UNDECODABLE),
        (encode({"_permanent": True}), Outcome.EMPTY),
        (b"\xc7\x01\x05x", Outcome.UNDECODABLE),  # a msgpack extension
        (encode({"ext": msgspec.msgpack.Ext(5, b"x")}), Outcome.UNDECODABLE),
        (b"\x81\x92\x01\x02\xa9tuple key", Outcome.UNDECODABLE),
        (b"\x81\xc4\x01k\x01", Outcome.UNDECODABLE),  # a bytes key
        (b"\x81\xa1a" + b"\x91" * 300 + b"\xc0", Outcome.UNDECODABLE),
        (b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0", Outcome.UNDECODABLE),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", Outcome.UNDECODABLE),
        (b"flask-relay-session:moved:nonsense", Outcome.UNDECODABLE),
        (b"flask-relay-session:moved:" + b"a" * 64 + b":2:1", Outcome.UNDECODABLE),
        (b"flask-relay-session:moved:" + b"x" * 10_000, Outcome.UNDECODABLE),
        (encode({"big": "x" * 2_000_000}), Outcome.TOO_LARGE),
        (encode({"many": ["x" * 100] * 20_000}), Outcome.TOO_LARGE),
    ],
    ids=[
        "garbage",
        "a-list",
        "empty",
        "extension-alone",
        "extension-value",
        "tuple-key",
        "bytes-key",
        "nested-300",
        "nested-100000",
        "json-nested-100000",
        "corrupt-marker",
        "marker-bad-flag",
        "marker-huge",
        "huge-string",
        "huge-list",
    ],
)
def test_hostile_old_data_gives_a_fresh_session(
    redis_client: redis.Redis, stored: bytes, outcome: Outcome
) -> None:
    sid = plant(redis_client, stored)
    app = relay_app(redis_client)
    response = client_with(app, sid).get("/me")
    assert response.status_code == 200
    assert response.json["user"] is None
    assert drops_cookie(response)
    assert our_session_keys(redis_client) == []
    # Left as it was, for inspection.
    assert redis_client.get("session:" + sid) == stored
    migration = migration_of(app)
    (snapshot,) = migration.read([sid])
    move = migration.move(
        sid, snapshot, lifetime=60_000, now=lambda: 0, marker_ttl=None, dry_run=True
    )
    assert move.outcome is outcome
    assert move.reason and "x" * 50 not in move.reason


def test_a_value_far_larger_than_the_limit_is_not_even_decoded(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = relay_app(redis_client, RELAY_SESSION_MAX_SIZE=1000)
    migration = migration_of(app)
    decoded = []
    decode = migration._decoder.decode
    monkeypatch.setattr(
        migration._decoder, "decode", lambda raw: decoded.append(raw) or decode(raw)
    )
    sid = plant(redis_client, {"_user_id": "ada", "blob": "x" * 9000})
    (snapshot,) = migration.read([sid])
    move = migration.move(
        sid, snapshot, lifetime=60_000, now=lambda: 0, marker_ttl=None
    )
    assert move.outcome is Outcome.TOO_LARGE
    assert "as Flask-Session stored it" in move.reason
    assert decoded == []
    # Just under it, it is decoded, and found too large as stored here.
    sid = plant(redis_client, {"_user_id": "ada", "blob": "x" * 7000})
    (snapshot,) = migration.read([sid])
    move = migration.move(
        sid, snapshot, lifetime=60_000, now=lambda: 0, marker_ttl=None
    )
    assert move.outcome is Outcome.TOO_LARGE
    assert "more than RELAY_SESSION_MAX_SIZE (1000 bytes)" in move.reason
    assert len(decoded) == 1


def test_an_old_key_of_another_type_gives_a_fresh_session(
    redis_client: redis.Redis,
) -> None:
    sid = flask_session_sid()
    redis_client.hset("session:" + sid, "a", "1")
    response = client_with(relay_app(redis_client), sid).get("/me")
    assert response.status_code == 200 and response.json["user"] is None
    assert redis_client.hgetall("session:" + sid) == {b"a": b"1"}


def test_a_marker_to_a_session_that_is_gone_gives_a_fresh_session(
    redis_client: redis.Redis,
) -> None:
    sid = plant(redis_client, marker_value("f" * 64))
    browser = client_with(relay_app(redis_client), sid)
    response = browser.get("/me")
    assert response.status_code == 200 and response.json["user"] is None
    assert response.json["sid"] != "f" * 64


def test_a_marker_is_followed_with_its_permanence(redis_client: redis.Redis) -> None:
    app = relay_app(redis_client)
    first = client_with(app, plant(redis_client, {"_user_id": "ada"}))
    assert first.get("/me").json["permanent"] is False
    (key,) = redis_client.keys("session:*")
    sid = key.decode().removeprefix("session:")
    late = client_with(app, sid)
    me = late.get("/me").json
    assert (me["user"], me["permanent"]) == ("ada", False)
    assert t.cast(t.Any, late.get_cookie("session")).expires is None


def test_a_flask_session_worker_never_reads_a_marker_as_a_session(
    redis_client: redis.Redis,
) -> None:
    # A worker still on Flask-Session during a rolling deploy: the marker is
    # neither msgpack nor JSON, and its first byte is no pickle opcode, so
    # Flask-Session's pickle fallback fails at once. It answers 500, and
    # serves nobody the session under the old id.
    config = {"SESSION_TYPE": "redis", "SESSION_REDIS": redis_client}
    old = build("flask-session", **config)
    browser = old.test_client()
    browser.post("/login/ada")
    cookie = t.cast(t.Any, browser.get_cookie("session")).value
    client_with(relay_app(redis_client, **config), cookie).get("/me")
    (key,) = redis_client.keys("session:*")
    marker = redis_client.get(key)
    assert Marker.parse(marker) is not None
    with pytest.raises(pickle.UnpicklingError, match="invalid load key, 'f'"):
        pickle.loads(marker)
    old.config["PROPAGATE_EXCEPTIONS"] = False
    assert client_with(old, cookie).get("/me").status_code == 500
    assert redis_client.get(key) == marker


def test_cookie_sid_accepts_only_what_flask_session_issued() -> None:
    keys = ["secret"]
    sid = "A" * 43
    assert cookie_sid(sid, use_signer=False, secret_keys=keys) == sid
    assert cookie_sid(sid + "=", use_signer=False, secret_keys=keys) is None
    assert cookie_sid(sid + ".sig", use_signer=False, secret_keys=keys) is None
    from itsdangerous import Signer

    value = Signer("secret", salt="flask-session", key_derivation="hmac").sign(sid)
    assert cookie_sid(value.decode(), use_signer=True, secret_keys=keys) == sid
    assert cookie_sid(value.decode(), use_signer=True, secret_keys=["other"]) is None
    assert cookie_sid(value.decode(), use_signer=True, secret_keys=[]) is None
    assert cookie_sid(sid, use_signer=True, secret_keys=keys) is None


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def settings_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="secret", TESTING=True)
    app.config.update(config)
    return app


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"RELAY_SESSION_MIGRATE_FLASK_SESSION": "yes"},
            "RELAY_SESSION_MIGRATE_FLASK_SESSION must be True or False; got 'yes'",
        ),
        (
            {"SESSION_SERIALIZATION_FORMAT": "pickle"},
            'SESSION_SERIALIZATION_FORMAT must be "msgpack" or "json"; got \'pickle\'',
        ),
        (
            {"RELAY_SESSION_MIGRATE_FLASK_SESSION_SERIALIZATION_FORMAT": "xml"},
            "RELAY_SESSION_MIGRATE_FLASK_SESSION_SERIALIZATION_FORMAT must be",
        ),
        (
            {"SESSION_USE_SIGNER": "no"},
            "SESSION_USE_SIGNER must be True or False; got 'no'",
        ),
        (
            {"SESSION_KEY_PREFIX": 5},
            "SESSION_KEY_PREFIX must be Flask-Session's key prefix",
        ),
        (
            {"RELAY_SESSION_MIGRATE_FLASK_SESSION_KEY_PREFIX": ""},
            "RELAY_SESSION_MIGRATE_FLASK_SESSION_KEY_PREFIX must be",
        ),
        (
            {"SESSION_REDIS": 42},
            "SESSION_REDIS must be a redis-py client, a redis://, rediss:// or"
            " unix:// URL, or None",
        ),
        (
            {"RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD": 1},
            "RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD must be a number of"
            " seconds or a timedelta, from 5 seconds",
        ),
        (
            {"RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD": float("nan")},
            "RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD must be",
        ),
        (
            {"RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS": "http://nowhere"},
            "RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS must be a redis-py client",
        ),
    ],
)
def test_nonsense_settings_fail_at_init_app(
    redis_url: str, config: dict[str, t.Any], message: str
) -> None:
    settings = {
        "RELAY_SESSION_REDIS": redis_url,
        "RELAY_SESSION_MIGRATE_FLASK_SESSION": True,
    }
    settings.update(config)
    with pytest.raises(SessionConfigError) as info:
        RelaySession(settings_app(**settings))
    assert message in str(info.value)


def test_the_memory_store_needs_a_redis_to_read_flask_session_from() -> None:
    with pytest.raises(SessionConfigError, match="set SESSION_REDIS"):
        RelaySession(settings_app(RELAY_SESSION_MIGRATE_FLASK_SESSION=True))


def test_a_missing_extra_is_a_clear_error_at_init_app(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "msgspec", None)
    app = settings_app(
        RELAY_SESSION_REDIS=redis_url, RELAY_SESSION_MIGRATE_FLASK_SESSION=True
    )
    with pytest.raises(SessionConfigError) as info:
        RelaySession(app)
    assert "pip install 'flask-relay-session[flask-session]'" in str(info.value)
    # Without the migration, the extra is not needed.
    RelaySession(settings_app(RELAY_SESSION_REDIS=redis_url))


def test_flask_session_settings_are_read_and_explicit_ones_win(
    redis_client: redis.Redis,
) -> None:
    app = settings_app(
        RELAY_SESSION_REDIS=redis_client,
        RELAY_SESSION_MIGRATE_FLASK_SESSION=True,
        SESSION_KEY_PREFIX="shop:",
        SESSION_USE_SIGNER=True,
        SESSION_SERIALIZATION_FORMAT="json",
    )
    import warnings

    with warnings.catch_warnings():
        # Flask-Session's prefix says where its sessions are: no alias of
        # this extension's prefix, so nothing to warn about.
        warnings.simplefilter("error")
        RelaySession(app)
    state = app.extensions["relay_session"]
    assert state.settings.key_prefix == "sess:"
    migration = migration_of(app)
    assert migration.settings.key_prefix == "shop:"
    assert migration.settings.use_signer is True
    assert migration.settings.serialization_format == "json"
    assert migration.settings.grace_period == 60_000
    assert migration.redis is redis_client

    app = settings_app(
        RELAY_SESSION_REDIS=redis_client,
        RELAY_SESSION_MIGRATE_FLASK_SESSION=True,
        SESSION_KEY_PREFIX="shop:",
        RELAY_SESSION_MIGRATE_FLASK_SESSION_KEY_PREFIX="session:",
        SESSION_USE_SIGNER=True,
        RELAY_SESSION_MIGRATE_FLASK_SESSION_USE_SIGNER=False,
    )
    RelaySession(app)
    migration = migration_of(app)
    assert migration.settings.key_prefix == "session:"
    assert migration.settings.use_signer is False
    assert migration.settings.serialization_format == "msgpack"
    # Without the migration, nothing of it is built.
    app = settings_app(RELAY_SESSION_REDIS=redis_client)
    RelaySession(app)
    assert app.extensions["relay_session"].interface.migration is None
