"""Dicts and lists that record which paths of the session changed.

The session hands out :class:`TrackedDict` and :class:`TrackedList` in place
of the plain containers it loaded. They are real ``dict`` and ``list``
subclasses, so ``isinstance``, ``json.dumps`` and ``jsonify`` work as usual,
and every mutation records a path in a shared :class:`DirtyPaths`:

- changing a key of a dict records the path of that key;
- any change to a list, or to anything inside a list, records the path of
  the outermost list, because positions in a list are not stable enough to
  merge with a concurrent request's changes.

Containers are wrapped lazily, when they are read, so loading a large session
costs nothing until a request looks inside it. Values assigned into the
session are kept as they are, not copied: the path they were assigned to is
dirty already, and its value is read when the session is saved, so changes
made later through the caller's own reference are saved too.
"""

from __future__ import annotations

import typing as t

Path = tuple[str, ...]


class DirtyPaths:
    """The set of changed paths, where a path absorbs those below it.

    Marking ``("cart",)`` after ``("cart", "items")`` leaves only
    ``("cart",)``; marking ``("cart", "items")`` after ``("cart",)`` changes
    nothing. Whether a path was set or deleted is not recorded: at save time,
    the path's current value is written, or the path is deleted when it no
    longer exists.

    Marking a path costs time in its length, whatever else is dirty: a bulk
    change such as ``session["prefs"].update(...)`` of many keys is linear.
    """

    __slots__ = ("_paths", "_below")

    def __init__(self) -> None:
        self._paths: set[Path] = set()
        #: For each path above a dirty path, the dirty paths below it: what
        #: marking that path absorbs, found without a scan.
        self._below: dict[Path, set[Path]] = {}

    def mark(self, path: Path) -> None:
        """Record that the value at ``path`` changed.

        Absorbing the paths below ``path`` costs time in their lengths,
        once: each marked path is absorbed at most once.
        """
        if self.covers(path):
            return
        below = self._below
        absorbed = below.pop(path, None)
        if absorbed is not None:
            self._paths -= absorbed
            for other in absorbed:
                # The paths between ``path`` and ``other`` led only to paths
                # absorbed now.
                for end in range(len(path) + 1, len(other)):
                    below.pop(other[:end], None)
        for end in range(1, len(path)):
            above = below.setdefault(path[:end], set())
            if absorbed is not None:
                above -= absorbed
            above.add(path)
        self._paths.add(path)

    def covers(self, path: Path) -> bool:
        """Whether ``path`` or one of the paths above it is dirty."""
        paths = self._paths
        if not paths:
            return False
        return any(path[:end] in paths for end in range(1, len(path) + 1))

    def clear(self) -> None:
        """Forget every recorded path."""
        self._paths.clear()
        self._below.clear()

    def __iter__(self) -> t.Iterator[Path]:
        # Keys are strings, but ``session[1] = x`` is allowed as in Flask
        # (stored as "1"): sort by the keys' text, never comparing types.
        return iter(sorted(self._paths, key=_sort_key))

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, path: object) -> bool:
        return path in self._paths

    def __repr__(self) -> str:
        return f"DirtyPaths({list(self)!r})"


def _sort_key(path: Path) -> tuple[tuple[str, str], ...]:
    return tuple((type(key).__name__, str(key)) for key in path)


def track(value: t.Any, dirty: DirtyPaths, path: Path, in_list: bool) -> t.Any:
    """Return ``value`` wrapped so that its changes mark ``path`` dirty.

    Values other than plain dicts and lists are returned unchanged. A tracked
    container that already reports to ``path`` is returned as it is.
    """
    if isinstance(value, TrackedDict):
        if value._dirty is dirty and value._path == path and value._in_list == in_list:
            return value
    elif isinstance(value, TrackedList):
        if value._dirty is dirty and value._path == path:
            return value
    if isinstance(value, dict):
        return TrackedDict(value, dirty, path, in_list)
    if isinstance(value, list):
        return TrackedList(value, dirty, path)
    return value


