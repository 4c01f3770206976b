"""SPEC §4: every operation works on a real Redis Cluster.

A three-primary cluster of the system ``redis-server`` 7.x is started once
for this module (``redis-cli --cluster create``, about two seconds) and
served to a Flask app through a :class:`redis.cluster.RedisCluster` client.
Each script touches the keys of one session only, which the hash tag puts in
one slot; a rotation moves a session between slots, usually between nodes.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import typing as t
from collections.abc import Iterator

import pytest
import redis
import redis.cluster
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session.serialization import loads

from .helpers import client_with
from .helpers import sid_of
from .redis_topologies import LocalCluster


def cli_available() -> bool:
    return importlib.util.find_spec("flask_relay_session.cli") is not None


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[redis.cluster.RedisCluster]:
    client = cluster.client()
    yield client
    client.close()
    cluster.flush()


def make_cluster_app(
    client: redis.cluster.RedisCluster, layout: str = "json", **config: t.Any
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="cluster secret",
        TESTING=True,
        RELAY_SESSION_REDIS=client,
        RELAY_SESSION_LAYOUT=layout,
        RELAY_SESSION_LOCK_RETRIES=60,
        RELAY_SESSION_LOCK_BACKOFF=0.01,
    )
    app.config.update(config)
    RelaySession(app)

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(
            data=dict(session),
            redirected=session.is_redirected,  # type: ignore[attr-defined]
        )

    @app.post("/set")
    def set_values() -> str:
        payload = t.cast(dict[str, t.Any], request.get_json(force=True))
        for key, value in payload.items():
            session[key] = value
        return "ok"

    @app.post("/cart/add/<item>")
    def add_to_cart(item: str) -> str:
        session["cart"]["items"].append(item)
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


def post_json(client: FlaskClient, url: str, payload: t.Any) -> None:
    response = client.post(url, data=json.dumps(payload))
    assert response.status_code == 200, response.text


def node_of(client: redis.cluster.RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    return f"{node.host}:{node.port}"


def store_of(app: Flask) -> RedisSessionStore:
    store = app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    return store


# --------------------------------------------------------------------------


def test_cluster_has_three_primaries_that_split_the_slots(
    cluster: LocalCluster, cluster_client: redis.cluster.RedisCluster
) -> None:
    primaries = cluster_client.get_primaries()
    assert len(primaries) == 3
    for node in cluster.nodes:
        with cluster.node_client(node) as admin:
            assert admin.cluster("INFO")["cluster_state"] == "ok"


@pytest.mark.parametrize("protocol", [2, 3])
def test_session_and_lock_keys_share_one_slot_and_round_trip(
    cluster: LocalCluster, layout: str, protocol: int
) -> None:
    client = cluster.client(protocol=protocol)
    try:
        app = make_cluster_app(client, layout)
        browser = app.test_client()
        value = {"user": {"name": "Ada", "tags": ["x", "y"]}, "n": 1, "f": 0.5}
        post_json(browser, "/set", value)
        assert browser.get("/read").json["data"] == value
        store = store_of(app)
        sid = sid_of(browser)
        key, lock = store.session_key(sid), store.lock_key(sid)
        assert client.keyslot(key) == client.keyslot(lock)
        assert client.exists(key) == 1
        # The key lives on the primary that owns its slot, nowhere else.
        slot = client.keyslot(key)
        holders = []
        for node in cluster.nodes:
            with cluster.node_client(node) as admin:
                if admin.execute_command("CLUSTER COUNTKEYSINSLOT", slot):
                    holders.append(node)
        assert len(holders) == 1
        assert node_of(client, key) == f"{holders[0].host}:{holders[0].port}"
    finally:
        client.close()
        cluster.flush()


def test_tracking_saves_only_changed_paths_and_concurrent_writes_merge(
    cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout)
    reading = threading.Event()
    release = threading.Event()

    @app.post("/slow/<key>")
    def slow(key: str) -> str:
        session.get("cart")  # loads the session before the other write
        reading.set()
        assert release.wait(10)
        session[key] = "slow"
        return "ok"

    browser = app.test_client()
    post_json(browser, "/set", {"cart": {"items": []}, "profile": {"a": 1}})
    cookie = t.cast(t.Any, browser.get_cookie("session")).value
    results: list[int] = []

    def slow_request() -> None:
        results.append(client_with(app, cookie).post("/slow/late").status_code)

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert reading.wait(10)
    # While the slow request holds a stale copy, others change other paths.
    assert browser.post("/cart/add/apple").status_code == 200
    post_json(browser, "/set", {"profile": {"a": 2}})
    release.set()
    thread.join(10)
    assert results == [200]
    assert browser.get("/read").json["data"] == {
        "cart": {"items": ["apple"]},
        "profile": {"a": 2},
        "late": "slow",
    }


def test_locked_increments_from_many_threads_are_exact(
    cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout)
    browser = app.test_client()
    post_json(browser, "/set", {"n": 0})
    cookie = t.cast(t.Any, browser.get_cookie("session")).value
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        own = client_with(app, cookie)
        for _ in range(5):
            status = own.post("/incr").status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 40
    assert browser.get("/read").json["data"] == {"n": 40}
    store = store_of(app)
    assert not cluster_client.exists(store.lock_key(sid_of(browser)))


def test_rotation_moves_the_session_to_another_slot_and_old_cookie_follows(
    cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout)
    store = store_of(app)
    browser = app.test_client()
    post_json(browser, "/set", {"user": "ada", "cart": ["a"]})
    first_sid = sid_of(browser)
    first_cookie = t.cast(t.Any, browser.get_cookie("session")).value
    # Rotate until the new id lives on another node (two chances in three
    # each time), so that the move crosses nodes, not only slots.
    for _ in range(20):
        assert browser.post("/rotate").status_code == 200
        if node_of(cluster_client, store.session_key(sid_of(browser))) != node_of(
            cluster_client, store.session_key(first_sid)
        ):
            break
    new_sid = sid_of(browser)
    assert new_sid != first_sid
    assert cluster_client.keyslot(store.session_key(new_sid)) != (
        cluster_client.keyslot(store.session_key(first_sid))
    )
    assert browser.get("/read").json == {
        "data": {"user": "ada", "cart": ["a"]},
        "redirected": False,
    }
    old = client_with(app, first_cookie)
    response = old.get("/read")
    assert response.json == {"data": {"user": "ada", "cart": ["a"]}, "redirected": True}
    # The old cookie was replaced with the new session's.
    assert sid_of(old) == new_sid
    # A write through the old cookie lands in the new session.
    post_json(client_with(app, first_cookie), "/set", {"late": 1})
    assert browser.get("/read").json["data"] == {
        "user": "ada",
        "cart": ["a"],
        "late": 1,
    }


def test_redirect_chain_is_shortened_across_nodes(
    cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout)
    store = store_of(app)
    browser = app.test_client()
    post_json(browser, "/set", {"v": "kept"})
    cookies = [t.cast(t.Any, browser.get_cookie("session")).value]
    sids = [sid_of(browser)]
    for _ in range(3):
        assert browser.post("/rotate").status_code == 200
        cookies.append(t.cast(t.Any, browser.get_cookie("session")).value)
        sids.append(sid_of(browser))
    # sids[0] -> sids[1] -> sids[2] -> sids[3]; following the oldest cookie
    # points every id on the way straight at the live session.
    assert client_with(app, cookies[0]).get("/read").json == {
        "data": {"v": "kept"},
        "redirected": True,
    }
    # Proof that sids[0] no longer needs the middle of the chain: delete it.
    for sid in sids[1:3]:
        cluster_client.delete(store.session_key(sid))
    assert client_with(app, cookies[0]).get("/read").json == {
        "data": {"v": "kept"},
        "redirected": True,
    }


def test_reads_refresh_the_expiry_of_the_key_on_its_node(
    cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout, PERMANENT_SESSION_LIFETIME=600)
    store = store_of(app)
    browser = app.test_client()
    post_json(browser, "/set", {"a": 1})
    key = store.session_key(sid_of(browser))
    assert 590_000 < cluster_client.pttl(key) <= 600_000
    cluster_client.pexpire(key, 5_000)
    assert cluster_client.pttl(key) <= 5_000
    assert browser.get("/read").json["data"] == {"a": 1}
    assert 590_000 < cluster_client.pttl(key) <= 600_000


def test_scripts_are_sent_again_after_script_flush_on_every_node(
    cluster: LocalCluster, cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout)
    browsers = [app.test_client() for _ in range(12)]
    for number, browser in enumerate(browsers):
        post_json(browser, "/set", {"n": number})
    for node in cluster.nodes:
        with cluster.node_client(node) as admin:
            admin.script_flush()
    for number, browser in enumerate(browsers):
        assert browser.get("/read").json["data"] == {"n": number}
        post_json(browser, "/set", {"m": number})
        assert browser.post("/rotate").status_code == 200
        assert browser.post("/incr").status_code == 200
        assert browser.get("/read").json["data"] == {"n": number + 1, "m": number}


def test_preloaded_scripts_work_on_every_primary(
    cluster: LocalCluster, cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout, RELAY_SESSION_PRELOAD_SCRIPT=True)
    store = store_of(app)
    shas = [script.sha for script in store.scripts]
    for node in cluster.nodes:
        with cluster.node_client(node) as admin:
            assert admin.script_exists(*shas) == [True] * len(shas)
    browsers = [app.test_client() for _ in range(6)]
    for number, browser in enumerate(browsers):
        post_json(browser, "/set", {"n": number})
        assert browser.post("/incr").status_code == 200
        assert browser.get("/read").json["data"] == {"n": number + 1}


def test_stored_json_document_is_complete_on_the_owning_node(
    cluster: LocalCluster, cluster_client: redis.cluster.RedisCluster
) -> None:
    app = make_cluster_app(cluster_client, "json")
    store = store_of(app)
    browser = app.test_client()
    post_json(browser, "/set", {"a": {"b": [1, 2]}})
    assert browser.post("/rotate").status_code == 200
    sid = sid_of(browser)
    raw = cluster_client.get(store.session_key(sid))
    assert raw is not None
    document = loads(raw)
    assert document["data"] == {"a": {"b": [1, 2]}}
    assert document["meta"]["id"] == sid


@pytest.mark.skipif(
    not cli_available(), reason="flask_relay_session.cli (flask relay-session) missing"
)
def test_cli_count_scans_every_primary(
    cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_cluster_app(cluster_client, layout)
    store = store_of(app)
    browsers = [app.test_client() for _ in range(30)]
    nodes = set()
    for number, browser in enumerate(browsers):
        post_json(browser, "/set", {"n": number})
        nodes.add(node_of(cluster_client, store.session_key(sid_of(browser))))
    assert len(nodes) == 3  # 30 random ids: all three nodes hold some
    cluster_client.set(store.lock_key(sid_of(browsers[0])), "token", px=60_000)
    result = app.test_cli_runner().invoke(args=["relay-session", "count"])
    assert result.exit_code == 0, result.output
    # Sessions live on all three primaries: only a scan of each finds 30.
    assert "sessions: 30" in result.output.splitlines()
    assert "locks: 1" in result.output.splitlines()
