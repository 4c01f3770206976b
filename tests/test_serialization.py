"""The tagged JSON of :mod:`flask_relay_session.serialization`.

Every value Flask's cookie session round-trips must come back from
``loads(dumps(value))`` equal and of the same types, and the JSON must only
use what Redis's Lua ``cjson`` keeps intact (checked against the real server
in ``test_store_roundtrip.py``). ``TRICKY`` and :func:`assert_same` are shared
with the store and model tests.

The nesting limit, :data:`~flask_relay_session.serialization.MAX_DEPTH`, is
the same when a value is stored and when it is read; the last section checks
it through an app on every store, with values nested to the limit and one
level past it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import typing as t
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
import redis
from flask import Flask
from flask import session
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from markupsafe import Markup

from flask_relay_session import RelaySession
from flask_relay_session import SessionSerializationError
from flask_relay_session.serialization import MAX_DEPTH
from flask_relay_session.serialization import decode_key
from flask_relay_session.serialization import dumps
from flask_relay_session.serialization import encode_key
from flask_relay_session.serialization import loads

from .helpers import decode_fields

# --------------------------------------------------------------------------
# Exact comparison
# --------------------------------------------------------------------------


def assert_same(actual: t.Any, expected: t.Any, where: str = "value") -> None:
    """Assert ``actual`` equals ``expected`` with the same types all the way.

    ``nan`` equals ``nan``, ``-0.0`` differs from ``0.0``, ``True`` from
    ``1``, a tuple from a list, ``Markup`` from ``str``. Dicts compare by key
    set (order is not kept). Dict and list subclasses (the session's tracked
    containers) count as dicts and lists.
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not a dict"
        assert all(type(key) is str for key in actual), f"{where}: key types"
        assert set(actual) == set(expected), (
            f"{where}: keys {sorted(map(repr, actual))}"
            f" != {sorted(map(repr, expected))}"
        )
        for key, value in expected.items():
            assert_same(actual[key], value, f"{where}[{key!r}]"[:300])
        return
    if isinstance(expected, list) and type(expected) is not tuple:
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same(left, right, f"{where}[{index}]")
        return
    assert type(actual) is type(expected), (
        f"{where}: {type(actual).__name__} {actual!r:.200}"
        f" != {type(expected).__name__} {expected!r:.200}"
    )
    if isinstance(expected, tuple):
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same(left, right, f"{where}[{index}]")
    elif isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{where}: {actual!r} is not nan"
        else:
            assert actual == expected, f"{where}: {actual!r} != {expected!r}"
            assert math.copysign(1, actual) == math.copysign(1, expected), where
    elif isinstance(expected, datetime):
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
        assert actual.utcoffset() == expected.utcoffset(), where
        assert actual.microsecond == expected.microsecond, where
    else:
        assert actual == expected, f"{where}: {actual!r:.200} != {expected!r:.200}"


def test_assert_same_tells_apart_what_equality_does_not() -> None:
    # The helper is what every round-trip test relies on: it must fail on
    # the differences ``==`` hides.
    for actual, expected in [
        (1, True),
        (0.0, -0.0),
        (2, 2.0),
        ([1], (1,)),
        ("<b>", Markup("<b>")),
        ({"a": []}, {"a": {}}),
        (float("nan"), 0.0),
        ({1: "a"}, {"1": "a"}),
        (
            datetime(2024, 1, 1, tzinfo=timezone.utc),
            datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        ),
    ]:
        with pytest.raises(AssertionError):
            assert_same(actual, expected)
    assert_same(float("nan"), float("nan"))
    assert_same({"a": [(1, b"x")]}, {"a": [(1, b"x")]})


# --------------------------------------------------------------------------
# The catalogue of tricky values
# --------------------------------------------------------------------------

#: Every code point but the surrogates, in one string.
ALL_UNICODE = "".join(
    chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF
)
#: A sample of it, small enough to store in many sessions: the ASCII and
#: Latin-1 controls, the line and paragraph separators, BOM, non-characters,
#: astral characters and a stride through the rest.
UNICODE_SAMPLE = (
    "".join(chr(code) for code in range(0x100))
    + "\u2028\u2029\ufeff\ufffe\uffff\U0001d11e\U0001f600\U0010ffff"
    + ALL_UNICODE[::997]
)
UUID = uuid.UUID("12345678-1234-5678-9abc-def012345678")

