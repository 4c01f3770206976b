"""The mapping side of the session: ``flask.session`` as a dict.

:class:`SessionMapping` gives a :class:`~flask_relay_session.Session` the
methods of a ``dict``, with the results Flask's cookie session gives, over
the data one request sees (:class:`~flask_relay_session.changes.Changes`).
Reading loads the session first; writing needs no load.
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping

from flask.sessions import SessionMixin

from .changes import Changes
from .changes import SessionData
from .errors import SessionChainError
from .errors import SessionStoreError
from .serialization import StoredValueError
from .tracking import Path

_Self = t.TypeVar("_Self", bound="SessionMapping")


class SessionMapping(SessionMixin):
    """``dict`` methods over the data of one request's session.

    A subclass sets :attr:`_changes` and loads the data in
    :meth:`_reload`.
    """

    #: Whether the request used the session. Flask 3.1.3's proxy sets it on
    #: every use; the mapping methods set it too, for older Flask.
    accessed: bool
    #: The session id, named by :meth:`__repr__`.
    sid: str
    #: The cookie must be sent again: its id or its flags changed.
    cookie_outdated: bool
    #: The view has returned and the session is not saved yet: the
    #: response is being finished, by ``after_request`` functions among
    #: others.
    finishing = False
    #: The error a read met while :attr:`finishing`, which the interface
    #: answers when it saves the session; ``None`` without one.
    finishing_error: SessionStoreError | SessionChainError | None = None
    _changes: Changes
    _loaded: bool
    _permanent: bool

    def _ensure_loaded(self) -> None:
        """Load the data, if this request has not yet: every read that
        needs the stored session comes here first.

        Once the view has returned, a load that fails is no error of the
        ``after_request`` function that reads (Flask-Login's does), which
        could not answer it: the session reads as empty and nothing of it
        is saved, and the interface answers the error instead (see
        :attr:`finishing_error`).
        """
        if self._loaded:
            return
        try:
            self._reload()
        except (SessionStoreError, SessionChainError) as error:
            if not self.finishing:
                raise
            self.finishing_error = error
            self._changes.drop()
            self._loaded = True

    def _reload(self) -> None:
        """Load the data from the store, keeping pending changes on top."""
        raise NotImplementedError

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser session.

        Kept in the signed cookie, not in the session data.
        """
        return self._permanent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) != self._permanent:
            self._permanent = bool(value)
            self.cookie_outdated = True

    @property
    def modified(self) -> bool:
        """Whether the session or its cookie changed during this request.

        Setting it to ``True`` by hand saves every top-level key this request
        read, for changes made where tracking cannot see them.
        """
        changes = self._changes
        return bool(changes.dirty) or changes.forced or self.cookie_outdated

    @modified.setter
    def modified(self, value: bool) -> None:
        self._changes.forced = bool(value)

    @property
    def dirty_paths(self) -> frozenset[Path]:
        """The changed paths not saved yet, each a tuple of keys."""
        return frozenset(self._changes.dirty)

    def clear_dirty(self) -> None:
        """Forget the pending changes without saving them.

        The session keeps showing them until it is loaded again.
        """
        self._changes.forget()

    def _data(self) -> SessionData:
        """The loaded data, for a method of the mapping."""
        self.accessed = True
        self._ensure_loaded()
        return self._changes.data

    def _drop_unreadable(self, error: StoredValueError) -> None:
        """Go on as a new session: the stored one holds a value that does
        not decode.
        """
        raise NotImplementedError

    def __getitem__(self, key: str) -> t.Any:
        data = self._data()
        read_keys = self._changes.read_keys
        if read_keys is not None:
            read_keys.add(key)
        try:
            return data[key]
        except StoredValueError as error:
            self._drop_unreadable(error)
        raise KeyError(key)

    def __setitem__(self, key: str, value: t.Any) -> None:
        self.accessed = True
        self._changes.data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data()[key]

    def _all_data(self) -> dict[str, t.Any]:
        """The loaded data, every value decoded, for a method that goes
        over all of it: a value that does not decode is found before any
        key is given out.
        """
        data = self._data()
        try:
            data.decode_all()
        except StoredValueError as error:
            self._drop_unreadable(error)
            data = self._changes.data
        self._changes.read_keys = None
        return data

    def __iter__(self) -> t.Iterator[str]:
        return iter(list(self._all_data()))

    def __reversed__(self) -> t.Iterator[str]:
        return reversed(list(self._all_data()))

    def __len__(self) -> int:
        return len(self._data())

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __or__(self, other: t.Any) -> dict[str, t.Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: t.Any) -> dict[str, t.Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = dict(other)
        merged.update(self.copy())
        return merged

    def __ior__(self: _Self, other: t.Any) -> _Self:
        self.update(other)
        return self

    def copy(self) -> dict[str, t.Any]:
        """Return a shallow copy as a plain ``dict``, as Flask's session does.

        The values it shares with the session are tracked, so changing them
        through the copy changes the session too.
        """
        return {key: self[key] for key in self}

    def popitem(self) -> tuple[str, t.Any]:
        """Remove and return the item set last, as ``dict.popitem`` does.

        :raises KeyError: the session is empty.
        """
        data = self._data()
        if not data:
            raise KeyError("popitem(): the session is empty")
        try:
            return data.popitem()
        except StoredValueError as error:
            self._drop_unreadable(error)
        return self.popitem()

    def clear(self) -> None:
        """Remove every key; the save deletes the stored session."""
        self._data().clear()

    def __repr__(self) -> str:
        state = dict(self._changes.data) if self._loaded else "not loaded"
        return f"<{type(self).__name__} {self.sid[:8]}… {state}>"
