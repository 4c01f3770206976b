"""``stores/wire.py``: several commands in one round trip, as a pipeline sends them.

:func:`~flask_relay_session.stores.wire.round_trip` takes a connection from
a standalone client's pool and sends the commands itself, without redis-py's
Pipeline object. On real Redis 7 and 6.2 these tests prove that it:

- gives exactly the replies of ``pipeline(transaction=False)`` with
  ``execute(raise_on_error=False)``, for RESP2 and RESP3, bytes and decoded
  responses: values of the same types (``True`` is not ``1``), errors of the
  same class and message in their place. Pipelines refuse to run while it
  does, so the replies come from its own path;
- reads every reply even after an error reply, so the connection goes back
  to the pool connected, with nothing left to read; a callback that raises
  gets the connection disconnected instead;
- costs one write to the socket (``CountingConnection``);
- raises ``ConnectionError`` when the server went away, freeing the
  connection, and with a ``Retry`` sends the batch again to the server
  started again on the same port;
- raises ``TimeoutError`` when a reply does not come in time, and the next
  round trip does not read the late replies;
- serves a client bound to one connection and subclasses that override how
  commands are sent; uses the pipeline of a subclass that has its own, and
  of a Redis Cluster; and serves fakeredis as its pipeline does.
"""

from __future__ import annotations

import contextlib
import typing as t
from collections.abc import Callable
from collections.abc import Iterator

import pytest
import redis
import redis.client
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.exceptions import ResponseError
from redis.retry import Retry

from flask_relay_session.stores.wire import round_trip

from .redis_servers import CountingConnection
from .redis_servers import CountingRedis
from .redis_servers import RedisServer
from .redis_servers import RoundTripCounter
from .redis_servers import no_retry
from .redis_topologies import LocalCluster

# One hash tag: every key in one slot, so the batch also suits a cluster.
STRING = "{wire}string"
HASH = "{wire}hash"
EXPIRING = "{wire}expiring"
MISSING = "{wire}missing"
UNKNOWN_SHA = "0" * 40
#: 2100-01-01, in milliseconds: a PEXPIREAT that deletes nothing.
FAR_FUTURE_MS = 4_102_444_800_000

#: What a session load sends, and more: an error reply (WRONGTYPE) in the
#: middle, a NOSCRIPT near the end, replies that callbacks turn into a dict
#: and into booleans. Run on a server prepared by :func:`fill`.
BATCH: list[tuple[t.Any, ...]] = [
    ("GET", MISSING),
    ("GET", STRING),
    ("HGETALL", HASH),
    ("HGETALL", STRING),
    ("PEXPIRE", EXPIRING, 60_000),
    ("PTTL", STRING),
    ("PTTL", MISSING),
    ("PEXPIREAT", MISSING, FAR_FUTURE_MS),
    ("EVALSHA", UNKNOWN_SHA, 1, STRING),
    ("GET", STRING),
]


def fill(client: t.Any) -> None:
    """The keys :data:`BATCH` reads: a string, a hash, a third key."""
    client.set(STRING, "value")
    client.hset(HASH, mapping={"a": "1", "b": "2"})
    client.set(EXPIRING, "soon")


def check_batch(replies: list[t.Any], *, decode: bool = False) -> None:
    """``replies`` are those of :data:`BATCH`, as redis-py's callbacks make
    them, with ``decode_responses=decode``.
    """

    def text(value: str) -> str | bytes:
        return value if decode else value.encode()

    assert len(replies) == len(BATCH)
    assert replies[0] is None
    assert replies[1] == text("value")
    assert replies[2] == {text("a"): text("1"), text("b"): text("2")}
    assert type(replies[3]) is ResponseError
    assert str(replies[3]).startswith("WRONGTYPE")
    assert replies[4] is True
    assert (replies[5], replies[6]) == (-1, -2)
    assert replies[7] is False
    assert type(replies[8]) is NoScriptError
    assert replies[9] == text("value")


def described(reply: object) -> object:
    """``reply`` as a value to compare: the type of every part with it (so
    ``True`` differs from ``1``, a dict from a list of pairs), an error as its
    class and message.
    """
    if isinstance(reply, BaseException):
        return (type(reply), str(reply))
    if isinstance(reply, dict):
        return (
            dict,
            {described(key): described(value) for key, value in reply.items()},
        )
    if isinstance(reply, (list, tuple)):
        return (type(reply), [described(item) for item in reply])
    return (type(reply), reply)


def pipeline_replies(client: t.Any, commands: list[tuple[t.Any, ...]]) -> list[t.Any]:
    """What a redis-py pipeline answers to ``commands``: the reference."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]


def _refuse(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
    raise AssertionError("round_trip used a redis-py pipeline")


@contextlib.contextmanager
def pipelines_refused() -> Iterator[None]:
    """Pipelines fail while this lasts: what succeeds did without one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "execute", _refuse)
        yield


