"""``RELAY_SESSION_LAYOUT = "hash"``: one Redis hash per session.

On real Redis 7 and 6.2, at the store level: what the hash holds, that a
write decodes and rewrites only the fields its paths touch (byte for byte,
and in server time), the running size and ``RELAY_SESSION_MAX_SIZE``,
expiry, redirects, locks, both protocols and both response modes, and that
every script stays inside one cluster slot. The app-level behaviour tests
(``store_config``'s ``redis7-hash`` and ``redis6-hash``) and the cost budget
run on this layout too.
"""

from __future__ import annotations

import json
import random
import time
import typing as t

import pytest
import redis
from redis.crc import key_slot

from flask_relay_session import RedisSessionStore
from flask_relay_session import SessionChainBrokenError
from flask_relay_session import SessionSerializationError
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeResult
from flask_relay_session.stores.base import MergeStatus

from .test_serialization import TRICKY
from .test_serialization import assert_same
from .test_store_roundtrip import change

SID = "a1" * 32
NEW_SID = "b2" * 32
LAST_SID = "c3" * 32
LIFETIME = 600_000
MAX_SIZE = 8 * 1024 * 1024
META = {b" created", b" expires", b" size", b" version"}


def now_ms() -> int:
    return int(time.time() * 1000)


def hash_store(redis_url: str, **options: t.Any) -> RedisSessionStore:
    return RedisSessionStore(redis.Redis.from_url(redis_url, **options), layout="hash")


def merge(
    store: RedisSessionStore,
    changes: t.Sequence[Change],
    *,
    sid: str = SID,
    ttl: int | None = None,
    create: bool = False,
    lock_token: str | None = None,
    max_size: int = MAX_SIZE,
) -> MergeResult:
    return store.merge(
        sid,
        changes,
        now=now_ms(),
        ttl=ttl,
        create=create,
        lock_token=lock_token,
        max_size=max_size,
    )


def create(store: RedisSessionStore, data: dict[str, t.Any], sid: str = SID) -> None:
    changes = [change([key], value) for key, value in data.items()]
    result = merge(store, changes, sid=sid, ttl=LIFETIME, create=True)
    assert result.status is MergeStatus.DONE


def rotate(
    store: RedisSessionStore,
    sid: str = SID,
    new_sid: str = NEW_SID,
    changes: t.Sequence[Change] = (),
    *,
    grace: int = 5_000,
    lock_token: str | None = None,
    max_size: int = MAX_SIZE,
) -> MergeResult:
    return store.rotate(
        sid,
        new_sid,
        changes,
        now=now_ms(),
        ttl=LIFETIME,
        grace=grace,
        lock_token=lock_token,
        max_size=max_size,
    )


def raw_fields(store: RedisSessionStore, sid: str = SID) -> dict[bytes, bytes]:
    """The hash as stored, with bytes names and values whatever the client."""
    options = t.cast(redis.Redis, store.redis).connection_pool.connection_kwargs
    with redis.Redis(host=options["host"], port=options["port"]) as client:
        return t.cast("dict[bytes, bytes]", client.hgetall(store.session_key(sid)))


def data_size(fields: dict[bytes, bytes]) -> int:
    return sum(
        len(name) + len(value) for name, value in fields.items() if name not in META
    )


def load(store: RedisSessionStore, sid: str = SID) -> dict[str, t.Any] | None:
    stored = store.load(sid, ttl=None)
    return None if stored is None else stored.decoded()


# --------------------------------------------------------------------------
# What is stored
# --------------------------------------------------------------------------


