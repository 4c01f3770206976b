"""Rotation under concurrent requests, served by gunicorn in several processes.

SPEC §6 tested the way it matters: ``tests/apps/relay_soak_app.py`` under
gunicorn (2 worker processes with 8 threads each), real HTTP requests from
many client threads at once, on Redis 7 and 6.2 and with both storage
layouts (``RELAY_SESSION_LAYOUT`` ``"json"`` and ``"hash"``). The client
sets the ``Cookie`` header by hand; a thread polls the old session key in
Redis the whole time, so that a moment where it is a session again would be
seen, not only its final state.

- A login rotates the id; then 50 concurrent requests with the old cookie
  (writes and reads) are all served the new session, get the new cookie,
  and every write survives in it; the old key stays a redirect.
- 50 writes with the old cookie race the login itself: each lands in the
  new session, whether it was acknowledged before the rotation copied the
  session (its response re-issues the old cookie) or after (the new one);
  the old key ends as a redirect and is never a session again once it
  became one.
- The redirect expires in the middle of such a storm (``PEXPIRE``): requests
  that followed it before are served the new session, later ones get a
  fresh, empty session under an id of their own; never a 5xx, and nothing of
  the old session leaks into the fresh ones.
- The new session vanishes while the redirect still points at it: requests
  get the broken-chain answer (410, cookie deleted) or, when they had loaded
  it already, save into a fresh session; never a 5xx, and neither id is
  used again.
- A locked section entered with the old cookie reads the session only once
  it holds the lock of the new id, so ``with session.lock(): n += 1`` with
  old and new cookies mixed is exact; shown deterministically in process
  (every store) and under gunicorn.
- The real grace period (``RELAY_SESSION_ROTATION_GRACE_PERIOD=5``, the
  smallest allowed) runs out while requests with the old cookie keep coming:
  served the new session until then, a fresh session after.
- A logout lands while a request that read the signed-in user sets
  ``session.modified = True``: that request's save never brings the user
  back, under any id.
"""

from __future__ import annotations

import json
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
import redis
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import Session
from flask_relay_session.serialization import loads
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeStatus

from .conftest import missing
from .helpers import decode_fields
from .redis_servers import RedisServer
from .wsgi_servers import GunicornServer
from .wsgi_servers import HttpClient
from .wsgi_servers import HttpReply
from .wsgi_servers import Serve
from .wsgi_servers import app_servers
from .wsgi_servers import cookie_sid
from .wsgi_servers import gunicorn_available

pytestmark = pytest.mark.slow

APP = "tests.apps.relay_soak_app:create_app()"

#: The meta fields of a session hash (the hash layout's storage format).
HASH_META = frozenset({" created", " expires", " size", " version"})

#: What ``POST /init`` stores.
INITIAL = {"init": True, "profile": {"name": "Ada", "tags": ["a", "b"], "visits": 0}}


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """``serve(redis_server, **config)``: the app under gunicorn, cached."""
    if not gunicorn_available():
        missing("gunicorn")
    with app_servers(APP) as serve_app:
        yield serve_app


# --------------------------------------------------------------------------
# Redis, read directly
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What a session key holds: ``missing``, ``redirect`` or ``session``."""

    kind: str
    target: str | None = None
    data: dict[str, Any] | None = None

    def __str__(self) -> str:
        if self.kind == "redirect":
            return f"redirect to {str(self.target)[:8]}…"
        return self.kind


def session_key(sid: str) -> str:
    return f"sess:{{{sid}}}"


def read_stored(client: redis.Redis, sid: str, layout: str) -> Stored:
    """Decode ``sess:{sid}`` without the app, checking the redirect's shape."""
    key = session_key(sid)
    if layout == "json":
        raw = client.get(key)
        if raw is None:
            return Stored("missing")
        document = json.loads(raw)
        if document["data"] is None:
            # Exactly {"data": null, "meta": {"redirectTo": <sid>,
            # "expiresAt": <ms>}}.
            assert set(document) == {"data", "meta"}, document
            assert set(document["meta"]) == {"redirectTo", "expiresAt"}, document
            return Stored("redirect", target=document["meta"]["redirectTo"])
        assert document["meta"]["id"] == sid, document
        return Stored("session", data=loads(raw)["data"])
    fields = {name.decode(): value for name, value in client.hgetall(key).items()}
    if not fields:
        return Stored("missing")
    if " redirect" in fields:
        # A hash with nothing but the " redirect" and " expires" fields.
        assert set(fields) == {" redirect", " expires"}, fields
        return Stored("redirect", target=fields[" redirect"].decode())
    data = {name: value for name, value in fields.items() if name not in HASH_META}
    return Stored("session", data=decode_fields(data))


