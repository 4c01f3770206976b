"""Values through the stores: real Redis 7 and 6.2 (Lua cjson) and memory.

Every tricky value of ``test_serialization.TRICKY`` must come back exactly,
types included, after a create and after a merge of some other path of the
same document, which makes Redis decode and re-encode everything with cjson.
The merge rules of ``SessionStore.merge`` (missing, redirected, replacing a
non-dict, deleting a missing path, the size limit, the TTL) are checked on
every store, and the Redis store on both protocols and both response modes.
"""

from __future__ import annotations

import json
import time
import typing as t

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings

from flask_relay_session import RedisSessionStore
from flask_relay_session import SessionChainBrokenError
from flask_relay_session import SessionSerializationError
from flask_relay_session.serialization import dumps
from flask_relay_session.serialization import encode_key
from flask_relay_session.stores.base import Change
from flask_relay_session.stores.base import MergeResult
from flask_relay_session.stores.base import MergeStatus
from flask_relay_session.stores.memory import _Entry

from .helpers import Store
from .helpers import end_grace_now
from .helpers import now_ms
from .test_serialization import TRICKY
from .test_serialization import assert_same
from .test_serialization import values

SID = "5e55" * 16
OTHER_SID = "0123456789abcdef" * 4
LIFETIME = 600_000
MAX_SIZE = 8 * 1024 * 1024


def change(
    path: t.Sequence[str], value: t.Any = ..., *, delete: bool = False
) -> Change:
    """A change of the user-level ``path`` (keys escaped here)."""
    stored = tuple(encode_key(key) for key in path)
    return Change(stored, None if delete else dumps(value, path))


def merge(
    store: Store,
    changes: t.Sequence[Change],
    *,
    sid: str = SID,
    ttl: int | None = None,
    create: bool = False,
    max_size: int = MAX_SIZE,
) -> MergeResult:
    return store.merge(
        sid,
        changes,
        now=now_ms(),
        ttl=ttl,
        create=create,
        lock_token=None,
        max_size=max_size,
    )


def create(store: Store, data: dict[str, t.Any], sid: str = SID) -> None:
    result = merge(
        store,
        [change([key], value) for key, value in data.items()],
        sid=sid,
        ttl=LIFETIME,
        create=True,
    )
    assert result.status is MergeStatus.DONE


def load(store: Store, sid: str = SID) -> dict[str, t.Any] | None:
    stored = store.load(sid, ttl=None)
    return None if stored is None else stored.decoded()


def updated(data: dict[str, t.Any], path: t.Sequence[str], value: t.Any) -> None:
    """Apply the merge rule of setting ``path`` to a plain model."""
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


def test_every_tricky_value_comes_back_exactly_after_a_create(store: Store) -> None:
    create(store, TRICKY)
    assert_same(load(store), TRICKY)


def test_every_tricky_value_survives_merges_of_siblings(store: Store) -> None:
    create(store, TRICKY)
    expected = dict(TRICKY)
    expected["tag keys with siblings"] = dict(TRICKY["tag keys with siblings"])
    expected["odd keys"] = dict(TRICKY["odd keys"])
    steps: list[tuple[list[str], t.Any]] = [
        (["added"], 1),
        (["odd keys", "added"], [1 / 3, 2.0]),
        (["tag keys with siblings", "added"], {}),
        (["new", "deep", "er"], []),
        (["one"], 2),
    ]
    for path, value in steps:
        assert merge(store, [change(path, value)]).status is MergeStatus.DONE
        updated(expected, path, value)
        assert_same(load(store), expected)
    # Leave each tag-named key alone in its dict, one merge at a time.
    siblings = expected["tag keys with siblings"]
    for key in [k for k in siblings if k != " t"]:
        merge(store, [change(["tag keys with siblings", key], delete=True)])
        del siblings[key]
        assert_same(load(store), expected)
    assert siblings == {" t": [1]}