def test_a_session_is_one_hash_with_a_field_per_top_level_key(redis_url: str) -> None:
    store = hash_store(redis_url)
    start = now_ms()
    data = {
        "user": {"name": "ada"},
        "cart": [1, 2],
        "": 0,
        " created": "a user's key",
        " redirect": "not a redirect",
        " ~x": None,
    }
    create(store, data)
    key = f"sess:{{{SID}}}"
    assert store.redis.type(key) == b"hash"
    fields = raw_fields(store)
    assert {name: value for name, value in fields.items() if name not in META} == {
        b"user": b'{"name":"ada"}',
        b"cart": b"[1,2]",
        b"": b"0",
        b"  created": b'"a user\'s key"',
        b"  redirect": b'"not a redirect"',
        b"  ~x": b"null",
    }
    assert start <= int(fields[b" created"]) <= now_ms()
    assert int(fields[b" expires"]) == pytest.approx(start + LIFETIME, abs=2_000)
    assert int(fields[b" size"]) == data_size(fields)
    assert fields[b" version"] == b"1"
    assert 0 < store.redis.pttl(key) <= LIFETIME
    assert_same(load(store), data)
    assert store.lock(SID, "token", 10_000)
    assert store.redis.get(f"sess:lock:{{{SID}}}") == b"token"
    assert store.redis.type(key) == b"hash"


def test_deleting_every_key_deletes_the_hash(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1, "b": {"c": 2}})
    result = merge(store, [change(["a"], delete=True), change(["b"], delete=True)])
    assert result.status is MergeStatus.DONE
    assert result.emptied
    assert store.redis.exists(store.session_key(SID)) == 0
    assert merge(store, [change(["a"], 1)]).status is MergeStatus.MISSING


# --------------------------------------------------------------------------
# A write touches only its fields
# --------------------------------------------------------------------------


def test_replacing_a_top_level_value_never_decodes_the_other_fields(
    redis_url: str,
) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1, "box": {"n": 1}})
    key = store.session_key(SID)
    # Bytes that cjson cannot decode at all, and bytes it would rewrite
    # (it escapes "/" and reorders keys): a decode of either would show.
    store.redis.hset(key, "broken", b'{"not json')
    store.redis.hset(key, "kept", b'{"z":"a/b","a":1.5}')
    before = raw_fields(store)
    assert merge(store, [change(["a"], 2)]).status is MergeStatus.DONE
    assert merge(store, [change(["box", "n"], 2)]).status is MergeStatus.DONE
    assert merge(store, [change(["new"], "x/y")]).status is MergeStatus.DONE
    after = raw_fields(store)
    assert after[b"broken"] == before[b"broken"] == b'{"not json'
    assert after[b"kept"] == before[b"kept"]
    assert after[b"a"] == b"2"
    assert after[b"new"] == b'"x/y"'
    assert json.loads(after[b"box"]) == {"n": 2}


def test_a_write_of_thousands_of_keys_sets_and_deletes_them_all(
    redis_url: str,
) -> None:
    # More fields than one HSET or HDEL of the script can take at once.
    store = hash_store(redis_url)
    data = {f"key {i}": i for i in range(4_500)}
    create(store, data)
    fields = raw_fields(store)
    assert len(fields) == 4_500 + len(META)
    assert int(fields[b" size"]) == data_size(fields)
    assert fields[b" version"] == b"1"
    deletes = [change([f"key {i}"], delete=True) for i in range(0, 4_500, 2)]
    sets = [change([f"new {i}"], [i]) for i in range(1_200)]
    assert merge(store, [*deletes, *sets]).status is MergeStatus.DONE
    expected = {key: value for key, value in data.items() if value % 2}
    expected.update({f"new {i}": [i] for i in range(1_200)})
    assert load(store) == expected
    fields = raw_fields(store)
    assert int(fields[b" size"]) == data_size(fields)
    assert fields[b" version"] == b"2"


def test_a_nested_write_rewrites_only_its_own_field(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"a": {"x": 1, "keep": "k/1"}, "b": {"y": "p/q"}, "l": [1]})
    before = raw_fields(store)
    merge(store, [change(["a", "x"], 2)])
    after = raw_fields(store)
    assert after[b"b"] == before[b"b"] == b'{"y":"p/q"}'
    assert after[b"l"] == before[b"l"]
    assert after[b"a"] != before[b"a"]  # re-encoded by cjson, "/" escaped
    assert load(store) == {"a": {"x": 2, "keep": "k/1"}, "b": {"y": "p/q"}, "l": [1]}


