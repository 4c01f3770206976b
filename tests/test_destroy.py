"""Destroying a session through an id that was rotated away.

During its grace period an old id reaches the session it was rotated to, for
reads and writes; so ``session.destroy()`` through it (a logout with the
cookie from before the login) destroys that session, every hop of the chain
and the redirect itself. Past the grace period the redirect counts as gone:
the destroy deletes it and leaves alone the session that cookie can no
longer reach.

On the memory store and real Redis 7 and 6.2 with both layouts, in process;
then the store's own steps, and a rotation racing them (Redis), also on a
Redis Cluster, where the hops of a chain are on different nodes; then a
logout racing a login under gunicorn, in several worker processes.
"""

from __future__ import annotations

import json
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session.serialization import dumps
from flask_relay_session.stores.base import MAX_REDIRECT_DEPTH
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeStatus

from .conftest import missing
from .helpers import Store
from .helpers import end_grace_now
from .helpers import now_ms
from .redis_servers import RedisServer
from .redis_topologies import LocalCluster
from .test_expiry import Clock
from .wsgi_servers import GunicornServer
from .wsgi_servers import HttpClient
from .wsgi_servers import HttpReply
from .wsgi_servers import cookie_sid
from .wsgi_servers import gunicorn_available
from .wsgi_servers import gunicorn_servers

MakeApp = t.Callable[..., Flask]

LIFETIME = 600_000
MAX_SIZE = 1024 * 1024


def held(store: Store, sid: str) -> bool:
    """Whether the store holds anything under ``sid``, even past its end."""
    if isinstance(store, MemorySessionStore):
        return sid in store._sessions
    return bool(store.redis.exists(store.session_key(sid)))


# --------------------------------------------------------------------------
# A logout through an old cookie, in process
# --------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(make_app: MakeApp, store_config: dict[str, object], clock: Clock) -> Flask:
    """An app whose login rotates with ``?grace=`` seconds (60 by default)
    and whose logout only destroys; time moves with ``clock``.
    """
    config: dict[str, object] = {}
    if "RELAY_SESSION_REDIS" not in store_config:
        config["RELAY_SESSION_STORE"] = MemorySessionStore(clock=clock)
    app = make_app(**config)
    app.session_interface.clock = clock  # type: ignore[attr-defined]
    store = app.extensions["relay_session"].store
    if isinstance(store, RedisSessionStore):
        clock.servers.append(store.redis)

    @app.post("/init")
    def init() -> str:
        session["cart"] = ["apples"]
        return "ok"

    @app.post("/login")
    def login() -> str:
        session["user"] = "ada"
        grace = request.args.get("grace", default=60, type=int)
        session.rotate_id(grace_period=grace)  # type: ignore[attr-defined]
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        session.destroy()  # type: ignore[attr-defined]
        return "ok"

    @app.get("/whoami")
    def whoami() -> t.Any:
        current = session._get_current_object()  # type: ignore[attr-defined]
        return jsonify(data=dict(session), new=current.new)

    return app


def store_of(app: Flask) -> Store:
    return t.cast(Store, app.extensions["relay_session"].store)


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def sid_of(cookie: str) -> str:
    return cookie.split(".")[0]