@pytest.mark.parametrize("key", sorted(TRICKY), ids=lambda key: repr(key)[:40])
def test_a_tricky_value_survives_a_merge_of_a_sibling_on_every_store(
    store: Store, key: str
) -> None:
    value = TRICKY[key]
    create(store, {key: value, "n": 1, "box": {key: value, "n": 1}})
    merge(store, [change(["n"], 2)])
    merge(store, [change(["box", "n"], 2)])
    assert_same(load(store), {key: value, "n": 2, "box": {key: value, "n": 2}})


@pytest.mark.parametrize("key", sorted(TRICKY), ids=lambda key: repr(key)[:40])
def test_a_tricky_value_can_be_set_by_a_merge_into_a_nested_path(
    store: Store, key: str
) -> None:
    value = TRICKY[key]
    create(store, {"box": {"n": 1}})
    merge(store, [change(["box", key], value), change(["box", "n"], delete=True)])
    merge(store, [change(["other"], 1)])
    assert_same(load(store), {"box": {key: value}, "other": 1})


def test_empty_list_survives_a_merge_of_a_sibling_on_every_store(
    store: Store,
) -> None:
    create(store, {"l": [], "d": {"l": [], "ll": [[]]}, "n": 0})
    merge(store, [change(["n"], 1)])
    merge(store, [change(["d", "x"], 1)])
    assert_same(load(store), {"l": [], "d": {"l": [], "ll": [[]], "x": 1}, "n": 1})


def test_numeric_looking_keys_stay_a_dict_after_merges(store: Store) -> None:
    create(store, {"m": {"1": "a", "2": "b"}, "l": ["a", "b"]})
    merge(store, [change(["m", "3"], "c")])
    merge(store, [change(["m", "1"], delete=True)])
    merge(store, [change(["x"], 1)])
    assert_same(load(store), {"m": {"2": "b", "3": "c"}, "l": ["a", "b"], "x": 1})


def test_a_dict_whose_key_is_one_space_is_merged_into_not_replaced(
    store: Store,
) -> None:
    # Stored as {"  ": ...}: two spaces, which the merge must not take for a
    # tag (a tag is a space and a letter).
    create(store, {"a": {" ": 1}, "b": {" ": {"k": 1, "j": 2}}})
    merge(store, [change(["a", "x"], 2)])
    merge(store, [change(["b", " ", "k"], delete=True)])
    assert_same(load(store), {"a": {" ": 1, "x": 2}, "b": {" ": {"j": 2}}})


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=values, sibling=values)
def test_random_values_survive_a_merge_of_a_sibling(
    store: Store, value: t.Any, sibling: t.Any
) -> None:
    from .test_serialization import _normalize_timezones

    create(store, {"v": value, "d": {"v": value, "s": 0}, "s": 0})
    merge(store, [change(["s"], sibling), change(["d", "s"], sibling)])
    value = _normalize_timezones(value)
    sibling = _normalize_timezones(sibling)
    assert_same(
        load(store), {"v": value, "d": {"v": value, "s": sibling}, "s": sibling}
    )


# --------------------------------------------------------------------------
# Merge rules
# --------------------------------------------------------------------------


def test_create_merges_into_an_existing_session(store: Store) -> None:
    create(store, {"a": 1, "b": {"c": 1}})
    create(store, {"d": 2})
    assert load(store) == {"a": 1, "b": {"c": 1}, "d": 2}


def test_merge_into_a_missing_session_writes_nothing(store: Store) -> None:
    result = merge(store, [change(["a"], 1)], ttl=LIFETIME)
    assert result.status is MergeStatus.MISSING
    assert load(store) is None
    if isinstance(store, RedisSessionStore):
        assert store.redis.keys("*") == []


def test_merge_keeps_the_expiry_when_ttl_is_none(store: Store) -> None:
    create(store, {"a": 1})
    before = store.load(SID, ttl=None)
    assert before is not None
    time.sleep(0.05)
    result = merge(store, [change(["b"], 2)], ttl=None)
    assert result.status is MergeStatus.DONE
    after = store.load(SID, ttl=None)
    assert after is not None
    assert abs(result.expires_at - before.expires_at) < 20
    assert abs(after.expires_at - before.expires_at) < 20
    if isinstance(store, RedisSessionStore):
        pttl = store.redis.pttl(store.session_key(SID))
        assert LIFETIME - 1000 < pttl <= LIFETIME - 50


