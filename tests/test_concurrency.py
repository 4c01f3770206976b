"""Concurrent requests for one session, served by gunicorn in several processes.

These are the claims of SPEC §1 and §5 tested the way they matter: a real
WSGI server (gunicorn, 2 worker processes with 8 threads each, see
``tests/wsgi_servers.py``) serving ``tests/apps/relay_app.py``, and a pool of
client threads sending real HTTP requests at the same time, all carrying the
same session cookie. The client never updates its cookie from responses: the
``Cookie`` header is set by hand on every request.

- 200 concurrent writers, each setting its own key: all 200 keys survive.
- 50 writers interleaved with 150 slow read-only requests: all 50 keys
  survive, and the reads write nothing (Redis keyspace notifications count
  the ``SET`` commands on the session key: exactly one per writer).
- 100 concurrent ``with session.lock(): session["n"] += 1``: ``n == 100``,
  with the default lock settings; and with 10 ms of work in each locked
  section (and a larger retry budget), still exactly 100.

Each view reads the session, may sleep (``?sleep=``), then writes, so that
the requests overlap: the writer scenarios run ``tight`` (no sleep) and
``wide`` (tens of milliseconds). Each on Redis 7 and 6.2. The same scenarios
are run against Flask-Session 0.8 (the last-write-wins design these claims
are about) and its numbers are printed, not asserted: they vary from run to
run. The servers and numbers are shown at the end of the run (the conftest's
``report`` fixture).
"""

from __future__ import annotations

import importlib.util
import json
import random
import threading
import time
import typing as t
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import missing
from .redis_servers import RedisServer
from .wsgi_servers import GunicornServer
from .wsgi_servers import gunicorn_available
from .wsgi_servers import gunicorn_servers

requests = pytest.importorskip("requests")

RELAY_APP = "tests.apps.relay_app:create_app()"
FLASK_SESSION_APP = "tests.apps.flask_session_app:create_app()"

#: Client threads sending requests at once (the servers run 2 x 8 threads).
CLIENT_THREADS = 50


@dataclass(frozen=True)
class Race:
    """How long the views sleep, in seconds, to make requests overlap."""

    #: A writer, between reading the session and writing its key.
    write: float
    #: A read-only request, holding what it read before it returns.
    read: float

    def __str__(self) -> str:
        return f"sleeps {self.write:g}/{self.read:g} s"


#: ``tight``: as fast as the server goes (the setting of the issue's
#: Flask-Session figures); ``wide``: every request stays in flight for tens
#: of milliseconds, so that many overlap in every worker.
RACES = {"tight": Race(write=0.0, read=0.01), "wide": Race(write=0.02, read=0.03)}

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

ServeApp = Callable[..., GunicornServer]


@pytest.fixture(scope="module")
def serve_app() -> Iterator[ServeApp]:
    """``serve_app(app, redis_server, **config)``: the app under gunicorn.

    2 worker processes with 8 threads each, on that Redis server, with
    ``config`` added to ``app.config`` (``RELAY_SESSION_LOCK_RETRIES=30``).
    One server per app, Redis server and config, started on first use and
    stopped at the end of the module (also when a test fails).
    """
    if not gunicorn_available():
        missing("gunicorn")
    with gunicorn_servers() as start:
        cache: dict[tuple[str, ...], GunicornServer] = {}

        def serve(app: str, redis_server: RedisServer, **config: object) -> Any:
            env = {"RELAY_TEST_REDIS_URL": redis_server.url}
            env.update({f"RELAY_TEST_{k}": json.dumps(v) for k, v in config.items()})
            key = (app, *sorted(env.items()))
            server = cache.get(key)
            if server is None or not server.is_running():
                server = cache[key] = start(app, env, workers=2, threads=8)
            return server

        yield serve


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    method: str
    path: str
    status: int
    pid: int
    modified: str | None
    set_cookie: bool
    body: dict[str, object] | None


