"""The memory store drops expired sessions and locks as it goes.

Not only when one is looked up again: every write that may add a session or
a lock checks :attr:`MemorySessionStore.eviction_batch` more of each, in a
round over the store, so a store that keeps getting new sessions holds
about as many as are alive, and no write does more than that bounded work.
"""

from __future__ import annotations

from flask import Flask
from flask import session

from flask_relay_session import MemorySessionStore
from flask_relay_session import RelaySession
from flask_relay_session.serialization import dumps
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeStatus
from flask_relay_session.stores.memory import _Sweep

from .test_expiry import Clock

HOUR = 3600
#: The sessions' lifetime, in seconds.
LIFETIME = HOUR
BATCH = MemorySessionStore.eviction_batch


def sid(n: int) -> str:
    return f"{n:064x}"


def create(store: MemorySessionStore, n: int, ttl: int = LIFETIME * 1000) -> None:
    result = store.merge(
        sid(n),
        [Change(("n",), dumps(n))],
        now=store._now(),
        ttl=ttl,
        create=True,
        lock_token=None,
        max_size=1024,
    )
    assert result.status is MergeStatus.DONE


def test_new_sessions_make_room_for_themselves_after_an_hour_of_expiry() -> None:
    clock = Clock()
    store = MemorySessionStore(clock=clock)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret",
        RELAY_SESSION_STORE=store,
        PERMANENT_SESSION_LIFETIME=LIFETIME,
    )
    RelaySession(app)
    app.session_interface.clock = clock  # type: ignore[attr-defined]

    @app.post("/visit")
    def visit() -> str:
        session["seen"] = True
        return "ok"

    for _ in range(500):
        app.test_client().post("/visit")
    assert len(store._sessions) == 500
    clock.advance(HOUR + 1)
    for _ in range(500):
        app.test_client().post("/visit")
    # Each new session's write dropped expired ones: none of the first 500
    # is left, though none of them was ever looked up again.
    assert len(store._sessions) == 500


def test_one_write_checks_no_more_than_a_batch_of_sessions_and_of_locks() -> None:
    clock = Clock()
    store = MemorySessionStore(clock=clock)
    for n in range(1000):
        create(store, n)
        assert store.lock(sid(n), "token", 1000)
    clock.advance(HOUR + 1)
    # Every entry has expired, so every one a write checks is dropped: how
    # many go is how many it checked.
    create(store, 1000)
    assert len(store._sessions) == 1000 - BATCH + 1
    assert len(store._locks) == 1000 - BATCH
    assert store.lock(sid(1000), "token", 1000)
    assert len(store._sessions) == 1000 - 2 * BATCH + 1
    assert len(store._locks) == 1000 - 2 * BATCH + 1
    # A read adds nothing, and checks nothing beyond what it looks up.
    assert store.load(sid(999), ttl=None) is None
    assert store.load(sid(1000), ttl=None) is not None
    assert not store.is_locked(sid(998))
    assert len(store._sessions) == 1000 - 2 * BATCH
    assert len(store._locks) == 1000 - 2 * BATCH


def test_live_sessions_do_not_shield_the_expired_ones_behind_them() -> None:
    clock = Clock()
    store = MemorySessionStore(clock=clock)
    for n in range(500):
        create(store, n, ttl=3 * LIFETIME * 1000)
    for n in range(500, 1000):
        create(store, n)
    clock.advance(HOUR + 1)
    for n in range(1000, 1500):
        create(store, n)
    # The round went past the live ones and reached the expired ones
    # behind them.
    assert len(store._sessions) == 1000
    assert all(store._entry(sid(n)) is not None for n in range(500))


def test_expired_locks_are_dropped_as_new_ones_are_taken() -> None:
    clock = Clock()
    store = MemorySessionStore(clock=clock)
    for n in range(500):
        assert store.lock(sid(n), "token", 60_000)
    clock.advance(61)
    for n in range(500, 1000):
        assert store.lock(sid(n), "token", 60_000)
    assert len(store._locks) == 500


def test_the_batch_can_be_set_per_store() -> None:
    class Thorough(MemorySessionStore):
        eviction_batch = 100

    clock = Clock()
    store: MemorySessionStore = Thorough(clock=clock)
    for n in range(200):
        create(store, n)
    clock.advance(HOUR + 1)
    create(store, 200)
    assert len(store._sessions) == 200 - 100 + 1


def test_a_round_visits_each_key_held_as_it_began_once() -> None:
    items = {f"k{n}": n for n in range(10)}
    sweep = _Sweep(items)
    assert sweep.next(4) == ["k0", "k1", "k2", "k3"]
    # Keys deleted or added meanwhile change nothing in this round...
    del items["k4"], items["k9"]
    items["new"] = 10
    assert sweep.next(4) == ["k4", "k5", "k6", "k7"]
    # ...and the next round, begun where this one ends, has the dict's keys.
    assert sweep.next(4) == ["k8", "k9", "k0", "k1"]
    assert sweep.next(4) == ["k2", "k3", "k5", "k6"]
    assert sweep.next(4) == ["k7", "k8", "new", "k0"]
    assert _Sweep({}).next(4) == []