def test_a_nested_delete_of_a_missing_path_leaves_its_field_as_stored(
    redis_url: str,
) -> None:
    store = hash_store(redis_url)
    create(store, {"a": {"keep": "k/1"}, "s": "text"})
    before = raw_fields(store)
    merge(store, [change(["a", "gone"], delete=True), change(["s", "x"], delete=True)])
    after = raw_fields(store)
    assert after[b"a"] == before[b"a"] == b'{"keep":"k/1"}'
    assert after[b"s"] == before[b"s"]
    assert load(store) == {"a": {"keep": "k/1"}, "s": "text"}


def test_nested_writes_follow_the_merge_rules_inside_a_field(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"l": [1, 2], "t": (1, 2), "n": None, "d": {"k": {"deep": 1}}})
    merge(
        store,
        [
            change(["l", "x"], 1),  # a list is replaced by a dict
            change(["t", "x"], 1),  # so is a tagged value
            change(["n", "x"], 1),  # and null
            change(["fresh", "a", "b"], [1]),  # missing dicts are created
            change(["d", "k", "deep"], delete=True),
            change(["d", "k", "other"], (3,)),
        ],
    )
    assert_same(
        load(store),
        {
            "l": {"x": 1},
            "t": {"x": 1},
            "n": {"x": 1},
            "fresh": {"a": {"b": [1]}},
            "d": {"k": {"other": (3,)}},
        },
    )


def test_changes_to_one_field_apply_in_order(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"a": {"old": 1}})
    merge(
        store,
        [
            change(["a"], {"new": 1}),
            change(["a", "more"], 2),
            change(["b", "x"], 1),
            change(["b"], delete=True),
            change(["c"], delete=True),
            change(["c", "y"], False),
        ],
    )
    assert load(store) == {"a": {"new": 1, "more": 2}, "c": {"y": False}}