FLOATS = [
    1 / 3,
    0.1,
    2.0,
    -0.0,
    0.0,
    float("inf"),
    float("-inf"),
    1e300,
    -1e300,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    1e-7,
    123456.789,
    1712345678.123456,  # time.time() has more digits than cjson keeps
    0.30000000000000004,
    1e16 + 2,
    12345678901234.5,
    9007199254740993.0,
]
INTS = [
    0,
    -1,
    2**53 + 1,
    -(2**53 + 1),
    10**14,
    -(10**14),
    10**14 - 1,
    -(10**14 - 1),
    123456789012345,
    2**63 - 1,
    2**64,
    -(2**64),
    10**100,
]

#: Session data that exercises every lossy corner of Flask's tagged JSON and
#: of Redis's cjson. Top-level keys are tricky too.
TRICKY: dict[str, t.Any] = {
    "tuple": (1, "a", (2, (3,)), ()),
    "empty tuple": (),
    "nested empty tuples": ((), ((),), [()]),
    "bytes": bytes(range(256)),
    "empty bytes": b"",
    "markup": Markup("<b>bold</b> &amp;"),
    "empty markup": Markup(""),
    "uuid": UUID,
    "naive datetime": datetime(2024, 2, 29, 23, 59, 59, 123456),
    "naive datetime no microseconds": datetime(1999, 12, 31, 23, 59, 59),
    "utc datetime": datetime(2024, 3, 1, 12, 0, 0, 1, tzinfo=timezone.utc),
    "offset datetime": datetime(
        2024, 3, 1, 12, 0, 0, 999999, tzinfo=timezone(timedelta(hours=-5, minutes=-30))
    ),
    "floats": FLOATS,
    "float alone": 1 / 3,
    "integral float alone": 2.0,
    "negative zero alone": -0.0,
    "nan": float("nan"),
    "ints": INTS,
    "big int alone": 2**53 + 1,
    "huge int": 10**5000,
    "negative huge int": -(7**6000),
    "bools and ints": [True, False, 1, 0, None, 1.0, 0.0],
    "true": True,
    "one": 1,
    "none": None,
    "empty list": [],
    "empty lists deep": [[], [[]], [[], [[], []]], {"e": []}, ([],)],
    "empty dict": {},
    "empty dicts deep": [{}, {"a": {}}, ({},)],
    "list of dicts": [{"a": 1}, {}, {"b": {"c": (1,)}}],
    "numeric keys": {"1": "a", "2": "b", "3": "c"},
    "zero-based numeric keys": {"0": "a", "1": "b"},
    "odd keys": {
        "a.b.c": 1,
        "": "empty key",
        "-1": "negative",
        "1.5": "float-like",
        "1e3": "exponent-like",
        "null": None,
        "true": True,
        " ": "one space",
        "  ": "two spaces",
        " leading": "space",
        "  leading": "two spaces",
        "trailing ": "space",
        "/": "slash",
        "\\": "backslash",
        '"': "quote",
        "\x00": "nul",
        "\u2028": "line separator",
        "\U0001f600": "astral",
        "k" * 10_000: "very long key",
    },
    # A real dict whose only key is a tag name must not read back as a tag.
    "tag-looking dicts": [
        {" t": [1, 2]},
        {" t": []},
        {" di": {"x": 1}},
        {" b": "notbase64"},
        {" m": "<i>"},
        {" u": "x"},
        {" d": "2024-01-01"},
        {" f": "1.5"},
        {" i": "12"},
        {" l": 0},
        {" s": "AAAA"},
        {" ~": 1},
        {" ~AAAA": 1},
        {" ": 1},
        {"  ": 2},
        {"  t": 3},
        {" x": 4},
    ],
    # The same keys with siblings: a merge may remove the siblings later.
    "tag keys with siblings": {
        " t": [1],
        " di": 1,
        " l": 0,
        " ": 1,
        "  t": 2,
        " ~": 3,
        "plain": 4,
    },
    " t": "top-level key named like a tag",
    " di": {"x": 1},
    " ": "top-level single space",
    "\ud800": "top-level key with a lone surrogate",
    "surrogate keys": {"\ud800": 1, " \udc00": 2, "a\udfffb": 3, " ~": 4},
    "surrogates": ["\ud800", "a\udfffb", "\udc00\ud800", " \ud83d"],
    "surrogate alone": "\udbff",
    "surrogate markup": Markup("<b>\ud800</b>"),
    "surrogate in tuple": ("\ud800", b"\xff"),
    "unicode": UNICODE_SAMPLE,
    "escapes": 'a/b\\c"d\n\r\t\b\f\x7f\x1f </script> \u2028\u2029',
    "empty string": "",
    "spaces": " ",
    "mixed": (
        Markup("<p>"),
        b"\x00",
        UUID,
        datetime(2020, 1, 1, 0, 0, 0, 5),
        [],
        {},
        {" t": ()},
        (1 / 3, 2**64, -0.0),
    ),
}


