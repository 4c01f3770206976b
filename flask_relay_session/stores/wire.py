"""Several plain commands in one round trip, at the cost of one.

redis-py's pipeline builds an object, records timings and dispatches events
around every batch it sends: for the two commands of a session load, about
twice the CPU of sending them and reading the replies. For a
standalone or Sentinel client, :func:`round_trip` takes a connection from the
client's pool and sends the commands with redis-py's own connection methods,
under the connection's own :class:`~redis.retry.Retry` as redis-py does, and
parses each reply with the client's response callbacks: the replies are
those a pipeline gives. Any other client, such as a cluster or a subclass
whose ``pipeline()`` is its own, gets a pipeline.

Nothing here knows sessions: :class:`~.redis.RedisSessionStore` says what to
send.
"""

from __future__ import annotations

import inspect
import typing as t

import redis
from redis.exceptions import ResponseError


def round_trip(client: t.Any, commands: t.Sequence[tuple[t.Any, ...]]) -> list[t.Any]:
    """Send ``commands`` in one round trip and return their replies in
    order, each parsed as redis-py parses it; a command that failed gives
    its :class:`~redis.exceptions.ResponseError` in its place.

    :raises redis.exceptions.RedisError: the connection failed, after the
        retries its :class:`~redis.retry.Retry` allows.
    """
    if not _direct(client):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]
    pool = client.connection_pool
    connection = _take(pool)
    callbacks = client.response_callbacks
    try:
        return connection.retry.call_with_retry(  # type: ignore[no-any-return]
            lambda: _exchange(connection, commands, callbacks),
            lambda _error: None,  # _exchange has disconnected.
        )
    finally:
        pool.release(connection)


def _exchange(
    connection: t.Any,
    commands: t.Sequence[tuple[t.Any, ...]],
    callbacks: t.Mapping[str, t.Callable[..., t.Any]],
) -> list[t.Any]:
    """Write every command, then read every reply: all of them, even after
    an error reply, so that the connection goes back to the pool with
    nothing left to read.
    """
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        replies: list[t.Any] = []
        for command in commands:
            try:
                reply = connection.read_response()
            except ResponseError as error:
                replies.append(error)
                continue
            callback = callbacks.get(command[0])
            replies.append(reply if callback is None else callback(reply))
    except BaseException:
        # Whatever went wrong, replies may be left unread: a connection
        # going back to the pool must not hold any.
        connection.disconnect()
        raise
    return replies


def _direct(client: t.Any) -> bool:
    """Whether :func:`round_trip` may use a connection of ``client``'s pool
    itself: a standalone or Sentinel client of redis-py whose pipelines are
    redis-py's. (A pipeline takes its connection from the pool too, and
    calls no other method of the client's to send.)
    """
    return isinstance(client, redis.Redis) and (
        type(client).pipeline is redis.Redis.pipeline
    )


#: Whether a pool's ``get_connection`` needs a command name: before redis-py
#: 5.3 it does; since then, passing one is deprecated.
_NAME_THE_COMMAND = (
    inspect.signature(redis.ConnectionPool.get_connection)
    .parameters["command_name"]
    .default
    is inspect.Parameter.empty
)


def _take(pool: t.Any) -> t.Any:
    """A connection from ``pool``, asked for as the installed redis-py
    wants.
    """
    if _NAME_THE_COMMAND:
        return pool.get_connection("PIPELINE")
    return pool.get_connection()