def with_cookie(app: Flask, cookie: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def signed_in_browser(app: Flask) -> tuple[FlaskClient, str, str]:
    """A browser that logged in: it, and its cookies from before and after."""
    browser = app.test_client()
    browser.post("/init")
    before = cookie_of(browser)
    browser.post("/login")
    after = cookie_of(browser)
    assert sid_of(after) != sid_of(before)
    assert with_cookie(app, before).get("/whoami").json == {
        "data": {"cart": ["apples"], "user": "ada"},
        "new": False,
    }
    return browser, before, after


FRESH = {"data": {}, "new": True}


def test_logout_with_the_cookie_from_before_the_login_signs_the_session_out(
    app: Flask,
) -> None:
    browser, before, after = signed_in_browser(app)
    # Another tab, or a request in flight, still holds the old cookie.
    assert with_cookie(app, before).post("/logout").status_code == 200
    store = store_of(app)
    assert not held(store, sid_of(after))
    assert not held(store, sid_of(before))
    assert browser.get("/whoami").json == FRESH
    assert with_cookie(app, after).get("/whoami").json == FRESH
    assert with_cookie(app, before).get("/whoami").json == FRESH


def test_logout_with_the_first_cookie_of_a_chain_deletes_every_hop(
    app: Flask,
) -> None:
    browser, first, _ = signed_in_browser(app)
    cookies = [first, cookie_of(browser)]
    for _ in range(2):
        browser.post("/login")
        cookies.append(cookie_of(browser))
    # Three rotations, never followed, so never shortened: a chain of three.
    with_cookie(app, first).post("/logout")
    store = store_of(app)
    assert [held(store, sid_of(cookie)) for cookie in cookies] == [False] * 4
    for cookie in cookies:
        assert with_cookie(app, cookie).get("/whoami").json == FRESH


def test_logout_with_a_middle_cookie_of_a_chain_breaks_the_older_ones(
    app: Flask,
) -> None:
    browser, first, _ = signed_in_browser(app)
    cookies = [first, cookie_of(browser)]
    for _ in range(2):
        browser.post("/login")
        cookies.append(cookie_of(browser))
    with_cookie(app, cookies[1]).post("/logout")
    store = store_of(app)
    assert [held(store, sid_of(cookie)) for cookie in cookies] == [
        True,
        False,
        False,
        False,
    ]
    # As after a logout with the newest cookie: the redirect it left leads
    # to a missing session until its grace period ends.
    assert with_cookie(app, first).get("/whoami").status_code == 410
    for cookie in cookies[1:]:
        assert with_cookie(app, cookie).get("/whoami").json == FRESH


def test_past_the_grace_period_a_logout_with_the_old_cookie_leaves_the_new_session(
    app: Flask, clock: Clock
) -> None:
    browser = app.test_client()
    browser.post("/init")
    before = cookie_of(browser)
    browser.post("/login?grace=5")
    after = cookie_of(browser)
    clock.advance(6)
    time.sleep(0.005)  # Redis: let the TTLs that ran out end
    # The old cookie leads nowhere: it cannot sign anybody out.
    assert with_cookie(app, before).post("/logout").status_code == 200
    store = store_of(app)
    assert not held(store, sid_of(before))
    assert with_cookie(app, after).get("/whoami").json == {
        "data": {"cart": ["apples"], "user": "ada"},
        "new": False,
    }
    assert with_cookie(app, before).get("/whoami").json == FRESH


# --------------------------------------------------------------------------
# The store's steps
# --------------------------------------------------------------------------


def nth_id(n: int) -> str:
    return f"{n:064x}"


def create(store: Store, sid: str) -> None:
    result = store.merge(
        sid,
        [Change(("user",), dumps("ada"))],
        now=now_ms(),
        ttl=LIFETIME,
        create=True,
        lock_token=None,
        max_size=MAX_SIZE,
    )
    assert result.status is MergeStatus.DONE


def rotate(store: Store, sid: str, new_sid: str, grace: int = 60_000) -> MergeStatus:
    return store.rotate(
        sid,
        new_sid,
        [],
        now=now_ms(),
        ttl=LIFETIME,
        grace=grace,
        lock_token=None,
        max_size=MAX_SIZE,
    ).status


def test_deleting_a_missing_session_does_nothing(store: Store) -> None:
    store.delete(nth_id(1))
    assert not held(store, nth_id(1))


def test_delete_through_a_chain_too_long_for_a_load_deletes_only_its_own_id(
    store: Store,
) -> None:
    ids = [nth_id(n) for n in range(MAX_REDIRECT_DEPTH + 2)]
    create(store, ids[0])
    for old, new in zip(ids, ids[1:], strict=False):
        assert rotate(store, old, new) is MergeStatus.DONE
    # The first id is one hop too far from the session to reach it...
    store.delete(ids[0])
    assert [held(store, id_) for id_ in ids] == [False] + [True] * (len(ids) - 1)
    # ...the second is not: every hop goes.
    store.delete(ids[1])
    assert [held(store, id_) for id_ in ids] == [False] * len(ids)


def test_a_redirect_past_its_grace_period_is_deleted_though_its_key_lives(
    store: Store,
) -> None:
    if not isinstance(store, RedisSessionStore):
        pytest.skip(
            "Redis only: the memory store drops a redirect when its grace"
            " period ends, so its key never outlives it"
        )
    create(store, nth_id(1))
    assert rotate(store, nth_id(1), nth_id(2)) is MergeStatus.DONE
    end_grace_now(store, nth_id(1), LIFETIME)
    store.delete(nth_id(1))
    assert not held(store, nth_id(1))
    stored = store.load(nth_id(2), ttl=None)
    assert stored is not None and stored.decoded() == {"user": "ada"}


# Races with a rotation of the session being deleted. The hops of a chain
# are in different cluster slots, so a delete through a redirect takes one
# step per hop, and a rotation takes three (read, copy, then turn the old key
# into a redirect if it did not change).


def redis_only(store: Store) -> RedisSessionStore:
    if not isinstance(store, RedisSessionStore):
        pytest.skip(
            "Redis only: the memory store does every operation in one step,"
            " so nothing can race it"
        )
    return store


def test_the_session_goes_before_the_redirects_that_lead_to_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_only(store)
    ids = [nth_id(n) for n in range(3)]
    create(store, ids[0])
    for old, new in zip(ids, ids[1:], strict=False):
        assert rotate(store, old, new) is MergeStatus.DONE
    states: list[list[bool]] = []
    destroy, pipeline = store._layout.destroy, store.redis.pipeline

    def watching_destroy(keys: t.Sequence[str], args: t.Any) -> t.Any:
        states.append([held(store, id_) for id_ in ids])
        return destroy(keys, args)

    def watching_pipeline(*args: t.Any, **kwargs: t.Any) -> t.Any:
        states.append([held(store, id_) for id_ in ids])
        return pipeline(*args, **kwargs)

    monkeypatch.setattr(store._layout, "destroy", watching_destroy)
    monkeypatch.setattr(store.redis, "pipeline", watching_pipeline)
    store.delete(ids[0])
    states.append([held(store, id_) for id_ in ids])
    # What another client sees between the steps: the redirects outlive
    # the session, never the other way round.
    assert states == [[True] * 3] * 3 + [[True, True, False], [False] * 3]


def test_a_rotation_between_the_hops_of_a_delete_is_followed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_only(store)
    create(store, nth_id(10))
    assert rotate(store, nth_id(10), nth_id(11)) is MergeStatus.DONE
    destroy = store._layout.destroy
    hops: list[str] = []

    def rotating_destroy(keys: t.Sequence[str], args: t.Any) -> t.Any:
        hops.append(keys[0])
        if len(hops) == 2:
            # The delete learnt where the redirect leads; that session is
            # rotated again before the delete reaches it.
            assert rotate(store, nth_id(11), nth_id(12)) is MergeStatus.DONE
        return destroy(keys, args)

    monkeypatch.setattr(store._layout, "destroy", rotating_destroy)
    store.delete(nth_id(10))
    assert [held(store, nth_id(n)) for n in (10, 11, 12)] == [False, False, False]


def test_a_delete_between_the_copy_and_the_end_of_a_rotation_undoes_the_copy(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_only(store)
    create(store, nth_id(1))
    end_rotation = store._layout.rotate

    def logout_then_end_rotation(keys: t.Sequence[str], args: t.Any) -> t.Any:
        store.delete(nth_id(1))
        return end_rotation(keys, args)

    monkeypatch.setattr(store._layout, "rotate", logout_then_end_rotation)
    # The rotation finds the session gone, and deletes its copy.
    assert rotate(store, nth_id(1), nth_id(2)) is MergeStatus.MISSING
    assert not held(store, nth_id(1))
    assert not held(store, nth_id(2))


def test_a_logout_that_beats_the_rotation_leaves_only_what_the_login_wrote(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_only(store_of(app))
    browser = app.test_client()
    browser.post("/init")
    before = cookie_of(browser)
    end_rotation = store._layout.rotate

    def logout_then_end_rotation(keys: t.Sequence[str], args: t.Any) -> t.Any:
        assert with_cookie(app, before).post("/logout").status_code == 200
        return end_rotation(keys, args)

    monkeypatch.setattr(store._layout, "rotate", logout_then_end_rotation)
    browser.post("/login")
    monkeypatch.undo()
    # The logout came first: the login went on as a new session of its own
    # changes. Nothing of the session the logout destroyed came back.
    after = cookie_of(browser)
    assert sid_of(after) != sid_of(before)
    assert browser.get("/whoami").json == {"data": {"user": "ada"}, "new": False}
    assert with_cookie(app, before).get("/whoami").json == FRESH
    assert store.redis.dbsize() == 1


def test_a_key_that_holds_no_session_is_deleted(store: Store) -> None:
    store = redis_only(store)
    for n, value in enumerate(([b"a list"], {b"field": b"x"}, b"not json")):
        key = store.session_key(nth_id(n))
        if isinstance(value, list):
            store.redis.rpush(key, *value)
        elif isinstance(value, dict):
            store.redis.hset(key, mapping=value)
        else:
            store.redis.set(key, value)
        store.delete(nth_id(n))
        assert not held(store, nth_id(n))


def test_on_a_cluster_a_logout_through_the_first_id_deletes_every_hop(
    cluster: LocalCluster, layout: str
) -> None:
    client = cluster.client()
    try:
        store = RedisSessionStore(client, layout=layout)
        ids = [nth_id(n) for n in range(4)]
        create(store, ids[0])
        for old, new in zip(ids, ids[1:], strict=False):
            assert rotate(store, old, new) is MergeStatus.DONE
        nodes = {client.get_node_from_key(store.session_key(id_)).port for id_ in ids}
        assert len(nodes) > 1, "every hop is on one node: pick other ids"
        store.delete(ids[0])
        assert [held(store, id_) for id_ in ids] == [False] * 4
    finally:
        client.close()
        cluster.flush()


# --------------------------------------------------------------------------
# Under gunicorn: a logout with the old cookie racing the login
# --------------------------------------------------------------------------

APP = "tests.apps.relay_logout_app:create_app()"

#: How long the login's response stays in flight after its rotation.
LOGIN_TAIL = 0.5


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[RedisServer, str], GunicornServer]]:
    """``serve(redis_server, layout)``: the app under gunicorn, cached."""
    if not gunicorn_available():
        missing("gunicorn")
    with gunicorn_servers() as start:
        cache: dict[tuple[str, str], GunicornServer] = {}

        def serve_app(redis_server: RedisServer, layout: str) -> GunicornServer:
            key = (redis_server.url, layout)
            server = cache.get(key)
            if server is None or not server.is_running():
                env = {
                    "RELAY_TEST_REDIS_URL": redis_server.url,
                    "RELAY_TEST_RELAY_SESSION_LAYOUT": json.dumps(layout),
                }
                server = cache[key] = start(APP, env, workers=3, threads=4)
            return t.cast(GunicornServer, server)

        yield serve_app


def send(
    server: GunicornServer, method: str, path: str, cookie: str | None
) -> HttpReply:
    with HttpClient(server) as client:
        reply = client.request(method, path, cookie)
    assert reply.status == 200, reply
    return reply


def is_redirect(client: redis.Redis, sid: str, layout: str) -> bool:
    key = f"sess:{{{sid}}}"
    if layout == "hash":
        return bool(client.hexists(key, " redirect"))
    raw = client.get(key)
    return raw is not None and json.loads(raw)["data"] is None


@pytest.mark.slow
def test_a_logout_racing_the_login_with_the_old_cookie_signs_the_user_out(
    serve: Callable[[RedisServer, str], GunicornServer],
    redis_server: RedisServer,
    layout: str,
    report: Callable[[str], None],
) -> None:
    server = serve(redis_server, layout)
    watcher = redis_server.client()
    rounds = 10
    alive = in_flight = 0
    workers: set[int] = set()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            for _ in range(rounds):
                before = send(server, "POST", "/init", None).cookie()
                old_sid = cookie_sid(before)
                assert before is not None and old_sid is not None
                login = pool.submit(
                    send, server, "POST", f"/login?sleep={LOGIN_TAIL}", before
                )
                # The login rotated, and its response is still on its way:
                # another tab logs out with the cookie from before.
                deadline = time.monotonic() + 10
                while not is_redirect(watcher, old_sid, layout):
                    assert time.monotonic() < deadline, "the login never rotated"
                    time.sleep(0.001)
                logout = send(server, "POST", "/logout", before)
                in_flight += not login.done()
                logged_in = login.result()
                workers |= {logout.pid, logged_in.pid}
                after = logged_in.cookie()
                assert cookie_sid(after) == logged_in.json["sid"] != old_sid
                whoami = send(server, "GET", "/whoami", after).json
                alive += whoami["user"] is not None
                old = send(server, "GET", "/whoami", before).json
                assert old["user"] is None and old["new"] is True
    finally:
        watcher.close()
    report(
        f"Redis {redis_server.version_string}, {layout} layout: a logout with"
        f" the old cookie raced {rounds} logins ({in_flight} still in flight,"
        f" {len(workers)} workers): {alive} sessions still signed in"
    )
    assert in_flight == rounds, "the logouts did not race the logins"
    assert alive == 0
