"""Helpers for tests that drive a store directly, without an app.

The ``store`` fixture (in ``conftest.py``) gives a store of each kind;
these are what such tests share.
"""

from __future__ import annotations

import json
import time

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore

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