class TrackedDict(dict[str, t.Any]):
    """A ``dict`` that marks the paths of changed keys dirty.

    :param data: the initial items, copied shallowly.
    :param dirty: the set that records changes.
    :param path: the path of this dict in the session.
    :param in_list: this dict lives inside a list; every change then marks
        ``path``, the path of that list.
    """

    __slots__ = ("_dirty", "_path", "_in_list")

    def __init__(
        self,
        data: t.Mapping[str, t.Any],
        dirty: DirtyPaths,
        path: Path = (),
        in_list: bool = False,
    ) -> None:
        super().__init__(data)
        self._dirty = dirty
        self._path = path
        self._in_list = in_list

    def _child_path(self, key: str) -> Path:
        return self._path if self._in_list else (*self._path, key)

    def _changed(self, key: str) -> None:
        self._dirty.mark(self._child_path(key))

    def __getitem__(self, key: str) -> t.Any:
        value = super().__getitem__(key)
        if isinstance(value, (dict, list)):
            path = self._child_path(key)
            if not self._dirty.covers(path):
                tracked = track(value, self._dirty, path, self._in_list)
                if tracked is not value:
                    super().__setitem__(key, tracked)
                return tracked
        return value

    def __setitem__(self, key: str, value: t.Any) -> None:
        super().__setitem__(key, value)
        self._changed(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed(key)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        """Return the tracked value of ``key``, or ``default``."""
        if key in self:
            return self[key]
        return default

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        """Return the value of ``key``, first setting it to ``default``."""
        if key in self:
            return self[key]
        self[key] = default
        return default

    def pop(self, key: str, *default: t.Any) -> t.Any:
        """Remove ``key`` and return its value, or ``default``."""
        if key in self:
            value = super().pop(key)
            self._changed(key)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, t.Any]:
        """Remove and return the last inserted item."""
        key, value = super().popitem()
        self._changed(key)
        return key, value

    def update(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Set every given item, marking each one dirty."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: t.Any) -> TrackedDict:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        """Remove every item, marking each one dirty."""
        for key in list(self):
            del self[key]

    def values(self) -> t.ValuesView[t.Any]:  # type: ignore[override]
        """Return a view of the values, each tracked."""
        self._track_all()
        return super().values()

    def items(self) -> t.ItemsView[str, t.Any]:  # type: ignore[override]
        """Return a view of the items, each value tracked."""
        self._track_all()
        return super().items()

    def copy(self) -> dict[str, t.Any]:
        """Return a shallow copy as a plain ``dict``.

        The values it shares with this dict are tracked, as they would be
        when read from here.
        """
        self._track_all()
        return dict(self)

    def _track_all(self) -> None:
        for key in self:
            self[key]

    def __reduce__(self) -> tuple[t.Any, ...]:
        # Copies and pickles are plain dicts. The items come as an iterator,
        # not in an argument, so that copying nests no deeper in the stack
        # per level than for a plain dict.
        return (dict, (), None, None, iter(super().items()))


class TrackedList(list[t.Any]):
    """A ``list`` that marks its own path dirty on any change.

    Dicts and lists inside it are tracked when read, and report to the same
    path.

    :param data: the initial items, copied shallowly.
    :param dirty: the set that records changes.
    :param path: the path of the outermost list in the session.
    """

    __slots__ = ("_dirty", "_path")

    def __init__(self, data: t.Iterable[t.Any], dirty: DirtyPaths, path: Path) -> None:
        super().__init__(data)
        self._dirty = dirty
        self._path = path

    def _changed(self) -> None:
        self._dirty.mark(self._path)

    def _tracked(self, index: t.SupportsIndex, value: t.Any) -> t.Any:
        """Return the item at ``index`` tracked, storing it so.

        Items put in while the list is dirty are kept as given, so that the
        caller's reference stays the stored value until the save; once the
        list is clean again, they are tracked when read.
        """
        if isinstance(value, (dict, list)) and not self._dirty.covers(self._path):
            return self._wrap(index, value)
        return value

    def _wrap(self, index: t.SupportsIndex, value: t.Any) -> t.Any:
        tracked = track(value, self._dirty, self._path, True)
        if tracked is not value:
            super().__setitem__(index, tracked)
        return tracked

    def _track_items(self, positions: range) -> None:
        """Track the items at ``positions``, as reading each one would."""
        if self._dirty.covers(self._path):
            return
        item = super().__getitem__
        for position in positions:
            value = item(position)
            if isinstance(value, (dict, list)):
                self._wrap(position, value)

    def _track_all(self) -> None:
        self._track_items(range(len(self)))

    @t.overload
    def __getitem__(self, index: t.SupportsIndex) -> t.Any: ...

    @t.overload
    def __getitem__(self, index: slice) -> list[t.Any]: ...

    def __getitem__(self, index: t.SupportsIndex | slice) -> t.Any:
        if isinstance(index, slice):
            self._track_items(range(len(self))[index])
            return super().__getitem__(index)
        return self._tracked(index, super().__getitem__(index))

    def __iter__(self) -> t.Iterator[t.Any]:
        self._track_all()
        return super().__iter__()

    def __reversed__(self) -> t.Iterator[t.Any]:
        self._track_all()
        return super().__reversed__()

    def copy(self) -> list[t.Any]:
        """Return a shallow copy as a plain ``list`` of tracked items."""
        self._track_all()
        return list(super().__iter__())

    def __add__(self, other: list[t.Any]) -> list[t.Any]:
        self._track_all()
        return super().__add__(other)

    def __mul__(self, count: t.SupportsIndex) -> list[t.Any]:
        self._track_all()
        return super().__mul__(count)

    __rmul__ = __mul__

    def __setitem__(self, index: t.Any, value: t.Any) -> None:
        super().__setitem__(index, value)
        self._changed()

    def __delitem__(self, index: t.Any) -> None:
        super().__delitem__(index)
        self._changed()

    def __iadd__(self, other: t.Iterable[t.Any]) -> TrackedList:
        super().__iadd__(other)
        self._changed()
        return self

    def __imul__(self, count: t.SupportsIndex) -> TrackedList:
        super().__imul__(count)
        self._changed()
        return self

    def append(self, value: t.Any) -> None:
        """Append ``value`` and mark the list dirty."""
        super().append(value)
        self._changed()

    def extend(self, values: t.Iterable[t.Any]) -> None:
        """Extend the list and mark it dirty."""
        super().extend(values)
        self._changed()

    def insert(self, index: t.SupportsIndex, value: t.Any) -> None:
        """Insert ``value`` and mark the list dirty."""
        super().insert(index, value)
        self._changed()

    def pop(self, index: t.SupportsIndex = -1) -> t.Any:
        """Remove and return an item, and mark the list dirty."""
        value = super().pop(index)
        self._changed()
        return value

    def remove(self, value: t.Any) -> None:
        """Remove the first occurrence of ``value`` and mark the list dirty."""
        super().remove(value)
        self._changed()

    def clear(self) -> None:
        """Remove every item and mark the list dirty."""
        super().clear()
        self._changed()

    def sort(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Sort in place and mark the list dirty."""
        super().sort(*args, **kwargs)
        self._changed()

    def reverse(self) -> None:
        """Reverse in place and mark the list dirty."""
        super().reverse()
        self._changed()

    def __reduce__(self) -> tuple[t.Any, ...]:
        # As for TrackedDict: a plain list, its items from an iterator.
        return (list, (), None, iter(self))
