"""The sessions of users in Redis: :class:`RedisUsersMixin`, the
:class:`~flask_relay_session.stores.users.SessionStoreUsers` methods of
:class:`~flask_relay_session.RedisSessionStore`.

The registry of a user is a sorted set, ``<prefix><user_prefix>{<user
id>}``, of the ids of the sessions bound to that user, each scored with the
time it cannot outlive without registering again (see
:mod:`~flask_relay_session.stores.users` for the rules that keep it). It is
in another cluster slot than the sessions, so it is written in steps of its
own, in the order those rules give.
"""

from __future__ import annotations

import typing as t

from redis.exceptions import NoScriptError
from redis.exceptions import RedisError

from .base import MAX_REDIRECT_DEPTH
from .base import MergeResult
from .base import MergeStatus
from .layouts import Command
from .layouts import Layout
from .layouts import text
from .redis_common import RedisClient
from .redis_common import _foreign
from .redis_common import _now_ms
from .redis_common import _registration_args
from .redis_common import _wrong_type
from .redis_common import logger
from .redis_common import redis_errors
from .scripts import LuaScript
from .scripts import ScriptCall
from .users import Registration
from .users import UserSession


def _is_cluster(client: t.Any) -> bool:
    """Whether ``client`` is a Redis Cluster client."""
    return hasattr(client, "get_primaries")


