"""SPEC §7: the Redis work each kind of request costs, counted on real Redis.

The app talks to Redis through ``counting_redis``, a client that counts the
round trips and bytes it sends to a real server (Redis 7 and 6.2). Every test
runs on both storage layouts (``RELAY_SESSION_LAYOUT``).
"""

from __future__ import annotations

import typing as t
from datetime import timedelta

import pytest
from flask import Flask
from flask import jsonify
from flask import session

from flask_relay_session import RelaySession

from .redis_servers import CountingRedis


def make_app(client: CountingRedis, layout: str, **config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    app.config.update(RELAY_SESSION_REDIS=client, RELAY_SESSION_LAYOUT=layout)
    app.config.update(config)
    RelaySession(app)

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/read-one")
    def read_one() -> t.Any:
        return jsonify(session.get("small"))

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/increment")
    def increment() -> str:
        session["n"] = session.get("n", 0) + 1
        return "ok"

    @app.get("/locked-increment")
    def locked_increment() -> str:
        with session.lock():
            session["n"] = session.get("n", 0) + 1
        assert not session.is_lock_owner
        session.release_lock()  # released already: sends nothing
        return "ok"

    @app.get("/fill/<int:size>")
    def fill(size: int) -> str:
        session["big"] = "x" * size
        session["small"] = 0
        return "ok"

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        session["a"] = 1
        return "ok"

    return app


@pytest.fixture
def counter(counting_redis: CountingRedis) -> t.Any:
    return counting_redis.counter


def load_batch(layout: str) -> list[str]:
    """The one round trip a load sends, no script: a read of the session key
    that refreshes its expiry (``GETEX``), or, for a hash, a read and a
    refresh.
    """
    return ["GETEX"] if layout == "json" else ["HGETALL", "PEXPIRE"]


def test_request_that_never_touches_the_session_sends_nothing(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/set/a/1")
    counter.reset()
    client.get("/noop")
    assert counter.round_trips == 0


def test_new_session_with_nothing_stored_sends_nothing_and_sets_no_cookie(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    counter.reset()
    response = client.get("/read")
    assert response.json == {}
    assert counter.round_trips == 0
    assert "Set-Cookie" not in response.headers


def test_read_only_request_costs_one_round_trip(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/set/a/1")
    for _ in range(3):
        counter.reset()
        assert client.get("/read").json == {"a": "1"}
        assert counter.round_trips == 1
        assert counter.batches == [load_batch(layout)]


def test_read_only_request_with_expiry_refresh_costs_one_round_trip(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(
        counting_redis, layout, PERMANENT_SESSION_LIFETIME=timedelta(minutes=5)
    ).test_client()
    client.get("/permanent")
    counter.reset()
    response = client.get("/read-one")
    assert counter.round_trips == 1
    assert "Set-Cookie" in response.headers


def test_untouched_permanent_session_refresh_is_one_ttl_only_round_trip(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/permanent")
    client.get("/noop")  # sends the script's source once
    counter.reset()
    response = client.get("/noop")
    assert counter.commands == ["EVALSHA"]
    assert "Set-Cookie" in response.headers


def test_untouched_permanent_session_without_rolling_sends_nothing(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout, RELAY_SESSION_ROLLING=False).test_client()
    client.get("/permanent")
    counter.reset()
    response = client.get("/noop")
    assert counter.round_trips == 0
    assert "Set-Cookie" not in response.headers


def test_blind_write_costs_one_round_trip(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/set/a/1")
    counter.reset()
    client.get("/set/b/2")
    assert counter.commands == ["EVALSHA"]


def test_read_modify_write_costs_two_round_trips(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/increment")
    client.get("/increment")  # sends the scripts' sources once
    for _ in range(3):
        counter.reset()
        client.get("/increment")
        assert counter.batches == [load_batch(layout), ["EVALSHA"]]
    assert client.get("/read").json == {"n": 5}


def test_write_keeps_the_expiry_its_request_refreshed_on_load(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/increment")
    counter.reset()
    client.get("/increment")
    load, merge = counter.calls[:-1], counter.calls[-1]
    # The load refreshed the expiry: with a PEXPIRE, or GETEX's PX.
    refresh = load[-1]
    assert refresh[0] == b"PEXPIRE" or (refresh[0], refresh[2]) == (b"GETEX", b"PX")
    numkeys = int(merge[2])
    ttl = merge[3 + numkeys + 2]  # ARGV[3]: "" keeps the expiry
    assert ttl == b""


def test_locked_read_modify_write_costs_two_round_trips(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    app = make_app(counting_redis, layout)
    store = app.extensions["relay_session"].store
    client = app.test_client()
    client.get("/locked-increment")
    client.get("/locked-increment")  # sends the scripts' sources once
    for _ in range(3):
        counter.reset()
        assert client.get("/locked-increment").status_code == 200
        # The lock and the load in one pipeline, then one merge that also
        # releases the lock.
        assert counter.batches == [["EVALSHA", *load_batch(layout)], ["EVALSHA"]]
    assert client.get("/read").json == {"n": 5}
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert not store.is_locked(cookie.value[:64])


def test_a_lock_taken_by_another_request_drops_what_its_pipeline_read(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    app = make_app(
        counting_redis,
        layout,
        RELAY_SESSION_LOCK_RETRIES=2,
        RELAY_SESSION_LOCK_BACKOFF=1,
    )
    store = app.extensions["relay_session"].store
    client = app.test_client()
    client.get("/locked-increment")
    client.get("/locked-increment")  # sends the scripts' sources once
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert store.lock(cookie.value[:64], "another request", 60_000)
    counter.reset()
    assert client.get("/locked-increment").status_code == 409
    # Each try takes nothing and keeps nothing of what it read.
    attempt = ["EVALSHA", *load_batch(layout)]
    assert counter.batches == [attempt, attempt, attempt]
    assert store.unlock(cookie.value[:64], "another request")
    assert client.get("/read").json == {"n": 2}


def test_a_locked_section_after_a_script_flush_takes_the_lock_on_its_own(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/locked-increment")
    client.get("/locked-increment")
    counting_redis.script_flush()
    counter.reset()
    assert client.get("/locked-increment").status_code == 200
    # The pipelined lock meets NOSCRIPT: nothing was taken, and what the
    # pipeline read is dropped; the lock script runs on its own, then the
    # load, then the merge (each script sent again once).
    assert counter.batches[0] == ["EVALSHA", *load_batch(layout)]
    assert counter.batches[1:3] == [["EVALSHA"], ["EVAL"]]
    assert counter.batches[3] == load_batch(layout)
    assert client.get("/read").json == {"n": 3}


def test_first_use_of_a_script_sends_its_source_once(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    counter.reset()
    client.get("/set/a/1")
    assert counter.commands == ["EVAL"]
    counter.reset()
    client.get("/set/a/2")
    assert counter.commands == ["EVALSHA"]


def test_preloaded_scripts_are_never_sent_again(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    app = make_app(counting_redis, layout, RELAY_SESSION_PRELOAD_SCRIPT=True)
    assert counter.commands.count("SCRIPT LOAD") >= 2
    counter.reset()
    client = app.test_client()
    client.get("/set/a/1")
    client.get("/read")
    assert counter.batches == [["EVALSHA"], load_batch(layout)]


def test_bytes_sent_for_a_write_follow_the_change_not_the_session(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.get("/fill/65536")
    counter.reset()
    client.get("/set/small/1")
    assert counter.round_trips == 1
    assert counter.bytes_sent < 600


def test_forged_cookie_never_reaches_the_store(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    client.set_cookie("session", "f" * 64 + "." + "A" * 43 + ".01900000000")
    counter.reset()
    assert client.get("/read").json == {}
    assert counter.round_trips == 0
