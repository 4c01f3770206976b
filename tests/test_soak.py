"""Soak: many sessions, mixed traffic, then every session checked.

``tests/apps/relay_soak_app.py`` under gunicorn (4 worker processes with 4
threads each) on the suite's Redis 7, and a pool of client threads, each on
its own keep-alive connection, behaving like browsers: each follows
``Set-Cookie`` for the sessions it drives, and records what every
acknowledged (200) request did to its session.

1. Creation: :data:`SESSIONS` sessions (``POST /init``).
2. Mixed traffic for :data:`SECONDS` seconds. Each client thread drives its
   own share of the sessions, one request at a time per session: reads
   (checked against the record on the spot), writes of several keys and
   deletes (values of every JSON type, keys with dots, spaces, a leading
   space, non-ASCII), locked increments (``/incr``), nested changes
   (``/nested``), logins that rotate the id (``/login``), reads with an old
   cookie (served the current session through the redirect chain), and
   bursts: 4 to 8 concurrent requests on one session (writes of distinct
   keys, locked increments, reads, and sometimes a login among them).
3. Verification of every session through the app (``GET /state`` with the
   current cookie) and directly in Redis (decoded with
   :func:`flask_relay_session.serialization.loads`), every rotated-away id
   (a redirect or gone, never a session), and a census of the keyspace:
   exactly one session per client session, one redirect per rotation, no
   lock left behind.

Zero 5xx, zero lost or corrupted writes, zero anomalies are asserted. The
memory per session in Redis (``INFO memory`` ``used_memory`` growth over the
creation phase, per session; ``MEMORY USAGE`` averaged over a sample) is
reported, with the request counts, in a summary line shown at the end of
the run (the conftest's ``report`` fixture) and written to
``soak-summary.txt`` in the test's temporary directory.

The test is marked ``slow``: ``python -m pytest`` leaves it out, and
``RELAY_SLOW_TESTS=1`` (which ``.ci/run`` sets) brings it in. CI mode (the
default) takes about a minute per layout. A longer run::

    RELAY_SLOW_TESTS=1 RELAY_SOAK_SECONDS=600 RELAY_SOAK_SESSIONS=100000 \\
        python -m pytest tests/test_soak.py

Environment variables: ``RELAY_SOAK_SECONDS`` (mixed phase, default 30),
``RELAY_SOAK_SESSIONS`` (default 10000), ``RELAY_SOAK_THREADS`` (client
threads, default 48), ``RELAY_SOAK_LAYOUTS`` (comma-separated, default
``json,hash``; the hash layout runs half as long), ``RELAY_SOAK_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import typing as t
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_relay_session.serialization import loads

from .conftest import missing
from .helpers import decode_fields
from .redis_servers import RedisServer
from .wsgi_servers import GunicornServer
from .wsgi_servers import HttpClient
from .wsgi_servers import HttpReply
from .wsgi_servers import WsgiServerError
from .wsgi_servers import cookie_sid
from .wsgi_servers import gunicorn_available
from .wsgi_servers import gunicorn_servers

SECONDS = float(os.environ.get("RELAY_SOAK_SECONDS", "30"))
SESSIONS = int(os.environ.get("RELAY_SOAK_SESSIONS", "10000"))
THREADS = int(os.environ.get("RELAY_SOAK_THREADS", "48"))
LAYOUTS = os.environ.get("RELAY_SOAK_LAYOUTS", "json,hash").split(",")
SEED = int(os.environ.get("RELAY_SOAK_SEED", str(random.randrange(1 << 30))))
#: Seconds of mixed traffic per layout: the hash layout gets half.
LAYOUT_SECONDS = {"json": SECONDS, "hash": SECONDS / 2}

pytestmark = [
    pytest.mark.slow,
    # The whole test: creation and checks take about as long as the mix.
    pytest.mark.timeout(max(300, int(SECONDS * 3 + SESSIONS / 50))),
]

APP = "tests.apps.relay_soak_app:create_app()"

#: What ``POST /init`` stores.
INITIAL = {"init": True, "profile": {"name": "Ada", "tags": ["a", "b"], "visits": 0}}
#: Keys the traffic never deletes.
PROTECTED = frozenset({"init", "profile", "n", "user"})
#: Keys written by the mixed phase: the awkward ones included.
KEYS = (
    "cart",
    "theme",
    "a.b",
    "with space",
    " leading",
    "  two leading",
    " version",
    " redirect",
    "ключ",
    "emoji 😀",
    "x" * 40,
)
#: The meta fields of a session hash (the hash layout's storage format).
HASH_META = frozenset({" created", " expires", " size", " version"})


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type, nested now and then."""
    kind = rng.randrange(12 if depth < 2 else 9)
    if kind == 0:
        return rng.randint(-1000, 1000)
    if kind == 1:
        return rng.choice([2**53 + 1, -(2**63), 2**64 + rng.randint(0, 99)])
    if kind == 2:
        return rng.choice([0.1, 1 / 3, 1e300, -2.5e-300, 123456.789, rng.random()])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.choice(["", "plain", "é ü ß ✓", "emoji 😀", '"quoted"\n\\'])
    if kind == 6:
        return f"s{rng.randrange(10**9)}"
    if kind == 7:
        return rng.choice([[], {}])
    if kind == 8:
        return rng.choice(["0", "null", " t", "{}"])
    if kind in (9, 10):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(1, 4))]
    return {
        rng.choice(KEYS): random_value(rng, depth + 1)
        for _ in range(rng.randrange(1, 4))
    }


