"""SPEC §8 and §4: bad cookies and values at the edges, on real Redis.

Cookies: whatever a client sends (random bytes and text, truncated or
altered valid cookies, oversized values, wrong separators, non-ASCII, ids
with made-up signatures), the request gets a fresh, empty session, never an
error, and the store is never asked about the id (counted round trips).

Values: empty strings, 10 KB keys, deep nesting, 100,000-item lists and
every class of Unicode code point either round-trip exactly through a real
app on Redis 7 and 6.2, in both layouts, or fail with a clear
:class:`~flask_relay_session.SessionSerializationError` that loses nothing.
"""

from __future__ import annotations

import copy
import string
import sys
import typing as t
from collections.abc import Iterator

import pytest
from flask import Flask
from flask import jsonify
from flask import session
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_relay_session import RelaySession
from flask_relay_session import SessionSerializationError

from .redis_servers import CountingRedis
from .redis_servers import RedisServer

SECRET = "fuzz secret"

fixture_settings = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)


# --------------------------------------------------------------------------
# Cookies
# --------------------------------------------------------------------------


def cookie_app(client: CountingRedis) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, TESTING=True, RELAY_SESSION_REDIS=client)
    RelaySession(app)

    @app.get("/peek")
    def peek() -> t.Any:
        data = dict(session)
        return jsonify(
            new=session.new,
            sid=session.sid,  # type: ignore[attr-defined]
            data=data,
        )

    @app.post("/login")
    def login() -> str:
        session["user"] = "ada"
        return "ok"

    return app


@pytest.fixture
def cookie_setup(
    counting_redis: CountingRedis,
) -> Iterator[tuple[Flask, str, CountingRedis]]:
    app = cookie_app(counting_redis)
    browser = app.test_client()
    assert browser.post("/login").status_code == 200
    cookie = browser.get_cookie("session")
    assert cookie is not None
    yield app, cookie.value, counting_redis


def send_raw_cookie(app: Flask, value: str) -> t.Any:
    """A request whose Cookie header carries ``value`` as is (latin-1)."""
    # Without its own cookie jar, the test client sends the header as given.
    client = app.test_client(use_cookies=False)
    return client.get("/peek", headers={"Cookie": f"session={value}"})


def assert_fresh_without_lookup(
    app: Flask, value: str, counter: CountingRedis, valid_sid: str
) -> None:
    counter.counter.reset()
    response = send_raw_cookie(app, value)
    assert response.status_code == 200
    body = response.json
    assert body["new"] is True
    assert body["data"] == {}
    assert body["sid"] != valid_sid
    assert body["sid"] not in value
    # Nothing stored, so no cookie is set and nothing was asked of Redis.
    assert "Set-Cookie" not in response.headers
    assert counter.counter.round_trips == 0, counter.counter.commands


HEX = "0123456789abcdef"
B64 = string.ascii_letters + string.digits + "-_"

forged_cookies = st.builds(
    lambda sid, signature, permanent, expires: (
        f"{sid}.{signature}.{permanent}{expires}"
    ),
    st.text(HEX, min_size=64, max_size=64),
    st.text(B64, min_size=43, max_size=43),
    st.sampled_from("01"),
    st.integers(0, 10**12 - 1),
)

latin1_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF))


@given(
    value=st.one_of(
        forged_cookies, latin1_text, st.binary().map(lambda raw: raw.decode("latin-1"))
    )
)
@fixture_settings
def test_random_and_forged_cookies_give_a_fresh_session_without_lookup(
    cookie_setup: tuple[Flask, str, CountingRedis], value: str
) -> None:
    app, valid, counter = cookie_setup
    value = value.replace("\r", "").replace("\n", "")
    if value == valid:  # pragma: no cover - 2**-256
        return
    assert_fresh_without_lookup(app, value, counter, valid.split(".")[0])


