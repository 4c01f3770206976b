"""The test infrastructure itself: real servers, the counter, fakeredis."""

from __future__ import annotations

import pytest
import redis

from .conftest import missing
from .conftest import needs_redis7
from .redis_servers import INSTALL_HINTS
from .redis_servers import RedisServer
from .redis_servers import counting_client
from .redis_servers import no_retry
from .redis_servers import parse_packed_commands


def server_version(client: redis.Redis) -> str:
    version = client.info("server")["redis_version"]
    return version.decode() if isinstance(version, bytes) else str(version)


@needs_redis7("this test checks the version of the redis7 server")
def test_redis7_server_is_a_real_redis_7(redis7_server: RedisServer) -> None:
    with redis7_server.client() as client:
        assert server_version(client).startswith("7.")
    assert redis7_server.port != 6379


def test_redis6_server_is_a_real_redis_6_2(redis6_server: RedisServer) -> None:
    with redis6_server.client() as client:
        assert server_version(client).startswith("6.2.")
    assert redis6_server.port != 6379


def test_servers_run_on_loopback_without_persistence(
    redis_server: RedisServer,
) -> None:
    with redis_server.client(decode_responses=True) as client:
        config = client.config_get("*")
    assert config["bind"] == "127.0.0.1"
    assert config["save"] == ""
    assert config["appendonly"] == "no"
    assert config["dir"] == redis_server.directory


def test_redis_url_points_at_the_started_server(
    redis_url: str, redis_server: RedisServer
) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()


@pytest.mark.parametrize("step", ["write", "check"])
def test_each_test_starts_with_an_empty_server(
    redis_client: redis.Redis, step: str
) -> None:
    assert redis_client.dbsize() == 0
    assert redis_client.script_exists("0" * 40) == [False]
    redis_client.set("left-over", "x")
    redis_client.script_load("return 1")


def test_redis_client_returns_bytes(redis_client: redis.Redis) -> None:
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"


@pytest.mark.parametrize("protocol", [2, 3])
def test_counter_counts_a_get_as_one_round_trip(
    redis_server: RedisServer, protocol: int
) -> None:
    assert redis_server.port is not None
    with counting_client(
        redis_server.host, redis_server.port, protocol=protocol
    ) as client:
        client.set("k", b"value")
        client.counter.reset()

        assert client.get("k") == b"value"

        assert client.counter.round_trips == 1
        assert client.counter.commands == ["GET"]
        assert client.counter.bytes_sent == len(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        if protocol == 3:
            assert client.connection_pool.connection_kwargs["protocol"] == 3


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("transaction", [True, False])
def test_counter_counts_a_pipeline_as_one_round_trip(
    redis_server: RedisServer, protocol: int, transaction: bool
) -> None:
    assert redis_server.port is not None
    with counting_client(
        redis_server.host, redis_server.port, protocol=protocol
    ) as client:
        client.ping()  # connect first: the handshake is not counted anyway
        client.counter.reset()

        with client.pipeline(transaction=transaction) as pipe:
            pipe.set("a", 1).incr("a").get("a")
            assert pipe.execute() == [True, 2, b"2"]

        assert client.counter.round_trips == 1
        expected = ["SET", "INCRBY", "GET"]
        if transaction:
            expected = ["MULTI", *expected, "EXEC"]
        assert client.counter.commands == expected
        assert client.counter.batches == [expected]


def test_counter_ignores_the_connection_handshake(counting_redis) -> None:
    # The first command opens the connection (HELLO, CLIENT SETINFO, ...).
    counting_redis.get("missing")
    assert counting_redis.counter.commands == ["GET"]
    assert counting_redis.counter.round_trips == 1


def test_counter_sees_the_cost_of_an_unknown_script(counting_redis) -> None:
    script = counting_redis.register_script("return 1")

    assert script() == 1
    assert counting_redis.counter.commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
    assert counting_redis.counter.round_trips == 3

    counting_redis.counter.reset()
    assert script() == 1
    assert counting_redis.counter.commands == ["EVALSHA"]
    assert counting_redis.counter.round_trips == 1


def test_counter_counts_bytes_of_large_values(counting_redis) -> None:
    counting_redis.set("big", b"x" * 65536)
    assert counting_redis.counter.bytes_sent > 65536
    counting_redis.counter.reset()
    assert counting_redis.counter.bytes_sent == 0
    assert counting_redis.counter.commands == []


def test_parse_packed_commands_splits_a_pipeline() -> None:
    data = (
        b"*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nGET\r\n$3\r\na\r\n\r\n*1\r\n$4\r\nEXEC\r\n"
    )
    assert parse_packed_commands(data) == [
        (b"MULTI",),
        (b"GET", b"a\r\n"),
        (b"EXEC",),
    ]


def test_a_server_started_on_demand_survives_a_crash(redis_binaries) -> None:
    binary = redis_binaries.get("redis7") or redis_binaries.get("redis6")
    if binary is None:
        missing("redis6")
    with RedisServer(binary) as server:
        port = server.port
        with server.client(retry=no_retry()) as client:
            client.set("k", "v")
            server.kill()
            with pytest.raises(redis.ConnectionError):
                client.get("k")
            server.start()
            assert server.port == port
            assert client.get("k") is None  # nothing persisted
    assert not server.is_running()
    assert server.directory is None


def test_start_redis_gives_a_test_its_own_server(
    start_redis, redis_server: RedisServer
) -> None:
    name = "redis7" if redis_server.version[0] == 7 else "redis6"
    own = start_redis(name, extra_args=["--maxmemory", "1mb"])
    assert own.port != redis_server.port
    with own.client(decode_responses=True) as client:
        assert client.config_get("maxmemory") == {"maxmemory": "1048576"}


def test_fakeredis_client_uses_the_real_cjson(fakeredis_client) -> None:
    from .conftest import REAL_CJSON

    version = fakeredis_client.eval("return cjson._VERSION", 0)
    if not REAL_CJSON:
        pytest.skip(
            "fakeredis emulates cjson without Debian's lua-cjson;"
            f" to test with the real one, install {INSTALL_HINTS['cjson']}"
        )
    assert version == b"2.1.0"
    # The real cjson's lossy corners (see FACTS.md), unlike the emulation.
    roundtrip = "return cjson.encode(cjson.decode(ARGV[1]))"
    assert fakeredis_client.eval(roundtrip, 0, "[]") == b"{}"