# --------------------------------------------------------------------------
# The client's record
# --------------------------------------------------------------------------


@dataclass
class Tracked:
    """One session as the client knows it."""

    cookie: str
    sid: str
    data: dict[str, Any]
    #: Cookies replaced by rotations, oldest first.
    old_cookies: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return t.cast(int, self.data.get("n", 0))


@dataclass
class Tally:
    """What happened, shared by the client threads."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    pids: Counter[int] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, reply: HttpReply) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses[reply.status] += 1
            self.pids[reply.pid] += 1

    def anomaly(self, message: str) -> None:
        with self.lock:
            self.anomalies.append(message)

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


class Driver:
    """One client thread's connection, random source and checks."""

    def __init__(
        self, server: GunicornServer, tally: Tally, rng: random.Random, burst_pool: Any
    ) -> None:
        self.client = HttpClient(server)
        self.server = server
        self.tally = tally
        self.rng = rng
        self.burst_pool = burst_pool
        self.key_counter = 0

    def send(
        self,
        kind: str,
        method: str,
        path: str,
        cookie: str | None,
        body: Any = None,
        client: HttpClient | None = None,
    ) -> HttpReply | None:
        try:
            reply = (client or self.client).request(method, path, cookie, body)
        except WsgiServerError as error:
            self.tally.anomaly(f"{kind}: transport error {error}")
            return None
        self.tally.count(kind, reply)
        if reply.status != 200:
            self.tally.anomaly(f"{kind} {path}: {reply.status} {reply.body[:200]!r}")
            return None
        return reply

    def expect(self, condition: bool, message: str) -> bool:
        if not condition:
            self.tally.anomaly(message)
        return condition

    # -- creation ------------------------------------------------------

    def create(self) -> Tracked | None:
        reply = self.send("create", "POST", "/init", None)
        if reply is None:
            return None
        cookie = reply.cookie()
        sid = cookie_sid(cookie)
        if not self.expect(sid is not None, f"create: no cookie {reply!r}"):
            return None
        assert cookie is not None and sid is not None
        return Tracked(cookie, sid, json.loads(json.dumps(INITIAL)))

    # -- one operation on a session --------------------------------------

    def step(self, session: Tracked) -> None:
        roll = self.rng.random()
        if roll < 0.35:
            self.read(session)
        elif roll < 0.57:
            self.put(session)
        elif roll < 0.72:
            self.incr(session)
        elif roll < 0.77:
            self.nested(session)
        elif roll < 0.83:
            self.rotate(session)
        elif roll < 0.88:
            self.stale_read(session)
        else:
            self.burst(session)

    def check_state(self, what: str, session: Tracked, reply: HttpReply) -> None:
        body = reply.json
        self.expect(
            body["data"] == session.data,
            f"{what} {session.sid[:8]}: data {body['data']!r} != {session.data!r}",
        )
        self.expect(body["sid"] == session.sid, f"{what}: served {body['sid']}")

    def read(self, session: Tracked) -> None:
        reply = self.send("read", "GET", "/state", session.cookie)
        if reply is None:
            return
        self.check_state("read", session, reply)
        self.expect(reply.json["redirected"] is False, "read: redirected")
        self.expect(reply.cookie() is None, f"read: set a cookie {reply.cookie()}")

    def check_cookie(
        self, what: str, session: Tracked, reply: HttpReply, *, moved: bool = False
    ) -> None:
        """The reply leaves the client holding ``session``'s id: it sets a
        cookie for it, or, unless the session ``moved`` to another id, sets
        none (a write under the same id says nothing new).
        """
        cookie = reply.cookie()
        if cookie is None and not moved:
            return
        sid = cookie_sid(cookie)
        self.expect(sid == session.sid, f"{what}: cookie for {sid}, not {session.sid}")

    def put(self, session: Tracked) -> None:
        rng = self.rng
        changes = {
            rng.choice(KEYS): random_value(rng) for _ in range(rng.randint(1, 3))
        }
        deletable = sorted(set(session.data) - PROTECTED - set(changes))
        deleted = [rng.choice(deletable)] if deletable and rng.random() < 0.3 else []
        body = {"set": changes, "delete": deleted}
        reply = self.send("write", "POST", "/put", session.cookie, body)
        if reply is None:
            return
        session.data.update(json.loads(json.dumps(changes)))
        for key in deleted:
            del session.data[key]
        self.check_cookie("write", session, reply)

    def incr(self, session: Tracked) -> None:
        reply = self.send("incr", "POST", "/incr", session.cookie)
        if reply is None:
            return
        n = reply.json["n"]
        self.expect(n == session.n + 1, f"incr: wrote n={n}, expected {session.n + 1}")
        session.data["n"] = session.n + 1
        self.check_cookie("incr", session, reply)

    def nested(self, session: Tracked) -> None:
        tag = f"t{self.rng.randrange(1000)}"
        reply = self.send("nested", "POST", f"/nested?tag={tag}", session.cookie)
        if reply is None:
            return
        profile = session.data["profile"]
        profile["visits"] += 1
        profile["tags"].append(tag)
        self.expect(reply.json["visits"] == profile["visits"], "nested: visits")
        self.check_cookie("nested", session, reply)

    def rotate(self, session: Tracked) -> None:
        user = f"u{self.rng.randrange(10**6)}"
        reply = self.send("rotate", "POST", f"/login?user={user}", session.cookie)
        if reply is None:
            return
        self.rotated(session, reply, user)

    def rotated(self, session: Tracked, reply: HttpReply, user: str) -> None:
        cookie = reply.cookie()
        sid = cookie_sid(cookie)
        if not self.expect(
            sid is not None and sid == reply.json["sid"] and sid != session.sid,
            f"rotate: cookie {cookie} after {session.sid}",
        ):
            return
        assert cookie is not None and sid is not None
        session.old_cookies.append(session.cookie)
        session.cookie, session.sid = cookie, sid
        session.data["user"] = user

    def stale_read(self, session: Tracked) -> None:
        if not session.old_cookies:
            return self.read(session)
        old = self.rng.choice(session.old_cookies[-3:])
        reply = self.send("stale read", "GET", "/state", old)
        if reply is None:
            return None
        self.check_state("stale read", session, reply)
        self.expect(reply.json["redirected"] is True, "stale read: not redirected")
        self.check_cookie("stale read", session, reply, moved=True)
        return None

    def burst(self, session: Tracked) -> None:
        """4 to 8 concurrent requests on one session, a login among them
        now and then.
        """
        rng = self.rng
        user = f"u{rng.randrange(10**6)}" if rng.random() < 0.3 else None
        calls: list[tuple[str, str, str, Any]] = []
        for _ in range(rng.randint(4, 8)):
            roll = rng.random()
            if roll < 0.3:
                calls.append(("incr", "POST", "/incr", None))
            elif roll < 0.8:
                self.key_counter += 1
                key = f"burst {self.key_counter}"
                calls.append(("write", "POST", "/put", {"set": {key: key}}))
            else:
                calls.append(("read", "GET", "/state", None))
        if user is not None:
            login = ("rotate", "POST", f"/login?user={user}", None)
            calls.insert(rng.randrange(len(calls)), login)
        cookie, before = session.cookie, session.sid

        def call(item: tuple[str, str, str, Any]) -> tuple[str, Any, HttpReply | None]:
            kind, method, path, body = item
            with HttpClient(self.server) as client:
                return (
                    kind,
                    body,
                    self.send(f"burst {kind}", method, path, cookie, body, client),
                )

        replies = list(self.burst_pool.map(call, calls))
        n_before = session.n
        written = []
        for kind, body, reply in replies:
            if reply is None:
                continue
            if kind == "write":
                session.data.update(body["set"])
            elif kind == "incr":
                session.data["n"] = session.n + 1
                written.append(reply.json["n"])
            elif kind == "rotate":
                assert user is not None
                self.rotated(session, reply, user)
        self.expect(
            sorted(written) == list(range(n_before + 1, n_before + 1 + len(written))),
            f"burst: increments wrote {sorted(written)} after n={n_before}",
        )
        allowed = {before, session.sid}
        for kind, _body, reply in replies:
            if reply is not None and kind != "read":
                # No cookie: the client keeps the one it sent.
                cookie = reply.cookie()
                sid = before if cookie is None else cookie_sid(cookie)
                self.expect(sid in allowed, f"burst {kind}: cookie for {sid}")


