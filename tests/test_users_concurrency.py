"""``revoke_all`` is exact under concurrent requests, served by gunicorn in
several processes (issue 13).

``tests/apps/relay_users_app.py`` under gunicorn (2 worker processes with 8
threads each), on Redis 7 and 6.2 and with both layouts. A user has 20
sessions, each used by a browser thread of its own that keeps sending
reads, writes that load first, blind writes, locked writes and rotations
(with a grace period and without), taking on every cookie its responses set,
as a browser does. While they run, ``revoke_all`` logs the user out
everywhere. Once every request has finished:

- no cookie any browser ever held reaches the user's data or a session
  bound to the user: a request whose session was revoked under it leaves at
  most a fresh, anonymous, unbound session, holding only what it wrote;
- nothing stored is bound to the user any more, and ``sessions_of`` is
  empty;
- and it stays so.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import typing as t
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from .conftest import missing
from .redis_servers import RedisServer
from .wsgi_servers import GunicornServer
from .wsgi_servers import HttpClient
from .wsgi_servers import Serve
from .wsgi_servers import app_servers
from .wsgi_servers import gunicorn_available

pytestmark = pytest.mark.slow

APP = "tests.apps.relay_users_app:create_app()"

#: How many sessions the user has, and how long the storm lasts.
SESSIONS = 20
STORM = 1.5
#: When ``revoke_all`` starts, in seconds after the storm.
REVOKE_AT = 0.5


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """``serve(redis_server, **config)``: the app under gunicorn, cached."""
    if not gunicorn_available():
        missing("gunicorn")
    with app_servers(APP) as serve_app:
        yield serve_app


@dataclass(frozen=True)
class Sent:
    """One request of the storm."""

    kind: str
    status: int
    started: float
    ended: float


#: What each browser sends, in turn (each starts at another place).
KINDS = [
    ("read", "GET", "/state"),
    ("write", "POST", "/put/w{n}?sleep=0.005"),
    ("blind", "POST", "/blind/b{n}"),
    ("locked", "POST", "/count?sleep=0.005"),
    ("rotate", "POST", "/rotate?grace=60"),
    ("read", "GET", "/state"),
    ("write", "POST", "/put/w{n}?sleep=0.005"),
    ("rotate without grace", "POST", "/rotate?grace=0"),
]


class Browser:
    """Sends requests with the cookie it holds, and takes on every cookie
    its responses set, as a browser does.
    """

    def __init__(self, server: GunicornServer, cookie: str, start: int) -> None:
        self.server = server
        self.cookie: str | None = cookie
        self.held = {cookie}
        self.sent: list[Sent] = []
        self.kinds = itertools.islice(itertools.cycle(KINDS), start, None)

    def run(self, barrier: threading.Barrier, stop: threading.Event) -> None:
        barrier.wait(timeout=30)
        with HttpClient(self.server) as client:
            for number in itertools.count():
                if stop.is_set():
                    return
                kind, method, path = next(self.kinds)
                started = time.monotonic()
                reply = client.request(method, path.format(n=number), self.cookie)
                self.sent.append(Sent(kind, reply.status, started, time.monotonic()))
                cookie = reply.cookie()
                if cookie == "session=":
                    self.cookie = None
                elif cookie is not None:
                    self.cookie = cookie
                    self.held.add(cookie)


def state(server: GunicornServer, cookie: str | None) -> dict[str, t.Any]:
    with HttpClient(server) as client:
        reply = client.request("GET", "/state", cookie)
    assert reply.status in (200, 410), reply
    return (
        {"new": True, "data": {}, "user_id": None}
        if reply.status == 410
        else (reply.json)
    )


def bound_to(client: redis.Redis, user: str) -> list[str]:
    """Every session key whose meta data binds it to ``user``, in either
    layout.
    """
    found = []
    for key in client.scan_iter(match="sess:{*}"):
        if client.type(key) == b"hash":
            owner = client.hget(key, " user")
        else:
            raw = client.get(key) or b"{}"
            owner = (json.loads(raw).get("meta") or {}).get("user", "").encode()
        if owner == user.encode():
            found.append(key.decode())
    return found


def check_signed_out(
    server: GunicornServer, redis_server: RedisServer, cookies: set[str]
) -> Counter[str]:
    """Check that no cookie reaches the user's data; count what they reach."""
    reached: Counter[str] = Counter()
    for cookie in cookies:
        found = state(server, cookie)
        assert found["user_id"] is None, found
        assert "user" not in found["data"] and "marker" not in found["data"], found
        reached["nothing" if found["new"] else "fresh session"] += 1
    with HttpClient(server) as client:
        assert client.request("GET", "/devices/ada").json == []
    admin = redis_server.client()
    try:
        assert bound_to(admin, "ada") == []
    finally:
        admin.close()
    return reached


def test_revoke_all_is_exact_under_concurrent_requests(
    serve: Serve,
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    server = serve(
        redis_server,
        RELAY_SESSION_LAYOUT=layout,
        RELAY_SESSION_LOCK_RETRIES=100,
        RELAY_SESSION_LOCK_BACKOFF=0.005,
    )
    browsers = []
    with HttpClient(server) as client:
        for number in range(SESSIONS):
            reply = client.request("POST", f"/login/ada?marker={number}")
            assert reply.status == 200 and reply.cookie(), reply
            browsers.append(Browser(server, t.cast(str, reply.cookie()), number))
        assert len(client.request("GET", "/devices/ada").json) == SESSIONS

    barrier = threading.Barrier(SESSIONS + 1)
    stop = threading.Event()
    threads = [
        threading.Thread(target=browser.run, args=(barrier, stop))
        for browser in browsers
    ]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    time.sleep(REVOKE_AT)
    with HttpClient(server) as client:
        revoke_started = time.monotonic()
        revoked = client.request("POST", "/revoke-all/ada")
        revoke_ended = time.monotonic()
    time.sleep(STORM - REVOKE_AT)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert revoked.status == 200, revoked

    sent = [request for browser in browsers for request in browser.sent]
    overlapping = [
        r for r in sent if r.started < revoke_ended and r.ended > revoke_started
    ]
    cookies = set().union(*(browser.held for browser in browsers))
    errors = [r for r in sent if r.status >= 500]
    assert not errors, Counter((r.kind, r.status) for r in errors)
    reached = check_signed_out(server, redis_server, cookies)
    # Nothing comes back once the requests in flight have finished.
    time.sleep(0.3)
    assert check_signed_out(server, redis_server, cookies) == reached
    report(
        f"Redis {redis_server.version_string}, {layout} layout: {len(sent)}"
        f" requests on {SESSIONS} sessions"
        f" ({dict(Counter(r.kind for r in sent))}), statuses"
        f" {dict(Counter(r.status for r in sent))}; revoke_all ended"
        f" {revoked.json['ended']} in {1000 * (revoke_ended - revoke_started):.1f}"
        f" ms with {len(overlapping)} requests in flight; {len(cookies)} cookies"
        f" held, now reaching {dict(reached)}"
    )
    assert len(overlapping) >= SESSIONS // 2, "revoke_all raced too few requests"
    assert {r.kind for r in overlapping} >= {"read", "write", "locked", "rotate"}
    assert revoked.json["ended"] >= SESSIONS