def test_catalogue_covers_the_cases_flask_tags() -> None:
    # Guard against the catalogue silently losing its teeth.
    kinds = set()

    def walk(value: t.Any) -> None:
        kinds.add(type(value))
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(TRICKY)
    assert {tuple, bytes, Markup, uuid.UUID, datetime, dict, list, float, int} <= kinds
    assert {bool, str, type(None)} <= kinds


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(TRICKY), ids=lambda key: repr(key)[:40])
def test_each_tricky_value_round_trips_with_its_types(key: str) -> None:
    value = TRICKY[key]
    assert_same(loads(dumps(value)), value)


def test_the_whole_catalogue_round_trips_as_one_document() -> None:
    assert_same(loads(dumps(TRICKY)), TRICKY)


def test_top_level_fields_round_trip_through_loads_fields() -> None:
    fields = {encode_key(key): dumps(value) for key, value in TRICKY.items()}
    assert_same(decode_fields(fields), TRICKY)


def test_all_of_unicode_round_trips_as_value_and_as_key() -> None:
    assert_same(loads(dumps(ALL_UNICODE)), ALL_UNICODE)
    assert_same(loads(dumps({ALL_UNICODE: ALL_UNICODE})), {ALL_UNICODE: ALL_UNICODE})


def test_every_lone_surrogate_round_trips_as_value_and_as_key() -> None:
    surrogates = [chr(code) for code in range(0xD800, 0xE000)]
    value = {s: [s, f" {s}", (s,)] for s in surrogates}
    assert_same(loads(dumps(value)), value)
    assert_same(loads(dumps(surrogates)), surrogates)


@pytest.mark.parametrize("value", FLOATS, ids=repr)
def test_floats_keep_value_type_and_sign(value: float) -> None:
    for wrapped in (value, [value], {"f": value}, (value,)):
        assert_same(loads(dumps(wrapped)), wrapped)


@pytest.mark.parametrize(
    "value",
    [*INTS, 10**5000, -(10**4301)],
    ids=lambda v: f"{v.bit_length()}bits{'-' if v < 0 else ''}",
)
def test_ints_keep_every_digit_and_stay_ints(value: int) -> None:
    assert_same(loads(dumps(value)), value)
    assert_same(loads(dumps([value])), [value])


def test_bools_and_ints_are_not_confused() -> None:
    value = [True, 1, False, 0, 1.0, {"t": True, "o": 1}]
    assert_same(loads(dumps(value)), value)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 2, 3, 4, 5, 678901),
        datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
        datetime(1, 1, 1),
        datetime(
            9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=14))
        ),
        datetime(2024, 6, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    ],
    ids=str,
)
def test_datetimes_keep_microseconds_and_offset(value: datetime) -> None:
    assert_same(loads(dumps(value)), value)


def test_subclasses_come_back_as_the_types_flask_gives() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    class Ratio(float):
        pass

    class Items(list):  # type: ignore[type-arg]
        pass

    class Mapping(dict):  # type: ignore[type-arg]
        pass

    class HTML:
        def __html__(self) -> str:
            return "<em>x</em>"

    value = [Text("a"), Number(3), Ratio(0.5), Items([1]), Mapping(a=1), HTML()]
    expected = ["a", 3, 0.5, [1], {"a": 1}, Markup("<em>x</em>")]
    assert_same(loads(dumps(value)), expected)


