"""The ``flask relay-session`` operator commands.

::

    $ flask relay-session ping          # store reachable? scripts loaded?
    $ flask relay-session count         # live sessions and locks (SCAN)
    $ flask relay-session show SID      # the stored document and its TTL
    $ flask relay-session delete SID    # log a session out
    $ flask relay-session unlock SID    # free a lock left by a stuck request

``SID`` is the 64 hex digit session id, or a whole session cookie value
(the id is the part before the first ``.``). The commands work on the store
the app is configured with: Redis, in either layout, or the memory store,
which lives in the serving process and so is always empty for a command run
in another process.

Exit codes: ``0`` done, ``1`` no such session or lock, ``2`` usage error
(bad arguments, the extension not installed), ``3`` the store cannot be
reached, ``4`` the app's store is a custom store these commands cannot
inspect.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import json
import re
import typing as t
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

import click
from flask import current_app
from flask.cli import AppGroup
from redis.exceptions import RedisError

from .errors import SessionStoreError
from .stores.base import MAX_REDIRECT_DEPTH
from .stores.layouts import REDIRECT
from .stores.memory import MemorySessionStore
from .stores.redis import RedisSessionStore
from .stores.scripts import text

#: The command finished.
EXIT_OK = 0
#: The session or lock does not exist.
EXIT_NOT_FOUND = 1
#: Bad arguments, or the app does not use the extension (click's own code).
EXIT_USAGE = 2
#: The store cannot be reached.
EXIT_UNREACHABLE = 3
#: The app's store is neither a Redis nor a memory store.
EXIT_UNSUPPORTED = 4

_SID = re.compile(r"[0-9a-f]{64}")


class StoreUnreachable(click.ClickException):
    """The store did not answer; exits with :data:`EXIT_UNREACHABLE`."""

    exit_code = EXIT_UNREACHABLE


class UnsupportedStore(click.ClickException):
    """The store cannot be inspected; exits with :data:`EXIT_UNSUPPORTED`."""

    exit_code = EXIT_UNSUPPORTED


@dataclass
class Record:
    """What :meth:`Inspector.show` found under a session id.

    :param key: where it is stored, for Redis.
    :param document: the stored document as JSON values: ``{"data": ...,
        "meta": ...}``.
    :param ttl: the remaining lifetime in milliseconds, ``None`` without one.
    :param redirect_to: the id a rotated-away id leads to.
    :param lock_ttl: the remaining lifetime of the session's lock in
        milliseconds, ``None`` when nobody holds it.
    """

    key: str | None
    document: dict[str, t.Any]
    ttl: int | None
    redirect_to: str | None = None
    lock_ttl: int | None = None


class Inspector:
    """The store operations of the commands, for one kind of store."""

    def ping(self) -> list[str]:
        """Check the store and return lines that describe it."""
        raise NotImplementedError

    def count(self, progress: t.Callable[[int, int], None]) -> tuple[int, int]:
        """Return the number of sessions and of locks.

        ``progress(matched, estimate)`` is called now and then while
        counting goes on.
        """
        raise NotImplementedError

    def show(self, sid: str) -> Record | None:
        """Return what is stored under ``sid``, or ``None``."""
        raise NotImplementedError

    def delete(self, sid: str) -> bool:
        """Delete the session ``sid``; return whether it existed."""
        raise NotImplementedError

    def unlock(self, sid: str) -> bool:
        """Delete the lock of ``sid`` whoever holds it; return whether it
        existed.
        """
        raise NotImplementedError


def _json_ortext(value: bytes | str) -> t.Any:
    """Decode a stored JSON value; show what cannot be decoded as text."""
    try:
        return json.loads(value)
    except ValueError:
        return text(value)


def _glob_escape(text: str) -> str:
    """Escape the characters that are special in a ``SCAN MATCH`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisInspector(Inspector):
    """The operations on a :class:`RedisSessionStore`, with plain commands.

    Works on a standalone server, a Sentinel master and a cluster, in both
    layouts: ``show`` asks the key's ``TYPE``.

    :param count_hint: the ``COUNT`` hint of each ``SCAN`` call.
    :param progress_every: call ``progress`` after this many matching keys.
    """

    def __init__(
        self,
        store: RedisSessionStore,
        *,
        count_hint: int = 1000,
        progress_every: int = 10_000,
    ) -> None:
        self.store = store
        self.client: t.Any = store.redis
        self.count_hint = count_hint
        self.progress_every = progress_every

    def _is_cluster(self) -> bool:
        return hasattr(self.client, "get_primaries")

    def ping(self) -> list[str]:
        store = self.store
        lines = [
            f"store: Redis, {getattr(store, 'layout', 'json')} layout, sessions"
            f" {store.session_key('<sid>')}, locks {store.lock_key('<sid>')}"
        ]
        self.client.ping()
        for node, version in self._versions():
            lines.append(f"server: Redis {version} at {node}")
        scripts = tuple(store.scripts)
        cached = sum(
            bool(known)
            for known in self.client.script_exists(*(s.sha for s in scripts))
        )
        store.load_scripts()
        lines.append(
            f"scripts: {len(scripts)} loaded with SCRIPT LOAD"
            f" (already cached: {cached})"
        )
        return lines

    def _versions(self) -> list[tuple[str, str]]:
        if self._is_cluster():
            return [
                (
                    f"{node.host}:{node.port} (cluster primary)",
                    self.client.info("server", target_nodes=node)["redis_version"],
                )
                for node in self.client.get_primaries()
            ]
        pool = self.client.connection_pool
        kwargs = pool.connection_kwargs
        if hasattr(pool, "get_master_address"):
            host, port = pool.get_master_address()
            where = f"{host}:{port} (Sentinel master {pool.service_name!r})"
        elif "path" in kwargs:
            where = kwargs["path"]
        else:
            where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        info = self.client.info("server")
        return [(f"{where} db {kwargs.get('db', 0)}", info["redis_version"])]

    def _dbsize(self) -> int:
        if self._is_cluster():
            return int(self.client.dbsize(target_nodes=self.client.PRIMARIES))
        return int(self.client.dbsize())

    def count(self, progress: t.Callable[[int, int], None]) -> tuple[int, int]:
        store = self.store
        session = re.compile(re.escape(store.prefix) + r"\{[^{}]+\}")
        lock = re.compile(re.escape(store.prefix + store.lock_prefix) + r"\{[^{}]+\}")
        estimate = self._dbsize()
        sessions = locks = matched = 0
        # One pass over the prefix: on a cluster, scan_iter walks every
        # primary in turn.
        for raw in self.client.scan_iter(
            match=_glob_escape(store.prefix) + "*", count=self.count_hint
        ):
            key = text(raw)
            if lock.fullmatch(key):
                locks += 1
            elif session.fullmatch(key):
                sessions += 1
            matched += 1
            if self.progress_every and matched % self.progress_every == 0:
                progress(matched, estimate)
        return sessions, locks

    def show(self, sid: str) -> Record | None:
        client = self.client
        key = self.store.session_key(sid)
        kind = text(client.type(key))
        if kind == "string":
            raw = client.get(key)
            if raw is None:
                return None
            document = _json_ortext(raw)
            if not isinstance(document, dict):
                document = {"unreadable": document}
            meta = document.get("meta")
            redirect_to = None
            if document.get("data") is None and isinstance(meta, dict):
                redirect_to = meta.get("redirectTo")
        elif kind == "hash":
            fields = {text(k): v for k, v in client.hgetall(key).items()}
            if not fields:
                return None
            if REDIRECT in fields:
                redirect_to = text(fields[REDIRECT])
                document = {"data": None, "meta": {"redirectTo": redirect_to}}
            else:
                redirect_to = None
                document = _hash_document(fields)
        elif kind == "none":
            return None
        else:
            document = {"unexpected type": kind}
            redirect_to = None
        return Record(
            key=key,
            document=document,
            ttl=_pttl(client.pttl(key)),
            redirect_to=redirect_to,
            lock_ttl=_pttl(client.pttl(self.store.lock_key(sid))),
        )

    def delete(self, sid: str) -> bool:
        return bool(self.client.delete(self.store.session_key(sid)))

    def unlock(self, sid: str) -> bool:
        return bool(self.client.delete(self.store.lock_key(sid)))


def _pttl(value: int) -> int | None:
    """``PTTL``'s answer, with ``None`` for no key (-2) or no expiry (-1)."""
    return None if value < 0 else int(value)


def _hash_document(fields: dict[str, bytes | str]) -> dict[str, t.Any]:
    """Show a session hash like the JSON layout's document.

    Data fields are top-level keys (a stored key that starts with a space
    has a second one, or ``~``); meta fields are one space and a name.
    """
    data: dict[str, t.Any] = {}
    meta: dict[str, t.Any] = {}
    for name, value in sorted(fields.items()):
        if name[:1] == " " and name[1:2] not in (" ", "~"):
            meta[name[1:]] = _json_ortext(value)
        else:
            data[name] = _json_ortext(value)
    return {"data": data, "meta": meta}


class MemoryInspector(Inspector):
    """The operations on a :class:`MemorySessionStore`.

    The memory store has no public listing, so this reads its entries under
    its own lock, the way its methods do.
    """

    def __init__(self, store: MemorySessionStore) -> None:
        self.store = store

    def ping(self) -> list[str]:
        return [
            "store: the in-process memory store (MemorySessionStore). Sessions"
            " live in the memory of the process serving the app; a command run"
            " in another process sees only its own, empty store.",
            "scripts: none needed",
        ]

    def count(self, progress: t.Callable[[int, int], None]) -> tuple[int, int]:
        store = self.store
        with store._mutex:
            sessions = sum(
                store._entry(sid) is not None for sid in list(store._sessions)
            )
            locks = sum(store._holder(sid) is not None for sid in list(store._locks))
        return sessions, locks

    def show(self, sid: str) -> Record | None:
        store = self.store
        with store._mutex:
            entry = store._entry(sid)
            if entry is None:
                return None
            now = store._now()
            lock = store._locks.get(sid) if store._holder(sid) is not None else None
            if entry.redirect_to is not None:
                document: dict[str, t.Any] = {
                    "data": None,
                    "meta": {"redirectTo": entry.redirect_to},
                }
            else:
                document = {
                    "data": {
                        key: _json_ortext(value)
                        for key, value in sorted(entry.fields.items())
                    },
                    "meta": {
                        "id": sid,
                        "createdAt": entry.created_at,
                        "expiresAt": entry.expires_at,
                    },
                }
            return Record(
                key=None,
                document=document,
                ttl=entry.expires_at - now,
                redirect_to=entry.redirect_to,
                lock_ttl=None if lock is None else lock[1] - now,
            )

    def delete(self, sid: str) -> bool:
        store = self.store
        with store._mutex:
            if store._entry(sid) is None:
                return False
            del store._sessions[sid]
            return True

    def unlock(self, sid: str) -> bool:
        store = self.store
        with store._mutex:
            if store._holder(sid) is None:
                return False
            del store._locks[sid]
            return True


def get_inspector(**options: t.Any) -> Inspector:
    """Return the inspector for the current app's store.

    :raises click.UsageError: the app does not use the extension.
    :raises UnsupportedStore: the store is a custom one.
    """
    state = current_app.extensions.get("relay_session")
    if state is None:
        raise click.UsageError(
            "flask-relay-session is not set up for this app: call"
            " RelaySession(app) or relay.init_app(app)"
        )
    store = state.store
    if isinstance(store, RedisSessionStore):
        return RedisInspector(store, **options)
    if isinstance(store, MemorySessionStore):
        return MemoryInspector(store)
    raise UnsupportedStore(
        "these commands work on RedisSessionStore and MemorySessionStore;"
        f" this app uses {type(store).__module__}.{type(store).__qualname__}"
    )


@contextlib.contextmanager
def store_errors() -> t.Iterator[None]:
    """Turn the store's failures into :class:`StoreUnreachable`."""
    try:
        yield
    except (RedisError, SessionStoreError) as error:
        raise StoreUnreachable(
            f"the session store cannot be reached: {type(error).__name__}: {error}"
        ) from error


def _parse_sid(ctx: click.Context, param: click.Parameter, value: str) -> str:
    sid = value.strip().split(".", 1)[0].lower()
    if not _SID.fullmatch(sid):
        raise click.BadParameter(
            "expected a session id (64 hex digits) or a session cookie value",
            ctx,
            param,
        )
    return sid


def _duration(ms: int) -> str:
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f} h"
    if ms >= 60_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 1000:.1f} s"


def _expiry(ttl: int | None) -> str:
    if ttl is None:
        return "none (the key never expires)"
    at = datetime.now(timezone.utc).timestamp() + ttl / 1000
    moment = datetime.fromtimestamp(at, timezone.utc)
    return f"{_duration(ttl)} (until {moment:%Y-%m-%d %H:%M:%S} UTC)"


def _not_found(message: str) -> t.NoReturn:
    click.echo(message, err=True)
    raise click.exceptions.Exit(EXIT_NOT_FOUND)


cli = AppGroup(
    "relay-session",
    help="Inspect and manage the sessions of flask-relay-session.",
)

sid_argument = click.argument("sid", callback=_parse_sid)


@cli.command("ping")
def ping_command() -> None:
    """Check that the store answers, and load the Lua scripts into it.

    Shows the server version of every Redis node used.
    """
    inspector = get_inspector()
    with store_errors():
        lines = inspector.ping()
    for line in lines:
        click.echo(line)
    click.echo("ok")


@cli.command("count")
@click.option(
    "--count-hint",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="COUNT hint of each SCAN call: keys examined per round trip.",
)
@click.option(
    "--progress-every",
    type=click.IntRange(0),
    default=10_000,
    show_default=True,
    help="Report progress on stderr after this many matching keys; 0: never.",
)
def count_command(count_hint: int, progress_every: int) -> None:
    """Count the live sessions and the held locks.

    Walks the keys with incremental SCAN (every primary of a cluster),
    never KEYS, so Redis keeps serving requests. Ids rotated away that still
    redirect during their grace period count as sessions.
    """
    inspector = get_inspector(count_hint=count_hint, progress_every=progress_every)

    def progress(matched: int, estimate: int) -> None:
        click.echo(
            f"… {matched} matching keys so far (the database holds about"
            f" {estimate} keys)",
            err=True,
        )

    with store_errors():
        sessions, locks = inspector.count(progress)
    click.echo(f"sessions: {sessions}")
    click.echo(f"locks: {locks}")


@cli.command("show")
@sid_argument
@click.option(
    "--follow",
    is_flag=True,
    help="For an id rotated away, show the session its redirect leads to.",
)
def show_command(sid: str, follow: bool) -> None:
    """Show the stored session SID as pretty JSON, with its TTL and lock.

    The document is shown as stored: values Redis's cjson would alter are
    in their tagged form (one-key objects such as {" t": [...]}).
    """
    inspector = get_inspector()
    with store_errors():
        record = inspector.show(sid)
        hops = 0
        while record is not None and record.redirect_to is not None and follow:
            if hops == MAX_REDIRECT_DEPTH:
                break
            hops += 1
            click.echo(f"session {sid} redirects to {record.redirect_to}")
            sid = record.redirect_to
            record = inspector.show(sid)
    if record is None:
        if hops:
            _not_found(f"session {sid} does not exist: the rotation chain is broken")
        _not_found(f"session {sid} does not exist (expired, deleted or never stored)")
    if record.redirect_to is not None:
        click.echo(
            f"session {sid} was rotated away: it redirects to"
            f" {record.redirect_to} (show it with --follow)"
        )
        click.echo(f"grace period left: {_expiry(record.ttl)}")
    else:
        click.echo(f"session {sid}")
        click.echo(f"expires in: {_expiry(record.ttl)}")
    if record.key is not None:
        click.echo(f"key: {record.key}")
    if record.lock_ttl is None:
        click.echo("lock: free")
    else:
        click.echo(f"lock: held, expires in {_duration(record.lock_ttl)}")
    click.echo(
        json.dumps(record.document, indent=2, sort_keys=True, ensure_ascii=False)
    )


@cli.command("delete")
@sid_argument
def delete_command(sid: str) -> None:
    """Delete the session SID: its cookie no longer logs anybody in.

    Deleting an id rotated away deletes only its redirect; old cookies that
    still lead to the session through it then get the broken-chain answer.
    """
    inspector = get_inspector()
    with store_errors():
        deleted = inspector.delete(sid)
    if not deleted:
        _not_found(f"session {sid} does not exist; nothing deleted")
    click.echo(f"deleted session {sid}")


@cli.command("unlock")
@sid_argument
def unlock_command(sid: str) -> None:
    """Release the lock of session SID, whoever holds it.

    For a lock left by a stuck request, before its RELAY_SESSION_LOCK_TTL
    runs out. A request that still holds it loses it: its next save fails
    with SessionLockError (409) instead of writing.
    """
    inspector = get_inspector()
    with store_errors():
        released = inspector.unlock(sid)
    if not released:
        _not_found(f"session {sid} is not locked")
    click.echo(f"released the lock of session {sid}")