class KeyWatcher:
    """Polls one session key in a thread; records each change of its state."""

    def __init__(self, redis_server: RedisServer, sid: str, layout: str) -> None:
        self.client = redis_server.client()
        self.sid = sid
        self.layout = layout
        self.states: list[Stored] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stop.is_set()
                state = read_stored(self.client, self.sid, self.layout)
                self.polls += 1
                if not self.states or _changed(self.states[-1], state):
                    self.states.append(state)
                if stopping:
                    return
        except BaseException as error:  # reported by the test
            self.error = error

    def __enter__(self) -> KeyWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    @property
    def history(self) -> str:
        return " -> ".join(str(state) for state in self.states)

    def check_never_a_session_after_redirect(self) -> None:
        assert self.error is None, f"the watcher failed: {self.error!r}"
        kinds = [state.kind for state in self.states]
        if "redirect" in kinds:
            after = kinds[kinds.index("redirect") :]
            assert "session" not in after, (
                f"sess:{{{self.sid[:8]}…}} became a session again: {self.history}"
            )


def _changed(before: Stored, after: Stored) -> bool:
    return (before.kind, before.target) != (after.kind, after.target)


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a storm: sent ``delay`` seconds after the start."""

    kind: str
    method: str
    path: str
    body: Any = None
    delay: float = 0.0
    key: str | None = None


@dataclass(frozen=True)
class Result:
    call: Call
    reply: HttpReply
    #: The cookie the request sent.
    sent: str

    @property
    def status(self) -> int:
        return self.reply.status

    @property
    def cookie(self) -> str | None:
        return self.reply.cookie()

    @property
    def sid(self) -> str | None:
        """The id the client holds after the response: that of the cookie
        the response sets, else that of the cookie it sent (a write under
        the same id sends no cookie); ``None`` when the response drops it.
        """
        cookie = self.cookie
        return cookie_sid(self.sent if cookie is None else cookie)

    @property
    def body(self) -> Any:
        return self.reply.json


def storm(
    server: GunicornServer,
    calls: Sequence[Call],
    cookie: str,
    during: Callable[[], None] | None = None,
) -> list[Result]:
    """Send every call at once (each from its own thread and connection).

    ``during`` runs in one more thread, started with the calls.
    """
    parties = len(calls) + (during is not None)
    start = threading.Barrier(parties)

    def send(call: Call) -> Result:
        start.wait(timeout=30)
        if call.delay:
            time.sleep(call.delay)
        with HttpClient(server) as client:
            return Result(
                call,
                client.request(call.method, call.path, cookie, call.body),
                cookie,
            )

    def run_during() -> None:
        assert during is not None
        start.wait(timeout=30)
        during()

    with ThreadPoolExecutor(max_workers=parties) as pool:
        extra = pool.submit(run_during) if during is not None else None
        results = list(pool.map(send, calls))
        if extra is not None:
            extra.result()
    return results


def request(
    server: GunicornServer, method: str, path: str, cookie: str | None = None
) -> HttpReply:
    with HttpClient(server) as client:
        return client.request(method, path, cookie)


def new_session(server: GunicornServer) -> tuple[str, str]:
    """Create a session holding :data:`INITIAL`; return its cookie and id."""
    reply = request(server, "POST", "/init")
    assert reply.status == 200, reply
    cookie = reply.cookie()
    sid = cookie_sid(cookie)
    assert cookie is not None and sid is not None
    return cookie, sid


def login(server: GunicornServer, cookie: str) -> tuple[str, str]:
    """Rotate the session's id; return the new cookie and id."""
    reply = request(server, "POST", "/login", cookie)
    assert reply.status == 200, reply
    new_cookie = reply.cookie()
    new_sid = cookie_sid(new_cookie)
    assert new_cookie is not None and new_sid == reply.json["sid"]
    assert new_sid != cookie_sid(cookie) == reply.json["old"]
    return new_cookie, new_sid