def send(server: GunicornServer, method: str, path: str, cookie: str) -> Reply:
    """One request with exactly this ``Cookie`` header, on a new connection."""
    response = requests.request(
        method, server.url + path, headers={"Cookie": cookie}, timeout=60
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    return Reply(
        method,
        path,
        response.status_code,
        int(response.headers.get("X-Worker-Pid", 0)),
        response.headers.get("X-Session-Modified"),
        "Set-Cookie" in response.headers,
        body,
    )


def new_session(server: GunicornServer) -> str:
    """Create a session; return the ``Cookie`` header value that carries it."""
    response = requests.post(server.url + "/init", timeout=30)
    assert response.status_code == 200, response.text
    set_cookie = response.headers["Set-Cookie"]
    return set_cookie.split(";", 1)[0]


def fire(
    server: GunicornServer, calls: Sequence[tuple[str, str]], cookie: str
) -> list[Reply]:
    """Send all ``calls`` at once from a pool of threads; return the replies."""
    start = threading.Barrier(min(CLIENT_THREADS, len(calls)))

    def call(item: tuple[str, str]) -> Reply:
        try:
            start.wait(timeout=10)  # the first wave leaves together
        except threading.BrokenBarrierError:
            pass
        return send(server, item[0], item[1], cookie)

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        return list(pool.map(call, calls))


def final_data(server: GunicornServer, cookie: str) -> dict[str, object]:
    """The session as the app sees it after the storm."""
    reply = send(server, "GET", "/read", cookie)
    assert reply.status == 200, reply
    assert reply.body is not None
    data = reply.body["data"]
    assert isinstance(data, dict)
    return data


def relay_stored_data(redis_server: RedisServer, cookie: str) -> dict[str, object]:
    """The session's data as stored in Redis, read without the app."""
    sid = cookie.split("=", 1)[1].split(".", 1)[0]
    client = redis_server.client()
    try:
        raw = client.get(f"sess:{{{sid}}}")
    finally:
        client.close()
    assert raw is not None, f"sess:{{{sid}}} is not in Redis"
    document = json.loads(raw)
    assert document["meta"]["id"] == sid
    data = document["data"]
    assert isinstance(data, dict)
    return data


class KeyWrites:
    """Counts the commands Redis runs on one key, by keyspace notification.

    ``counts["set"]`` is how many times the key was written; a script's
    ``SET`` is reported like any other.
    """

    def __init__(self, redis_server: RedisServer, key: str) -> None:
        self.redis_server = redis_server
        self.key = key
        self.counts: Counter[str] = Counter()

    def __enter__(self) -> KeyWrites:
        self.client = self.redis_server.client()
        self.previous = self.client.config_get("notify-keyspace-events")[
            "notify-keyspace-events"
        ]
        # K: keyspace channel; $: string commands (SET); g: DEL, EXPIRE...
        self.client.config_set("notify-keyspace-events", "K$g")
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(f"__keyspace@0__:{self.key}")
        self.pubsub.get_message(timeout=5)  # the subscription's confirmation
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            while True:
                message = self.pubsub.get_message(timeout=0.5)
                if message is None:
                    break
                if message["type"] == "message":
                    data = message["data"]
                    self.counts[data.decode() if isinstance(data, bytes) else data] += 1
        finally:
            self.pubsub.close()
            self.client.config_set("notify-keyspace-events", self.previous)
            self.client.close()


def relay_session_key(cookie: str) -> str:
    return "sess:{" + cookie.split("=", 1)[1].split(".", 1)[0] + "}"


def check_served(replies: Sequence[Reply]) -> set[int]:
    """Every request succeeded; return the worker pids that served them."""
    failed = [reply for reply in replies if reply.status != 200]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}"
    return {reply.pid for reply in replies}


# --------------------------------------------------------------------------
# Scenarios (shared by flask-relay-session and Flask-Session)
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    replies: list[Reply]
    data: dict[str, object]
    expected_keys: list[str]
    seconds: float

    @property
    def kept(self) -> int:
        return sum(key in self.data for key in self.expected_keys)

    @property
    def pids(self) -> set[int]:
        return {reply.pid for reply in self.replies}


def writers(server: GunicornServer, cookie: str, count: int, race: Race) -> Outcome:
    """``count`` concurrent requests, each writing its own key."""
    keys = [f"k{i:03d}" for i in range(count)]
    calls = [("POST", f"/write/{key}?sleep={race.write}") for key in keys]
    started = time.monotonic()
    replies = fire(server, calls, cookie)
    seconds = time.monotonic() - started
    return Outcome(replies, final_data(server, cookie), keys, seconds)


