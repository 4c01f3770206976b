"""The Redis work the sessions of users cost, counted on real Redis.

As ``tests/test_cost_budget.py``: the app talks to Redis 7 and 6.2 through
``counting_redis``, which counts round trips, on both layouts. A bound
session costs what an unbound one costs (SPEC §7), but once per
``RELAY_SESSION_LAST_SEEN_INTERVAL``, when the request records a visit:

- with a write the request makes anyway, the registry rides in its
  pipeline: no round trip more;
- a request that writes nothing sends the visit on its own: one more.

Binding costs one round trip; listing the sessions of a user costs two,
however many there are.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask import jsonify
from flask import session

from .helpers import current
from .redis_servers import CountingRedis
from .test_cost_budget import load_batch
from .test_cost_budget import make_app as make_budget_app


def make_app(client: CountingRedis, layout: str, **config: t.Any) -> Flask:
    app = make_budget_app(client, layout, **config)
    relay = app.extensions["relay_session"].extension

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        current().bind_user(user)
        return "ok"

    @app.get("/bind/<user>")
    def bind(user: str) -> str:
        current().bind_user(user)
        return "ok"

    @app.get("/devices/<user>")
    def devices(user: str) -> t.Any:
        return jsonify([info.as_dict() for info in relay.sessions_of(user)])

    return app


@pytest.fixture
def counter(counting_redis: CountingRedis) -> t.Any:
    return counting_redis.counter


def warm(client: t.Any) -> None:
    """Send every script's source once, so that later runs are EVALSHA."""
    client.get("/login/ada")
    client.get("/increment")
    client.get("/set/a/1")
    client.get("/read")
    client.get("/locked-increment")
    client.get("/bind/zed")  # the script that binds a stored session


def test_a_bound_session_reads_and_writes_at_the_cost_of_an_unbound_one(
    counting_redis: CountingRedis,
    counter: t.Any,
    layout: str,
    report: t.Callable[[str], None],
) -> None:
    client = make_app(counting_redis, layout).test_client()
    warm(client)
    costs = {}
    for url, expected in [
        ("/read", [load_batch(layout)]),
        ("/set/b/2", [["EVALSHA"]]),
        ("/increment", [load_batch(layout), ["EVALSHA"]]),
        ("/locked-increment", [["EVALSHA", *load_batch(layout)], ["EVALSHA"]]),
    ]:
        for _ in range(3):
            counter.reset()
            assert client.get(url).status_code == 200
            assert counter.batches == expected, url
        costs[url] = counter.round_trips
    report(f"{layout} layout, bound session: round trips {costs}")


def test_a_visit_rides_on_the_write_the_request_makes(
    counting_redis: CountingRedis,
    counter: t.Any,
    layout: str,
    report: t.Callable[[str], None],
) -> None:
    # With an interval of 0, every request records a visit.
    client = make_app(
        counting_redis, layout, RELAY_SESSION_LAST_SEEN_INTERVAL=0
    ).test_client()
    warm(client)
    costs = {}
    for url, expected in [
        # The registry, then the merge that records the visit: one pipeline.
        ("/increment", [load_batch(layout), ["EVALSHA", "EVALSHA"]]),
        ("/locked-increment", [["EVALSHA", *load_batch(layout)], ["EVALSHA"] * 2]),
        # A read records it on its own: one round trip more.
        ("/read", [load_batch(layout), ["EVALSHA", "EVALSHA"]]),
        # A write that never loaded learns the binding from its merge.
        ("/set/b/2", [["EVALSHA"], ["EVALSHA", "EVALSHA"]]),
    ]:
        counter.reset()
        assert client.get(url).status_code == 200
        assert counter.batches == expected, url
        costs[url] = counter.round_trips
    report(f"{layout} layout, a visit due: round trips {costs}")


def test_a_visit_is_recorded_at_most_once_per_interval(
    counting_redis: CountingRedis, counter: t.Any, layout: str
) -> None:
    client = make_app(counting_redis, layout).test_client()
    warm(client)
    counter.reset()
    for _ in range(5):
        client.get("/read")
        client.get("/increment")
        client.get("/noop")
    # Nothing but the loads and merges: no registry write within a minute.
    assert "ZADD" not in counter.commands
    assert counter.round_trips == 15


def test_binding_costs_one_round_trip(
    counting_redis: CountingRedis,
    counter: t.Any,
    layout: str,
    report: t.Callable[[str], None],
) -> None:
    app = make_app(counting_redis, layout)
    warm(app.test_client())
    client = app.test_client()
    client.get("/set/a/1")
    counter.reset()
    client.get("/bind/bob")  # a stored session, not loaded
    assert counter.batches == [["EVALSHA", "EVALSHA"]]
    stored = counter.round_trips
    # Moving it to another user removes it from the first one's registry.
    counter.reset()
    client.get("/bind/carol")
    assert counter.batches == [["EVALSHA", "EVALSHA"], ["ZREM"]]
    # A new session is bound by the save that stores it: the merge and the
    # registry in one pipeline.
    fresh = app.test_client()
    counter.reset()
    fresh.get("/login/dave")
    assert counter.batches == [["EVALSHA", "EVALSHA"]]
    report(
        f"{layout} layout: binding a stored session {stored} round trip,"
        f" a login on a new session {counter.round_trips} in all"
    )


def test_listing_a_hundred_sessions_costs_two_round_trips(
    counting_redis: CountingRedis,
    counter: t.Any,
    layout: str,
    report: t.Callable[[str], None],
) -> None:
    app = make_app(counting_redis, layout)
    clients = [app.test_client() for _ in range(100)]
    for client in clients:
        client.get("/login/ada")
        client.get("/fill/2000")
    counter.reset()
    response = clients[0].get("/devices/ada")
    assert len(response.json) == 100
    # The registry, then the meta data of every session: the request's own
    # load rides on neither, so it is the third.
    assert counter.round_trips == 3
    assert counter.batches[1] == ["ZREMRANGEBYSCORE", "ZRANGE"]
    bytes_listing = counter.bytes_sent
    with app.app_context():
        counter.reset()
        sessions = app.extensions["relay_session"].extension.sessions_of("ada")
        listing = counter.round_trips
        assert len(sessions) == 100 and listing == 2
        counter.reset()
        ended = app.extensions["relay_session"].extension.revoke_all("ada")
        revoking = counter.round_trips
    assert ended == 100
    report(
        f"{layout} layout, 100 sessions: sessions_of {listing} round trips"
        f" ({bytes_listing} bytes sent by the devices request); revoke_all"
        f" {revoking} round trips"
    )