def test_merge_with_a_ttl_sets_the_new_expiry(store: Store) -> None:
    create(store, {"a": 1})
    start = now_ms()
    result = merge(store, [change(["b"], 2)], ttl=5 * LIFETIME)
    assert result.status is MergeStatus.DONE
    assert start + 5 * LIFETIME <= result.expires_at <= now_ms() + 5 * LIFETIME
    if isinstance(store, RedisSessionStore):
        assert store.redis.pttl(store.session_key(SID)) > 4 * LIFETIME


def redirect(store: Store, sid: str, target: str) -> None:
    """Make ``sid`` a rotation redirect to ``target``."""
    if isinstance(store, RedisSessionStore) and store.layout == "hash":
        store.redis.delete(store.session_key(sid))
        store.redis.hset(store.session_key(sid), " redirect", target)
        store.redis.pexpire(store.session_key(sid), LIFETIME)
    elif isinstance(store, RedisSessionStore):
        document = {"data": None, "meta": {"redirectTo": target}}
        store.redis.set(store.session_key(sid), json.dumps(document), px=LIFETIME)
    else:
        now = now_ms()
        store._sessions[sid] = _Entry(now, now + LIFETIME, redirect_to=target)


def test_merge_into_a_redirect_reports_it_and_writes_nothing(store: Store) -> None:
    create(store, {"a": 1}, sid=OTHER_SID)
    redirect(store, SID, OTHER_SID)
    if isinstance(store, RedisSessionStore):
        before = store.redis.dump(store.session_key(SID))
    result = merge(store, [change(["a"], 2)], ttl=LIFETIME, create=True)
    assert result.status is MergeStatus.REDIRECTED
    assert result.redirect_to == OTHER_SID
    assert load(store, OTHER_SID) == {"a": 1}
    loaded = store.load(SID, ttl=None)
    assert loaded is not None and loaded.redirected and loaded.sid == OTHER_SID
    if isinstance(store, RedisSessionStore):
        assert store.redis.dump(store.session_key(SID)) == before


NON_DICTS: dict[str, t.Any] = {
    "int": 5,
    "str": "s",
    "none": None,
    "list": [1, 2],
    "empty list": [],
    "tuple": (1,),
    "empty tuple": (),
    "bytes": b"x",
    "float": 1 / 3,
    "big int": 2**64,
    "markup": TRICKY["markup"],
}


@pytest.mark.parametrize("kind", sorted(NON_DICTS))
def test_setting_a_path_under_a_non_dict_replaces_it(store: Store, kind: str) -> None:
    create(store, {"x": NON_DICTS[kind], "keep": 1})
    merge(store, [change(["x", "0"], "set"), change(["y", "a", "b"], 1)])
    assert_same(load(store), {"x": {"0": "set"}, "keep": 1, "y": {"a": {"b": 1}}})


def test_setting_a_path_under_a_tag_named_dict_merges_into_it(store: Store) -> None:
    create(store, {"x": {" t": [1]}, "y": {" l": 0}})
    merge(store, [change(["x", "k"], 1), change(["y", " l"], 1)])
    assert_same(load(store), {"x": {" t": [1], "k": 1}, "y": {" l": 1}})


@pytest.mark.parametrize(
    "path",
    [
        ["nope"],
        ["d", "nope"],
        ["d", "nope", "deeper"],
        ["n", "x"],
        ["l", "0"],
        ["l", "1"],
        ["t", " t"],
        ["t", "0"],
        ["b", " b"],
        ["e", " l"],
        ["f", " f"],
        ["s", "x"],
        ["d", "e", "x"],
    ],
    ids=str,
)
def test_deleting_a_missing_path_changes_nothing(store: Store, path: list[str]) -> None:
    data = {
        "d": {"e": None, "k": 1},
        "n": 1,
        "l": [1, {"0": 2}],
        "t": (1, 2),
        "b": b"b",
        "e": [],
        "f": 1 / 3,
        "s": "s",
    }
    create(store, data)
    result = merge(store, [change(path, delete=True)])
    assert result.status is MergeStatus.DONE
    assert_same(load(store), data)