def writers_and_readers(
    server: GunicornServer, cookie: str, count: int, reads: int, race: Race
) -> Outcome:
    """``count`` writers shuffled among ``reads`` slow read-only requests."""
    keys = [f"w{i:03d}" for i in range(count)]
    calls = [("POST", f"/write/{key}?sleep={race.write}") for key in keys]
    calls += [("GET", f"/read?sleep={race.read}")] * reads
    random.Random(20240602).shuffle(calls)
    started = time.monotonic()
    replies = fire(server, calls, cookie)
    seconds = time.monotonic() - started
    return Outcome(replies, final_data(server, cookie), keys, seconds)


def increments(
    server: GunicornServer, cookie: str, count: int, sleep: float
) -> Outcome:
    """``count`` concurrent ``n += 1`` (locked where the app can lock), each
    sleeping ``sleep`` seconds between reading and writing ``n``.
    """
    calls = [("POST", f"/incr?sleep={sleep}")] * count
    started = time.monotonic()
    replies = fire(server, calls, cookie)
    seconds = time.monotonic() - started
    return Outcome(replies, final_data(server, cookie), ["n"], seconds)


# --------------------------------------------------------------------------
# flask-relay-session: every write survives
# --------------------------------------------------------------------------


@pytest.fixture(params=sorted(RACES))
def race(request: pytest.FixtureRequest) -> Race:
    return RACES[request.param]


def test_concurrent_writers_all_survive(
    serve_app: ServeApp,
    redis_server: RedisServer,
    race: Race,
    report: Callable[[str], None],
) -> None:
    server = serve_app(RELAY_APP, redis_server)
    cookie = new_session(server)

    with KeyWrites(redis_server, relay_session_key(cookie)) as writes:
        outcome = writers(server, cookie, 200, race)

    pids = check_served(outcome.replies)
    report(
        f"flask-relay-session, Redis {redis_server.version_string}, {race}: "
        f"{outcome.kept}/200 keys kept, {writes.counts['set']} SETs, "
        f"{len(pids)} workers, {outcome.seconds:.2f} s"
    )
    assert len(pids) >= 2, "the requests were not spread over several processes"
    lost = [key for key in outcome.expected_keys if key not in outcome.data]
    assert not lost, f"{len(lost)} of 200 keys lost: {lost[:10]}"
    stored = relay_stored_data(redis_server, cookie)
    assert all(stored[key] == f"value of {key}" for key in outcome.expected_keys)
    assert stored["init"] is True
    assert stored["profile"] == {"name": "Ada", "tags": ["a", "b"], "visits": 0}
    # One merge per request: no retries, no extra writes.
    assert writes.counts["set"] == 200, writes.counts


def test_slow_reads_never_write_back_stale_data(
    serve_app: ServeApp,
    redis_server: RedisServer,
    race: Race,
    report: Callable[[str], None],
) -> None:
    server = serve_app(RELAY_APP, redis_server)
    cookie = new_session(server)

    with KeyWrites(redis_server, relay_session_key(cookie)) as writes:
        outcome = writers_and_readers(server, cookie, 50, 150, race)

    pids = check_served(outcome.replies)
    report(
        f"flask-relay-session, Redis {redis_server.version_string}, {race}: "
        f"{outcome.kept}/50 keys kept among 150 reads, "
        f"{writes.counts['set']} SETs, {len(pids)} workers, "
        f"{outcome.seconds:.2f} s"
    )
    assert len(pids) >= 2, "the requests were not spread over several processes"
    lost = [key for key in outcome.expected_keys if key not in outcome.data]
    assert not lost, f"{len(lost)} of 50 keys lost: {lost[:10]}"
    stored = relay_stored_data(redis_server, cookie)
    assert all(stored[key] == f"value of {key}" for key in outcome.expected_keys)

    reads = [reply for reply in outcome.replies if reply.path.startswith("/read")]
    assert len(reads) == 150
    # The reads saw the session (nested values included) and saved nothing.
    for reply in reads:
        assert reply.body is not None and reply.body["tags"] == ["a", "b"]
        assert reply.modified == "false", reply
        assert not reply.set_cookie, reply
    # The only writes Redis saw on the key: one per writer, none per read.
    assert writes.counts["set"] == 50, writes.counts


def lock_summary(outcome: Outcome) -> str:
    statuses = Counter(reply.status for reply in outcome.replies)
    bodies = [reply.body for reply in outcome.replies if reply.body]
    waits = [
        float(t.cast(float, body["waited"])) for body in bodies if "waited" in body
    ]
    held = [float(t.cast(float, body["held"])) for body in bodies if "held" in body]
    mean_held = sum(held) / len(held) if held else 0.0
    return (
        f"n = {outcome.data.get('n')} after 100 locked increments, statuses"
        f" {dict(statuses)}, longest lock wait {max(waits, default=0):.2f} s,"
        f" lock held {mean_held * 1000:.1f} ms on average"
        f" ({sum(held) / outcome.seconds:.0%} of the time),"
        f" {len(outcome.pids)} workers, {outcome.seconds:.2f} s"
    )