def put(key: str, value: Any, sleep: float = 0.0, delay: float = 0.0) -> Call:
    return Call("put", "POST", f"/put?sleep={sleep}", {"set": {key: value}}, delay, key)


def blind(key: str, delay: float = 0.0) -> Call:
    return Call("blind", "POST", f"/blind/{key}?value=v-{key}", None, delay, key)


def value_of(key: str) -> Any:
    """What the storm's writes store under ``key``: not only strings."""
    return {"key": key, "n": [1, 2.5, 2**60], "text": f"värde {key} ✓"}


def expected_value(call: Call) -> Any:
    assert call.key is not None
    return value_of(call.key) if call.kind == "put" else f"v-{call.key}"


def app_state(server: GunicornServer, cookie: str) -> dict[str, Any]:
    reply = request(server, "GET", "/state", cookie)
    assert reply.status == 200, reply
    return t.cast(dict[str, Any], reply.json)


def cookie_outcomes(results: Sequence[Result], new_sid: str) -> Counter[str]:
    """Count the cookies set: the ``new`` id, a ``fresh`` one, ``deleted``."""
    return Counter(
        "new"
        if r.sid == new_sid
        else "deleted"
        if r.cookie == "session="
        else "fresh"
        if r.sid
        else "none"
        for r in results
    )


def check_no_server_errors(results: Sequence[Result]) -> None:
    errors = [result for result in results if result.status >= 500]
    assert not errors, f"{len(errors)} server errors, e.g. {errors[:3]}"


# --------------------------------------------------------------------------
# After the login
# --------------------------------------------------------------------------


