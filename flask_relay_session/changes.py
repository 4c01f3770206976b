"""What one request changed in its session.

:class:`Changes` holds the session's data as this request sees it, in
tracked containers (see :mod:`flask_relay_session.tracking`), and knows
which paths the request changed and which keys it read. It turns them into
the :class:`~flask_relay_session.stores.Change` list a store merges, and can
put a request's own changes back on top of other data: of a reload, or of
nothing at all when the stored session vanished.
"""

from __future__ import annotations

import typing as t

from .errors import SessionSerializationError
from .serialization import LazyValue
from .serialization import dumps
from .serialization import encode_key
from .serialization import loads
from .stores.base import Change
from .tracking import DirtyPaths
from .tracking import Path
from .tracking import TrackedDict

#: A path with the JSON of its value, or ``None`` where it was deleted.
Encoded = list[tuple[Path, "bytes | None"]]

_MISSING = object()


class SessionData(TrackedDict):
    """The top level of a session's data: a :class:`TrackedDict` whose
    values may still be :class:`~flask_relay_session.serialization.LazyValue`,
    each decoded in place the first time it is read.

    Reading a value that does not decode raises
    :exc:`~flask_relay_session.serialization.StoredValueError`.
    """

    __slots__ = ()

    def __getitem__(self, key: str) -> t.Any:
        self.decoded(key)
        return super().__getitem__(key)

    def pop(self, key: str, *default: t.Any) -> t.Any:
        """Remove ``key`` and return its value, or ``default``."""
        if key in self:
            self.decoded(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, t.Any]:
        """Remove and return the last inserted item."""
        if self:
            self.decoded(next(reversed(self)))
        return super().popitem()

    def decode_all(self) -> None:
        """Decode every value not decoded yet."""
        for key in self:
            self.decoded(key)

    def decoded(self, key: str) -> t.Any:
        """Return the value of ``key`` decoded, untracked and unrecorded."""
        value = dict.__getitem__(self, key)
        if type(value) is LazyValue:
            value = value.decode()
            dict.__setitem__(self, key, value)
        return value


def _lookup(root: SessionData, path: Path) -> t.Any:
    """Return the value at ``path``, or ``_MISSING``; nothing is wrapped.

    A top-level value not decoded yet is returned as it is, a
    :class:`~flask_relay_session.serialization.LazyValue`, when the path
    ends there.
    """
    if path[0] not in root:
        return _MISSING
    if len(path) == 1:
        return dict.__getitem__(root, path[0])
    node = root.decoded(path[0])
    for key in path[1:]:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = dict.__getitem__(node, key)
    return node


def _place(root: SessionData, path: Path, value: t.Any) -> None:
    """Set or, with ``_MISSING``, delete the value at ``path``, unrecorded."""
    node: t.Any = root
    for key in path[:-1]:
        if node is root and key in root:
            child = root.decoded(key)
        else:
            child = dict.get(node, key)
        if not isinstance(child, dict):
            if value is _MISSING:
                return
            child = {}
            dict.__setitem__(node, key, child)
        node = child
    if value is _MISSING:
        dict.pop(node, path[-1], None)
    else:
        dict.__setitem__(node, path[-1], value)


class Changes:
    """The data of one session as one request sees it, and what it changed.

    :attr:`data` is the tracked top-level dict; every change made through it
    marks a path in :attr:`dirty`. ``forced`` is ``session.modified = True``:
    the save then also writes every top-level key the request read.
    """

    def __init__(self) -> None:
        #: The changed paths not saved yet.
        self.dirty = DirtyPaths()
        #: The session's data, tracked.
        self.data = SessionData({}, self.dirty)
        #: ``session.modified`` was set to ``True`` by hand.
        self.forced = False
        #: The top-level keys read, or ``None`` once all of them were (the
        #: session was iterated).
        self.read_keys: set[str] | None = set()

    def forget(self) -> None:
        """Forget the changed paths; the data keeps showing them."""
        self.dirty.clear()
        self.forced = False

    def drop(self) -> None:
        """Forget the changed paths and the data."""
        self.forget()
        self.data = SessionData({}, self.dirty)

    def show(self, loaded: dict[str, t.Any]) -> None:
        """Show ``loaded`` with this request's changes on top."""
        data = SessionData(loaded, self.dirty)
        for path in self.dirty:
            _place(data, path, _lookup(self.data, path))
        self.data = data

    def pending(self, *, new: bool) -> list[Path]:
        """The paths a save writes.

        All of a new session's data, or the changed paths; with
        :attr:`forced`, every top-level key read too.
        """
        if new:
            return [(key,) for key in self.data] if self.dirty else []
        if not self.forced:
            return list(self.dirty)
        paths = DirtyPaths()
        for path in self.dirty:
            paths.mark(path)
        read = self.data.keys() if self.read_keys is None else self.read_keys
        for key in read:
            paths.mark((key,))
        return list(paths)

    def encode(self, paths: t.Iterable[Path]) -> Encoded:
        """Return each path with the JSON of its value, or ``None`` if gone."""
        encoded: Encoded = []
        for path in paths:
            value = _lookup(self.data, path)
            if value is _MISSING:
                encoded.append((path, None))
            elif type(value) is LazyValue:
                encoded.append((path, value.json))
            else:
                encoded.append((path, dumps(value, path)))
        return encoded

    def own(self) -> Encoded:
        """What the request changed itself, never what it only read."""
        return self.encode(list(self.dirty))

    def to_store(self, *, new: bool, max_size: int) -> list[Change]:
        """The pending changes, encoded for the store.

        :raises SessionSerializationError: a value cannot be stored, or the
            changes alone are larger than ``max_size``. Each change's JSON
            stands whole in the stored session and the paths never overlap,
            so their sum is never more than the session's size (see
            :func:`~flask_relay_session.stores.paths.session_size`).
        """
        changes = [
            Change(tuple(encode_key(key) for key in path), value)
            for path, value in self.encode(self.pending(new=new))
        ]
        size = sum(len(change.value or b"") for change in changes)
        if size > max_size:
            raise SessionSerializationError(
                f"the changes to save are {size} bytes, more than"
                f" RELAY_SESSION_MAX_SIZE ({max_size} bytes); nothing was saved"
            )
        return changes

    def restore(self, encoded: Encoded) -> None:
        """Keep only ``encoded`` (from :meth:`encode`), as pending changes."""
        self.drop()
        for path, value in encoded:
            if value is None:
                _place(self.data, path, _MISSING)
            elif len(path) == 1:
                _place(self.data, path, LazyValue(value))
            else:
                _place(self.data, path, loads(value))
            self.dirty.mark(path)