def test_a_one_field_write_costs_far_less_server_time_than_the_json_layout(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    big = {
        "items": [
            {"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(6000)
        ]
    }
    assert len(json.dumps(big)) > 256 * 1024
    stores = {
        layout: RedisSessionStore(client, prefix=f"{layout}:", layout=layout)
        for layout in ("json", "hash")
    }
    usec: dict[str, int] = {}
    for layout, store in stores.items():
        create(store, {"big": big, "small": 0})
        merge(store, [change(["small"], 1)])  # the script is now cached
        client.config_resetstat()
        for n in range(5):
            merge(store, [change(["small"], n)])
        stats = client.info("commandstats")
        usec[layout] = int(stats["cmdstat_evalsha"]["usec"])
        assert stats["cmdstat_evalsha"]["calls"] == 5
        assert load(store) == {"big": big, "small": 4}
    assert usec["hash"] * 20 < usec["json"], usec


# --------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------


def test_the_meta_fields_follow_every_write(redis_url: str) -> None:
    # A write sets only the meta fields that change: the size when it
    # changes, never the creation time; the version and expiry every time.
    store = hash_store(redis_url)
    create(store, {"start": 1})
    created = raw_fields(store)[b" created"]
    rng = random.Random(6)
    keys = ["a", "b", "ünï", " sp", "d"]
    for version in range(2, 82):
        path = [rng.choice(keys) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            item = change(path, delete=True)
        else:
            item = change(path, rng.choice([1, "wörd" * rng.randint(0, 9), [1, 2], {}]))
        result = merge(store, [item, change(["start"], 1)])
        fields = raw_fields(store)
        assert int(fields[b" size"]) == data_size(fields)
        assert fields[b" created"] == created
        assert int(fields[b" version"]) == version
        assert int(fields[b" expires"]) == result.expires_at


def test_a_write_that_would_pass_the_max_size_fails_and_writes_nothing(
    redis_url: str,
) -> None:
    store = hash_store(redis_url)
    create(store, {"other": "y", "blob": "x" * 1000, "box": {"n": 1}})
    size = data_size(raw_fields(store))
    before = raw_fields(store)
    for changes in (
        [change(["blob"], "x" * 2000)],
        [change(["box", "more"], "x" * 2000)],
        [change(["other"], delete=True), change(["new"], "x" * 2000)],
    ):
        with pytest.raises(SessionSerializationError, match="RELAY_SESSION_MAX_SIZE"):
            merge(store, changes, max_size=size + 100)
        assert raw_fields(store) == before
    grown = merge(store, [change(["blob"], "x" * 1090)], max_size=size + 100)
    assert grown.status is MergeStatus.DONE
    shrunk = merge(store, [change(["blob"], "x")], max_size=size - 900)
    assert shrunk.status is MergeStatus.DONE
    with pytest.raises(SessionSerializationError):
        rotate(store, changes=[change(["blob"], "x" * 990)], max_size=size - 100)
    assert store.redis.exists(store.session_key(NEW_SID)) == 0
    assert load(store) == {"other": "y", "blob": "x", "box": {"n": 1}}


# --------------------------------------------------------------------------
# Expiry
# --------------------------------------------------------------------------


def test_writes_set_or_keep_the_ttl_and_the_expires_field(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1})
    key = store.session_key(SID)
    store.redis.pexpire(key, 50_000)
    merge(store, [change(["b"], 2)], ttl=None)
    assert 40_000 < store.redis.pttl(key) <= 50_000
    expires = int(raw_fields(store)[b" expires"])
    assert expires == pytest.approx(now_ms() + 50_000, abs=2_000)
    result = merge(store, [change(["b"], 3)], ttl=LIFETIME)
    assert store.redis.pttl(key) > 50_000
    assert int(raw_fields(store)[b" expires"]) == result.expires_at
    stored = store.load(SID, ttl=70_000)
    assert stored is not None
    assert store.redis.pttl(key) <= 70_000
    assert stored.expires_at == pytest.approx(now_ms() + 70_000, abs=2_000)
    assert store.touch(SID, ttl=90_000)
    assert 80_000 < store.redis.pttl(key) <= 90_000


def test_an_expired_session_is_gone_for_loads_and_merges(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1})
    store.redis.pexpire(store.session_key(SID), 20)
    time.sleep(0.05)
    assert store.load(SID, ttl=LIFETIME) is None
    assert merge(store, [change(["a"], 2)]).status is MergeStatus.MISSING
    assert store.redis.exists(store.session_key(SID)) == 0
    start = now_ms()
    result = merge(store, [change(["a"], 3)], ttl=LIFETIME, create=True)
    assert result.created_at >= start
    assert load(store) == {"a": 3}


# --------------------------------------------------------------------------
# Rotation and redirects
# --------------------------------------------------------------------------


def test_a_rotated_id_is_a_hash_of_its_target_and_the_end_of_its_grace(
    redis_url: str,
) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1, "box": {"n": 1}})
    created = int(raw_fields(store)[b" created"])
    start = now_ms()
    result = rotate(store, changes=[change(["box", "n"], 2)], grace=5_000)
    assert result.status is MergeStatus.DONE
    redirect = raw_fields(store)
    assert set(redirect) == {b" redirect", b" expires"}
    assert redirect[b" redirect"] == NEW_SID.encode()
    assert start + 5_000 <= int(redirect[b" expires"]) <= now_ms() + 5_000
    assert 0 < store.redis.pttl(store.session_key(SID)) <= 5_000
    moved = raw_fields(store, NEW_SID)
    assert int(moved[b" created"]) == created == result.created_at
    assert moved[b" version"] == b"1"
    assert int(moved[b" size"]) == data_size(moved)
    assert 5_000 < store.redis.pttl(store.session_key(NEW_SID)) <= LIFETIME
    stored = store.load(SID, ttl=None)
    assert stored is not None
    assert (stored.sid, stored.redirected) == (NEW_SID, True)
    assert stored.decoded() == {"a": 1, "box": {"n": 2}}
    written = merge(store, [change(["a"], 9)])
    assert (written.status, written.redirect_to) == (MergeStatus.REDIRECTED, NEW_SID)
    assert raw_fields(store) == redirect
    again = rotate(store, SID, LAST_SID)
    assert (again.status, again.redirect_to) == (MergeStatus.REDIRECTED, NEW_SID)
    assert store.redis.exists(store.session_key(LAST_SID)) == 0


