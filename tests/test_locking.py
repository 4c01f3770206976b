"""SPEC §5: session locks, on the memory store and on real Redis 7 and 6.2.

The multi-process proof (gunicorn, concurrent HTTP requests) is in
``test_concurrency.py``; these tests pin down each rule of the lock.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import RelaySession
from flask_relay_session import SessionLockError
from flask_relay_session import SessionStore
from flask_relay_session.stores import StoredSession

from .helpers import CustomStore
from .helpers import sid_of

MakeApp = t.Callable[..., Flask]

FAST_LOCKS = {"RELAY_SESSION_LOCK_RETRIES": 3, "RELAY_SESSION_LOCK_BACKOFF": 0.01}


def store_of(app: Flask) -> SessionStore:
    return t.cast(SessionStore, app.extensions["relay_session"].store)


def add_routes(app: Flask) -> Flask:
    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/set/<key>/<int:value>")
    def set_value(key: str, value: int) -> str:
        session[key] = value
        return "ok"

    @app.get("/incr")
    def incr() -> t.Any:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return jsonify(n=session["n"])

    @app.get("/stale-then-lock")
    def stale_then_lock() -> t.Any:
        before = session["n"]
        other = app.test_client()
        other.set_cookie("session", request.cookies["session"])
        other.get("/set/n/41")
        with session.lock():  # type: ignore[attr-defined]
            session["n"] += 1
        return jsonify(before=before, after=session["n"])

    @app.get("/pending-then-lock")
    def pending_then_lock() -> t.Any:
        session["pending"] = "mine"
        with session.lock():  # type: ignore[attr-defined]
            seen = session.get("pending")
            session["n"] += 1
        return jsonify(seen=seen)

    @app.get("/observe")
    def observe() -> t.Any:
        with session.lock():  # type: ignore[attr-defined]
            owner = session.is_lock_owner  # type: ignore[attr-defined]
            locked = session.is_locked()  # type: ignore[attr-defined]
            session["n"] = 7
        other = app.test_client()
        other.set_cookie("session", request.cookies["session"])
        seen_by_other = other.get("/read").json
        return jsonify(
            owner=owner,
            locked=locked,
            released=not session.is_locked(),  # type: ignore[attr-defined]
            owner_after=session.is_lock_owner,  # type: ignore[attr-defined]
            seen_by_other=seen_by_other,
        )

    @app.get("/fail-inside")
    def fail_inside() -> t.Any:
        session["before"] = 1
        try:
            with session.lock():  # type: ignore[attr-defined]
                session["n"] = 1000
                session["inside"] = True
                raise ValueError("payment declined")
        except ValueError:
            pass
        return jsonify(
            locked=session.is_locked(),  # type: ignore[attr-defined]
            view=dict(session),
        )

    @app.get("/nested")
    def nested() -> t.Any:
        with session.lock():  # type: ignore[attr-defined]
            with session.lock():  # type: ignore[attr-defined]
                session["n"] += 1
            still_owner = session.is_lock_owner  # type: ignore[attr-defined]
            session["n"] += 1
        return jsonify(still_owner=still_owner)

    @app.get("/slow-incr")
    def slow_incr() -> t.Any:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] += 100
            time.sleep(0.2)
            # The lock expired; another request takes it and writes.
            store_of(app).lock(request.cookies["session"][:64], "next owner", 10_000)
        return "unreachable"

    @app.get("/crash")
    def crash() -> str:
        session.lock().__enter__()  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    @app.get("/forget")
    def forget() -> str:
        session.lock().__enter__()  # type: ignore[attr-defined]
        session["n"] = 5
        return "ok"

    return app


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return add_routes(make_app(**FAST_LOCKS))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.get("/set/n/0")
    return client


def test_locked_block_sees_writes_committed_before_it(
    app: Flask, client: FlaskClient
) -> None:

    assert client.get("/stale-then-lock").json == {"before": 0, "after": 42}
    assert client.get("/read").json == {"n": 42}


def test_locked_block_keeps_this_requests_unsaved_changes_on_top(
    app: Flask, client: FlaskClient
) -> None:

    assert client.get("/pending-then-lock").json == {"seen": "mine"}
    assert client.get("/read").json == {"n": 1, "pending": "mine"}


def test_leaving_the_block_saves_then_releases(app: Flask, client: FlaskClient) -> None:

    assert client.get("/observe").json == {
        "owner": True,
        "locked": True,
        "released": True,
        "owner_after": False,
        "seen_by_other": {"n": 7},
    }


def test_exception_in_block_releases_and_drops_only_the_blocks_changes(
    app: Flask, client: FlaskClient
) -> None:

    response = client.get("/fail-inside")
    assert response.json == {"locked": False, "view": {"n": 0, "before": 1}}
    assert client.get("/read").json == {"n": 0, "before": 1}


def test_nested_lock_is_reentrant(app: Flask, client: FlaskClient) -> None:

    assert client.get("/nested").json == {"still_owner": True}
    assert client.get("/read").json == {"n": 2}


def test_lock_that_stays_taken_raises_409(app: Flask, client: FlaskClient) -> None:
    store_of(app).lock(sid_of(client), "another request", 10_000)
    started = time.monotonic()
    response = client.get("/incr")
    waited = time.monotonic() - started
    assert response.status_code == 409
    assert response.json["error"] == "session_locked"
    # Linear backoff, 0.01 + 0.02 + 0.03 seconds, each spread by ±50 %.
    assert waited >= 0.03
    store_of(app).unlock(sid_of(client), "another request")
    assert client.get("/read").json == {"n": 0}


def test_lock_error_can_be_handled_by_the_app(make_app: MakeApp) -> None:
    app = make_app(**FAST_LOCKS)

    @app.errorhandler(SessionLockError)
    def busy(error: SessionLockError) -> tuple[str, int]:
        return "try again", 429

    client = add_routes(app).test_client()
    client.get("/set/n/0")
    store_of(app).lock(sid_of(client), "another request", 10_000)
    assert client.get("/incr").status_code == 429


def test_save_waits_while_another_request_holds_the_lock(
    make_app: MakeApp,
) -> None:
    app = add_routes(
        make_app(RELAY_SESSION_LOCK_RETRIES=20, RELAY_SESSION_LOCK_BACKOFF=0.02)
    )
    client = app.test_client()
    client.get("/set/n/0")
    store_of(app).lock(sid_of(client), "another request", 300)
    started = time.monotonic()
    assert client.get("/set/w/1").status_code == 200
    assert time.monotonic() - started >= 0.25
    assert client.get("/read").json == {"n": 0, "w": 1}


def test_end_of_request_save_gives_409_when_the_lock_stays_taken(
    app: Flask, client: FlaskClient
) -> None:
    store_of(app).lock(sid_of(client), "another request", 10_000)
    response = client.get("/set/w/1")
    assert response.status_code == 409
    assert response.json["error"] == "session_locked"
    assert "Set-Cookie" not in response.headers
    store_of(app).unlock(sid_of(client), "another request")
    assert client.get("/read").json == {"n": 0}


def test_expired_holder_cannot_release_the_next_owners_lock(
    app: Flask, client: FlaskClient
) -> None:
    store = store_of(app)
    sid = sid_of(client)
    assert store.lock(sid, "first", 100)
    assert not store.lock(sid, "second", 10_000)
    time.sleep(0.15)
    assert store.lock(sid, "second", 10_000)
    assert store.unlock(sid, "first") is False
    assert store.is_locked(sid)
    assert store.unlock(sid, "second") is True
    assert not store.is_locked(sid)


def test_holder_whose_lock_expired_gets_an_error_and_writes_nothing(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = add_routes(make_app(RELAY_SESSION_LOCK_TTL=0.1, **FAST_LOCKS))
    client = app.test_client()
    client.get("/set/n/0")

    with caplog.at_level(logging.WARNING, "flask_relay_session"):
        response = client.get("/slow-incr")
    assert response.status_code == 409
    assert response.json["error"] == "session_locked"
    # The client is told to try again; the log says why and what to raise.
    assert "try again" in response.json["message"]
    assert any(
        "expired" in record.getMessage()
        and "RELAY_SESSION_LOCK_TTL" in record.getMessage()
        for record in caplog.records
    )
    store = store_of(app)
    assert store.is_locked(sid_of(client))
    store.unlock(sid_of(client), "next owner")
    assert client.get("/read").json == {"n": 0}


def test_teardown_releases_a_lock_left_held_by_a_failing_view(
    app: Flask, client: FlaskClient
) -> None:
    app.testing = False
    assert client.get("/crash").status_code == 500
    assert not store_of(app).is_locked(sid_of(client))
    assert client.get("/incr").json == {"n": 1}


def test_lock_left_held_at_the_end_of_the_request_is_released(
    app: Flask, client: FlaskClient
) -> None:

    assert client.get("/forget").status_code == 200
    assert not store_of(app).is_locked(sid_of(client))
    assert client.get("/read").json == {"n": 5}


def test_locking_a_new_session_creates_it(app: Flask) -> None:
    fresh = app.test_client()
    assert fresh.get("/incr").json == {"n": 1}
    assert fresh.get("/incr").json == {"n": 2}


def test_session_transaction_can_lock(app: Flask, client: FlaskClient) -> None:
    with client.session_transaction() as sess:
        with sess.lock():  # type: ignore[attr-defined]
            sess["n"] += 10
    assert client.get("/read").json == {"n": 10}
    with client.session_transaction() as sess:
        sess.lock().__enter__()  # type: ignore[attr-defined]
        sess["n"] += 1
    assert not store_of(client.application).is_locked(sid_of(client))
    assert client.get("/read").json == {"n": 11}


def test_concurrent_locked_increments_in_threads_are_exact(
    make_app: MakeApp,
) -> None:
    app = add_routes(
        make_app(RELAY_SESSION_LOCK_RETRIES=200, RELAY_SESSION_LOCK_BACKOFF=0.005)
    )
    client = app.test_client()
    client.get("/set/n/0")
    cookie = client.get_cookie("session")
    assert cookie is not None
    barrier = threading.Barrier(20)

    def increment(_: int) -> int:
        worker = app.test_client()
        worker.set_cookie("session", cookie.value)
        barrier.wait()
        return worker.get("/incr").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(increment, range(20)))
    assert statuses == [200] * 20
    assert client.get("/read").json == {"n": 20}


class RecordingStore(CustomStore):
    """A store of the app's own, without ``lock_and_load``, that records
    which of its methods were called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        self.calls.append("load")
        return super().load(sid, ttl=ttl)

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        self.calls.append("lock")
        return super().lock(sid, token, ttl)


def test_a_store_that_cannot_lock_and_load_at_once_locks_then_loads() -> None:
    store = RecordingStore()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        RELAY_SESSION_STORE=store,
        RELAY_SESSION_LOCK_RETRIES=0,
    )
    RelaySession(app)

    @app.post("/incr")
    def incr() -> str:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    client = app.test_client()
    assert client.post("/incr").text == "1"
    store.calls.clear()
    assert client.post("/incr").text == "2"
    assert store.calls == ["lock", "load"]
    sid = sid_of(client)
    assert sid is not None
    assert store.lock(sid, "another request", 60_000)
    store.calls.clear()
    assert client.post("/incr").status_code == 409
    assert store.calls == ["lock"]
