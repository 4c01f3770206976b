"""Lua scripts shipped with the package, and running them on redis-py.

The scripts live in ``stores/lua/*.lua`` as package data, so that they can be
read and reviewed as code. Shared functions live in ``common.lua`` (and
``hash_common.lua``), sent in front of each script that uses them, so that
every script stays one self-contained ``EVAL``.
"""

from __future__ import annotations

import hashlib
import typing as t
from importlib import resources

import redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError

from ..errors import SessionStoreError

#: A standalone, Sentinel or cluster client of redis-py.
RedisClient = t.Union["redis.Redis", "redis.cluster.RedisCluster"]


def text(value: bytes | str) -> str:
    """Return a reply string as ``str``, whatever ``decode_responses`` is."""
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    """Return a reply string as ``bytes``, whatever ``decode_responses`` is."""
    return value.encode() if isinstance(value, str) else value


def sha1(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha1(data).hexdigest()


def store_failed(error: RedisError) -> SessionStoreError:
    """The error for a failed Redis command, saying what to check."""
    return SessionStoreError(
        f"the session store failed: {type(error).__name__}:"
        f" {str(error).rstrip('.')}. Check"
        " that Redis is running and reachable with RELAY_SESSION_REDIS."
    )


class LuaScript:
    """A Lua script shipped with the package, run by its SHA1.

    The first call sends the script's source with ``EVAL``, which also makes
    the server cache it; later calls send only ``EVALSHA``. A server that
    forgot the script (``SCRIPT FLUSH``, a restart, a failover, another
    cluster node) answers ``NOSCRIPT``, and the call is repeated with
    ``EVAL``.

    :param name: the script's file name in the ``lua`` folder, without
        ``.lua``.
    :param includes: the files of shared functions and names to send in
        front of it, such as ``("common",)``.
    """

    def __init__(self, name: str, *, includes: t.Sequence[str] = ()) -> None:
        #: The script's file name, without ``.lua``.
        self.name = name
        #: The Lua source.
        self.source = "\n".join(
            (resources.files(__package__) / "lua" / f"{file}.lua").read_text()
            for file in (*includes, name)
        )
        #: The SHA1 digest ``EVALSHA`` names the script by.
        self.sha = sha1(self.source)
        self._sent = False

    def load(self, client: RedisClient) -> None:
        """Load the script into the server with ``SCRIPT LOAD``."""
        client.script_load(self.source)
        self._sent = True

    def __call__(
        self, client: RedisClient, keys: t.Sequence[str], args: t.Sequence[t.Any]
    ) -> t.Any:
        """Run the script with ``keys`` and ``args`` and return its reply."""
        if self._sent:
            try:
                return client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        reply = client.eval(self.source, len(keys), *keys, *args)
        self._sent = True
        return reply