def test_delete_and_none_are_distinct(store: Store) -> None:
    create(store, {"a": 1, "b": 2, "c": {"d": 1, "e": 2}})
    merge(
        store,
        [
            change(["a"], delete=True),
            change(["b"], None),
            change(["c", "d"], delete=True),
            change(["c", "e"], None),
        ],
    )
    assert_same(load(store), {"b": None, "c": {"e": None}})


def test_deleting_every_key_deletes_the_session(store: Store) -> None:
    create(store, {"a": 1, "b": 2})
    result = merge(store, [change(["a"], delete=True), change(["b"], delete=True)])
    assert result.status is MergeStatus.DONE
    assert result.emptied
    assert load(store) is None


def test_a_merge_over_the_size_limit_raises_and_writes_nothing(store: Store) -> None:
    create(store, {"a": "x" * 1000})
    with pytest.raises(SessionSerializationError, match="1500"):
        merge(store, [change(["b"], "y" * 1000)], max_size=1500)
    assert load(store) == {"a": "x" * 1000}
    merge(store, [change(["b"], "y" * 100)], max_size=1500)
    assert load(store) == {"a": "x" * 1000, "b": "y" * 100}


def test_a_create_over_the_size_limit_raises_and_writes_nothing(store: Store) -> None:
    with pytest.raises(SessionSerializationError):
        merge(
            store, [change(["a"], "x" * 1000)], create=True, ttl=LIFETIME, max_size=500
        )
    assert load(store) is None


# --------------------------------------------------------------------------
# Redis only
# --------------------------------------------------------------------------


def redis_store(
    redis_url: str, layout: str = "json", **options: t.Any
) -> RedisSessionStore:
    return RedisSessionStore(redis.Redis.from_url(redis_url, **options), layout=layout)


LAYOUTS = pytest.mark.parametrize("layout", ["json", "hash"])


def test_the_stored_document_has_the_documented_layout(redis_url: str) -> None:
    store = redis_store(redis_url)
    start = now_ms()
    create(store, {"a": [], " t": 1})
    raw = store.redis.get(f"sess:{{{SID}}}")
    document = json.loads(raw)
    assert set(document) == {"data", "meta"}
    assert document["meta"]["id"] == SID
    assert start <= document["meta"]["createdAt"] <= now_ms()
    assert document["meta"]["expiresAt"] - document["meta"]["createdAt"] == LIFETIME
    assert set(document["data"]) == {"a", "  t"}


@LAYOUTS
def test_merges_stay_exact_after_another_script_changes_cjson_settings(
    redis_url: str, layout: str
) -> None:
    store = redis_store(redis_url, layout)
    create(store, TRICKY)
    # cjson's settings are global to the server: a foreign script lowers the
    # precision and changes what it can, before each of our merges.
    hostile = (
        "cjson.encode_number_precision(3)"
        " cjson.encode_sparse_array(true, 1, 1)"
        " cjson.encode_max_depth(3) cjson.decode_max_depth(3)"
        " cjson.encode_invalid_numbers(true) cjson.decode_invalid_numbers(false)"
        " cjson.encode_keep_buffer(false)"
        " return cjson.encode({1/3})"
    )
    assert store.redis.eval(hostile, 0) == b"[0.333]"
    merge(store, [change(["n"], 1 / 3)])
    store.redis.eval(hostile, 0)
    merge(store, [change(["box", "deep", "er"], [[1 / 3]])])
    assert_same(load(store), {**TRICKY, "n": 1 / 3, "box": {"deep": {"er": [[1 / 3]]}}})


