"""Moving a session Flask-Session stored into this extension's store.

:meth:`FlaskSessionMigration.move` takes three steps, in this order:

1. **Read** the Flask-Session key, ``<SESSION_KEY_PREFIX><sid>``: one
   pipeline of ``GET`` and ``PTTL``.
2. **Create** the session under a fresh id, with the decoded data and the
   remaining TTL, through the store's own
   :meth:`~flask_relay_session.SessionStore.merge` (``create=True``): the
   JSON and hash layouts and the memory store alike.
3. **Swap** the Flask-Session key for a :class:`Marker` naming the new id,
   with one script (``lua/flask_session_swap.lua``) that does it only if the
   key still holds the very bytes read in step 1.

If the swap finds another mover's marker (a concurrent request with the same
cookie, or the bulk command), the session created in step 2 is deleted and
the marker is followed: however many requests race, one session of this
extension's results, and every one of them works on it. If it finds the
key changed in any other way (Flask-Session still serving it), all starts
again from step 1.

On Redis Cluster the two keys are in different slots, so the steps cannot
be one transaction; their order is what keeps everything. Until step 3 the
Flask-Session key holds the session untouched, so a crash in between loses
nothing: the next request moves it again, and the copy of step 2, which no
cookie and no marker names, expires with its TTL. A marker is never written
before the session it names exists, so nothing ever follows one to nothing.

A request moves a session on its first use (:meth:`open_session`); the
marker then lives for the grace period, for requests already in flight with
the old cookie. The bulk move (:mod:`~flask_relay_session.migration.bulk`)
leaves markers that live as long as the session, since no browser holds the
new cookie yet; the first request to follow one shortens it to the grace
period.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing as t
from collections.abc import Sequence

import redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError

from ..cookies import new_session_id
from ..errors import SessionConfigError
from ..errors import SessionSerializationError
from ..errors import SessionStoreError
from ..stores.base import Change
from ..stores.base import MergeStatus
from ..stores.base import SessionStore
from ..stores.redis_common import redis_errors
from ..stores.scripts import LuaScript
from .formats import Decoder
from .formats import TooLarge
from .formats import Unreadable
from .formats import cookie_sid
from .formats import to_changes
from .outcome import MARKER_PREFIX
from .outcome import Marker
from .outcome import Move
from .outcome import Outcome
from .outcome import Snapshot

if t.TYPE_CHECKING:
    from flask import Flask

    from ..config import MigrationSettings
    from ..policy import SessionPolicy
    from ..session import Session

logger = logging.getLogger("flask_relay_session")

#: How often a move starts again when the Flask-Session key changes under
#: it, before it gives up.
MOVE_ATTEMPTS = 3

#: A Flask-Session value this many times longer than
#: ``RELAY_SESSION_MAX_SIZE`` is too large without being decoded: no value
#: grows this much smaller as tagged JSON, whose size leaves out the braces,
#: quotes, colons and commas of the top level.
_SIZE_FACTOR = 8

#: How many sessions the warnings about sessions that cannot move remember,
#: so that each is logged once.
_LOGGED_LIMIT = 10_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class _Unreachable:
    """A store that fails every call with the error met while moving a
    session, so that the request is answered as any request whose store
    failed: ``503`` once it uses its session, nothing written, and the
    Flask-Session cookie kept for the next request to try again.
    """

    def __init__(self, error: SessionStoreError) -> None:
        self._message = str(error)

    def __getattr__(self, name: str) -> t.Callable[..., t.NoReturn]:
        def fail(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
            raise SessionStoreError(self._message)

        return fail


class FlaskSessionMigration:
    """Moves the sessions Flask-Session stored on Redis into the store of
    this extension, on their first request or all at once.

    Built by :meth:`~flask_relay_session.RelaySession.init_app` when
    ``RELAY_SESSION_MIGRATE_FLASK_SESSION`` is on, and kept as the
    interface's ``migration``.

    :param settings: where and how Flask-Session stored its sessions.
    :param client: the redis-py client of Flask-Session's Redis.
    :param store: the store sessions move to.
    :param max_size: ``RELAY_SESSION_MAX_SIZE``.
    :raises SessionConfigError: :mod:`msgspec` is missing.
    """

    def __init__(
        self,
        settings: MigrationSettings,
        client: t.Any,
        store: SessionStore,
        *,
        max_size: int,
    ) -> None:
        #: Where and how Flask-Session stored its sessions.
        self.settings = settings
        #: The client of Flask-Session's Redis.
        self.redis = client
        #: The store sessions move to.
        self.store = store
        self.max_size = max_size
        self._decoder = Decoder(settings.serialization_format)
        self._swap = LuaScript("flask_session_swap")
        self._swap_sent = False
        self._logged: set[str] = set()
        self._logged_lock = threading.Lock()

    @classmethod
    def for_app(
        cls, settings: MigrationSettings, store: SessionStore, *, max_size: int
    ) -> FlaskSessionMigration:
        """Return the migration for an app's settings and store.

        Flask-Session's sessions are read with ``settings.redis``, a client
        or a URL, or else with the client of ``store``.

        :raises SessionConfigError: there is no Redis client to read them
            with, or :mod:`msgspec` is missing.
        """
        client = settings.redis
        if isinstance(client, str):
            try:
                client = redis.Redis.from_url(client)
            except ValueError as error:
                raise SessionConfigError(
                    f"SESSION_REDIS is not a valid Redis URL: {error}"
                ) from error
        if client is None:
            client = getattr(store, "redis", None)
        if client is None:
            raise SessionConfigError(
                "RELAY_SESSION_MIGRATE_FLASK_SESSION needs the Redis that"
                " Flask-Session stored its sessions on: set SESSION_REDIS (or"
                " RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS), or keep sessions"
                " in Redis with RELAY_SESSION_REDIS"
            )
        return cls(settings, client, store, max_size=max_size)

    # -- keys and cookies ------------------------------------------------

    def key(self, sid: str) -> str:
        """Return the Flask-Session key of the sid ``sid``."""
        return self.settings.key_prefix + sid

    def cookie_sid(self, app: Flask, value: str) -> str | None:
        """Return the Flask-Session sid of the cookie ``value``, or ``None``
        for a cookie that is not a well-formed (and, with
        ``SESSION_USE_SIGNER``, correctly signed) Flask-Session cookie.

        Signatures made with ``SECRET_KEY`` or any of
        ``SECRET_KEY_FALLBACKS`` are accepted.
        """
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key)
        return cookie_sid(
            value,
            use_signer=self.settings.use_signer,
            secret_keys=[key for key in keys if key],
        )

    # -- a request's first use ------------------------------------------

    def open_session(
        self,
        app: Flask,
        value: str,
        policy: SessionPolicy,
        session_class: type[Session],
    ) -> Session | None:
        """Return the session of a request whose cookie ``value`` is not
        this extension's, or ``None`` when it is no Flask-Session cookie
        either (then nothing was asked of Redis).

        A moved session (or one a marker leads to) is returned under its new
        id, and the response sets this extension's cookie. One that cannot
        move (missing, pickled, undecodable, too large) gives a new, empty
        session, and the response drops the Flask-Session cookie, so that
        the next request does not look it up again. If Redis fails, the
        request goes on as one whose store is down: ``503`` once it uses
        the session, and the Flask-Session cookie is kept.
        """
        sid = self.cookie_sid(app, value)
        if sid is None:
            return None
        try:
            (snapshot,) = self.read([sid])
            move = self.move(
                sid,
                snapshot,
                lifetime=policy.lifetime,
                now=policy.now,
                marker_ttl=self.settings.grace_period,
            )
        except SessionStoreError as error:
            logger.error(
                "Flask-Session session %s… could not be moved: %s", sid[:8], error
            )
            broken = dataclasses.replace(
                policy, store=t.cast(SessionStore, _Unreachable(error))
            )
            return session_class(broken, new_session_id())
        if move.marker is None:
            self._log_skipped(move)
            session = session_class(policy)
        else:
            if move.outcome is Outcome.MOVED:
                logger.debug(
                    "Flask-Session session %s… moved to session %s…",
                    sid[:8],
                    move.marker.sid[:8],
                )
            marker = move.marker
            session = session_class(
                policy,
                marker.sid,
                permanent=marker.permanent,
                expires_at=marker.expires_at,
            )
        # Set this extension's cookie, or drop Flask-Session's.
        session.cookie_outdated = True
        return session

    def _log_skipped(self, move: Move) -> None:
        """Log a session that could not move, once per session."""
        if move.outcome is Outcome.GONE:
            logger.debug("Flask-Session session %s… does not exist", move.sid[:8])
            return
        with self._logged_lock:
            if move.sid in self._logged:
                return
            if len(self._logged) >= _LOGGED_LIMIT:
                self._logged.clear()
            self._logged.add(move.sid)
        logger.warning(
            "Flask-Session session %s… cannot move (%s): it is %s; it is left in"
            " place and the request goes on with a new session",
            move.sid[:8],
            move.outcome.value,
            move.reason,
        )

    # -- the steps -------------------------------------------------------

    def read(self, sids: Sequence[str]) -> list[Snapshot]:
        """Read the Flask-Session keys of ``sids``: step 1, one round trip
        for all of them (a pipeline of ``GET`` and ``PTTL`` each).

        The values are read as bytes, whatever the client's
        ``decode_responses``.
        """
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for sid in sids:
                key = self.key(sid)
                pipe.execute_command("GET", key, NEVER_DECODE=True)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
        snapshots = []
        for raw, ttl in zip(replies[::2], replies[1::2], strict=True):
            for reply in (raw, ttl):
                if isinstance(reply, RedisError) and not str(reply).startswith(
                    "WRONGTYPE"
                ):
                    raise SessionStoreError(
                        f"the session store failed: {type(reply).__name__}:"
                        f" {reply}. Check that Redis is running and reachable."
                    ) from reply
            remaining = int(ttl) if isinstance(ttl, int) and ttl >= 0 else None
            if isinstance(raw, RedisError):
                snapshots.append(Snapshot(None, remaining, foreign=True))
            elif ttl == -2:
                # Expired between the GET and the PTTL.
                snapshots.append(Snapshot(None, None))
            else:
                snapshots.append(Snapshot(raw, remaining))
        return snapshots

    def move(
        self,
        sid: str,
        snapshot: Snapshot,
        *,
        lifetime: int,
        now: t.Callable[[], int],
        marker_ttl: int | None,
        dry_run: bool = False,
    ) -> Move:
        """Move the Flask-Session session ``sid``, read as ``snapshot``
        (steps 2 and 3), or follow the marker its key holds.

        :param lifetime: ``PERMANENT_SESSION_LIFETIME`` in milliseconds: the
            longest the new session lives, whatever the old TTL.
        :param now: returns the current time in milliseconds.
        :param marker_ttl: how long the marker lives, in milliseconds; a
            marker found that would live longer is shortened to it. ``None``:
            as long as the session (the bulk move).
        :param dry_run: say what would happen, and write nothing.
        :raises SessionStoreError: Redis failed, or the key kept changing
            under the move.
        """
        key = self.key(sid)
        for _ in range(MOVE_ATTEMPTS):
            raw = snapshot.raw
            if snapshot.foreign:
                reason = "a Redis key that is not a string"
                return Move(sid, Outcome.UNDECODABLE, reason=reason)
            if raw is None:
                return Move(sid, Outcome.GONE)
            try:
                marker = Marker.parse(raw)
                if marker is not None:
                    if marker_ttl is not None and not dry_run:
                        if snapshot.ttl is None or snapshot.ttl > marker_ttl:
                            self._run_swap(key, raw, raw, marker_ttl)
                    return Move(sid, Outcome.ALREADY_MOVED, marker)
                if len(raw) > _SIZE_FACTOR * self.max_size:
                    raise TooLarge(f"{len(raw)} bytes as Flask-Session stored it")
                old = self._decoder.decode(raw)
                changes = to_changes(old.data, self.max_size)
            except Unreadable as error:
                outcome = Outcome.PICKLED if error.pickled else Outcome.UNDECODABLE
                return Move(sid, outcome, reason=str(error))
            except TooLarge as error:
                return Move(sid, Outcome.TOO_LARGE, reason=str(error))
            if not changes:
                return Move(
                    sid,
                    Outcome.EMPTY,
                    reason="a session that holds nothing but _permanent",
                )
            if dry_run:
                return Move(sid, Outcome.MOVED)
            ttl = (
                lifetime
                if snapshot.ttl is None
                else max(1, min(snapshot.ttl, lifetime))
            )
            try:
                moved = self._create(
                    changes, ttl=ttl, now=now(), permanent=old.permanent
                )
            except SessionSerializationError:
                # The store measured it larger than to_changes did.
                reason = f"larger than RELAY_SESSION_MAX_SIZE ({self.max_size} bytes)"
                return Move(sid, Outcome.TOO_LARGE, reason=reason)
            reply = self._run_swap(
                key, raw, moved.encode(), ttl if marker_ttl is None else marker_ttl
            )
            status = _text(reply[0])
            if status == "done" or (
                status == "moved" and _bytes(reply[1]) == moved.encode()
            ):
                return Move(sid, Outcome.MOVED, moved)
            self.store.delete(moved.sid)
            if status == "gone":
                return Move(sid, Outcome.GONE)
            if status == "moved":
                # Another mover won: follow its marker.
                try:
                    other = Marker.parse(_bytes(reply[1]))
                except Unreadable as error:
                    return Move(sid, Outcome.UNDECODABLE, reason=str(error))
                if other is None:  # the script sends markers only
                    return Move(
                        sid, Outcome.UNDECODABLE, reason="a reply that is not a marker"
                    )
                return Move(sid, Outcome.ALREADY_MOVED, other)
            (snapshot,) = self.read([sid])
        raise SessionStoreError(
            f"Flask-Session session {sid[:8]}… kept changing while it was being"
            " moved; is Flask-Session still serving this app?"
        )

    def _create(
        self, changes: list[Change], *, ttl: int, now: int, permanent: bool
    ) -> Marker:
        """Create the new session (step 2); return the marker naming it."""
        sid = new_session_id()
        result = self.store.merge(
            sid,
            changes,
            now=now,
            ttl=ttl,
            create=True,
            lock_token=None,
            max_size=self.max_size,
        )
        if result.status is not MergeStatus.DONE:
            raise SessionStoreError(
                f"the store did not create the moved session ({result.status.value})"
            )
        return Marker(sid, permanent, result.expires_at)

    def _run_swap(
        self, key: str, expected: bytes, value: bytes, ttl: int
    ) -> list[t.Any]:
        """Run the swap script (step 3): ``key`` holds ``value`` for ``ttl``
        milliseconds if it still holds ``expected``.
        """
        script = self._swap
        args = (expected, value, ttl, MARKER_PREFIX)
        with redis_errors(script):
            if self._swap_sent:
                try:
                    return t.cast(
                        "list[t.Any]", self.redis.evalsha(script.sha, 1, key, *args)
                    )
                except NoScriptError:
                    pass
            reply = self.redis.eval(script.source, 1, key, *args)
        self._swap_sent = True
        return t.cast("list[t.Any]", reply)