def check_exact_increments(
    outcome: Outcome, redis_server: RedisServer, cookie: str, summary: str
) -> None:
    assert Counter(reply.status for reply in outcome.replies) == {200: 100}, summary
    assert len(outcome.pids) >= 2, "the requests were not spread over processes"
    assert outcome.data["n"] == 100, summary
    assert relay_stored_data(redis_server, cookie)["n"] == 100
    # Each request wrote a distinct value: no two ran their section at once.
    written = sorted(t.cast(int, reply.body["n"]) for reply in outcome.replies)
    assert written == list(range(1, 101))


def test_locked_increments_are_exact_across_processes(
    serve_app: ServeApp, redis_server: RedisServer, report: Callable[[str], None]
) -> None:
    """With the default lock settings and nothing but ``n += 1`` locked.

    The default budget (10 retries, 0.05 s linear backoff: 2.75 s of waiting
    in all) must get each request the lock while up to 15 others (2 workers
    x 8 threads) want it too.
    """
    server = serve_app(RELAY_APP, redis_server)
    cookie = new_session(server)

    outcome = increments(server, cookie, 100, sleep=0)

    summary = lock_summary(outcome) + " (default budget 2.75 s)"
    report(f"flask-relay-session, Redis {redis_server.version_string}: {summary}")
    check_exact_increments(outcome, redis_server, cookie, summary)


def test_slow_locked_sections_are_exact_across_processes(
    serve_app: ServeApp, redis7_server: RedisServer, report: Callable[[str], None]
) -> None:
    """10 ms of work in every locked section, so that most requests wait.

    100 such sections need 1 s or more one after the other: the retry budget
    is raised (30 retries: 23 s) so that none gives up, and the test is about
    exactness under heavy contention (lock retries, saves that wait) alone.
    """
    server = serve_app(RELAY_APP, redis7_server, RELAY_SESSION_LOCK_RETRIES=30)
    try:
        cookie = new_session(server)
        outcome = increments(server, cookie, 100, sleep=0.01)
        summary = lock_summary(outcome)
        report(
            f"flask-relay-session, Redis {redis7_server.version_string},"
            f" 10 ms sections: {summary}"
        )
        check_exact_increments(outcome, redis7_server, cookie, summary)
    finally:
        # redis7_server is not emptied by a fixture: leave nothing behind.
        redis7_server.flush()


# --------------------------------------------------------------------------
# Flask-Session 0.8, the same scenarios: reported, not asserted
# --------------------------------------------------------------------------


def test_flask_session_comparison(
    serve_app: ServeApp,
    redis7_server: RedisServer,
    report: Callable[[str], None],
) -> None:
    """What a last-write-wins store keeps of the same traffic.

    Only printed: the losses vary from run to run. The issue quotes about
    60-160 of 200 keys, 7-44 of 50 and n = 18-26 of 100, measured without
    sleeps in the views (the ``tight`` race); the ``wide`` race loses more.
    """
    if importlib.util.find_spec("flask_session") is None:
        missing("flask-session")
    server = serve_app(FLASK_SESSION_APP, redis7_server)
    try:
        for name, race in sorted(RACES.items()):
            outcome = writers(server, new_session(server), 200, race)
            check_served(outcome.replies)
            kept_200 = outcome.kept
            outcome = writers_and_readers(server, new_session(server), 50, 150, race)
            check_served(outcome.replies)
            kept_50 = outcome.kept
            report(
                f"Flask-Session 0.8, {name}: {kept_200}/200 keys kept; "
                f"{kept_50}/50 kept among 150 reads"
            )
        for sleep in (0, 0.005, 0.02):
            outcome = increments(server, new_session(server), 100, sleep)
            check_served(outcome.replies)
            report(
                f"Flask-Session 0.8: n = {outcome.data.get('n')} after 100"
                f" increments with {sleep * 1000:g} ms between read and write"
            )
    finally:
        # redis7_server is not emptied by a fixture: leave nothing behind.
        redis7_server.flush()
