"""Fifty concurrent first requests with one Flask-Session cookie, served by
gunicorn in several processes, end in exactly one session of this
extension's (see :mod:`flask_relay_session.migration.mover`).

A real Flask-Session 0.8 app signs a user in on Redis (7 and 6.2); then
``tests/apps/migration_app.py`` serves the same users under gunicorn (4
worker processes of 16 threads) with ``RELAY_SESSION_MIGRATE_FLASK_SESSION``,
in the JSON and the hash layout. Fifty clients send their first request at
once, all with the old cookie, each writing a key of its own after reading
the session: every one of them is served the same new session with the old
data, gets the same new cookie, and no write is lost. The Flask-Session key
ends as the marker naming that session.
"""

from __future__ import annotations

import threading
import typing as t
from collections.abc import Iterator

import pytest
import redis

from flask_relay_session.migration import Marker
from flask_relay_session.serialization import loads

from .apps import DEFAULT_SECRET_KEY
from .apps.migration_app import build
from .conftest import missing
from .redis_servers import RedisServer
from .wsgi_servers import HttpClient
from .wsgi_servers import Serve
from .wsgi_servers import app_servers
from .wsgi_servers import cookie_sid
from .wsgi_servers import gunicorn_available

pytestmark = pytest.mark.slow

APP = "tests.apps.migration_app:create_app()"
CONCURRENT = 50


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """``serve(redis_server, **config)``: the app under gunicorn, cached."""
    if not gunicorn_available():
        missing("gunicorn")
    with app_servers(APP, workers=4, threads=16) as serve_app:
        yield serve_app


def stored_data(client: redis.Redis, sid: str, layout: str) -> dict[str, t.Any]:
    key = f"sess:{{{sid}}}"
    if layout == "json":
        return t.cast(dict[str, t.Any], loads(client.get(key))["data"])
    fields = client.hgetall(key)
    return {
        name.decode(): loads(value)
        for name, value in fields.items()
        if not name.startswith(b" ")
    }


@pytest.mark.parametrize("layout", ["json", "hash"])
def test_fifty_concurrent_first_requests_end_in_one_session(
    serve: Serve, redis_server: RedisServer, redis_client: redis.Redis, layout: str
) -> None:
    before = build(
        "flask-session",
        SECRET_KEY=DEFAULT_SECRET_KEY,
        SESSION_TYPE="redis",
        SESSION_REDIS=redis_client,
        SESSION_USE_SIGNER=True,
    )
    browser = before.test_client()
    browser.post("/login/ada")
    browser.post("/cart/pear")
    old_cookie = t.cast(t.Any, browser.get_cookie("session")).value
    (old_key,) = redis_client.keys("session:*")

    server = serve(redis_server, SESSION_USE_SIGNER=True, RELAY_SESSION_LAYOUT=layout)
    barrier = threading.Barrier(CONCURRENT)
    replies: list[t.Any] = [None] * CONCURRENT

    def first_request(number: int) -> None:
        with HttpClient(server) as client:
            client.request("GET", "/")  # connect first, so that all start at once
            barrier.wait()
            replies[number] = client.request(
                "POST",
                f"/write/key-{number}?sleep=0.05",
                cookie=f"session={old_cookie}",
            )

    threads = [
        threading.Thread(target=first_request, args=(n,)) for n in range(CONCURRENT)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [reply.status for reply in replies] == [200] * CONCURRENT, replies
    # Every request saw the same session, with the user and the cart of
    # Flask-Session's.
    sids = {reply.json["sid"] for reply in replies}
    assert len(sids) == 1
    (sid,) = sids
    assert {(reply.json["user"], tuple(reply.json["cart"])) for reply in replies} == {
        ("ada", ("apple", "pear"))
    }
    # ... and got its cookie.
    assert {cookie_sid(reply.cookie()) for reply in replies} == {sid}
    assert len({reply.pid for reply in replies}) > 1, "served by several workers"

    # Exactly one session of this extension's, holding every write.
    sessions = [key for key in redis_client.keys("sess:{*")]
    assert sessions == [f"sess:{{{sid}}}".encode()]
    data = stored_data(redis_client, sid, layout)
    assert {f"key-{n}" for n in range(CONCURRENT)} <= set(data)
    assert data["_user_id"] == "ada"
    assert data["cart"] == ["apple", "pear"]
    marker = Marker.parse(redis_client.get(old_key))
    assert marker is not None and marker.sid == sid and marker.permanent
    assert 0 < redis_client.pttl(old_key) <= 60_000
