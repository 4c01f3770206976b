"""The sessions of a user on a real Redis Cluster (issue 13).

The registry of a user, ``sess:user:{<user id>}``, is hash-tagged by the
user id and lives in its own slot; each session lives in the slot of its
id. No script can touch both, so the store writes them in separate steps,
in an order that leaves no live session bound to a user missing from that
user's registry, whichever step fails (``stores/users.py``, and "How it is
stored" in ``docs/users.rst``).

The first test runs the whole user API on the cluster. The second fails
each step of each operation in turn, the way a lost connection fails it,
and checks after every failure that every session a cookie can reach that
is bound to the user is in the user's registry, and that ``revoke_all``
still ends all of them. It runs on a single server too, where the steps
that must keep their order go in one pipeline.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable
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
from flask_relay_session.stores.base import MAX_REDIRECT_DEPTH

from .helpers import current
from .helpers import sid_of
from .redis_servers import RedisServer
from .redis_topologies import LocalCluster


def make_app(client: t.Any, layout: str, **config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="cluster secret",
        TESTING=True,
        RELAY_SESSION_REDIS=client,
        RELAY_SESSION_LAYOUT=layout,
    )
    app.config.update(config)
    relay = RelaySession(app)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        current().bind_user(user)
        return "ok"

    @app.post("/bind/<user>")
    def bind(user: str) -> str:
        current().bind_user(user)
        return "ok"

    @app.post("/unbind")
    def unbind() -> str:
        current().unbind_user()
        return "ok"

    @app.post("/set/<key>")
    def set_value(key: str) -> str:
        session[key] = key
        return "ok"

    @app.post("/rotate")
    def rotate() -> str:
        current().rotate_id(grace_period=request.args.get("grace", 60, type=float))
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        current().destroy()
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(data=dict(session), user_id=current().user_id)

    @app.get("/devices/<user>")
    def devices(user: str) -> t.Any:
        return jsonify([info.as_dict() for info in relay.sessions_of(user)])

    @app.post("/revoke/<user>/<handle>")
    def revoke(user: str, handle: str) -> t.Any:
        return jsonify(relay.revoke(user, handle))

    @app.post("/revoke-all/<user>")
    def revoke_all(user: str) -> t.Any:
        return jsonify(relay.revoke_all(user))

    return app


def store_of(app: Flask) -> RedisSessionStore:
    store = app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    return store


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[redis.cluster.RedisCluster]:
    client = cluster.client()
    yield client
    client.close()
    cluster.flush()


def signed_out(client: FlaskClient) -> bool:
    found = client.get("/read").json
    return found == {"data": {}, "user_id": None}


def test_the_user_api_on_a_cluster(
    cluster: LocalCluster, cluster_client: redis.cluster.RedisCluster, layout: str
) -> None:
    app = make_app(cluster_client, layout)
    store = store_of(app)
    registry = store.user_key("ada")
    assert registry == "sess:user:{ada}"
    assert cluster_client.keyslot(registry) == cluster_client.keyslot("{ada}")

    def node_of(browser: FlaskClient) -> str:
        key = store.session_key(sid_of(browser))
        return str(cluster_client.get_node_from_key(key).name)

    def apart(browser: FlaskClient, others: list[FlaskClient]) -> bool:
        # In another slot than the registry, and the last one on another
        # node than the others if they all share one.
        slot = cluster_client.keyslot(store.session_key(sid_of(browser)))
        if slot == cluster_client.keyslot(registry):
            return False
        nodes = {node_of(other) for other in others}
        return len(others) < 5 or len(nodes | {node_of(browser)}) >= 2

    # Session ids are random: a session that lands where the test needs no
    # session moves to a new id, which logs nobody out.
    browsers: list[FlaskClient] = []
    for _ in range(6):
        browser = app.test_client()
        assert browser.post("/login/ada").status_code == 200
        for _ in range(100):
            if apart(browser, browsers):
                break
            assert browser.post("/rotate?grace=0").status_code == 200
        browsers.append(browser)
    slots = {cluster_client.keyslot(store.session_key(sid_of(b))) for b in browsers}
    assert cluster_client.keyslot(registry) not in slots
    nodes = {node_of(browser) for browser in browsers}
    assert len(nodes) >= 2, "the sessions all landed on one node"
    # Rotations move sessions between slots, and nodes.
    old_cookies = []
    for browser, grace in zip(browsers[:4], [60, 60, 0, 0], strict=True):
        cookie = browser.get_cookie("session")
        assert cookie is not None
        old_cookies.append(cookie.value)
        assert browser.post(f"/rotate?grace={grace}").status_code == 200
    shown = browsers[0].get("/devices/ada").json
    assert len(shown) == 6
    assert [info["current"] for info in shown].count(True) == 1
    target = next(info["handle"] for info in shown if not info["current"])
    assert browsers[0].post(f"/revoke/ada/{target}").json is True
    assert len(browsers[0].get("/devices/ada").json) == 5
    assert browsers[0].post("/revoke-all/ada").json == 5
    for browser in browsers:
        assert signed_out(browser)
    for value in old_cookies:
        stale = app.test_client()
        stale.set_cookie("session", value)
        assert signed_out(stale)
    assert not cluster_client.exists(registry)


# --------------------------------------------------------------------------
# A failure between any two steps
# --------------------------------------------------------------------------


class StepFailure(redis.exceptions.ConnectionError):
    """The failure injected at a step."""


class FailingSteps:
    """Counts the steps a store sends to Redis, a command or a pipeline
    each, and fails the one numbered :attr:`fail_at` as a lost connection
    fails it: it never reaches the server.
    """

    def __init__(self, client: t.Any) -> None:
        self.client = client
        self.steps = 0
        self.fail_at: int | None = None
        self._execute = client.execute_command
        self._pipeline = client.pipeline
        client.execute_command = self.execute_command
        client.pipeline = self.pipeline

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.fail_at:
            raise StepFailure(f"step {self.steps} failed")

    def execute_command(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self.step()
        return self._execute(*args, **kwargs)

    def pipeline(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        pipe = self._pipeline(*args, **kwargs)
        execute = pipe.execute

        def failing_execute(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.step()
            return execute(*args, **kwargs)

        pipe.execute = failing_execute
        return pipe

    def restore(self) -> None:
        self.client.execute_command = self._execute
        self.client.pipeline = self._pipeline


def reached(store: RedisSessionStore, sid: str) -> tuple[str, str | None] | None:
    """The session the id ``sid`` reaches, following redirects as a load
    does, and the user its meta data names; ``None`` when it reaches none.
    """
    for _ in range(MAX_REDIRECT_DEPTH + 1):
        record = store.show(sid)
        if record is None:
            return None
        if record.redirect_to is None:
            meta = record.document.get("meta") or {}
            user = meta.get("user")
            return sid, user if isinstance(user, str) else None
        sid = record.redirect_to
    return None


def check_listed(store: RedisSessionStore, cookies: set[str], users: set[str]) -> None:
    """Every session a cookie reaches that is bound to one of ``users`` is
    in that user's registry.
    """
    for cookie in cookies:
        found = reached(store, cookie[:64])
        if found is None or found[1] not in users:
            continue
        sid, user = found
        assert user is not None
        listed = store.redis.zscore(store.user_key(user), sid)
        assert listed is not None, f"session {sid[:8]}… of {user} is not listed"


#: Each operation: what comes before it, and the request under test.
Operation = tuple[list[tuple[str, str]], tuple[str, str]]

OPERATIONS: dict[str, Operation] = {
    "login on a new session": ([], ("POST", "/login/ada")),
    "bind a stored session": ([("POST", "/set/x")], ("POST", "/bind/ada")),
    "move to another user": ([("POST", "/login/bob")], ("POST", "/bind/ada")),
    "rotate with grace": ([("POST", "/login/ada")], ("POST", "/rotate?grace=60")),
    "rotate without grace": ([("POST", "/login/ada")], ("POST", "/rotate?grace=0")),
    "record a visit with a write": ([("POST", "/login/ada")], ("POST", "/set/y")),
    "record a visit on a read": ([("POST", "/login/ada")], ("GET", "/read")),
    "unbind": ([("POST", "/login/ada")], ("POST", "/unbind")),
    "destroy": ([("POST", "/login/ada")], ("POST", "/logout")),
    "revoke_all": (
        [("POST", "/login/ada"), ("POST", "/rotate?grace=60")],
        ("POST", "/revoke-all/ada"),
    ),
}


def fail_each_step(
    app: Flask, flush: Callable[[], None], operation: Operation
) -> list[int]:
    """Run ``operation`` once per step it takes, failing that step each
    time, and check the registries after each run; return the status of
    each failed run.
    """
    store = store_of(app)
    before, (method, url) = operation
    statuses = []
    fail_at = 0
    while True:
        fail_at += 1
        flush()
        others = [app.test_client() for _ in range(2)]
        for other in others:
            other.post("/login/ada")
        client = app.test_client()
        for setup_method, setup_url in before:
            assert client.open(setup_url, method=setup_method).status_code == 200
        cookies = {
            cookie.value
            for browser in (client, *others)
            if (cookie := browser.get_cookie("session")) is not None
        }
        steps = FailingSteps(store.redis)
        steps.fail_at = fail_at
        try:
            status = client.open(url, method=method).status_code
        finally:
            steps.restore()
        if steps.steps < fail_at:
            # Every step ran: the operation takes fewer steps than this.
            assert status == 200
            break
        statuses.append(status)
        cookie = client.get_cookie("session")
        if cookie is not None:
            cookies.add(cookie.value)
        check_listed(store, cookies, {"ada", "bob"})
        # Nothing is lost for good: revoke_all still ends what is listed.
        with app.app_context():
            app.extensions["relay_session"].extension.revoke_all("ada")
        for value in cookies:
            found = reached(store, value[:64])
            assert found is None or found[1] != "ada", "revoke_all missed one"
    return statuses


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_failure_between_any_two_steps_leaves_no_session_unlisted(
    cluster: LocalCluster,
    cluster_client: redis.cluster.RedisCluster,
    layout: str,
    operation: str,
) -> None:
    app = make_app(cluster_client, layout, RELAY_SESSION_LAST_SEEN_INTERVAL=0)
    statuses = fail_each_step(app, cluster.flush, OPERATIONS[operation])
    assert statuses, "no step was failed"
    assert set(statuses) <= {200, 503}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_on_one_server_too(
    redis7_server: RedisServer, layout: str, operation: str
) -> None:
    client = redis7_server.client()
    try:
        app = make_app(client, layout, RELAY_SESSION_LAST_SEEN_INTERVAL=0)
        statuses = fail_each_step(app, redis7_server.flush, OPERATIONS[operation])
        assert set(statuses) <= {200, 503}
    finally:
        client.close()
        redis7_server.flush()