# --------------------------------------------------------------------------
# Redis, read directly
# --------------------------------------------------------------------------


def stored_documents(
    client: redis.Redis, sids: list[str], layout: str
) -> list[tuple[str, Any]]:
    """``(kind, payload)`` for each sid: ``("session", data)``,
    ``("redirect", target)`` or ``("missing", None)``.
    """
    found: list[tuple[str, Any]] = []
    for start in range(0, len(sids), 1000):
        pipe = client.pipeline(transaction=False)
        for sid in sids[start : start + 1000]:
            key = f"sess:{{{sid}}}"
            if layout == "json":
                pipe.get(key)
            else:
                pipe.hgetall(key)
        for raw in pipe.execute():
            found.append(decode_stored(raw, layout))
    return found


def decode_stored(raw: Any, layout: str) -> tuple[str, Any]:
    if not raw:
        return ("missing", None)
    if layout == "json":
        document = json.loads(raw)
        if document["data"] is None:
            if set(document) != {"data", "meta"} or set(document["meta"]) != {
                "redirectTo",
                "expiresAt",
            }:
                return ("malformed redirect", document)
            return ("redirect", document["meta"]["redirectTo"])
        return ("session", loads(raw)["data"])
    fields = {name.decode(): value for name, value in raw.items()}
    if " redirect" in fields:
        if set(fields) != {" redirect", " expires"}:
            return ("malformed redirect", fields)
        return ("redirect", fields[" redirect"].decode())
    data = {name: value for name, value in fields.items() if name not in HASH_META}
    return ("session", decode_fields(data))