@LAYOUTS
def test_merge_and_load_work_after_script_flush(redis_url: str, layout: str) -> None:
    store = redis_store(redis_url, layout)
    create(store, {"a": 1})
    assert load(store) == {"a": 1}
    store.redis.script_flush()
    merge(store, [change(["b"], 2)])
    store.redis.script_flush()
    assert load(store) == {"a": 1, "b": 2}
    assert store.unlock(SID, "nobody") is False
    store.redis.script_flush()
    assert store.unlock(SID, "nobody") is False


@LAYOUTS
def test_preloaded_scripts_work_after_script_flush(redis_url: str, layout: str) -> None:
    store = RedisSessionStore(
        redis.Redis.from_url(redis_url), preload_script=True, layout=layout
    )
    assert all(store.redis.script_exists(*[s.sha for s in store.scripts]))
    store.redis.script_flush()
    create(store, {"a": 1})
    assert load(store) == {"a": 1}


@LAYOUTS
@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode_responses", [False, True], ids=["bytes", "str"])
def test_every_protocol_and_response_mode_round_trips(
    redis_url: str, layout: str, protocol: int, decode_responses: bool
) -> None:
    store = redis_store(
        redis_url, layout, protocol=protocol, decode_responses=decode_responses
    )
    create(store, TRICKY)
    merge(store, [change(["odd keys", "n"], 1)])
    expected = {**TRICKY, "odd keys": {**TRICKY["odd keys"], "n": 1}}
    assert_same(load(store), expected)
    result = merge(store, [change(["x"], 1)], ttl=LIFETIME)
    assert result.status is MergeStatus.DONE
    assert result.expires_at > now_ms()
    assert merge(store, [change(["a"], 1)], sid=OTHER_SID).status is MergeStatus.MISSING
    redirect(store, OTHER_SID, SID)
    result = merge(store, [change(["a"], 1)], sid=OTHER_SID)
    assert result.status is MergeStatus.REDIRECTED and result.redirect_to == SID
    stored = store.load(OTHER_SID, ttl=LIFETIME)
    assert stored is not None and stored.sid == SID and stored.redirected
    with pytest.raises(SessionSerializationError):
        merge(store, [change(["big"], "x" * 100)], max_size=100)
    assert store.lock(SID, "token", 1000)
    assert merge(store, [change(["a"], 1)]).status is MergeStatus.LOCKED
    assert store.unlock(SID, "token")
    store.redis.close()


def test_load_works_after_another_script_changes_cjson_settings(
    redis_url: str,
) -> None:
    # load.lua decodes short documents that mention "redirectTo" to tell a
    # redirect from a session; a foreign script's decode_max_depth must not
    # break that.
    store = redis_store(redis_url)
    data = {"redirectTo": {"next": {"page": "/"}}}
    create(store, data)
    store.redis.eval("cjson.decode_max_depth(2) return 1", 0)
    assert load(store) == data


# --------------------------------------------------------------------------
# Rotation (store.rotate copies the document to the new id)
# --------------------------------------------------------------------------


def rotate(store: Store, changes: t.Sequence[Change] = ()) -> MergeResult:
    return store.rotate(
        SID,
        OTHER_SID,
        changes,
        now=now_ms(),
        ttl=LIFETIME,
        grace=5_000,
        lock_token=None,
        max_size=MAX_SIZE,
    )


def test_every_tricky_value_survives_a_rotation_and_a_merge_after_it(
    store: Store,
) -> None:
    create(store, TRICKY)
    result = rotate(store, [change(["rotated"], [])])
    assert result.status is MergeStatus.DONE
    merge(store, [change(["n"], 1)], sid=OTHER_SID)
    merge(store, [change(["odd keys", "n"], 1)], sid=OTHER_SID)
    expected = {
        **TRICKY,
        "rotated": [],
        "n": 1,
        "odd keys": {**TRICKY["odd keys"], "n": 1},
    }
    assert_same(load(store, OTHER_SID), expected)
    stored = store.load(SID, ttl=None)
    assert stored is not None and stored.redirected and stored.sid == OTHER_SID
    assert_same(stored.decoded(), expected)