@given(data=st.data())
@fixture_settings
def test_altered_valid_cookies_give_a_fresh_session_without_lookup(
    cookie_setup: tuple[Flask, str, CountingRedis], data: st.DataObject
) -> None:
    app, valid, counter = cookie_setup
    kind = data.draw(
        st.sampled_from(
            ["truncate", "replace", "insert", "oversize", "separator", "non-ascii"]
        )
    )
    if kind == "truncate":
        value = valid[: data.draw(st.integers(0, len(valid) - 1))]
    elif kind == "replace":
        index = data.draw(st.integers(0, len(valid) - 1))
        char = data.draw(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(
                lambda c: c not in {valid[index], ";", ",", '"', "\\"}
            )
        )
        value = valid[:index] + char + valid[index + 1 :]
    elif kind == "insert":
        index = data.draw(st.integers(0, len(valid)))
        value = valid[:index] + data.draw(st.sampled_from("0aA.-_")) + valid[index:]
    elif kind == "oversize":
        value = valid + "0" * data.draw(st.integers(1, 10_000))
    elif kind == "separator":
        separator = data.draw(st.sampled_from([":", "|", "-", "_", "~", "!"]))
        value = valid.replace(".", separator, data.draw(st.integers(1, 2)))
    else:
        index = data.draw(st.integers(0, len(valid)))
        char = data.draw(st.characters(min_codepoint=0x80, max_codepoint=0xFF))
        value = valid[:index] + char + valid[index:]
    assert value != valid
    assert_fresh_without_lookup(app, value, counter, valid.split(".")[0])


def test_valid_cookie_is_looked_up_once(
    cookie_setup: tuple[Flask, str, CountingRedis],
) -> None:
    app, valid, counter = cookie_setup
    counter.counter.reset()
    response = send_raw_cookie(app, valid)
    assert response.json == {
        "new": False,
        "sid": valid.split(".")[0],
        "data": {"user": "ada"},
    }
    assert counter.counter.round_trips == 1


def test_huge_cookie_header_with_non_ascii_gives_a_fresh_session(
    cookie_setup: tuple[Flask, str, CountingRedis],
) -> None:
    app, valid, counter = cookie_setup
    for value in (
        "x" * 100_000,
        valid + "\u00e9" * 5000,
        "\u00ff" * 64 + "." + "A" * 43 + ".1" + "9" * 12,
        valid.upper(),
        valid.replace(".", ". ", 1),
    ):
        assert_fresh_without_lookup(app, value, counter, valid.split(".")[0])
    # Quoting is the cookie syntax's own, not a change of value.
    for same in (f'"{valid}"', valid + ";", valid + " "):
        assert send_raw_cookie(app, same).json["new"] is False


# --------------------------------------------------------------------------
# Values at the edges
# --------------------------------------------------------------------------


class Box:
    """Carries Python values into and out of views without HTTP encoding."""

    put: dict[str, t.Any]
    got: dict[str, t.Any]
    error: Exception | None


def value_app(redis_url: str, layout: str, **config: t.Any) -> tuple[Flask, Box]:
    box = Box()
    box.put, box.got, box.error = {}, {}, None
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET,
        TESTING=True,
        RELAY_SESSION_REDIS=redis_url,
        RELAY_SESSION_LAYOUT=layout,
    )
    app.config.update(config)
    RelaySession(app)

    @app.post("/put")
    def put() -> t.Any:
        for key, value in box.put.items():
            session[key] = value
        try:
            session.save()  # type: ignore[attr-defined]
        except SessionSerializationError as error:
            box.error = error
            session.clear_dirty()  # type: ignore[attr-defined]
            return str(error), 400
        return "ok"

    @app.get("/get")
    def get() -> str:
        box.got = copy.deepcopy(dict(session))
        return "ok"

    return app, box


@pytest.fixture
def edge(redis_url: str, layout: str) -> tuple[Flask, Box, FlaskClient]:
    app, box = value_app(redis_url, layout)
    return app, box, app.test_client()