def in_use(client: redis.Redis) -> int:
    """How many connections of ``client``'s pool are taken."""
    return len(client.connection_pool._in_use_connections)


def pooled(client: redis.Redis) -> list[t.Any]:
    """The connections waiting in ``client``'s pool."""
    return list(client.connection_pool._available_connections)


def is_connected(connection: t.Any) -> bool:
    return connection._sock is not None


# --------------------------------------------------------------------------
# The replies of a pipeline, in one write
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decoded"])
def test_round_trip_gives_exactly_the_replies_of_a_pipeline(
    redis_server: RedisServer, protocol: int, decode: bool
) -> None:
    client = redis_server.client(
        protocol=protocol, decode_responses=decode, retry=no_retry()
    )
    with client:
        fill(client)
        expected = pipeline_replies(client, BATCH)
        with pipelines_refused():
            replies = round_trip(client, BATCH)
    assert described(replies) == described(expected)
    check_batch(replies, decode=decode)


def test_an_error_reply_in_the_middle_leaves_the_connection_clean_in_the_pool(
    redis_client: redis.Redis,
) -> None:
    fill(redis_client)
    with pipelines_refused():
        first = round_trip(
            redis_client, [("CLIENT", "ID"), ("HGETALL", STRING), ("GET", STRING)]
        )
    client_id, error, value = first
    assert type(error) is ResponseError and str(error).startswith("WRONGTYPE")
    assert value == b"value"
    assert in_use(redis_client) == 0
    # Back in the pool still connected (an error reply costs no reconnect),
    # with every reply read.
    (connection,) = pooled(redis_client)
    assert is_connected(connection)
    assert not connection.can_read(timeout=0.1)
    with pipelines_refused():
        second = round_trip(
            redis_client, [("CLIENT", "ID"), ("GET", MISSING), ("GET", STRING)]
        )
    assert second == [client_id, None, b"value"]
    assert redis_client.get(STRING) == b"value"
    assert redis_client.client_id() == client_id
    assert in_use(redis_client) == 0


def test_a_callback_that_raises_gets_the_connection_disconnected(
    redis_client: redis.Redis,
) -> None:
    fill(redis_client)

    def refuse(response: t.Any, **options: t.Any) -> t.NoReturn:
        raise ValueError(f"refused {response!r}")

    redis_client.set_response_callback("ECHO", refuse)
    batch = [("GET", STRING), ("ECHO", "x"), ("GET", STRING), ("GET", MISSING)]
    with pipelines_refused(), pytest.raises(ValueError, match="refused"):
        round_trip(redis_client, batch)
    # Two replies were left unread: the connection must not keep them.
    assert in_use(redis_client) == 0
    assert not any(is_connected(connection) for connection in pooled(redis_client))
    with pipelines_refused():
        replies = round_trip(redis_client, [("GET", STRING), ("GET", MISSING)])
    assert replies == [b"value", None]


def test_a_round_trip_is_one_write(counting_redis: CountingRedis) -> None:
    fill(counting_redis)
    counter = counting_redis.counter
    counter.reset()
    with pipelines_refused():
        replies = round_trip(counting_redis, BATCH)
    check_batch(replies)
    assert counter.round_trips == 1
    assert counter.batches == [[command[0] for command in BATCH]]


# --------------------------------------------------------------------------
# Failures: a server gone away, a reply that does not come
# --------------------------------------------------------------------------


class Outage:
    """What happens to the server right before the next batch is written,
    once; see :class:`OutageConnection`.
    """

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


class OutageConnection(CountingConnection):
    """A counting connection that lets its :class:`Outage` happen right
    before it writes a batch (not the handshake): the connection was made
    to a live server, which is gone when the batch arrives.
    """

    def __init__(self, *args: t.Any, outage: Outage, **kwargs: t.Any) -> None:
        self.outage = outage
        super().__init__(*args, **kwargs)

    def send_packed_command(self, command: t.Any, check_health: bool = True) -> None:
        if not self._handshaking:
            self.outage()
        super().send_packed_command(command, check_health=check_health)


