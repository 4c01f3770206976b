"""SPEC §8: Redis goes away in the middle of traffic, and comes back.

A real gunicorn server (two workers, threads) serves an app while client
threads send a steady stream of writes, each recording which writes were
acknowledged. Then Redis is paused with ``SIGSTOP`` (unreachable, no data
lost) or killed and restarted empty. Requests during the outage get a clean
``503`` (never a ``500``), no request leaves a half-written session behind,
and service resumes by itself once Redis is back.

With a redis-py ``Retry`` (see :func:`recommended_client`), a short blip is
invisible to users. Such a retry re-sends a command whose reply was lost,
so the server may run it twice: every store operation must be safe to
repeat. The last tests pause Redis right before a rotation and a lock
acquisition (the two that were not, at first) and check that the retried
command neither loses the session nor locks the request out.
"""

from __future__ import annotations

import os
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field

import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import session
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError
from redis.retry import Retry

from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession

from .conftest import missing
from .redis_servers import RedisServer
from .redis_servers import no_retry
from .wsgi_servers import GunicornServer
from .wsgi_servers import gunicorn_available
from .wsgi_servers import gunicorn_servers

requests = pytest.importorskip("requests")

#: The app gunicorn serves, configured by the RELAY_OUTAGE_* environment.
OUTAGE_APP = "tests.test_outages:create_outage_app()"


def recommended_client(host: str, port: int, **kwargs: t.Any) -> redis.Redis:
    """The client settings this suite recommends for production.

    Short socket timeouts, so that a hung server turns into a quick 503
    instead of a hung worker; a bounded exponential retry on connection
    errors and timeouts (2.2 s of backoff in all), so that a blip of a few
    hundred milliseconds is invisible.
    """
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 6),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=0,
        **kwargs,
    )


def fail_fast_client(host: str, port: int) -> redis.Redis:
    """No retries, short timeouts: every outage shows as a 503 at once."""
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        retry=no_retry(),
    )


def add_views(app: Flask) -> Flask:
    @app.post("/write/<int:number>")
    def write(number: int) -> t.Any:
        # One request, several paths: all of them are saved, or none.
        session[f"a{number}"] = number
        session[f"b{number}"] = {"n": number}
        log = session.get("log")
        if log is None:
            session["log"] = [number]
        else:
            log.append(number)
        return jsonify(n=number)

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.post("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/incr")
    def incr() -> str:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return "ok"

    return app


def create_outage_app() -> Flask:
    """The gunicorn app: ``RELAY_OUTAGE_REDIS_PORT``, ``RELAY_OUTAGE_LAYOUT``."""
    app = Flask(__name__)
    port = int(os.environ["RELAY_OUTAGE_REDIS_PORT"])
    app.config.update(
        SECRET_KEY="outage secret",
        RELAY_SESSION_REDIS=fail_fast_client("127.0.0.1", port),
        RELAY_SESSION_LAYOUT=os.environ.get("RELAY_OUTAGE_LAYOUT", "json"),
    )
    RelaySession(app)
    return add_views(app)


# --------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------


@dataclass
class Browser:
    """One user: a cookie, and what the server acknowledged."""

    cookie: str | None = None
    attempted: list[int] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    sids: list[str] = field(default_factory=list)


@dataclass
class Event:
    started: float
    latency: float
    status: int
    body: str