def census(client: redis.Redis, layout: str) -> Counter[str]:
    """Count the keys: sessions, redirects, locks, release receipts, other.

    A locked write that releases the lock in its merge leaves a receipt for
    a minute (``sess:lock:released:{sid}``), so that a re-sent merge gets
    the first reply: those are not locks.
    """
    kinds: Counter[str] = Counter()
    keys = list(client.scan_iter(match="*", count=1000))
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            if key.startswith(b"sess:lock:"):
                pipe.exists(key)
            elif layout == "json":
                pipe.get(key)
            else:
                pipe.hgetall(key)
        for key, raw in zip(batch, pipe.execute(), strict=True):
            if key.startswith(b"sess:lock:released:"):
                kinds["receipt"] += 1
            elif key.startswith(b"sess:lock:"):
                kinds["lock"] += 1
            elif key.startswith(b"sess:{"):
                kinds[decode_stored(raw, layout)[0]] += 1
            else:
                kinds[f"other {key[:20]!r}"] += 1
    return kinds


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[..., GunicornServer]]:
    if not gunicorn_available():
        missing("gunicorn")
    with gunicorn_servers() as start:
        yield start


def run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            target(index)
        except BaseException as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_soak_every_write_survives(
    serve: Callable[..., GunicornServer],
    redis7_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
    tmp_path: Path,
) -> None:
    seconds = LAYOUT_SECONDS.get(layout, SECONDS)
    redis7_server.flush()
    env = {
        "RELAY_TEST_REDIS_URL": redis7_server.url,
        "RELAY_TEST_RELAY_SESSION_LAYOUT": json.dumps(layout),
    }
    server = serve(APP, env, workers=4, threads=4, extra_args=["--keep-alive", "120"])
    client = redis7_server.client()
    try:
        baseline = used_memory(client)
        tally = Tally()
        sessions: list[list[Tracked]] = [[] for _ in range(THREADS)]
        burst_pool = ThreadPoolExecutor(max_workers=64)
        drivers = [
            Driver(server, tally, random.Random(SEED * 1000 + i), burst_pool)
            for i in range(THREADS)
        ]

        # 1. Creation.
        started = time.monotonic()

        def create(index: int) -> None:
            for _ in range(index, SESSIONS, THREADS):
                session = drivers[index].create()
                if session is not None:
                    sessions[index].append(session)

        run_threads(THREADS, create)
        created_seconds = time.monotonic() - started
        created = sum(len(own) for own in sessions)
        after_creation = used_memory(client)

        # 2. Mixed traffic.
        started = time.monotonic()
        deadline = started + seconds

        def mix(index: int) -> None:
            driver, own = drivers[index], sessions[index]
            while time.monotonic() < deadline and own:
                driver.step(driver.rng.choice(own))

        run_threads(THREADS, mix)
        mixed_seconds = time.monotonic() - started
        mixed_requests = sum(tally.requests.values()) - tally.requests["create"]
        burst_pool.shutdown()

        # 3. Verification through the app.
        started = time.monotonic()

        def verify(index: int) -> None:
            driver = drivers[index]
            for session in sessions[index]:
                reply = driver.send("verify", "GET", "/state", session.cookie)
                if reply is not None:
                    driver.check_state("verify", session, reply)
                    driver.expect(
                        reply.json["redirected"] is False, "verify: redirected"
                    )
                    driver.expect(reply.cookie() is None, "verify: set a cookie")

        run_threads(THREADS, verify)
        verify_seconds = time.monotonic() - started
        for driver in drivers:
            driver.client.close()

        # ... and directly in Redis.
        everyone = [session for own in sessions for session in own]
        stored = stored_documents(client, [s.sid for s in everyone], layout)
        lost = corrupted = extra = 0
        for session, (kind, data) in zip(everyone, stored, strict=True):
            if kind != "session":
                tally.anomaly(f"redis: {session.sid[:8]} is {kind}")
                lost += len(session.data)
                continue
            for key, value in session.data.items():
                if key not in data:
                    lost += 1
                elif key == "n" and data[key] < value:
                    lost += value - data[key]  # lost locked increments
                elif data[key] != value:
                    corrupted += 1
                    tally.anomaly(f"redis: {session.sid[:8]} {key!r}: {data[key]!r}")
            extra += len(set(data) - set(session.data))
        # Every rotated-away id redirects along its chain, or is gone.
        chains = {}
        old_sids = []
        for session in everyone:
            chain = [cookie_sid(c) for c in session.old_cookies] + [session.sid]
            for position, sid in enumerate(chain[:-1]):
                assert sid is not None
                chains[sid] = set(chain[position + 1 :])
                old_sids.append(sid)
        for sid, (kind, target) in zip(
            old_sids, stored_documents(client, old_sids, layout), strict=True
        ):
            if kind == "missing":
                continue
            if kind != "redirect" or target not in chains[sid]:
                tally.anomaly(f"redis: old id {sid[:8]} is {kind} {str(target)[:60]}")
        keys = census(client, layout)
        sample = [
            f"sess:{{{s.sid}}}" for s in everyone[:: max(1, len(everyone) // 200)]
        ]
        usage = [client.memory_usage(key, samples=0) or 0 for key in sample]
        redirect_usage = [
            client.memory_usage(f"sess:{{{sid}}}", samples=0) or 0
            for sid in old_sids[:200]
        ]
        final_memory = used_memory(client)
    finally:
        client.close()
        redis7_server.flush()

    rotations = len(old_sids)
    per_session = (after_creation - baseline) / max(created, 1)
    summary = {
        "layout": layout,
        "seed": SEED,
        "sessions": created,
        "requests": sum(tally.requests.values()),
        "mixed requests": mixed_requests,
        "mixed seconds": round(mixed_seconds, 1),
        "mixed requests/s": round(mixed_requests / mixed_seconds),
        "creation seconds": round(created_seconds, 1),
        "verification seconds": round(verify_seconds, 1),
        "by kind": dict(sorted(tally.requests.items())),
        "statuses": dict(tally.statuses),
        "5xx": tally.server_errors,
        "workers": len(tally.pids),
        "resent on a closed keep-alive connection": sum(
            d.client.resent for d in drivers
        ),
        "lost writes (and increments)": lost,
        "corrupted writes": corrupted,
        "unexpected keys": extra,
        "anomalies": len(tally.anomalies),
        "rotations": rotations,
        "keys in redis": dict(keys),
        "bytes per session (used_memory growth at creation / sessions)": round(
            per_session
        ),
        "bytes per session (MEMORY USAGE, final, mean of sample)": round(
            sum(usage) / max(len(usage), 1)
        ),
        "bytes per redirect (MEMORY USAGE, mean of sample)": round(
            sum(redirect_usage) / max(len(redirect_usage), 1)
        ),
        "used_memory final": final_memory - baseline,
    }
    line = (
        f"soak, Redis {redis7_server.version_string}, {layout} layout:"
        f" {created} sessions, {summary['requests']} requests"
        f" ({mixed_requests} mixed in {mixed_seconds:.0f} s,"
        f" {summary['mixed requests/s']}/s), {summary['by kind']},"
        f" statuses {summary['statuses']}, 5xx {tally.server_errors},"
        f" lost {lost}, corrupted {corrupted}, anomalies {len(tally.anomalies)},"
        f" {rotations} rotations, keys {dict(keys)},"
        f" {per_session:.0f} B/session (used_memory),"
        f" {summary['bytes per session (MEMORY USAGE, final, mean of sample)']}"
        f" B/session (MEMORY USAGE, final), {len(tally.pids)} workers"
    )
    path = tmp_path / "soak-summary.txt"
    path.write_text(
        json.dumps(summary, indent=2, ensure_ascii=False)
        + f"\n{line}\nanomalies (first 100):\n"
        + "".join(f"{anomaly}\n" for anomaly in tally.anomalies[:100])
    )
    report(line)
    report(f"summary: {path}")

    assert created == SESSIONS, tally.anomalies[:10]
    assert tally.server_errors == 0, tally.anomalies[:10]
    assert not tally.anomalies, (len(tally.anomalies), tally.anomalies[:10])
    assert (lost, corrupted, extra) == (0, 0, 0)
    assert len(tally.pids) >= 2, tally.pids
    # One session per client session (no orphaned rotation copy, no session
    # made by mistake), one redirect per rotation, no lock left behind.
    receipts = keys.pop("receipt", 0)
    assert keys == Counter({"session": SESSIONS, "redirect": rotations}), keys
    assert receipts <= SESSIONS, receipts
    assert min(tally.requests[k] for k in ("read", "write", "incr", "rotate")) > 0