def test_a_chain_of_redirects_is_shortened_and_a_broken_one_reported(
    redis_url: str,
) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1})
    rotate(store, SID, NEW_SID)
    grace_end = raw_fields(store)[b" expires"]
    rotate(store, NEW_SID, LAST_SID)
    stored = store.load(SID, ttl=None)
    assert stored is not None
    assert (stored.sid, stored.decoded()) == (LAST_SID, {"a": 1})
    # Pointed straight at the end of the chain, with its own grace period.
    redirect = {b" redirect": LAST_SID.encode(), b" expires": grace_end}
    assert raw_fields(store) == redirect
    assert 0 < store.redis.pttl(store.session_key(SID)) <= 5_000
    store.delete(LAST_SID)
    with pytest.raises(SessionChainBrokenError):
        store.load(SID, ttl=None)


def test_a_write_landing_during_a_rotation_is_copied_not_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1})
    layout = store._layout
    end_rotation = layout.rotate
    copies = []

    def write_then_end_rotation(keys: t.Sequence[str], args: t.Any) -> t.Any:
        copies.append(args[2])
        if len(copies) == 1:
            assert merge(store, [change(["late"], "write")]).status is MergeStatus.DONE
        return end_rotation(keys, args)

    monkeypatch.setattr(layout, "rotate", write_then_end_rotation)
    assert rotate(store).status is MergeStatus.DONE
    assert copies == [NEW_SID, NEW_SID]
    assert load(store, NEW_SID) == {"a": 1, "late": "write"}
    redirect = raw_fields(store)
    assert set(redirect) == {b" redirect", b" expires"}
    assert redirect[b" redirect"] == NEW_SID.encode()


# --------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------


def test_the_lock_is_checked_in_the_same_step_as_the_write(redis_url: str) -> None:
    store = hash_store(redis_url)
    create(store, {"a": 1})
    before = raw_fields(store)
    assert store.lock(SID, "owner", 10_000)
    assert merge(store, [change(["a"], 2)]).status is MergeStatus.LOCKED
    lost = merge(store, [change(["a"], 2)], lock_token="stale")
    assert lost.status is MergeStatus.LOCK_LOST
    assert rotate(store).status is MergeStatus.LOCKED
    assert store.redis.exists(store.session_key(NEW_SID)) == 0
    assert raw_fields(store) == before
    assert (
        merge(store, [change(["a"], 3)], lock_token="owner").status is MergeStatus.DONE
    )
    assert load(store) == {"a": 3}
    assert rotate(store, lock_token="owner").status is MergeStatus.DONE
    assert store.unlock(SID, "owner")
    assert not store.is_locked(SID)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode_responses", [False, True], ids=["bytes", "str"])
def test_every_tricky_value_round_trips_on_every_client_mode(
    redis_url: str, protocol: int, decode_responses: bool
) -> None:
    store = hash_store(redis_url, protocol=protocol, decode_responses=decode_responses)
    create(store, TRICKY)
    merge(store, [change(["odd keys", "n"], 1), change(["n"], 2)])
    expected = {**TRICKY, "odd keys": {**TRICKY["odd keys"], "n": 1}, "n": 2}
    assert_same(load(store), expected)
    assert rotate(store, changes=[change(["m"], 3)]).status is MergeStatus.DONE
    stored = store.load(SID, ttl=LIFETIME)
    assert stored is not None
    assert stored.sid == NEW_SID
    assert_same(stored.decoded(), {**expected, "m": 3})


def test_every_script_touches_the_keys_of_one_session_only(redis_url: str) -> None:
    store = hash_store(redis_url)
    calls: list[tuple[str, ...]] = []
    client = store.redis
    for name in ("eval", "evalsha"):
        method = getattr(client, name)

        def recording(
            script: str, numkeys: int, *args: t.Any, method: t.Any = method
        ) -> t.Any:
            calls.append(tuple(args[:numkeys]))
            return method(script, numkeys, *args)

        setattr(client, name, recording)
    create(store, {"a": {"b": 1}})
    merge(store, [change(["a", "b"], 2)])
    rotate(store, SID, NEW_SID)
    rotate(store, NEW_SID, LAST_SID)
    store.load(SID, ttl=LIFETIME)
    store.lock(LAST_SID, "t", 1000)
    store.unlock(LAST_SID, "t")
    assert len(calls) >= 8
    for keys in calls:
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys
