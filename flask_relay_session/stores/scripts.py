"""The Lua scripts shipped with the package: their sources, as sent to Redis.

The scripts live in ``stores/lua/*.lua`` as package data, so that they can be
read and reviewed as code. What several scripts share lives in the library
files (:data:`LIBRARIES`), as *definitions*: each top-level ``local`` of a
library file, together with the comment right above it. A script names the
definitions it uses in ``-- uses:`` lines, and so does a definition that
uses others. The source sent to Redis is the definitions the script needs,
directly or not, in the order of the library files, then the script itself:
one self-contained ``EVAL`` that carries only what it uses.

Redis reports an error in a script at ``user_script:<line>`` of that sent
source; :meth:`LuaScript.where` names the file and line it came from
instead, such as ``common.lua:170``.

Nothing here talks to Redis: :class:`~.redis.RedisSessionStore` sends the
scripts.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
import typing as t
from dataclasses import dataclass
from importlib import resources

#: The library files of shared definitions, without ``.lua``. Their
#: definitions are sent in this order, each file's in its own order, so a
#: definition uses only those before it.
LIBRARIES = ("common", "hash_common")

#: The first line of a definition in a library file: a top-level ``local``.
_DEFINITION = re.compile(r"local (?:function )?([A-Za-z_]\w*)")
#: A line naming the definitions a script or a definition uses.
_USES = re.compile(r"-- uses: (.+)")
#: Where Redis says an error happened in a script: its line in the source.
_USER_SCRIPT_LINE = re.compile(r"user_script:(\d+)")


def sha1(data: bytes | str) -> str:
    """Return the hex SHA1 digest of ``data``, UTF-8 encoded if ``str``."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha1(data).hexdigest()


@functools.cache
def read(file: str) -> str:
    """Return the text of ``file`` in the package's ``lua`` folder."""
    return (resources.files(__package__) / "lua" / file).read_text()


def uses(lines: t.Iterable[str]) -> list[str]:
    """Return the names the ``-- uses:`` lines among ``lines`` give, in
    order.
    """
    names: list[str] = []
    for line in lines:
        match = _USES.fullmatch(line.rstrip())
        if match:
            names += (name.strip() for name in match[1].split(","))
    return names


@dataclass(frozen=True, slots=True)
class Definition:
    """One definition of a library file.

    :param name: the name it defines.
    :param file: the library file it is in, such as ``"common.lua"``.
    :param line: its first line in that file, counted from 1.
    :param lines: its lines, its comment first.
    :param uses: the names of the definitions it uses.
    """

    name: str
    file: str
    line: int
    lines: tuple[str, ...]
    uses: tuple[str, ...]


def parse_library(file: str, text: str) -> list[Definition]:
    """Return the definitions of the library file ``file``, whose text is
    ``text``, in order.

    A definition starts with the comment lines right above a top-level
    ``local`` and ends where the next one starts, without the blank lines
    before it. Lines above the first definition, such as the file's own
    comment, belong to none.
    """
    lines = text.splitlines()
    starts: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = _DEFINITION.match(line)
        if match:
            first = index
            while first and lines[first - 1].startswith("--"):
                first -= 1
            starts.append((first, match[1]))
    definitions = []
    for position, (first, name) in enumerate(starts):
        end = starts[position + 1][0] if position + 1 < len(starts) else len(lines)
        chunk = lines[first:end]
        while not chunk[-1].strip():
            chunk.pop()
        definitions.append(
            Definition(name, file, first + 1, tuple(chunk), tuple(uses(chunk)))
        )
    return definitions


def link(definitions: t.Iterable[Definition]) -> dict[str, Definition]:
    """Return ``definitions`` by name, in order, checking that each uses
    only definitions before it.

    :raises LookupError: a name is defined twice, or a definition uses one
        that is not defined before it.
    """
    linked: dict[str, Definition] = {}
    for definition in definitions:
        if definition.name in linked:
            raise LookupError(f"{definition.name} is defined twice")
        for name in definition.uses:
            if name not in linked:
                raise LookupError(
                    f"{definition.name} in {definition.file} uses {name}, which"
                    " is not defined before it"
                )
        linked[definition.name] = definition
    return linked


@functools.cache
def library() -> dict[str, Definition]:
    """Return every definition of the library files by name, in the order
    they are sent.
    """
    return link(
        definition
        for file in LIBRARIES
        for definition in parse_library(f"{file}.lua", read(f"{file}.lua"))
    )


def _needed(file: str, names: t.Iterable[str]) -> dict[str, Definition]:
    """Return the definitions that the code of ``file``, which uses
    ``names``, needs, directly or not, by name, in the order they are sent.

    :raises LookupError: a name is not defined.
    """
    definitions = library()
    needed: set[str] = set()
    wanted = list(names)
    while wanted:
        name = wanted.pop()
        if name not in definitions:
            raise LookupError(f"{file} uses {name}, which is not defined")
        if name not in needed:
            needed.add(name)
            wanted += definitions[name].uses
    return {name: d for name, d in definitions.items() if name in needed}


class LuaScript:
    """A Lua script, with the definitions it uses in front of it.

    A store sends it with ``EVAL`` or by :attr:`sha` with ``EVALSHA``;
    calling it binds the keys and arguments of one run.

    :param name: the script's file name in the ``lua`` folder, without
        ``.lua``.
    :param text: the script's text, instead of the file's: for a script
        that is not shipped, such as a test's.
    """

    def __init__(self, name: str, text: str | None = None) -> None:
        #: The script's file name, without ``.lua``.
        self.name = name
        own = (read(f"{name}.lua") if text is None else text).splitlines()
        needed = _needed(f"{name}.lua", uses(own))
        #: The names of the definitions sent with it, in order.
        self.uses = tuple(needed)
        lines: list[str] = []
        #: The line of the source each part starts at, and the file and line
        #: it comes from.
        self._starts: list[int] = []
        self._origins: list[tuple[str, int]] = []
        parts = [(d.file, d.line, d.lines) for d in needed.values()]
        for file, first, part in [*parts, (f"{name}.lua", 1, tuple(own))]:
            self._starts.append(len(lines) + 1)
            self._origins.append((file, first))
            lines += part
        self._length = len(lines)
        #: The Lua source sent to Redis.
        self.source = "\n".join(lines) + "\n"
        #: The SHA1 digest ``EVALSHA`` names the script by.
        self.sha = sha1(self.source)

    def origin(self, line: int) -> tuple[str, int]:
        """Return the file and line that line ``line`` of :attr:`source`
        comes from.
        """
        if not 1 <= line <= self._length:
            raise ValueError(f"{self.name}.lua has no line {line} in its source")
        index = bisect.bisect_right(self._starts, line) - 1
        file, first = self._origins[index]
        return file, first + line - self._starts[index]

    def where(self, message: str) -> str:
        """Return a Redis error ``message`` about this script with each
        ``user_script:<line>`` in it replaced by the file and line it means,
        such as ``common.lua:170``.
        """

        def located(match: re.Match[str]) -> str:
            line = int(match[1])
            if not 1 <= line <= self._length:
                return match[0]
            return "{}:{}".format(*self.origin(line))

        return _USER_SCRIPT_LINE.sub(located, message)

    def __call__(self, keys: t.Sequence[str], args: t.Sequence[t.Any]) -> ScriptCall:
        """Bind ``keys`` and ``args`` for one run."""
        return ScriptCall(self, tuple(keys), tuple(args))


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One run of a script, for a store to send: ``KEYS`` and ``ARGV``."""

    script: LuaScript
    keys: tuple[str, ...]
    args: tuple[t.Any, ...]
