"""Moving every session Flask-Session stored at once: what
``flask relay-session migrate-flask-session`` runs.

:func:`move_all` walks Flask-Session's keys with incremental ``SCAN`` and
moves each session as its first request would
(:meth:`~flask_relay_session.migration.FlaskSessionMigration.move`), so it is
safe while the app serves requests, safe to interrupt and safe to run again.
The markers it leaves live as long as their sessions: no browser holds the
new cookie yet, and each Flask-Session cookie must still find its session
on first use.
"""

from __future__ import annotations

import re
import typing as t
from collections.abc import Iterator

from ..stores.redis_common import redis_errors
from .formats import SID
from .outcome import Move

if t.TYPE_CHECKING:
    from .mover import FlaskSessionMigration


def size_hint(migration: FlaskSessionMigration) -> int:
    """Return the number of keys in Flask-Session's Redis database
    (``DBSIZE``, on every primary of a cluster): the scale of what
    :func:`move_all` walks, to report progress against.
    """
    client: t.Any = migration.redis
    with redis_errors():
        if hasattr(client, "get_primaries"):
            return int(client.dbsize(target_nodes=client.PRIMARIES))
        return int(client.dbsize())


def move_all(
    migration: FlaskSessionMigration,
    *,
    lifetime: int,
    now: t.Callable[[], int],
    batch: int = 1000,
    dry_run: bool = False,
) -> Iterator[Move]:
    """Move every session Flask-Session stored, and yield what became of
    each.

    Walks ``<SESSION_KEY_PREFIX>*`` with incremental ``SCAN`` (every primary
    of a cluster), never ``KEYS``, and reads each batch of keys in one round
    trip. Keys whose rest is no Flask-Session sid (this extension's keys
    hold braces) are passed over.

    :param lifetime: ``PERMANENT_SESSION_LIFETIME`` in milliseconds.
    :param now: returns the current time in milliseconds.
    :param batch: the ``COUNT`` hint of each ``SCAN`` call, and how many
        keys are read at once.
    :param dry_run: say what would happen, and write nothing.
    :raises SessionStoreError: Redis failed.
    """
    prefix = migration.settings.key_prefix
    pending: list[str] = []
    with redis_errors():
        keys = migration.redis.scan_iter(match=_glob_escape(prefix) + "*", count=batch)
        for raw in keys:
            key = raw.decode() if isinstance(raw, bytes) else raw
            if key.startswith(prefix) and SID.fullmatch(key[len(prefix) :]):
                pending.append(key[len(prefix) :])
            if len(pending) >= batch:
                yield from _move_batch(migration, pending, lifetime, now, dry_run)
                pending = []
    yield from _move_batch(migration, pending, lifetime, now, dry_run)


def _move_batch(
    migration: FlaskSessionMigration,
    sids: list[str],
    lifetime: int,
    now: t.Callable[[], int],
    dry_run: bool,
) -> Iterator[Move]:
    """Read the keys of ``sids`` in one round trip, then move each."""
    if not sids:
        return
    for sid, snapshot in zip(sids, migration.read(sids), strict=True):
        yield migration.move(
            sid,
            snapshot,
            lifetime=lifetime,
            now=now,
            marker_ttl=None,
            dry_run=dry_run,
        )


def _glob_escape(pattern: str) -> str:
    """Escape the characters that are special in a ``SCAN MATCH`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", pattern)