def test_a_rotation_merges_into_a_dict_whose_key_is_one_space(store: Store) -> None:
    create(store, {"a": {" ": 1}})
    assert rotate(store, [change(["a", "x"], 2)]).status is MergeStatus.DONE
    assert_same(load(store, OTHER_SID), {"a": {" ": 1, "x": 2}})


# --------------------------------------------------------------------------
# Redirects keep their grace period (a load pipelines GET and PEXPIRE)
# --------------------------------------------------------------------------

THIRD_SID = "c0ffee00" * 8


def ttl_left(store: Store, sid: str = SID) -> int:
    """How long the store keeps ``sid``, in milliseconds (-2: gone)."""
    if isinstance(store, RedisSessionStore):
        return int(store.redis.pttl(store.session_key(sid)))
    entry = store._sessions.get(sid)
    return -2 if entry is None else entry.expires_at - now_ms()


def stored_redirect(store: RedisSessionStore, sid: str = SID) -> tuple[str, int]:
    """The target of the redirect ``sid`` and the end of its grace period."""
    key = store.session_key(sid)
    if store.layout == "hash":
        fields = store.redis.hgetall(key)
        assert set(fields) == {b" redirect", b" expires"}, fields
        return fields[b" redirect"].decode(), int(fields[b" expires"])
    document = json.loads(store.redis.get(key))
    assert document["data"] is None and set(document["meta"]) == {
        "redirectTo",
        "expiresAt",
    }, document
    return document["meta"]["redirectTo"], document["meta"]["expiresAt"]


def test_a_load_that_refreshes_never_extends_a_redirects_grace_period(
    store: Store,
) -> None:
    create(store, {"a": 1})
    start = now_ms()
    assert rotate(store).status is MergeStatus.DONE
    for _ in range(2):
        stored = store.load(SID, ttl=LIFETIME)
        assert stored is not None and (stored.sid, stored.decoded()) == (
            OTHER_SID,
            {"a": 1},
        )
        assert 0 < ttl_left(store) <= 5_000
        assert ttl_left(store, OTHER_SID) > LIFETIME - 5_000
    if isinstance(store, RedisSessionStore):
        target, expires = stored_redirect(store)
        assert target == OTHER_SID
        assert start + 5_000 <= expires <= now_ms() + 5_000


def test_a_redirect_whose_ttl_a_racing_refresh_extended_gets_its_grace_back(
    store: Store,
) -> None:
    if not isinstance(store, RedisSessionStore):
        pytest.skip(
            "Redis only: the memory store does every operation in one step,"
            " so no refresh can land between a rotation's commands"
        )
    create(store, {"a": 1})
    assert rotate(store).status is MergeStatus.DONE
    _, expires = stored_redirect(store)
    # A load's PEXPIRE that landed just after the rotation.
    store.redis.pexpire(store.session_key(SID), LIFETIME)
    assert not store.touch(SID, ttl=LIFETIME)
    stored = store.load(SID, ttl=None)
    assert stored is not None and stored.sid == OTHER_SID
    assert 0 < ttl_left(store) <= 5_000
    assert stored_redirect(store) == (OTHER_SID, expires)


def test_a_redirect_past_its_grace_period_leads_nowhere_though_its_key_lives(
    store: Store,
) -> None:
    if not isinstance(store, RedisSessionStore):
        pytest.skip(
            "Redis only: the memory store drops a redirect when its grace"
            " period ends, so its key never outlives it"
        )
    create(store, {"a": 1})
    assert rotate(store).status is MergeStatus.DONE
    end_grace_now(store, SID, LIFETIME)
    assert store.load(SID, ttl=LIFETIME) is None
    assert ttl_left(store) == -2
    create(store, {"a": 1})
    assert rotate(store).status is MergeStatus.DONE
    end_grace_now(store, SID, LIFETIME)
    assert merge(store, [change(["b"], 2)], ttl=LIFETIME).status is MergeStatus.MISSING
    assert ttl_left(store) == -2
    create(store, {"a": 1})
    assert rotate(store).status is MergeStatus.DONE
    end_grace_now(store, SID, LIFETIME)
    moved = store.rotate(
        SID,
        THIRD_SID,
        [],
        now=now_ms(),
        ttl=LIFETIME,
        grace=5_000,
        lock_token=None,
        max_size=MAX_SIZE,
    )
    assert moved.status is MergeStatus.MISSING
    assert ttl_left(store) == -2
    assert load(store, OTHER_SID) == {"a": 1}
    # A link past its grace period in the middle of a chain breaks it.
    create(store, {"a": 1})
    assert rotate(store).status is MergeStatus.DONE
    store.rotate(
        OTHER_SID,
        THIRD_SID,
        [],
        now=now_ms(),
        ttl=LIFETIME,
        grace=5_000,
        lock_token=None,
        max_size=MAX_SIZE,
    )
    end_grace_now(store, OTHER_SID, LIFETIME)
    with pytest.raises(SessionChainBrokenError):
        store.load(SID, ttl=None)


