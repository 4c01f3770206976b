"""The operator's view of the Redis store: :class:`RedisAdminMixin`, the
:class:`~flask_relay_session.stores.SessionStoreAdmin` methods of
:class:`~flask_relay_session.RedisSessionStore`, for the ``flask
relay-session`` commands.
"""

from __future__ import annotations

import re
import typing as t

from .base import EntryKind
from .base import SessionRecord
from .layouts import LAYOUTS_BY_TYPE
from .layouts import text
from .redis_common import RedisClient
from .redis_common import redis_errors
from .scripts import LuaScript


def _glob_escape(pattern: str) -> str:
    """Escape the characters that are special in a ``SCAN MATCH`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", pattern)


def _pttl(value: int) -> int | None:
    """``PTTL``'s answer, with ``None`` for no key (-2) or no expiry (-1)."""
    return None if value < 0 else int(value)


class RedisAdminMixin:
    """The operator's view of :class:`~flask_relay_session.RedisSessionStore`,
    which provides the members declared here.
    """

    redis: RedisClient
    prefix: str
    lock_prefix: str
    layout: str

    @property
    def scripts(self) -> tuple[LuaScript, ...]:
        """The Lua scripts this store runs."""
        raise NotImplementedError

    def load_scripts(self) -> None:
        """Load every script into the server with ``SCRIPT LOAD``."""
        raise NotImplementedError

    def session_key(self, sid: str) -> str:
        """Return the key of the session ``sid``."""
        raise NotImplementedError

    def lock_key(self, sid: str) -> str:
        """Return the key of the lock of the session ``sid``."""
        raise NotImplementedError

    def _execute(self, *args: t.Any) -> t.Any:
        raise NotImplementedError

    def ping(self) -> list[str]:
        """Ping the server, name the version of every Redis node used, and
        load the scripts with ``SCRIPT LOAD``.
        """
        lines = [
            f"store: Redis, {self.layout} layout, sessions"
            f" {self.session_key('<sid>')}, locks {self.lock_key('<sid>')}"
        ]
        with redis_errors():
            self.redis.ping()
            for node, version in self._servers():
                lines.append(f"server: Redis {version} at {node}")
            known = self.redis.script_exists(*(s.sha for s in self.scripts))
        self.load_scripts()
        lines.append(
            f"scripts: {len(self.scripts)} loaded with SCRIPT LOAD"
            f" (already cached: {sum(map(bool, known))})"
        )
        return lines

    def _servers(self) -> list[tuple[str, str]]:
        """Return where each Redis node used is, and its version."""
        client: t.Any = self.redis
        if hasattr(client, "get_primaries"):
            return [
                (
                    f"{node.host}:{node.port} (cluster primary)",
                    client.info("server", target_nodes=node)["redis_version"],
                )
                for node in client.get_primaries()
            ]
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if hasattr(pool, "get_master_address"):
            host, port = pool.get_master_address()
            where = f"{host}:{port} (Sentinel master {pool.service_name!r})"
        elif "path" in kwargs:
            where = kwargs["path"]
        else:
            where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        info = client.info("server")
        return [(f"{where} db {kwargs.get('db', 0)}", info["redis_version"])]

    def scan(self, *, batch: int = 1000) -> t.Iterator[tuple[EntryKind, str]]:
        """Walk the keys under the prefix with incremental ``SCAN`` (every
        primary of a cluster), never ``KEYS``, so that Redis keeps serving.

        :param batch: the ``COUNT`` hint of each ``SCAN`` call.
        """
        # The sid pattern is that of session_key and lock_key.
        session = re.compile(re.escape(self.prefix) + r"\{([^{}]+)\}")
        lock = re.compile(re.escape(self.prefix + self.lock_prefix) + r"\{([^{}]+)\}")
        with redis_errors():
            for raw in self.redis.scan_iter(
                match=_glob_escape(self.prefix) + "*", count=batch
            ):
                key = text(raw)
                if found := lock.fullmatch(key):
                    yield "lock", found[1]
                elif found := session.fullmatch(key):
                    yield "session", found[1]

    def size_hint(self) -> int:
        """Return the number of keys in the database (``DBSIZE``), on every
        primary of a cluster.
        """
        client: t.Any = self.redis
        with redis_errors():
            if hasattr(client, "get_primaries"):
                return int(client.dbsize(target_nodes=client.PRIMARIES))
            return int(client.dbsize())

    def show(self, sid: str) -> SessionRecord | None:
        """Read the key of ``sid`` as its ``TYPE`` says, in either layout,
        with its ``PTTL`` and its lock's.
        """
        key = self.session_key(sid)
        with redis_errors():
            kind = text(self.redis.type(key))
            if kind == "none":
                return None
            layout = LAYOUTS_BY_TYPE.get(kind)
            if layout is None:
                document: dict[str, t.Any] = {"unexpected type": kind}
                redirect_to = None
            else:
                snapshot = self._execute(layout.read_command, key)
                if layout.missing(snapshot):
                    return None
                document, redirect_to = layout.show(snapshot)
            ttl = self.redis.pttl(key)
            lock_ttl = self.redis.pttl(self.lock_key(sid))
        return SessionRecord(
            document=document,
            ttl=_pttl(ttl),
            redirect_to=redirect_to,
            lock_ttl=_pttl(lock_ttl),
            key=key,
        )

    def break_lock(self, sid: str) -> bool:
        """Delete the lock key, whoever holds it."""
        with redis_errors():
            return bool(self.redis.delete(self.lock_key(sid)))