def test_non_string_keys_become_strings_like_in_flask() -> None:
    assert_same(
        loads(dumps({1: "a", 2.5: "b", False: "c", None: "d"})),
        {"1": "a", "2.5": "b", "false": "c", "null": "d"},
    )


# --------------------------------------------------------------------------
# What the JSON looks like
# --------------------------------------------------------------------------


def _reject_constant(name: str) -> t.NoReturn:
    raise AssertionError(f"non-standard JSON constant {name}")


def _numbers(tree: t.Any) -> t.Iterator[t.Any]:
    if isinstance(tree, dict):
        for item in tree.values():
            yield from _numbers(item)
    elif isinstance(tree, list):
        for item in tree:
            yield from _numbers(item)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


def _lists(tree: t.Any) -> t.Iterator[list[t.Any]]:
    if isinstance(tree, dict):
        for item in tree.values():
            yield from _lists(item)
    elif isinstance(tree, list):
        yield tree
        for item in tree:
            yield from _lists(item)


def test_json_holds_only_what_cjson_keeps() -> None:
    raw = dumps(TRICKY)
    assert isinstance(raw, bytes)
    raw.decode("utf-8", "strict")  # no lone surrogates: cjson rejects them
    tree = json.loads(raw, parse_constant=_reject_constant)
    for number in _numbers(tree):
        # cjson writes %.14g: exact only for such numbers, and it writes
        # integral floats as ints.
        assert float(f"{number:.14g}") == number, number
        assert isinstance(number, int) or not number.is_integer(), number
        if isinstance(number, int):
            assert abs(number) < 10**14, number
    for items in _lists(tree):
        assert items, "an empty JSON array comes back from cjson as {}"


def test_user_keys_never_look_like_tags_to_the_merge_script() -> None:
    # merge.lua and the memory store treat a one-key object whose key is a
    # space and one letter as a tag, never as a dict to merge into.
    for key in [" t", " l", " ", "  ", " ~", "\ud800", " \ud800", " ~AAAA", "t"]:
        stored = encode_key(key)
        assert not (len(stored) == 2 and stored[0] == " " and stored[1] != " "), key
        assert stored.encode("utf-8")
        assert stored.startswith(" ") == (stored != key)


def test_encode_key_and_decode_key_are_inverse_for_escaped_keys() -> None:
    for key in [" ", "  ", " t", " ~", " ~x", "\ud800", " \udc00", "\udbff\udfff"]:
        stored = encode_key(key)
        assert stored != key
        assert decode_key(stored) == key


#: Any code point, lone surrogates included (``st.characters`` leaves them out).
_characters = st.characters() | st.characters(categories=["Cs"])


@given(st.text(_characters))
def test_any_string_is_a_key_and_a_value(text: str) -> None:
    value = {text: text, "k": {text: [text]}}
    assert_same(loads(dumps(value)), value)
    assert_same(decode_fields({encode_key(text): dumps(text)}), {text: text})


# --------------------------------------------------------------------------
# Values that cannot be stored
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        (object(), "session['x']", "object"),
        ({1, 2}, "session['x']", "set"),
        (frozenset(), "session['x']", "frozenset"),
        ({"a": [1, {"b": {1}}]}, "session['x']['a'][1]['b']", "set"),
        ({"a": {("t", "k"): 1}}, "session['x']['a']", "tuple"),
        ((1, (2, object())), "session['x'][1][1]", "object"),
        ([timedelta(1)], "session['x'][0]", "timedelta"),
        ({"deep": {"er": [{3j: 1}]}}, "session['x']['deep']['er'][0]", "complex"),
    ],
    ids=[
        "object",
        "set",
        "frozenset",
        "nested set",
        "tuple key",
        "in tuple",
        "timedelta",
        "complex key",
    ],
)
def test_unencodable_values_raise_an_error_naming_the_path(
    value: t.Any, where: str, what: str
) -> None:
    with pytest.raises(SessionSerializationError) as info:
        dumps(value, ("x",))
    message = str(info.value)
    assert where in message
    assert what in message
    assert isinstance(info.value, TypeError)


def test_an_unusable_key_raises_a_serialization_error() -> None:
    with pytest.raises(SessionSerializationError, match="tuple"):
        encode_key(("a", "b"))


