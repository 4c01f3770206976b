"""Flask-Session's sessions move over on a real Redis Cluster.

A Flask-Session key and the session it moves to are in different slots,
mostly on different nodes, so a move cannot be one transaction: it reads the
old key, writes the new session, then swaps the old key for a marker only if
it still holds what was read (see :mod:`flask_relay_session.migration.mover`).
Here, on a three-primary cluster of the system ``redis-server`` 7.x: the
first request of each session moves it, concurrent first requests end in one
session, and the bulk command walks every primary. Flask-Session 0.8 itself
cannot run on a cluster client, so its sessions are written as it writes
them, with :mod:`msgspec`.
"""

from __future__ import annotations

import secrets
import threading
import typing as t
from collections.abc import Iterator

import msgspec
import pytest
import redis.cluster

from flask_relay_session.migration import Marker

from .apps.migration_app import build
from .helpers import client_with
from .helpers import sid_of
from .redis_topologies import LocalCluster


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[redis.cluster.RedisCluster]:
    client = cluster.client()
    yield client
    client.close()
    cluster.flush()


def plant(client: redis.cluster.RedisCluster, name: str) -> str:
    sid = secrets.token_urlsafe(32)
    data = {"_permanent": True, "_user_id": name, "cart": [name]}
    client.set("session:" + sid, msgspec.msgpack.encode(data), ex=3600)
    return sid


def app_on(client: redis.cluster.RedisCluster, **config: t.Any) -> t.Any:
    return build(
        "relay",
        TESTING=True,
        RELAY_SESSION_REDIS=client,
        RELAY_SESSION_MIGRATE_FLASK_SESSION=True,
        RELAY_SESSION_LOCK_RETRIES=100,
        RELAY_SESSION_LOCK_BACKOFF=0.01,
        **config,
    )


def sessions_of(client: redis.cluster.RedisCluster) -> set[bytes]:
    return {
        key
        for key in client.scan_iter(match="sess:{*", count=1000)
        if b"lock:" not in key
    }


@pytest.mark.parametrize("layout", ["json", "hash"])
@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decoded"])
def test_sessions_move_on_their_first_request_on_a_cluster(
    cluster: LocalCluster,
    cluster_client: redis.cluster.RedisCluster,
    layout: str,
    decode: bool,
) -> None:
    client = cluster.client(decode_responses=decode) if decode else cluster_client
    app = app_on(client, RELAY_SESSION_LAYOUT=layout)
    slots = set()
    for n in range(12):
        sid = plant(cluster_client, f"user-{n}")
        browser = client_with(app, sid)
        me = browser.get("/me").json
        assert (me["user"], me["cart"], me["permanent"]) == (
            f"user-{n}",
            [f"user-{n}"],
            True,
        )
        new = sid_of(browser)
        marker = Marker.parse(cluster_client.get("session:" + sid))
        assert marker is not None and marker.sid == new
        assert browser.post("/cart/plum").json == {"cart": [f"user-{n}", "plum"]}
        slots.add(
            cluster_client.keyslot("session:" + sid)
            == cluster_client.keyslot(f"sess:{{{new}}}")
        )
    assert False in slots, "the keys were in different slots"
    assert len(sessions_of(cluster_client)) == 12
    if decode:
        client.close()


def test_concurrent_first_requests_end_in_one_session_on_a_cluster(
    cluster_client: redis.cluster.RedisCluster,
) -> None:
    app = app_on(cluster_client)
    sid = plant(cluster_client, "ada")
    count = 16
    barrier = threading.Barrier(count)
    seen: list[tuple[int, str, t.Any]] = []

    def first_request(number: int) -> None:
        browser = client_with(app, sid)
        barrier.wait()
        response = browser.post(f"/cart/item-{number}")
        seen.append((response.status_code, sid_of(browser), response.json))

    threads = [threading.Thread(target=first_request, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _, _ in seen} == {200}
    assert len({new for _, new, _ in seen}) == 1
    assert len(sessions_of(cluster_client)) == 1
    me = client_with(app, sid).get("/me").json
    assert me["user"] == "ada"
    assert sorted(me["cart"]) == sorted(["ada", *(f"item-{n}" for n in range(count))])


def test_the_bulk_command_walks_every_primary(
    cluster: LocalCluster, cluster_client: redis.cluster.RedisCluster
) -> None:
    app = app_on(cluster_client)
    sids = [plant(cluster_client, f"user-{n}") for n in range(300)]
    homes = {cluster_client.get_node_from_key("session:" + sid).name for sid in sids}
    assert len(homes) == len(cluster.nodes)
    result = app.test_cli_runner().invoke(
        args=["relay-session", "migrate-flask-session", "--batch", "50"]
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("moved: 300\nalready moved: 0\n")
    assert len(sessions_of(cluster_client)) == 300
    for sid in sids[:5]:
        browser = client_with(app, sid)
        assert browser.get("/me").json["user"].startswith("user-")
        assert len(sid_of(browser)) == 64
    again = app.test_cli_runner().invoke(
        args=["relay-session", "migrate-flask-session"]
    )
    assert again.stdout.startswith("moved: 0\nalready moved: 300\n")
