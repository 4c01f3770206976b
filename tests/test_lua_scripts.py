"""The Lua scripts as sent to Redis: each carries only the shared definitions
it uses, and an error in one names the file and line it happened at.

The ``-- uses:`` lines are checked against what the code refers to, so they
cannot drift; the line map is checked line by line against the files; and
errors are raised on real Redis 7 and 6.2 (``redis_client``, ``redis_url``),
whose messages differ.
"""

from __future__ import annotations

import re
import typing as t
from importlib import resources

import pytest
import redis

from flask_relay_session import RedisSessionStore
from flask_relay_session import SessionStoreError
from flask_relay_session.stores import Change
from flask_relay_session.stores.scripts import LIBRARIES
from flask_relay_session.stores.scripts import LuaScript
from flask_relay_session.stores.scripts import library
from flask_relay_session.stores.scripts import link
from flask_relay_session.stores.scripts import parse_library
from flask_relay_session.stores.scripts import read
from flask_relay_session.stores.scripts import uses

from .helpers import now_ms

#: Every script the package ships: the ``.lua`` files that are no library.
SCRIPTS = sorted(
    path.name.removesuffix(".lua")
    for path in (resources.files("flask_relay_session.stores") / "lua").iterdir()
    if path.name.endswith(".lua") and path.name.removesuffix(".lua") not in LIBRARIES
)

#: Lua tokens, for finding the names code refers to: comments, strings,
#: numbers, the concatenation operator, field accesses (``doc.data``,
#: ``json.decode``) and names, in that order of preference.
_TOKEN = re.compile(
    r"""--[^\n]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|\d[\w.]*|\.\."""
    r"""|[.:]\s*[A-Za-z_]\w*|[A-Za-z_]\w*"""
)


def referred(lines: t.Iterable[str], names: t.Collection[str]) -> set[str]:
    """Return which of ``names`` the Lua code ``lines`` refers to, outside
    comments, strings and field accesses.
    """
    return {token for token in _TOKEN.findall("\n".join(lines)) if token in names}


def line_of(file: str, code: str) -> int:
    """Return the number of the only line of ``file`` that holds ``code``."""
    found = [
        number for number, line in enumerate(read(file).splitlines(), 1) if code in line
    ]
    assert len(found) == 1, (file, code, found)
    return found[0]


def test_every_script_and_definition_declares_exactly_what_it_uses() -> None:
    names = library().keys()
    for definition in library().values():
        others = names - {definition.name}
        assert set(definition.uses) == referred(definition.lines, others), (
            definition.name
        )
    for name in SCRIPTS:
        lines = read(f"{name}.lua").splitlines()
        assert set(uses(lines)) == referred(lines, names), name


def test_only_the_json_definition_says_cjson() -> None:
    for definition in library().values():
        if definition.name != "json":
            assert not referred(definition.lines, {"cjson"}), definition.name
    for name in SCRIPTS:
        assert not referred(read(f"{name}.lua").splitlines(), {"cjson"}), name


def test_a_script_carries_only_the_definitions_it_needs() -> None:
    # lock.lua uses nothing: it is sent as it is.
    assert LuaScript("lock").source == read("lock.lua")
    # touch.lua uses redirect_target, which uses json, is_id and
    # is_meta_number, and split_meta, which reads who the session belongs
    # to; nothing of the merge rules or the lock comes along.
    assert LuaScript("touch").uses == (
        "json",
        "is_id",
        "is_meta_number",
        "redirect_target",
        "split_meta",
    )
    # The hash layout's touch reads no JSON: cjson is not even set up.
    assert "json" not in LuaScript("hash_touch").uses
    assert "cjson" not in LuaScript("hash_touch").source


def test_every_line_sent_maps_back_to_its_file_and_line() -> None:
    for name in SCRIPTS:
        script = LuaScript(name)
        sent = script.source.splitlines()
        for number, line in enumerate(sent, 1):
            file, original = script.origin(number)
            assert read(file).splitlines()[original - 1] == line, (name, number)
        # The script itself comes last, whole.
        assert script.origin(len(sent)) == (
            f"{name}.lua",
            len(read(f"{name}.lua").splitlines()),
        )


def test_a_definition_may_only_use_those_before_it() -> None:
    text = (
        "-- uses: b\n"
        "local function a() return b() end\n"
        "\n"
        "local function b() return 1 end\n"
    )
    with pytest.raises(LookupError, match="a in lib.lua uses b"):
        link(parse_library("lib.lua", text))


def test_a_library_file_is_split_into_its_definitions() -> None:
    text = (
        "-- What this file is.\n"
        "\n"
        "-- One.\n"
        "local ONE = 1\n"
        "\n"
        "-- Twice one.\n"
        "-- uses: ONE\n"
        "local function two()\n"
        "  return ONE + ONE\n"
        "end\n"
        "\n"
    )
    one, two = parse_library("lib.lua", text)
    assert (one.name, one.line, one.lines, one.uses) == (
        "ONE",
        3,
        ("-- One.", "local ONE = 1"),
        (),
    )
    assert (two.name, two.line, two.uses) == ("two", 6, ("ONE",))
    assert two.lines[-1] == "end"


def test_a_script_that_uses_an_unknown_name_is_refused() -> None:
    with pytest.raises(LookupError, match="probe.lua uses nosuch"):
        LuaScript("probe", "-- uses: nosuch\nreturn 1\n")


@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_script_error_names_the_file_and_line_it_happened_at(
    redis_url: str, layout: str
) -> None:
    # A change whose value is not JSON fails in the merge rule, in
    # common.lua, whichever merge script runs it.
    store = RedisSessionStore(redis.Redis.from_url(redis_url), layout=layout)
    with pytest.raises(SessionStoreError) as caught:
        store.merge(
            "ab" * 32,
            [Change(("a", "b"), b"not json")],
            now=now_ms(),
            ttl=60_000,
            create=True,
            lock_token=None,
            max_size=4096,
        )
    line = line_of("common.lua", "json.decode(ARGV[last + 1])")
    message = str(caught.value)
    assert f"common.lua:{line}: Expected value" in message
    assert "user_script" not in message


def test_an_error_in_a_test_script_or_a_definition_it_uses_is_located(
    redis_client: redis.Redis,
) -> None:
    script = LuaScript(
        "probe",
        "-- Fails where it is told to.\n"
        "-- uses: dict_at\n"
        "if ARGV[1] == 'here' then\n"
        "  return redis.call('INCR', KEYS[1])\n"
        "end\n"
        "return dict_at(nil, 'key')\n",
    )
    redis_client.set("probe", "not a number")
    messages = []
    for where in ("here", "in dict_at"):
        with pytest.raises(redis.ResponseError) as caught:
            redis_client.eval(script.source, 1, "probe", where)
        messages.append(script.where(str(caught.value)))
    assert "probe.lua:4" in messages[0]
    line = line_of("common.lua", "local child = parent[key]")
    assert f"common.lua:{line}" in messages[1]
    assert not any("user_script" in message for message in messages)