def test_nesting_within_the_limit_round_trips() -> None:
    depth = MAX_DEPTH - 1
    for make in (
        lambda v: [v],
        lambda v: {"k": v},
        lambda v: (v,),
        lambda v: [{"k": (v,)}],
    ):
        value: t.Any = "leaf"
        for _ in range(depth // 3):
            value = make(value)
        assert_same(loads(dumps(value)), value)
    value = []
    for _ in range(depth):
        value = [value]
    assert_same(loads(dumps(value)), value)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_too_deep_nesting_raises_a_clear_error(depth: int) -> None:
    value: t.Any = 1
    for _ in range(depth):
        value = {"k": [value]}
    with pytest.raises(SessionSerializationError, match="deep") as info:
        dumps(value, ("deep",))
    assert "session['deep']" in str(info.value)


def test_too_deep_nesting_with_a_lone_surrogate_raises_a_clear_error() -> None:
    value: t.Any = "\ud800"
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(SessionSerializationError, match="deep"):
        dumps(value)


def test_deep_values_fail_the_same_under_a_low_recursion_limit() -> None:
    # A view running deep in the stack must get the clear error, not a crash.
    value: t.Any = 1
    for _ in range(MAX_DEPTH - 1):
        value = ((value,),)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        with pytest.raises(SessionSerializationError, match="deep"):
            dumps(value)
    finally:
        sys.setrecursionlimit(limit)


NESTINGS = ("list", "dict", "tuple", "mixed")


def nested(kind: str, levels: int, leaf: t.Any = "leaf") -> t.Any:
    """Return ``levels`` containers, each inside the next, around ``leaf``.

    ``kind`` is ``"list"``, ``"dict"`` (key ``"k"``), ``"tuple"``, or
    ``"mixed"``: a list, a dict and a tuple in turn.
    """
    value = leaf
    for level in range(levels):
        shape = NESTINGS[level % 3] if kind == "mixed" else kind
        if shape == "list":
            value = [value]
        elif shape == "dict":
            value = {"k": value}
        else:
            value = (value,)
    return value


def innermost(value: t.Any, levels: int) -> t.Any:
    """Read ``levels`` containers down into a :func:`nested` value, one by one."""
    for _ in range(levels):
        value = value["k"] if isinstance(value, dict) else value[0]
    return value


@pytest.mark.parametrize("kind", NESTINGS)
@pytest.mark.parametrize(
    "leaf", ["leaf", "\ud800", b"bytes", Markup("<b>"), 2**70, 0.5, None]
)
def test_values_nested_to_the_limit_encode_whatever_they_hold(
    kind: str, leaf: t.Any
) -> None:
    value = nested(kind, MAX_DEPTH, leaf)
    assert_same(loads(dumps(value, ("v",))), value)
    assert_same(decode_fields({"v": dumps(value, ("v",))}), {"v": value})
    with pytest.raises(SessionSerializationError, match="deeper than 256"):
        dumps([value], ("v",))


@pytest.mark.parametrize("kind", NESTINGS)
def test_the_dicts_a_value_is_set_in_count_toward_the_limit(kind: str) -> None:
    path = ("a", "b", "c")
    value = nested(kind, MAX_DEPTH - 2)
    assert_same(loads(dumps(value, path)), value)
    with pytest.raises(SessionSerializationError, match="deeper than 256") as info:
        dumps([value], path)
    assert "session['a']['b']['c'][0]" in str(info.value)
    assert dumps("leaf", ("a",) * (MAX_DEPTH + 1)) == b'"leaf"'


@pytest.mark.parametrize("kind", NESTINGS)
def test_stored_values_nested_past_the_limit_do_not_decode(kind: str) -> None:
    fine = dumps(nested(kind, MAX_DEPTH), ("v",))
    # What a store could hold if something else wrote it.
    deeper = b"[" + fine + b"]"
    with pytest.raises(ValueError, match="deeper than 256"):
        decode_fields({"v": deeper})
    with pytest.raises(ValueError, match="deeper than 256"):
        loads(deeper, max_depth=MAX_DEPTH)
    document = b'{"data":{"v":%s},"meta":{"createdAt":1}}'
    assert_same(loads(document % fine)["data"]["v"], nested(kind, MAX_DEPTH))
    with pytest.raises(ValueError, match="deeper than 258"):
        loads(document % deeper)


@pytest.mark.parametrize("levels", [5_000, 100_000])
@pytest.mark.parametrize("tagged", [False, True], ids=["plain", "tagged"])
@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_json_nested_far_too_deep_is_refused_without_recursing(
    levels: int, tagged: bool, as_bytes: bool
) -> None:
    text = "[" * levels + ('{" t":[1]}' if tagged else "1") + "]" * levels
    data: str | bytes = text.encode() if as_bytes else text
    with pytest.raises(ValueError, match="deep"):
        loads(data)
    with pytest.raises(ValueError, match="deep"):
        decode_fields({"v": text.encode()})


# --------------------------------------------------------------------------
# Random values
# --------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(_characters, max_size=8),
    st.binary(max_size=8),
    st.uuids(),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.text(max_size=8).map(Markup),
)
_keys = st.text(_characters, max_size=6) | st.sampled_from(
    [" t", " di", " l", " ", "  ", " ~", "1", "0", "a.b", " f", " i", " s"]
)
values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(_keys, children, max_size=4),
    ),
    max_leaves=20,
)