def put(browser: FlaskClient, box: Box, values: dict[str, t.Any]) -> int:
    box.put, box.error = values, None
    return browser.post("/put").status_code


def get(browser: FlaskClient, box: Box) -> dict[str, t.Any]:
    assert browser.get("/get").status_code == 200
    return box.got


def round_trips(browser: FlaskClient, box: Box, values: dict[str, t.Any]) -> None:
    """``values`` come back equal, also after a merge of another path."""
    assert put(browser, box, {"anchor": 1}) == 200
    assert put(browser, box, values) == 200, box.error
    expected = {"anchor": 1, **values}
    assert_same(get(browser, box), expected)
    assert put(browser, box, {"anchor": 2}) == 200
    expected["anchor"] = 2
    assert_same(get(browser, box), expected)


def assert_same(actual: t.Any, expected: t.Any) -> None:
    """Equal, with the same types all the way down (1 is not 1.0, nor True)."""
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for left, right in zip(actual, expected, strict=True):
            assert_same(left, right)
    else:
        assert actual == expected


def nested(depth: int, leaf: t.Any = "bottom") -> t.Any:
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value, level]
    return value


def test_empty_strings_round_trip(edge: tuple[Flask, Box, FlaskClient]) -> None:
    _, box, browser = edge
    round_trips(browser, box, {"": "", "e": {"": ""}, "l": ["", {"": []}]})


def test_ten_kilobyte_keys_round_trip(edge: tuple[Flask, Box, FlaskClient]) -> None:
    _, box, browser = edge
    long_key = "k" * 10_240
    odd_key = ".{}[]$ \"'\\" * 1024
    round_trips(
        browser, box, {long_key: "v", "nested": {long_key: {odd_key: 1}}, odd_key: 2}
    )


def test_two_hundred_levels_of_nesting_round_trip(
    edge: tuple[Flask, Box, FlaskClient],
) -> None:
    _, box, browser = edge
    round_trips(browser, box, {"deep": nested(200)})


def test_ten_thousand_levels_give_a_clear_error_and_lose_nothing(
    edge: tuple[Flask, Box, FlaskClient],
) -> None:
    _, box, browser = edge
    assert put(browser, box, {"keep": [1, 2]}) == 200
    assert put(browser, box, {"other": "x", "deep": nested(10_000)}) == 400
    assert isinstance(box.error, SessionSerializationError)
    assert "deep" in str(box.error)
    assert "deeper than" in str(box.error)
    assert get(browser, box) == {"keep": [1, 2]}


def test_ten_thousand_levels_at_the_end_of_the_request_are_a_500_that_loses_nothing(
    redis_url: str, layout: str
) -> None:
    app, box = value_app(redis_url, layout)
    app.testing = False

    @app.post("/put-late")
    def put_late() -> str:
        session["other"] = "x"
        session["deep"] = nested(10_000)
        return "ok"

    browser = app.test_client()
    assert put(browser, box, {"keep": 1}) == 200
    assert browser.post("/put-late").status_code == 500
    assert get(browser, box) == {"keep": 1}


def test_a_hundred_thousand_item_list_round_trips_and_grows(
    edge: tuple[Flask, Box, FlaskClient],
) -> None:
    app, box, browser = edge

    @app.post("/append")
    def append() -> str:
        session["big"].append("last")
        return "ok"

    big = list(range(100_000))
    round_trips(browser, box, {"big": big})
    assert browser.post("/append").status_code == 200
    assert get(browser, box)["big"] == [*big, "last"]