def test_shortening_a_chain_keeps_each_redirects_grace_period(store: Store) -> None:
    create(store, {"a": 1})
    assert rotate(store).status is MergeStatus.DONE
    if isinstance(store, RedisSessionStore):
        _, expires = stored_redirect(store)
    store.rotate(
        OTHER_SID,
        THIRD_SID,
        [],
        now=now_ms(),
        ttl=LIFETIME,
        grace=60_000,
        lock_token=None,
        max_size=MAX_SIZE,
    )
    stored = store.load(SID, ttl=LIFETIME)
    assert stored is not None and (stored.sid, stored.decoded()) == (
        THIRD_SID,
        {"a": 1},
    )
    assert 0 < ttl_left(store) <= 5_000
    if isinstance(store, RedisSessionStore):
        assert stored_redirect(store) == (THIRD_SID, expires)


# --------------------------------------------------------------------------
# A merge that releases the lock (the end of a locked section)
# --------------------------------------------------------------------------


def locked_merge(
    store: Store,
    changes: t.Sequence[Change],
    token: str | None,
    *,
    sid: str = SID,
    max_size: int = MAX_SIZE,
) -> MergeResult:
    return store.merge(
        sid,
        changes,
        now=now_ms(),
        ttl=LIFETIME,
        create=False,
        lock_token=token,
        max_size=max_size,
        release_lock=True,
    )


def test_a_merge_that_releases_the_lock_writes_and_unlocks_in_one_step(
    store: Store,
) -> None:
    create(store, {"n": 1})
    assert store.lock(SID, "mine", 10_000)
    result = locked_merge(store, [change(["n"], 2)], "mine")
    assert result.status is MergeStatus.DONE and not result.emptied
    assert load(store) == {"n": 2}
    assert not store.is_locked(SID)
    assert store.unlock(SID, "mine") is False
    assert store.lock(SID, "next", 10_000)
    emptied = locked_merge(store, [change(["n"], delete=True)], "next")
    assert (emptied.status, emptied.emptied) == (MergeStatus.DONE, True)
    assert load(store) is None
    assert not store.is_locked(SID)


def test_a_merge_that_releases_the_lock_keeps_it_when_it_writes_nothing(
    store: Store,
) -> None:
    create(store, {"n": 1})
    assert store.lock(SID, "theirs", 10_000)
    assert locked_merge(store, [change(["n"], 2)], "mine").status is (
        MergeStatus.LOCK_LOST
    )
    assert locked_merge(store, [change(["n"], 2)], None).status is MergeStatus.LOCKED
    assert store.is_locked(SID)
    assert store.unlock(SID, "theirs")
    assert store.lock(SID, "mine", 10_000)
    with pytest.raises(SessionSerializationError):
        locked_merge(store, [change(["big"], "x" * 200)], "mine", max_size=100)
    assert store.is_locked(SID)
    assert store.unlock(SID, "mine")
    assert store.lock(OTHER_SID, "mine", 10_000)
    missing = locked_merge(store, [change(["n"], 2)], "mine", sid=OTHER_SID)
    assert missing.status is MergeStatus.MISSING
    assert store.unlock(OTHER_SID, "mine")
    assert load(store) == {"n": 1}
