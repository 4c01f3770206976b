"""What the modules of the Redis store share: :func:`redis_errors`, the one
place where a failure of Redis becomes a
:class:`~flask_relay_session.SessionStoreError`, the log of keys that hold
something that is not a session, and the arguments that record a user.

It imports none of the other ``redis*`` modules: :mod:`.redis` (the
session data), :mod:`.redis_users` (the registries of users) and
:mod:`.redis_admin` (the operator's view) all import it.
"""

from __future__ import annotations

import logging
import time
import types
import typing as t

import redis
from redis.exceptions import RedisError
from redis.exceptions import ResponseError

from ..errors import SessionStoreError
from .scripts import LuaScript
from .users import Registration

logger = logging.getLogger("flask_relay_session")

#: A standalone, Sentinel or cluster client of redis-py.
RedisClient = t.Union["redis.Redis", "redis.cluster.RedisCluster"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class redis_errors:
    """Raise a failure of Redis as :class:`SessionStoreError`, saying what to
    check: the one way the store reports one. A context manager around
    every command the store sends; lower-case, as :mod:`contextlib`'s, and
    a class, which costs a fifth of a generator-based one.

    :param script: the script being run, whose error messages then name the
        file and line of ``stores/lua`` they mean (see
        :meth:`LuaScript.where`).
    """

    __slots__ = ("script",)

    def __init__(self, script: LuaScript | None = None) -> None:
        self.script = script

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        if not isinstance(error, RedisError):
            return
        message = f"{type(error).__name__}: {str(error).rstrip('.')}"
        if self.script is not None:
            message = self.script.where(message)
        raise SessionStoreError(
            f"the session store failed: {message}. Check that Redis is running"
            " and reachable with RELAY_SESSION_REDIS."
        ) from error


def _wrong_type(reply: object) -> bool:
    """Whether a reply is Redis's error for a key of another type than its
    command reads: the session key holds something that is not a session.
    """
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


def _foreign(sid: str, what: str) -> None:
    """Log that the key of the session ``sid`` holds ``what``, which is not
    a session; ``what`` says what in words, never quoting the data.
    """
    logger.error(
        "session %s… holds something that is not a session (%s); it is left"
        " in place for inspection and the request goes on with a new session",
        sid[:8],
        what,
    )


def _registration_args(registration: Registration) -> list[t.Any]:
    """The arguments of ``record_user`` in ``lua/common.lua``."""
    return [
        "bind" if registration.bind else "seen",
        registration.user_id,
        registration.seen,
        registration.agent or "",
        registration.ip or "",
    ]
