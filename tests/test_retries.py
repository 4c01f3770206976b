"""Commands re-sent after a lost reply, as redis-py's ``Retry`` does.

A reply can be lost after Redis ran the command. redis-py then sends it
again, so each write the store makes must end in the same state when it runs
twice. These tests run every script twice in a row, on real Redis 7 and 6.2
and both layouts.
"""

from __future__ import annotations

import typing as t

import pytest
import redis

from flask_relay_session import RedisSessionStore
from flask_relay_session.serialization import dumps
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeStatus

SID = "a" * 64
NEW_SID = "b" * 64


class ResendingRedis(redis.Redis):
    """Runs every script twice and answers with the second reply."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: t.Any) -> t.Any:
        super().evalsha(sha, numkeys, *keys_and_args)
        return super().evalsha(sha, numkeys, *keys_and_args)

    def eval(self, script: str, numkeys: int, *keys_and_args: t.Any) -> t.Any:
        super().eval(script, numkeys, *keys_and_args)
        return super().eval(script, numkeys, *keys_and_args)


@pytest.fixture(params=["json", "hash"])
def store(request: pytest.FixtureRequest, redis_url: str) -> RedisSessionStore:
    client = ResendingRedis.from_url(redis_url)
    return RedisSessionStore(client, layout=request.param)


def create(store: RedisSessionStore, data: dict[str, t.Any]) -> None:
    changes = [Change((key,), dumps(value)) for key, value in data.items()]
    result = store.merge(
        SID,
        changes,
        now=1_000,
        ttl=60_000,
        create=True,
        lock_token=None,
        max_size=1 << 20,
    )
    assert result.status is MergeStatus.DONE


def test_resent_lock_is_held_by_its_own_token(store: RedisSessionStore) -> None:
    assert store.lock(SID, "mine", 10_000)
    assert store.is_locked(SID)
    assert not store.lock(SID, "someone else", 10_000)
    assert store.unlock(SID, "mine") is False  # the first run released it
    assert not store.is_locked(SID)


@pytest.mark.parametrize("grace", [30_000, 0])
def test_resent_rotation_keeps_the_new_session(
    store: RedisSessionStore, grace: int
) -> None:
    create(store, {"user": "ada", "cart": ["apple"]})
    result = store.rotate(
        SID,
        NEW_SID,
        [Change(("after",), dumps(1))],
        now=2_000,
        ttl=60_000,
        grace=grace,
        lock_token=None,
        max_size=1 << 20,
    )
    assert result.status is MergeStatus.DONE
    stored = store.load(NEW_SID, ttl=None)
    assert stored is not None
    assert stored.decoded() == {"user": "ada", "cart": ["apple"], "after": 1}
    followed = store.load(SID, ttl=None)
    if grace:
        assert followed is not None and followed.sid == NEW_SID
    else:
        # Without a grace period the old id leads nowhere, at once.
        assert followed is None


def test_resent_merge_applies_the_same_state(store: RedisSessionStore) -> None:
    create(store, {"cart": {"items": ["a"]}})
    result = store.merge(
        SID,
        [Change(("cart", "items"), dumps(["a", "b"])), Change(("gone",), None)],
        now=2_000,
        ttl=None,
        create=False,
        lock_token=None,
        max_size=1 << 20,
    )
    assert result.status is MergeStatus.DONE
    stored = store.load(SID, ttl=None)
    assert stored is not None and stored.decoded() == {"cart": {"items": ["a", "b"]}}


def test_resent_merge_that_released_the_lock_gets_the_first_reply(
    store: RedisSessionStore,
) -> None:
    create(store, {"n": 1})
    assert store.lock(SID, "mine", 10_000)
    result = store.merge(
        SID,
        [Change(("n",), dumps(2))],
        now=2_000,
        ttl=60_000,
        create=False,
        lock_token="mine",
        max_size=1 << 20,
        release_lock=True,
    )
    # The second run found the lock released by the first, and answers with
    # the first run's reply instead of "lock_lost".
    assert result.status is MergeStatus.DONE
    assert (result.expires_at, result.emptied) == (62_000, False)
    assert not store.is_locked(SID)
    stored = store.load(SID, ttl=None)
    assert stored is not None and stored.decoded() == {"n": 2}
    assert store.lock(SID, "next", 10_000)
    emptied_result = store.merge(
        SID,
        [Change(("n",), None)],
        now=3_000,
        ttl=None,
        create=False,
        lock_token="next",
        max_size=1 << 20,
        release_lock=True,
    )
    assert (emptied_result.status, emptied_result.emptied) == (MergeStatus.DONE, True)
    assert store.load(SID, ttl=None) is None
    assert not store.is_locked(SID)