def test_old_cookie_after_login_is_served_the_new_session(
    serve: Serve,
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    server = serve(redis_server, RELAY_SESSION_LAYOUT=layout)
    old_cookie, old_sid = new_session(server)
    new_cookie, new_sid = login(server, old_cookie)

    # Locked increments with the old cookie: see the tests further below.
    writes = [put(f"w{i:02d}", value_of(f"w{i:02d}"), sleep=0.01) for i in range(40)]
    reads = [Call("read", "GET", "/state?sleep=0.01")] * 10
    calls = [call for pair in zip(writes[:10], reads, strict=True) for call in pair]
    calls += writes[10:]
    with KeyWatcher(redis_server, old_sid, layout) as watcher:
        results = storm(server, calls, old_cookie)
        final = app_state(server, new_cookie)

    report(
        f"Redis {redis_server.version_string}, {layout} layout: 50 requests with"
        f" the old cookie after the login, statuses"
        f" {dict(Counter(r.status for r in results))}, old key {watcher.history}"
        f" ({watcher.polls} polls), {len({r.reply.pid for r in results})} workers"
    )
    assert [result.status for result in results] == [200] * 50, results
    assert len({result.reply.pid for result in results}) >= 2
    # Every response moves the client to the new id.
    assert {result.sid for result in results} == {new_sid}
    for result in results:
        if result.call.kind == "read":
            assert result.body["redirected"] is True
            assert result.body["sid"] == new_sid
            assert result.body["data"]["user"] == "ada"
            assert result.body["data"]["init"] is True
        elif result.call.kind == "put":
            assert result.body["redirected"] is True
            assert result.body["sid"] == new_sid

    expected = {
        **INITIAL,
        "user": "ada",
        **{call.key: value_of(t.cast(str, call.key)) for call in writes},
    }
    assert final["data"] == expected
    assert final["sid"] == new_sid and final["redirected"] is False
    client = redis_server.client()
    try:
        assert read_stored(client, new_sid, layout) == Stored("session", data=expected)
        assert read_stored(client, old_sid, layout) == Stored("redirect", new_sid)
        assert client.pttl(session_key(old_sid)) > 0
    finally:
        client.close()
    assert [state.kind for state in watcher.states] == ["redirect"], watcher.history
    watcher.check_never_a_session_after_redirect()


# --------------------------------------------------------------------------
# During the login
# --------------------------------------------------------------------------


def test_writes_racing_the_login_all_land_in_the_new_session(
    serve: Serve,
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    server = serve(redis_server, RELAY_SESSION_LAYOUT=layout)
    old_cookie, old_sid = new_session(server)

    # The writes load the session at once and write it 0 to 150 ms later;
    # the login loads it at once and rotates 50 ms later.
    writes = [
        put(f"w{i:02d}", value_of(f"w{i:02d}"), sleep=i * 0.003) for i in range(50)
    ]
    # Locked increments with the old cookie: see the tests further below.
    log_in = Call("login", "POST", "/login?sleep=0.05")
    calls = [log_in, *writes]
    with KeyWatcher(redis_server, old_sid, layout) as watcher:
        results = storm(server, calls, old_cookie)
        login_result = results[0]
        assert login_result.status == 200, login_result.reply
        new_sid = login_result.body["sid"]
        new_cookie = login_result.cookie
        assert new_cookie is not None and cookie_sid(new_cookie) == new_sid
        final = app_state(server, new_cookie)

    landed = Counter(
        "before" if result.sid == old_sid else "after" if result.sid == new_sid else "?"
        for result in results[1:]
    )
    report(
        f"Redis {redis_server.version_string}, {layout} layout: login racing 50"
        f" writes: acknowledged before the rotation"
        f" {landed['before']}, after {landed['after']}; old key {watcher.history}"
        f" ({watcher.polls} polls)"
    )
    assert [result.status for result in results] == [200] * 51, results
    # Each write's response carries the id it was saved under: the old one
    # (saved before the rotation copied the session) or the new one.
    assert set(landed) <= {"before", "after"}, [r.cookie for r in results]
    assert landed["before"] and landed["after"], "the login did not race the writes"

    # All of them, before and after, are in the new session.
    expected = {
        **INITIAL,
        "user": "ada",
        **{call.key: value_of(t.cast(str, call.key)) for call in writes},
    }
    assert final["data"] == expected
    client = redis_server.client()
    try:
        assert read_stored(client, new_sid, layout) == Stored("session", data=expected)
        assert read_stored(client, old_sid, layout) == Stored("redirect", new_sid)
    finally:
        client.close()
    # The old key was a session, then a redirect to the new id, for good.
    assert [state.kind for state in watcher.states] == ["session", "redirect"], (
        watcher.history
    )
    assert watcher.states[-1].target == new_sid
    watcher.check_never_a_session_after_redirect()

    # More requests with the old cookie: still the new session.
    more = storm(server, [put(f"late{i}", i) for i in range(10)], old_cookie)
    assert {(result.status, result.sid) for result in more} == {(200, new_sid)}
    client = redis_server.client()
    try:
        assert read_stored(client, old_sid, layout) == Stored("redirect", new_sid)
        stored = read_stored(client, new_sid, layout)
        assert stored.data == {**expected, **{f"late{i}": i for i in range(10)}}
    finally:
        client.close()


# --------------------------------------------------------------------------
# The grace period runs out, the chain breaks
# --------------------------------------------------------------------------


def mixed_calls(spread: float) -> list[Call]:
    """Writes that load first, blind writes and reads, spread over time."""
    calls: list[Call] = []
    for i in range(50):
        delay = spread * i / 50
        if i % 5 == 4:
            calls.append(Call("read", "GET", "/state?sleep=0.02", delay=delay))
        elif i % 5 == 3:
            calls.append(blind(f"b{i:02d}", delay=delay))
        else:
            calls.append(put(f"w{i:02d}", value_of(f"w{i:02d}"), 0.02, delay))
    return calls


def expire_after(
    redis_server: RedisServer, key: str, seconds: float, *, delete: bool = False
) -> Callable[[], None]:
    """Return a function that ends the redirect ``key`` after ``seconds``, or
    deletes it.

    Ending it moves the end the redirect records to now and sets a 1 ms
    TTL, as if its grace period ran out: a load that extended the TTL
    meanwhile restores the recorded end, not the old one.
    """

    def expire() -> None:
        time.sleep(seconds)
        client = redis_server.client()
        try:
            if delete:
                assert client.delete(key)
                return
            seconds_now, micros = client.time()
            now = seconds_now * 1000 + micros // 1000
            # One atomic step: a request that saw the recorded end in the
            # past would rightly delete the redirect at once.
            if client.type(key) == b"hash":
                transaction = client.pipeline(transaction=True)
                transaction.hset(key, " expires", now)
                transaction.pexpire(key, 1)
                assert transaction.execute() == [0, True]
            else:
                document = json.loads(client.get(key))
                document["meta"]["expiresAt"] = now
                assert client.set(key, json.dumps(document), px=1)
        finally:
            client.close()

    return expire


def check_fresh_sessions(
    client: redis.Redis, results: Sequence[Result], layout: str, taken: set[str]
) -> int:
    """Each write acknowledged under an id not in ``taken`` made a fresh
    session holding that write alone: nothing of the old session leaked in.
    Return how many there are.
    """
    fresh = [
        r for r in results if r.call.key and r.sid is not None and r.sid not in taken
    ]
    for result in fresh:
        assert result.sid is not None
        stored = read_stored(client, result.sid, layout)
        assert stored == Stored(
            "session", data={result.call.key: expected_value(result.call)}
        ), result
    assert len({result.sid for result in fresh}) == len(fresh)
    return len(fresh)


def test_old_cookie_after_the_redirect_expired_gets_a_fresh_session(
    serve: Serve,
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    server = serve(redis_server, RELAY_SESSION_LAYOUT=layout)
    old_cookie, old_sid = new_session(server)
    new_cookie, new_sid = login(server, old_cookie)
    calls = mixed_calls(spread=0.2)

    with KeyWatcher(redis_server, old_sid, layout) as watcher:
        expire = expire_after(redis_server, session_key(old_sid), 0.1)
        results = storm(server, calls, old_cookie, during=expire)
        final = app_state(server, new_cookie)

    outcomes = Counter(
        "new"
        if r.sid == new_sid
        else "deleted"
        if r.cookie == "session="
        else "fresh"
        if r.sid
        else "none"
        for r in results
    )
    report(
        f"Redis {redis_server.version_string}, {layout} layout: redirect expired"
        f" mid-storm: statuses {dict(Counter(r.status for r in results))},"
        f" cookies {dict(outcomes)}; old key {watcher.history}"
    )
    check_no_server_errors(results)
    assert [result.status for result in results] == [200] * 50, results
    assert outcomes["new"] and outcomes["fresh"], "the expiry did not split the storm"
    for result in results:
        assert result.sid != old_sid, "the old id was issued again"
        if result.call.kind == "read":
            body = result.body
            if body["redirected"]:
                assert result.sid == new_sid and body["data"]["user"] == "ada"
            else:
                # Served a fresh, empty session: the stale cookie is dropped.
                assert body["new"] is True and body["data"] == {}, body
                assert result.cookie == "session=", result.reply.headers

    # The writes served the new session are in it; the others are not.
    into_new = {
        r.call.key: expected_value(r.call)
        for r in results
        if r.sid == new_sid and r.call.key
    }
    assert final["data"] == {**INITIAL, "user": "ada", **into_new}
    client = redis_server.client()
    try:
        fresh = check_fresh_sessions(client, results, layout, {new_sid})
        assert fresh == outcomes["fresh"]
        assert read_stored(client, old_sid, layout) == Stored("missing")
    finally:
        client.close()
    assert [state.kind for state in watcher.states] == ["redirect", "missing"], (
        watcher.history
    )


def test_old_cookie_whose_new_session_vanished_gets_the_broken_chain_answer(
    serve: Serve,
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    server = serve(redis_server, RELAY_SESSION_LAYOUT=layout)
    old_cookie, old_sid = new_session(server)
    new_cookie, new_sid = login(server, old_cookie)
    calls = mixed_calls(spread=0.2)

    with KeyWatcher(redis_server, new_sid, layout) as new_watcher:
        with KeyWatcher(redis_server, old_sid, layout) as old_watcher:
            # Deleted, not expired: a write in the last millisecond of a
            # session's life would rightly extend it (rolling expiry).
            vanish = expire_after(redis_server, session_key(new_sid), 0.1, delete=True)
            results = storm(server, calls, old_cookie, during=vanish)

    statuses = Counter(result.status for result in results)
    report(
        f"Redis {redis_server.version_string}, {layout} layout: new session"
        f" deleted mid-storm: statuses {dict(statuses)},"
        f" cookies {dict(cookie_outcomes(results, new_sid))};"
        f" new key {new_watcher.history}"
    )
    check_no_server_errors(results)
    assert set(statuses) <= {200, 410}, results
    assert statuses[410], "no request met the broken chain"
    for result in results:
        assert result.sid != old_sid, "the old id was issued again"
        if result.status == 410:
            assert result.body["error"], result.body
            # The cookie leads nowhere: the response drops it.
            assert result.cookie == "session=", result.reply.headers
        elif result.call.kind == "read":
            assert result.body["redirected"] and result.sid == new_sid
    client = redis_server.client()
    try:
        check_fresh_sessions(client, results, layout, {new_sid})
        # Neither id comes back: the old one still redirects to the new one,
        # which stays gone (a write never recreates it).
        assert read_stored(client, old_sid, layout) == Stored("redirect", new_sid)
        assert read_stored(client, new_sid, layout) == Stored("missing")
    finally:
        client.close()
    assert [state.kind for state in old_watcher.states] == ["redirect"]
    assert [state.kind for state in new_watcher.states] == ["session", "missing"], (
        new_watcher.history
    )
    # Later requests with either cookie: the broken-chain answer, or a fresh
    # session for the new cookie.
    assert request(server, "GET", "/state", old_cookie).status == 410
    later = request(server, "GET", "/state", new_cookie)
    assert later.status == 200 and later.json["new"] is True
    assert later.json["data"] == {}


def test_real_grace_period_running_out_under_load(
    serve: Serve,
    redis7_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    """``RELAY_SESSION_ROTATION_GRACE_PERIOD=5`` expires while requests with
    the old cookie keep coming, three at a time every 100 ms.
    """
    server = serve(
        redis7_server,
        RELAY_SESSION_LAYOUT=layout,
        RELAY_SESSION_ROTATION_GRACE_PERIOD=5,
    )
    try:
        old_cookie, old_sid = new_session(server)
        new_cookie, new_sid = login(server, old_cookie)
        client = redis7_server.client()
        try:
            assert 4000 < client.pttl(session_key(old_sid)) <= 5000
        finally:
            client.close()
        results: list[Result] = []
        started = time.monotonic()
        round_number = 0
        while time.monotonic() - started < 5.6:
            calls = [
                put(f"w{round_number:02d}", value_of(f"w{round_number:02d}")),
                blind(f"b{round_number:02d}"),
                Call("read", "GET", "/state"),
            ]
            results += storm(server, calls, old_cookie)
            round_number += 1
            time.sleep(0.1)
        final = app_state(server, new_cookie)
        client = redis7_server.client()
        try:
            fresh = check_fresh_sessions(client, results, layout, {new_sid})
            assert read_stored(client, old_sid, layout) == Stored("missing")
        finally:
            client.close()
    finally:
        redis7_server.flush()

    served_new = [r for r in results if r.sid == new_sid]
    report(
        f"Redis {redis7_server.version_string}, {layout} layout, 5 s grace"
        f" period: {len(results)} requests"
        f" with the old cookie, {len(served_new)} served the new session,"
        f" {fresh} writes into fresh sessions,"
        f" statuses {dict(Counter(r.status for r in results))}"
    )
    check_no_server_errors(results)
    assert {result.status for result in results} == {200}
    assert served_new and fresh
    # Served the new session until the grace period ended, then never again
    # (but for requests of the same round, which overlap the expiry).
    first_other = min(i for i, r in enumerate(results) if r.sid != new_sid)
    assert all(r.sid != new_sid for r in results[first_other + 3 :]), [
        r.sid == new_sid for r in results
    ]
    into_new = {r.call.key: expected_value(r.call) for r in served_new if r.call.key}
    assert final["data"] == {**INITIAL, "user": "ada", **into_new}


# --------------------------------------------------------------------------
# Locked sections entered with the old cookie (a known bug)
# --------------------------------------------------------------------------


def test_locked_increments_with_the_old_cookie_are_exact(
    serve: Serve,
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    """20 ``n += 1`` in ``session.lock()`` with the old cookie and 20 with
    the new one, at once, 5 ms of work in each locked section.
    """
    server = serve(redis_server, RELAY_SESSION_LAYOUT=layout)
    old_cookie, _ = new_session(server)
    new_cookie, new_sid = login(server, old_cookie)
    incr = Call("incr", "POST", "/incr?sleep=0.005")

    def send(cookie: str) -> Result:
        with HttpClient(server) as client:
            return Result(incr, client.request("POST", incr.path, cookie), cookie)

    start = threading.Barrier(40)

    def send_together(cookie: str) -> Result:
        start.wait(timeout=30)
        return send(cookie)

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(send_together, [old_cookie, new_cookie] * 20))
    final = app_state(server, new_cookie)
    written = sorted(result.body["n"] for result in results if result.status == 200)
    report(
        f"Redis {redis_server.version_string}, {layout} layout: 40 locked"
        f" increments, half with the old cookie: n = {final['data'].get('n')},"
        f" statuses {dict(Counter(r.status for r in results))}, values written"
        f" more than once {sorted(n for n, c in Counter(written).items() if c > 1)}"
    )
    assert {result.status for result in results} == {200}
    assert {result.sid for result in results} == {new_sid}
    assert written == list(range(1, 41))
    assert final["data"]["n"] == 40


def test_locked_section_with_the_old_cookie_sees_writes_made_while_it_waited(
    make_app: Callable[..., Flask],
) -> None:
    """Deterministic, in process, on every store: the locked section of a
    request with the old cookie waits for the new id's lock while another
    holder writes ``n = 1``; it must then see 1 and write 2.
    """
    app = make_app()

    @app.post("/init")
    def init() -> str:
        session["n"] = 0
        return "created"

    @app.post("/login")
    def log_in() -> str:
        current = t.cast(Session, session)
        current.get("n")
        current.rotate_id()
        return current.sid

    @app.post("/incr")
    def incr() -> str:
        with t.cast(Session, session).lock():
            session["n"] += 1
        return str(session["n"])

    def client() -> FlaskClient:
        return app.test_client(use_cookies=False)

    old_cookie = client().post("/init").headers["Set-Cookie"].split(";", 1)[0]
    new_sid = client().post("/login", headers={"Cookie": old_cookie}).text
    store = app.extensions["relay_session"].store
    assert store.lock(new_sid, "other holder", 10_000)

    waiting = threading.Event()
    take_lock = store.lock

    def lock(sid: str, token: str, ttl: int) -> bool:
        taken = bool(take_lock(sid, token, ttl))
        if sid == new_sid and not taken:
            waiting.set()  # the request holds the old id's lock, waits for this
        return taken

    store.lock = lock
    replies: list[str] = []
    request_thread = threading.Thread(
        target=lambda: replies.append(
            client().post("/incr", headers={"Cookie": old_cookie}).text
        )
    )
    request_thread.start()
    try:
        assert waiting.wait(timeout=10)
        # The other holder commits n = 1 and lets go.
        result = store.merge(
            new_sid,
            [Change(("n",), b"1")],
            now=int(time.time() * 1000),
            ttl=None,
            create=False,
            lock_token="other holder",
            max_size=1 << 20,
        )
        assert result.status is MergeStatus.DONE
        assert store.unlock(new_sid, "other holder")
    finally:
        request_thread.join(timeout=30)
    stored = store.load(new_sid, ttl=None)
    assert stored is not None
    assert (replies, stored.decoded()) == (["2"], {"n": 2})


# --------------------------------------------------------------------------
# A logout racing a request that forces its save
# --------------------------------------------------------------------------


def test_a_forced_save_racing_a_real_logout_never_signs_the_user_back_in(
    serve: Serve, redis_server: RedisServer
) -> None:
    server = serve(redis_server)
    raced = 0
    for _ in range(8):
        cookie, _ = new_session(server)
        login = request(server, "POST", "/login", cookie)
        cookie = login.cookie() or cookie
        with ThreadPoolExecutor(2) as pool:
            touching = pool.submit(request, server, "POST", "/touch?sleep=0.4", cookie)
            logout = pool.submit(request, server, "POST", "/logout?sleep=0.15", cookie)
            touched, logged_out = touching.result(), logout.result()
        assert logged_out.status == 200, logged_out
        assert touched.status == 200, touched
        # The race this is about: the request read the signed-in user before
        # the logout, and saved after it.
        raced += touched.json["user"] == "ada"
        for reply_cookie in (touched.cookie(), logged_out.cookie(), cookie):
            if reply_cookie and cookie_sid(reply_cookie):
                state = request(server, "GET", "/state", reply_cookie)
                assert state.status in (200, 410), state
                if state.status == 200:
                    assert "user" not in state.json["data"], state.json
    assert raced >= 4, f"only {raced} of 8 rounds raced"
