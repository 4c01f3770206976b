"""Helpers the test modules share.

- :func:`sid_of` and :func:`client_with`: the session id a test client
  holds, and a new client holding a given cookie.
- :func:`current`: the request's session, typed as the package's class.
- For tests that drive a store directly (the ``store`` fixture in
  ``conftest.py`` gives one of each kind): :data:`Store`, :func:`now_ms`,
  :func:`end_grace_now`.
"""

from __future__ import annotations

import json
import time
import typing as t
from collections.abc import Mapping

from flask import Flask
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import Session
from flask_relay_session.serialization import loads_fields
from flask_relay_session.stores import Change
from flask_relay_session.stores import MergeResult
from flask_relay_session.stores import StoredSession


def sid_of(client: FlaskClient) -> str:
    """The session id in the cookie ``client`` holds; it must hold one."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value.split(".")[0]


def current() -> Session:
    """The request's session, as the package's own class (in a view)."""
    return t.cast(Session, session._get_current_object())  # type: ignore[attr-defined]


def client_with(app: Flask, cookie: str) -> FlaskClient:
    """A new test client of ``app`` holding the session cookie ``cookie``."""
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


#: Any store the ``store`` fixture gives.
Store = MemorySessionStore | RedisSessionStore


def now_ms() -> int:
    """The current time in milliseconds, as the stores count it."""
    return int(time.time() * 1000)


def end_grace_now(store: RedisSessionStore, sid: str, lifetime: int) -> None:
    """Leave ``sid`` a redirect past its grace period whose key lives on
    ``lifetime`` milliseconds more, as a load's ``PEXPIRE`` racing the
    rotation leaves it.
    """
    key = store.session_key(sid)
    if store.layout == "hash":
        store.redis.hset(key, " expires", now_ms() - 1)
    else:
        document = json.loads(store.redis.get(key))
        document["meta"]["expiresAt"] = now_ms() - 1
        store.redis.set(key, json.dumps(document))
    store.redis.pexpire(key, lifetime)


def decode_fields(fields: Mapping[str, bytes]) -> dict[str, t.Any]:
    """Decode stored top-level keys and their JSON, every value at once (a
    session decodes each when first read).
    """
    return {key: value.decode() for key, value in loads_fields(fields).items()}


class CustomStore:
    """A store of the app's own, implementing :class:`SessionStore` only."""

    def __init__(self) -> None:
        self.inner = MemorySessionStore()

    def load(self, sid: str, *, ttl: int | None) -> StoredSession | None:
        return self.inner.load(sid, ttl=ttl)

    def touch(self, sid: str, *, ttl: int) -> bool:
        return self.inner.touch(sid, ttl=ttl)

    def merge(
        self, sid: str, changes: t.Sequence[Change], **options: t.Any
    ) -> MergeResult:
        return self.inner.merge(sid, changes, **options)

    def rotate(
        self, sid: str, new_sid: str, changes: t.Sequence[Change], **options: t.Any
    ) -> MergeResult:
        return self.inner.rotate(sid, new_sid, changes, **options)

    def delete(self, sid: str) -> None:
        self.inner.delete(sid)

    def lock(self, sid: str, token: str, ttl: int) -> bool:
        return self.inner.lock(sid, token, ttl)

    def unlock(self, sid: str, token: str) -> bool:
        return self.inner.unlock(sid, token)

    def is_locked(self, sid: str) -> bool:
        return self.inner.is_locked(sid)