def _normalize_timezones(value: t.Any) -> t.Any:
    """Aware datetimes come back with a fixed offset, not their zone."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        offset = value.utcoffset()
        assert offset is not None
        return value.replace(tzinfo=timezone(offset))
    if isinstance(value, dict):
        return {key: _normalize_timezones(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize_timezones(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_normalize_timezones(item) for item in value)
    return value


@settings(max_examples=300)
@given(values)
def test_random_values_round_trip(value: t.Any) -> None:
    assert_same(loads(dumps(value)), _normalize_timezones(value))


def depth_of(value: t.Any) -> int:
    """How deeply dicts, lists and tuples nest in ``value``."""
    if isinstance(value, dict):
        value = list(value.values())
    elif not isinstance(value, (list, tuple)):
        return 0
    return 1 + max(map(depth_of, value), default=0)


_json_text = st.text(st.sampled_from('[]{}"\\\\/ a'), max_size=6)
_shapes = st.recursive(
    _json_text | st.integers(),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(_json_text, children, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(values | _shapes)
def test_the_depth_limit_on_reading_is_exact(value: t.Any) -> None:
    # Strings full of brackets, quotes and backslashes must not fool it.
    depth = depth_of(value)
    data = dumps(value)
    assert_same(loads(data, max_depth=depth), _normalize_timezones(value))
    if depth:
        with pytest.raises(ValueError, match="deeper"):
            loads(data, max_depth=depth - 1)


# --------------------------------------------------------------------------
# Deep nesting through an app and its store
# --------------------------------------------------------------------------


def deep_app(app: Flask) -> Flask:
    """Add routes that store, read and remove :func:`nested` values."""

    @app.post("/set/<kind>/<int:levels>")
    def set_value(kind: str, levels: int) -> str:
        session["v"] = nested(kind, levels)
        session["levels"] = levels
        return "ok"

    @app.get("/check/<kind>/<int:levels>")
    def check(kind: str, levels: int) -> t.Any:
        value = session["v"]
        assert_same(value, nested(kind, levels))
        assert session["levels"] == levels
        return innermost(value, levels)

    @app.post("/grow/<int:levels>")
    def grow(levels: int) -> str:
        # Changes the innermost dict or list above any tuple through
        # tracking (a tuple is a value, like a string); a tuple at the top
        # is replaced.
        deepest = session["v"]
        for _ in range(levels - 1):
            inner = deepest["k"] if isinstance(deepest, dict) else deepest[0]
            if not isinstance(deepest, (dict, list)) or isinstance(inner, tuple):
                break
            deepest = inner
        if isinstance(deepest, dict):
            deepest["more"] = "grown"
        elif isinstance(deepest, list):
            deepest.append("grown")
        else:
            session["v"] = (*deepest, "grown")
        return "ok"

    @app.get("/grown/<int:levels>")
    def grown(levels: int) -> str:
        text = json.dumps(session["v"])
        return str(text.count("grown"))

    @app.post("/outer")
    def set_outer() -> str:
        session["outer"] = {"v": "old"}
        return "ok"

    @app.post("/outer/<kind>/<int:levels>")
    def set_in_outer(kind: str, levels: int) -> str:
        session["outer"]["v"] = nested(kind, levels)
        return "ok"

    @app.get("/outer/<kind>/<int:levels>")
    def check_outer(kind: str, levels: int) -> str:
        assert_same(session["outer"], {"v": nested(kind, levels)})
        return "ok"

    @app.post("/pop/<kind>/<int:levels>")
    def pop(kind: str, levels: int) -> str:
        assert_same(session.pop("v"), nested(kind, levels))
        return "ok"

    @app.post("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.post("/delete")
    def delete() -> str:
        del session["v"]
        return "ok"

    @app.get("/keys")
    def keys() -> t.Any:
        return sorted(session)

    return app


@pytest.mark.parametrize("kind", NESTINGS)
def test_values_nested_to_the_limit_are_stored_read_and_removed(
    make_app: t.Callable[..., Flask], kind: str
) -> None:
    client = deep_app(make_app()).test_client()

    def ok(method: str, url: str) -> str:
        response = client.open(url, method=method)
        assert response.status_code == 200, response.text
        return response.text

    for levels in (MAX_DEPTH - 1, MAX_DEPTH):
        value_url = f"/{kind}/{levels}"
        ok("POST", "/set" + value_url)
        assert ok("GET", "/check" + value_url) == "leaf"
        ok("POST", "/pop" + value_url)
        assert json.loads(ok("GET", "/keys")) == ["levels"]
        ok("POST", "/set" + value_url)
        ok("POST", "/clear")
        assert json.loads(ok("GET", "/keys")) == []
        ok("POST", "/set" + value_url)
        ok("POST", "/delete")
        assert json.loads(ok("GET", "/keys")) == ["levels"]
        ok("POST", "/set" + value_url)
        ok("POST", f"/grow/{levels}")
        assert ok("GET", f"/grown/{levels}") == "1"
    # One level more is refused, and nothing of that request is written.
    ok("POST", f"/set/{kind}/{MAX_DEPTH}")
    with pytest.raises(SessionSerializationError, match="deeper than 256"):
        client.post(f"/set/{kind}/{MAX_DEPTH + 1}")
    assert ok("GET", f"/check/{kind}/{MAX_DEPTH}") == "leaf"


@pytest.mark.parametrize("kind", NESTINGS)
def test_a_value_set_in_a_dict_nests_only_as_deep_as_the_dict_leaves_room(
    make_app: t.Callable[..., Flask], kind: str
) -> None:
    # session["outer"] is the first level: the value inside it has one less.
    client = deep_app(make_app()).test_client()
    assert client.post("/outer").status_code == 200
    assert client.post(f"/outer/{kind}/{MAX_DEPTH - 1}").status_code == 200
    assert client.get(f"/outer/{kind}/{MAX_DEPTH - 1}").status_code == 200
    with pytest.raises(SessionSerializationError, match="deeper than 256"):
        client.post(f"/outer/{kind}/{MAX_DEPTH}")
    assert client.get(f"/outer/{kind}/{MAX_DEPTH - 1}").status_code == 200


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 100_000])
@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_stored_value_nested_past_the_limit_is_not_a_session(
    redis_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    layout: str,
    levels: int,
) -> None:
    # Written by something else: the request goes on with a new session.
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        TESTING=True,
        RELAY_SESSION_REDIS=redis_url,
        RELAY_SESSION_LAYOUT=layout,
    )
    RelaySession(app)
    client = deep_app(app).test_client()
    assert client.post("/set/list/1").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    sid = cookie.value.split(".")[0]
    key = app.extensions["relay_session"].store.session_key(sid)
    deep = b"[" * levels + b"1" + b"]" * levels
    if layout == "hash":
        redis_client.hset(key, "v", deep)
    else:
        stored = redis_client.get(key)
        assert stored is not None
        document = json.loads(stored)
        document["data"]["v"] = "DEEP"
        raw = json.dumps(document).encode().replace(b'"DEEP"', deep)
        redis_client.set(key, raw, keepttl=True)
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        response = client.get("/keys")
    assert response.status_code == 200
    assert response.json == []
    assert "not a session" in caplog.text