def outage_client(
    server: RedisServer, outage: Outage, retry: Retry
) -> tuple[redis.Redis, RoundTripCounter]:
    counter = RoundTripCounter()
    pool = redis.ConnectionPool(
        connection_class=OutageConnection,
        host=server.host,
        port=server.port,
        counter=counter,
        outage=outage,
        retry=retry,
        socket_timeout=5,
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client, counter


def test_a_server_gone_away_raises_connection_error_and_frees_the_connection(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    client, counter = outage_client(server, Outage(server.kill), no_retry())
    with client:
        with pipelines_refused(), pytest.raises(redis.exceptions.ConnectionError):
            round_trip(client, [("SET", STRING, "value"), ("GET", STRING)])
        assert counter.round_trips == 1
        assert in_use(client) == 0
        assert not any(is_connected(connection) for connection in pooled(client))


def test_a_retry_sends_the_batch_again_to_the_server_started_again(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()

    def restart() -> None:
        server.kill()
        server.start()  # on the same port, empty

    client, counter = outage_client(server, Outage(restart), Retry(NoBackoff(), 1))
    with client:
        with pipelines_refused():
            replies = round_trip(client, [("SET", STRING, "value"), ("GET", STRING)])
        assert replies == [True, b"value"]
        # The first write went to the killed server; the retry sent it again.
        assert counter.batches == [["SET", "GET"], ["SET", "GET"]]
        assert in_use(client) == 0
        assert client.get(STRING) == b"value"


def test_a_timeout_in_the_middle_of_the_replies_leaves_no_late_reply_to_read(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client(socket_timeout=0.2, retry=no_retry())
    with client:
        client.set(STRING, "value")
        batch = [("GET", STRING), ("BLPOP", MISSING, 1), ("GET", STRING)]
        with pipelines_refused(), pytest.raises(redis.exceptions.TimeoutError):
            round_trip(client, batch)
        assert in_use(client) == 0
        assert not any(is_connected(connection) for connection in pooled(client))
        # At once, long before BLPOP answers: on the old connection this
        # would read BLPOP's late reply (or time out waiting for it).
        with pipelines_refused():
            replies = round_trip(client, [("GET", STRING), ("ECHO", "fresh")])
        assert replies == [b"value", b"fresh"]
        assert client.get(STRING) == b"value"


# --------------------------------------------------------------------------
# The clients that get a pipeline; fakeredis
# --------------------------------------------------------------------------


def test_a_client_bound_to_one_connection_gets_the_replies(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client(single_connection_client=True, retry=no_retry())
    with client:
        fill(client)
        check_batch(round_trip(client, BATCH))
        # The connection the client is bound to still answers: the round
        # trip took one of the pool's, as a pipeline does.
        assert client.get(STRING) == b"value"


class RecordingRedis(redis.Redis):
    """A subclass that records, in :attr:`calls`, the methods it overrides."""

    calls: list[str]

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.calls = []
        super().__init__(*args, **kwargs)


class OverridesExecuteCommand(RecordingRedis):
    def execute_command(self, *args: t.Any, **options: t.Any) -> t.Any:
        self.calls.append("execute_command")
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class OverridesPipeline(RecordingRedis):
    def pipeline(self, transaction: bool = True, shard_hint: t.Any = None) -> t.Any:
        self.calls.append("pipeline")
        return super().pipeline(transaction, shard_hint)


class OverridesParseResponse(RecordingRedis):
    def parse_response(
        self, connection: t.Any, command_name: t.Any, **options: t.Any
    ) -> t.Any:
        self.calls.append("parse_response")
        parse = super().parse_response
        return parse(connection, command_name, **options)  # type: ignore[no-untyped-call]


#: A subclass of :class:`redis.Redis` for each method it sends commands
#: with, overriding that method only.
OVERRIDING = {
    "execute_command": OverridesExecuteCommand,
    "pipeline": OverridesPipeline,
    "parse_response": OverridesParseResponse,
}


@pytest.mark.parametrize("method", list(OVERRIDING))
def test_a_subclass_that_changes_how_commands_are_sent_gets_the_replies(
    redis_server: RedisServer, method: str
) -> None:
    client = OVERRIDING[method](
        host=redis_server.host, port=redis_server.port, retry=no_retry()
    )
    with client:
        fill(client)
        check_batch(round_trip(client, BATCH))


def test_a_subclass_with_its_own_pipeline_has_it_used(
    redis_server: RedisServer,
) -> None:
    client = OverridesPipeline(
        host=redis_server.host, port=redis_server.port, retry=no_retry()
    )
    with client:
        fill(client)
        client.calls.clear()
        round_trip(client, [("GET", STRING), ("GET", MISSING)])
        assert client.calls == ["pipeline"]


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_cluster_client_gets_the_replies(
    cluster: LocalCluster, protocol: int
) -> None:
    client = cluster.client(protocol=protocol)
    try:
        fill(client)
        check_batch(round_trip(client, BATCH))
    finally:
        client.close()
        cluster.flush()


def test_fakeredis_gives_the_replies_of_its_pipeline(fakeredis_client: object) -> None:
    import fakeredis

    assert isinstance(fakeredis_client, fakeredis.FakeRedis)
    fill(fakeredis_client)
    expected = pipeline_replies(fakeredis_client, BATCH)
    replies = round_trip(fakeredis_client, BATCH)
    assert described(replies) == described(expected)
    check_batch(replies)
