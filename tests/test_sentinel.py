"""Sessions through Redis Sentinel survive a failover.

The suite starts a primary, a replica and a sentinel (system
``redis-server`` 7.x, see :class:`~tests.redis_topologies.LocalSentinel`),
and the app uses a client from ``Sentinel.master_for("mymaster")``. A
forced ``SENTINEL FAILOVER`` promotes the replica in about a second.
"""

from __future__ import annotations

import threading
import time
import typing as t
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError
from redis.retry import Retry

from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession

from .conftest import needs_redis7
from .helpers import sid_of
from .redis_servers import no_retry
from .redis_topologies import LocalSentinel

pytestmark = needs_redis7(
    "SENTINEL DEBUG, which makes the sentinel fail over in seconds"
)


@pytest.fixture
def topology(redis7_binary: str) -> Iterator[LocalSentinel]:
    with LocalSentinel(redis7_binary) as started:
        yield started


def recommended_client(topology: LocalSentinel) -> redis.Redis:
    """The client settings the report recommends for a Sentinel setup."""
    return topology.master_client(
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 6),
        retry_on_error=[ConnectionError, TimeoutError],
    )


def make_app(client: redis.Redis) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="sentinel secret", RELAY_SESSION_REDIS=client)
    RelaySession(app)

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.post("/set")
    def set_values() -> str:
        for key, value in t.cast(dict[str, t.Any], request.get_json()).items():
            session[key] = value
        return "ok"

    @app.post("/incr")
    def incr() -> str:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return "ok"

    @app.post("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    return app


def test_sessions_written_before_a_failover_are_served_by_the_new_primary(
    topology: LocalSentinel,
) -> None:
    client = recommended_client(topology)
    app = make_app(client)
    store = app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    browsers = [app.test_client() for _ in range(10)]
    for number, browser in enumerate(browsers):
        assert browser.post("/set", json={"n": number, "user": {"id": number}})
        assert browser.post("/incr").status_code == 200
    old_primary = topology.server_at(topology.current_primary())
    # Every write reached the replica before the failover (WAIT), as in a
    # planned switchover; what async replication loses in a crash is
    # Redis's business, not this library's.
    assert client.wait(1, 2000) == 1

    new_primary = topology.failover()
    assert new_primary is not old_primary
    # The new primary has none of the scripts: EVALSHA gets NOSCRIPT and the
    # store sends the source again.
    shas = [script.sha for script in store.scripts]
    with new_primary.client(protocol=2, retry=no_retry()) as admin:
        admin.script_flush()
        assert admin.script_exists(*shas) == [False] * len(shas)

    for number, browser in enumerate(browsers):
        response = browser.get("/read")
        assert response.status_code == 200, response.text
        assert response.json == {"n": number + 1, "user": {"id": number}}
        assert browser.post("/incr").status_code == 200
        assert browser.post("/set", json={"after": True}).status_code == 200
        assert browser.post("/rotate").status_code == 200
        assert browser.get("/read").json == {
            "n": number + 2,
            "user": {"id": number},
            "after": True,
        }
    # The writes went to the new primary, and the old one is its replica.
    with new_primary.client(protocol=2, retry=no_retry()) as admin:
        for browser in browsers:
            assert admin.exists(store.session_key(sid_of(browser))) == 1
        assert any(admin.script_exists(*shas))
    with old_primary.client(protocol=2, retry=no_retry()) as admin:
        assert admin.info("replication")["role"] == "slave"
    # New sessions are created on the new primary too.
    fresh = app.test_client()
    assert fresh.post("/set", json={"fresh": 1}).status_code == 200
    assert fresh.get("/read").json == {"fresh": 1}
    client.close()


def test_a_completed_failover_is_invisible_even_without_client_retries(
    topology: LocalSentinel,
) -> None:
    client = topology.master_client(
        socket_timeout=1, socket_connect_timeout=1, retry=no_retry()
    )
    app = make_app(client)
    browser = app.test_client()
    assert browser.post("/set", json={"a": 1}).status_code == 200
    assert client.wait(1, 2000) == 1
    topology.failover()
    # The demoted primary closed its client connections; the pool notices
    # before reusing one and asks the sentinel for the new primary.
    assert browser.get("/read").json == {"a": 1}
    assert browser.post("/set", json={"b": 2}).status_code == 200
    assert browser.get("/read").json == {"a": 1, "b": 2}
    client.close()


def test_requests_during_a_failover_get_200_or_503_and_nothing_partial(
    topology: LocalSentinel,
) -> None:
    """Writes stream in while the sentinel fails over.

    Every request is answered 200 or a clean 503, every stored write is
    whole, and service continues on the new primary. Which acknowledged
    writes survive is up to Redis: until the sentinel demotes the old
    primary, it keeps acknowledging writes that its resync from the new
    primary then discards (asynchronous replication; ``min-replicas-to-write``
    narrows that window without closing it).
    """
    client = recommended_client(topology)
    app = make_app(client)
    browser = app.test_client()
    assert browser.post("/set", json={"start": 0}).status_code == 200
    # The session must reach the replica before the failover: a write the
    # old primary acknowledged but had not replicated yet may be lost.
    assert client.wait(1, 5000) == 1
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def stream() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            status = browser.post(
                "/set", json={f"k{number}": number, f"v{number}": [number]}
            ).status_code
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.005)

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.2)
        topology.failover()
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert set(statuses) <= {200, 503}, statuses
    assert browser.post("/set", json={"end": True}).status_code == 200
    data = browser.get("/read").json
    assert data["start"] == 0 and data["end"] is True
    numbers = {int(key[1:]) for key in data if key[0] == "k"}
    assert numbers == {int(key[1:]) for key in data if key[0] == "v"}
    for number in numbers:
        assert data[f"k{number}"] == number and data[f"v{number}"] == [number]
    client.close()