class Traffic:
    """Client threads that keep writing to their own sessions over HTTP."""

    def __init__(self, base_url: str, browsers: int = 4) -> None:
        self.base_url = base_url
        self.browsers = [Browser() for _ in range(browsers)]
        self.events: list[Event] = []
        self._events_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next = iter(range(1, 10**9))
        self._number_lock = threading.Lock()
        self.t0 = time.monotonic()

    def number(self) -> int:
        with self._number_lock:
            return next(self._next)

    def request(self, browser: Browser, method: str, path: str) -> t.Any:
        headers = {"Cookie": f"session={browser.cookie}"} if browser.cookie else {}
        started = time.monotonic()
        response = requests.request(
            method, self.base_url + path, headers=headers, timeout=15
        )
        with self._events_lock:
            self.events.append(
                Event(
                    started - self.t0,
                    time.monotonic() - started,
                    response.status_code,
                    response.text[:300],
                )
            )
        cookie = response.cookies.get("session")
        if cookie:
            browser.cookie = cookie
            sid = cookie.split(".")[0]
            if sid not in browser.sids:
                browser.sids.append(sid)
        return response

    def _run(self, browser: Browser) -> None:
        while not self._stop.is_set():
            number = self.number()
            browser.attempted.append(number)
            if self.request(browser, "POST", f"/write/{number}").status_code == 200:
                browser.acknowledged.append(number)
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for browser in self.browsers:
            thread = threading.Thread(target=self._run, args=(browser,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def statuses(self) -> set[int]:
        return {event.status for event in self.events}


def check_consistent(data: dict[str, t.Any], browser: Browser) -> set[int]:
    """Check the stored session of ``browser``; return the writes it holds.

    Each write request sets ``a<n>`` and ``b<n>`` and appends ``n`` to
    ``log``, in one merge: ``a<n>`` and ``b<n>`` are always stored together,
    with the right values, and every acknowledged write is there in full.

    A write that timed out is not acknowledged, but Redis may still run it
    once it is back (it waited in the paused server's socket). The request
    after it may have loaded the session before that "ghost" write ran and
    then saved ``log`` without it: so the log can miss an unacknowledged
    write whose keys are stored. That is what a timeout means with any
    client; acknowledged writes are never affected.
    """
    logged = set(data.get("log", []))
    a_keys = {int(key[1:]) for key in data if key.startswith("a")}
    b_keys = {int(key[1:]) for key in data if key.startswith("b")}
    assert a_keys == b_keys, "a request was saved in part"
    for number in a_keys:
        assert data[f"a{number}"] == number
        assert data[f"b{number}"] == {"n": number}
    assert logged <= a_keys
    assert a_keys <= set(browser.attempted)
    acknowledged = set(browser.acknowledged)
    assert acknowledged <= a_keys
    assert a_keys - logged <= set(browser.attempted) - acknowledged
    return a_keys


@pytest.fixture
def serve_app() -> Iterator[Callable[..., GunicornServer]]:
    if not gunicorn_available():
        missing("gunicorn")
    with gunicorn_servers() as start:
        yield start


@pytest.fixture
def own_server(start_redis: Callable[..., RedisServer]) -> RedisServer:
    return start_redis("redis7")


def stored_data(server: RedisServer, layout: str, sid: str) -> t.Any:
    """The session as the package decodes it from the server, or ``None``."""
    client = server.client(protocol=2, retry=no_retry())
    try:
        store = RedisSessionStore(client, layout=layout)
        stored = store.load(sid, ttl=None)
        return None if stored is None else stored.decoded()
    finally:
        client.close()


def timeline(traffic: Traffic, outage: tuple[float, float]) -> str:
    """A one-line summary of what clients saw around the outage."""
    start, end = outage
    failed = [event for event in traffic.events if event.status != 200]
    after = [
        event
        for event in traffic.events
        if event.started >= end and event.status == 200
    ]
    slowest = max(event.latency for event in traffic.events)
    first_fail = min((e.started for e in failed), default=float("nan"))
    last_fail = max((e.started + e.latency for e in failed), default=float("nan"))
    first_ok = min((e.started + e.latency for e in after), default=float("nan"))
    return (
        f"outage {start:.2f}-{end:.2f} s; {len(traffic.events)} requests,"
        f" {len(failed)} failed ({sorted(traffic.statuses())}); first failure"
        f" {first_fail - start:+.2f} s after it began, last failure answered"
        f" {last_fail - end:+.2f} s after it ended; first success after"
        f" {first_ok - end:+.2f} s; slowest answer {slowest:.2f} s"
    )


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


def test_unreachable_redis_gives_503s_and_every_acknowledged_write_survives(
    serve_app: Callable[..., GunicornServer], own_server: RedisServer, layout: str
) -> None:
    server = serve_app(
        OUTAGE_APP,
        env={
            "RELAY_OUTAGE_REDIS_PORT": str(own_server.port),
            "RELAY_OUTAGE_LAYOUT": layout,
        },
        workers=2,
        threads=4,
    )
    with Traffic(server.url) as traffic:
        time.sleep(0.5)
        paused_at = traffic.now()
        own_server.pause()
        time.sleep(1.5)
        own_server.resume()
        resumed_at = traffic.now()
        time.sleep(1.0)
    print(timeline(traffic, (paused_at, resumed_at)))

    statuses = traffic.statuses()
    assert statuses <= {200, 503}, statuses
    assert 503 in statuses
    for event in traffic.events:
        if event.status == 503:
            assert "session_store_unavailable" in event.body
            assert "Traceback" not in event.body
    assert "Exception on" not in server.full_log()  # Flask's 500 logging
    for browser in traffic.browsers:
        # No restart: service resumed, the last write of every user worked.
        assert browser.acknowledged[-1] == browser.attempted[-1]
        # Nothing was lost (the server kept its data) and the session id
        # never changed.
        assert len(browser.sids) == 1
        data = stored_data(own_server, layout, browser.sids[0])
        assert data is not None
        check_consistent(data, browser)
        # What the app serves is what is stored.
        response = traffic.request(browser, "GET", "/read")
        assert response.json() == data


def test_redis_restarted_empty_gives_fresh_sessions_with_new_ids(
    serve_app: Callable[..., GunicornServer], own_server: RedisServer
) -> None:
    server = serve_app(
        OUTAGE_APP,
        env={"RELAY_OUTAGE_REDIS_PORT": str(own_server.port)},
        workers=2,
        threads=4,
    )
    with Traffic(server.url) as traffic:
        time.sleep(0.5)
        acknowledged_before = [set(b.acknowledged) for b in traffic.browsers]
        killed_at = traffic.now()
        own_server.kill()  # a crash of a server that keeps nothing on disk
        time.sleep(1.0)
        own_server.start()
        restarted_at = traffic.now()
        # Requests in flight at either moment are acknowledged now, whichever
        # side of the crash they were stored on.
        acknowledged_around = [set(b.acknowledged) for b in traffic.browsers]
        time.sleep(1.0)
    print(timeline(traffic, (killed_at, restarted_at)))

    assert traffic.statuses() <= {200, 503}, traffic.statuses()
    assert 503 in traffic.statuses()
    assert "Exception on" not in server.full_log()
    for index, browser in enumerate(traffic.browsers):
        assert browser.acknowledged[-1] == browser.attempted[-1]
        # The old session was lost with the server: the next write started
        # a new session under a new id; the old id is never used again.
        assert len(browser.sids) == 2
        old_sid, new_sid = browser.sids
        assert stored_data(own_server, "json", old_sid) is None
        data = stored_data(own_server, "json", new_sid)
        assert data is not None
        stored = set(data["log"])
        assert stored == {int(key[1:]) for key in data if key.startswith("a")}
        assert stored == {int(key[1:]) for key in data if key.startswith("b")}
        assert stored.isdisjoint(acknowledged_before[index])
        assert set(browser.acknowledged) - acknowledged_around[index] <= stored


# -- retries -----------------------------------------------------------------


def make_retrying_app(
    server: RedisServer, layout: str = "json", **config: t.Any
) -> Flask:
    app = Flask(__name__)
    assert server.port is not None
    app.config.update(
        SECRET_KEY="outage secret",
        RELAY_SESSION_REDIS=recommended_client(server.host, server.port),
        RELAY_SESSION_LAYOUT=layout,
    )
    app.config.update(config)
    RelaySession(app)
    return add_views(app)


def test_a_short_blip_is_invisible_with_the_recommended_retry(
    own_server: RedisServer, layout: str
) -> None:
    app = make_retrying_app(own_server, layout)
    browsers = [app.test_client() for _ in range(3)]
    for number, browser in enumerate(browsers):
        assert browser.post(f"/write/{number}").status_code == 200
    statuses: list[int] = []
    stop = threading.Event()

    def traffic(browser: t.Any, first: int) -> None:
        number = first
        while not stop.is_set():
            number += 1
            statuses.append(browser.post(f"/write/{number}").status_code)
            statuses.append(browser.get("/read").status_code)

    threads = [
        threading.Thread(target=traffic, args=(browser, 1000 * (index + 1)))
        for index, browser in enumerate(browsers)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        own_server.pause()
        time.sleep(0.3)
        own_server.resume()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(statuses) > 20
    assert set(statuses) == {200}
    for browser in browsers:
        data = browser.get("/read").json
        logged = set(data["log"])
        assert logged == {int(key[1:]) for key in data if key.startswith("a")}


class PauseBefore:
    """Wraps a store operation: pause Redis just before it is sent, resume
    it 0.3 s later. The command waits in the paused server's socket, the
    client times out and redis-py's ``Retry`` sends it again: the server runs
    it twice, and the first reply is lost.
    """

    def __init__(self, server: RedisServer, operation: t.Any) -> None:
        self.server = server
        self.operation = operation
        self.armed = True

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.operation, name)

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if self.armed:
            self.armed = False
            self.server.pause()
            threading.Timer(0.3, self.server.resume).start()
        return self.operation(*args, **kwargs)


def test_a_blip_during_rotation_keeps_the_session(
    own_server: RedisServer, layout: str
) -> None:
    app = make_retrying_app(own_server, layout)
    browser = app.test_client()
    assert browser.post("/write/1").status_code == 200
    store = app.extensions["relay_session"].store
    store._layout.rotate = PauseBefore(own_server, store._layout.rotate)
    assert browser.post("/rotate").status_code == 200
    assert browser.get("/read").json == {"a1": 1, "b1": {"n": 1}, "log": [1]}


def test_a_blip_while_taking_the_lock_does_not_lock_out_the_request(
    own_server: RedisServer,
) -> None:
    app = make_retrying_app(own_server)
    browser = app.test_client()
    assert browser.post("/write/1").status_code == 200
    store = app.extensions["relay_session"].store
    store.lock = PauseBefore(own_server, store.lock)
    assert browser.post("/incr").status_code == 200
    assert browser.get("/read").json["n"] == 1