#: One or more code points of every kind that has tripped JSON encoders:
#: controls, NUL, the JSON/JS line separators, BOM, noncharacters, combining
#: marks, right-to-left text, private use, astral planes, the last code
#: point, a lone surrogate of each kind and a surrogate pair written out.
UNICODE_SAMPLES = [
    "\x00",
    "a\x00b",
    "".join(chr(c) for c in range(0x20)),
    "\x7f\x80\x9f\xa0\xad",
    "\u2028\u2029",
    "\ufeff",
    "\ufffe\uffff",
    "e\u0301\u0338",
    "\u05d0\u05d1\u200f\u202e",
    "\ue000\uf8ff",
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U00010000\U0010ffff",
    "\U000f0000",
    "\ud800",
    "\udfff",
    "x\udc80y",
    "\ud83d\ude00",
    "\\u0000",
    "/</script>",
    '"\\',
]


@pytest.mark.parametrize("sample", UNICODE_SAMPLES, ids=lambda s: ascii(s)[:24])
def test_every_kind_of_code_point_round_trips_as_key_and_value(
    edge: tuple[Flask, Box, FlaskClient], sample: str
) -> None:
    _, box, browser = edge
    round_trips(
        browser,
        box,
        {sample: sample, "nested": {sample: [sample, {sample: sample}]}},
    )


def test_every_plane_of_unicode_round_trips_in_one_string(
    edge: tuple[Flask, Box, FlaskClient],
) -> None:
    _, box, browser = edge
    # Every 97th code point from U+0000 to U+10FFFF, surrogates included.
    everything = "".join(chr(c) for c in range(0, sys.maxunicode + 1, 97))
    round_trips(browser, box, {"all": everything, everything[:500]: 1})


@given(
    values=st.dictionaries(
        st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(st.characters(exclude_categories=()))
            | st.binary(max_size=16),
            lambda children: (
                st.lists(children, max_size=4)
                | st.tuples(children, children)
                | st.dictionaries(
                    st.text(st.characters(exclude_categories=()), max_size=6),
                    children,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
def test_random_values_round_trip_exactly(
    edge: tuple[Flask, Box, FlaskClient], values: dict[str, t.Any]
) -> None:
    app, box, _ = edge
    round_trips(app.test_client(), box, values)


# --------------------------------------------------------------------------
# RELAY_SESSION_MAX_SIZE
# --------------------------------------------------------------------------


@pytest.fixture
def small(redis_url: str, layout: str) -> tuple[Flask, Box, FlaskClient]:
    app, box = value_app(redis_url, layout, RELAY_SESSION_MAX_SIZE=4000)
    return app, box, app.test_client()


def test_one_change_over_max_size_is_refused_and_writes_nothing(
    small: tuple[Flask, Box, FlaskClient],
) -> None:
    _, box, browser = small
    assert put(browser, box, {"a": "x" * 1000}) == 200
    assert put(browser, box, {"b": "y", "c": "z" * 5000}) == 400
    assert "RELAY_SESSION_MAX_SIZE" in str(box.error)
    assert get(browser, box) == {"a": "x" * 1000}


def test_changes_that_grow_the_stored_session_past_max_size_are_refused(
    small: tuple[Flask, Box, FlaskClient],
) -> None:
    _, box, browser = small
    assert put(browser, box, {"a": "x" * 1500}) == 200
    assert put(browser, box, {"b": "y" * 1500}) == 200
    # Each change is small; the session they would make is too large.
    assert put(browser, box, {"c": "z" * 1500, "d": 1}) == 400
    assert "RELAY_SESSION_MAX_SIZE" in str(box.error)
    assert get(browser, box) == {"a": "x" * 1500, "b": "y" * 1500}
    # Shrinking one value makes room again.
    assert put(browser, box, {"a": "", "c": "z" * 1500}) == 200
    assert get(browser, box) == {"a": "", "b": "y" * 1500, "c": "z" * 1500}


def test_a_new_session_over_max_size_stores_nothing(
    small: tuple[Flask, Box, FlaskClient], redis_server: RedisServer
) -> None:
    _, box, browser = small
    assert put(browser, box, {"a": "x" * 5000}) == 400
    assert browser.get_cookie("session") is None
    with redis_server.client() as client:
        assert client.dbsize() == 0