class RedisUsersMixin:
    """The sessions of users, in the registries of users, of
    :class:`~flask_relay_session.RedisSessionStore`, which provides the
    members declared here.
    """

    redis: RedisClient
    _layout: Layout
    _user_register: LuaScript
    #: The SHA1 digests of the scripts sent to the server already.
    _sent: set[str]

    def session_key(self, sid: str) -> str:
        """Return the key of the session ``sid``."""
        raise NotImplementedError

    def user_key(self, user_id: str) -> str:
        """Return the key of the registry of the user ``user_id``."""
        raise NotImplementedError

    def _send(self, write: Command | ScriptCall) -> t.Any:
        raise NotImplementedError

    def _registry_add(
        self, user_id: str, sid: str, registration: Registration
    ) -> ScriptCall:
        """The script run that adds ``sid`` to the registry of ``user_id``."""
        return self._user_register(
            [self.user_key(user_id)], [registration.seen, sid, registration.until]
        )

    def _in_order(self, *calls: Command | ScriptCall) -> list[t.Any]:
        """Send ``calls`` so that Redis runs them in this order, in one
        round trip; on a cluster one after the other, a round trip each,
        since their keys are in different slots and a cluster pipeline
        keeps no order across nodes. Return their replies.

        On one server the pipeline runs them in order, and a connection that
        fails runs a first part of them: never a later call without the
        earlier ones. A script the server forgot answers ``NOSCRIPT`` there
        without running, so it is sent again with ``EVAL``, and so is every
        call after it, in order, though the pipeline ran them already: every
        write here may run twice.
        """
        if _is_cluster(self.redis):
            return [self._send(call) for call in calls]
        return self._batch(calls, ordered=True)

    def _batch(
        self, calls: t.Sequence[Command | ScriptCall], *, ordered: bool = False
    ) -> list[t.Any]:
        """Send ``calls`` in one pipeline and return their replies.

        A script runs with ``EVALSHA`` once the server was sent it, else
        with ``EVAL``. A call that meets ``NOSCRIPT`` is sent again with
        ``EVAL`` on its own; ``ordered``, so is every call after it.

        :raises SessionStoreError: a call failed.
        """
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                if isinstance(call, Command):
                    pipe.execute_command(*call.args)
                    continue
                script = call.script
                body = script.sha if script.sha in self._sent else script.source
                command = "EVALSHA" if body == script.sha else "EVAL"
                pipe.execute_command(
                    command, body, len(call.keys), *call.keys, *call.args
                )
            replies = pipe.execute(raise_on_error=False)
        for position, (call, reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                again = calls[position:] if ordered else [call]
                replies[position : position + len(again)] = map(self._send, again)
                if ordered:
                    break
            elif isinstance(reply, RedisError):
                with redis_errors(None if isinstance(call, Command) else call.script):
                    raise reply
            elif isinstance(call, ScriptCall):
                self._sent.add(call.script.sha)
        return replies

    def _registered(self, reply: t.Any, user_id: str) -> None:
        """Log a registry that held something else, which was replaced."""
        if reply:
            logger.error(
                "the registry of a user (%s) held something that is not a"
                " sorted set; it was replaced",
                self.user_key(user_id)[:40],
            )

    def register(self, sid: str, registration: Registration) -> MergeResult:
        """Add the session to the registry of ``registration.user_id``, then
        record ``registration`` with the register script, in one round trip
        (two on a cluster); then, when the session moved from another user,
        remove it from that user's registry, one more.
        """
        user_id = registration.user_id
        write = self._layout.register(
            [self.session_key(sid)],
            [registration.seen, *_registration_args(registration)],
        )
        entry, reply = self._in_order(
            self._registry_add(user_id, sid, registration), write
        )
        self._registered(entry, user_id)
        result = self._user_result(sid, reply)
        previous = result.previous_user
        if previous and previous != user_id and registration.bind:
            with redis_errors():
                self.redis.zrem(self.user_key(previous), sid)
        return result

    def unregister(self, sid: str) -> MergeResult:
        """Unbind the session with the register script, then remove it from
        its user's registry: two round trips for a bound session.
        """
        now = _now_ms()
        reply = self._send(
            self._layout.register([self.session_key(sid)], [now, "unbind"])
        )
        result = self._user_result(sid, reply)
        if result.previous_user:
            with redis_errors():
                self.redis.zrem(self.user_key(result.previous_user), sid)
        return result

    def _user_result(self, sid: str, reply: t.Any) -> MergeResult:
        """The result of a register script's ``reply``."""
        status = text(reply[0])
        if status == "done":
            return MergeResult(
                MergeStatus.DONE,
                created_at=int(reply[1]),
                expires_at=int(reply[2]),
                previous_user=text(reply[3]) or None,
            )
        if status == "redirected":
            return MergeResult(MergeStatus.REDIRECTED, redirect_to=text(reply[1]))
        if status == "foreign":
            _foreign(sid, text(reply[1]))
        return MergeResult(MergeStatus.MISSING)

    def registered(self, user_id: str, *, now: int) -> list[str]:
        """Drop the entries past their end and read the rest: one pipeline
        of ``ZREMRANGEBYSCORE`` and ``ZRANGE``.
        """
        key = self.user_key(user_id)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", f"({now}")
            pipe.zrange(key, 0, -1)
            replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if _wrong_type(reply):
                self._registered(True, user_id)
                return []
            if isinstance(reply, RedisError):
                with redis_errors():
                    raise reply
        return [text(sid) for sid in replies[1]]

    def sessions_of(self, user_id: str, *, now: int) -> list[UserSession]:
        """Read the registry (:meth:`registered`), then the meta data and
        ``PTTL`` of every session in it, in one pipeline: two round trips
        however many sessions the user has, and a third that drops the
        entries of those found gone. Only the meta data is read: the end of
        a JSON document (``GETRANGE``), the meta fields of a hash. The entry
        of an id rotated away stays, not listed, while it redirects, so that
        :meth:`end_sessions` deletes the redirect too.
        """
        sids = self.registered(user_id, now=now)
        if not sids:
            return []
        layout = self._layout
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for sid in sids:
                key = self.session_key(sid)
                pipe.execute_command(*layout.meta_command(key).args)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
        found: list[UserSession] = []
        gone: list[str] = []
        for position, sid in enumerate(sids):
            reply, ttl = replies[2 * position : 2 * position + 2]
            if isinstance(reply, RedisError) and not _wrong_type(reply):
                with redis_errors():
                    raise reply
            meta = False if isinstance(reply, RedisError) else layout.meta(reply)
            if meta is True:
                # Rotated away: listed under the new id, while this one
                # leads there for revoke_all.
                continue
            if meta is False or not isinstance(ttl, int) or ttl < 0:
                # Gone, or no session at all: never again one.
                gone.append(sid)
                continue
            created_at, owner = meta
            if owner.user == user_id:
                found.append(
                    UserSession(
                        sid,
                        created_at=created_at,
                        last_seen=owner.seen,
                        expires_at=now + ttl,
                        agent=owner.agent,
                        ip=owner.ip,
                    )
                )
        if gone:
            with redis_errors():
                self.redis.zrem(self.user_key(user_id), *gone)
        return found

    def end_sessions(
        self, user_id: str, sids: t.Sequence[str], *, keep: str | None = None
    ) -> list[str]:
        """Delete each session of ``user_id`` among ``sids`` with the destroy
        script, told the user, following redirects as :meth:`delete` does;
        the first hops in one pipeline, further hops one by one. Then one
        pipeline deletes the redirects of the sessions ended and removes the
        entries of the sessions ended or gone.
        """
        sids = [sid for sid in sids if sid != keep]
        if not sids:
            return []
        destroy = self._layout.destroy
        replies = self._batch(
            [destroy([self.session_key(sid)], [user_id]) for sid in sids]
        )
        ended: list[str] = []
        redirects: list[str] = []
        unlisted: list[str] = []
        for sid, reply in zip(sids, replies, strict=True):
            chain = [sid]
            while text(reply[0]) == "redirected" and len(chain) <= MAX_REDIRECT_DEPTH:
                chain.append(text(reply[1]))
                if chain[-1] == keep:
                    break
                reply = self._send(destroy([self.session_key(chain[-1])], [user_id]))
            status = text(reply[0])
            if chain[-1] == keep or status == "kept":
                continue
            if status == "deleted":
                # Redirects that led to a session now gone lead nowhere.
                unlisted += chain
                redirects += chain[:-1]
                if text(reply[1]) == user_id:
                    ended.append(sid)
        if unlisted:
            with redis_errors():
                pipe = self.redis.pipeline(transaction=False)
                for rotated in redirects:
                    pipe.delete(self.session_key(rotated))
                pipe.zrem(self.user_key(user_id), *unlisted)
                pipe.execute()
        return ended
