"""What a move of a Flask-Session session ends in, and what it leaves
behind.

A moved session's Flask-Session key holds a :class:`Marker` naming the
session it moved to, for the grace period (or, after the bulk move, as long
as the session lives): requests that still carry the old cookie follow it.
:meth:`~flask_relay_session.migration.FlaskSessionMigration.move` answers
with a :class:`Move`, whose :class:`Outcome` the bulk command counts.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .formats import Unreadable

#: What every marker starts with.
MARKER_PREFIX = b"flask-relay-session:moved:"
_MARKER = re.compile(re.escape(MARKER_PREFIX) + rb"([0-9a-f]{64}):([01]):([0-9]{1,15})")


class Outcome(enum.Enum):
    """What became of one Flask-Session session; the value is how the bulk
    command's summary names it.
    """

    #: It was moved to a new session of this extension's.
    MOVED = "moved"
    #: Someone had moved it already: its key holds a marker.
    ALREADY_MOVED = "already moved"
    #: It is a pickle (Flask-Session 0.6 or older), which is never loaded.
    PICKLED = "skipped as pickled"
    #: It is neither msgpack nor JSON of a dict, holds a value this
    #: extension cannot store, or its key holds a corrupt marker or another
    #: Redis type than a string.
    UNDECODABLE = "skipped as undecodable"
    #: It is larger than ``RELAY_SESSION_MAX_SIZE``.
    TOO_LARGE = "skipped as too large"
    #: It holds nothing but ``_permanent``.
    EMPTY = "skipped as empty"
    #: Its key no longer exists (it expired).
    GONE = "already gone"


@dataclass(frozen=True, slots=True)
class Marker:
    """What a Flask-Session key holds once its session moved:
    ``flask-relay-session:moved:<sid>:<permanent>:<expires at>``.

    Neither msgpack nor JSON, so it can never be mistaken for a session, and
    its first byte is no pickle opcode, so that a worker still running
    Flask-Session fails on it at once instead of reading anything.

    :param sid: the id of the session it moved to.
    :param permanent: the session is permanent (Flask-Session's
        ``_permanent``), which this extension keeps in its cookie.
    :param expires_at: when the session expires, as of the move, in
        milliseconds since the epoch: the cookie's expiry until the session
        is loaded.
    """

    sid: str
    permanent: bool
    expires_at: int

    def encode(self) -> bytes:
        """Return the marker as stored."""
        flags = f"{self.sid}:{int(self.permanent)}:{self.expires_at}"
        return MARKER_PREFIX + flags.encode()

    @classmethod
    def parse(cls, raw: bytes) -> Marker | None:
        """Return the marker ``raw`` is, or ``None`` for anything else.

        :raises Unreadable: ``raw`` starts as a marker but is not one.
        """
        if not raw.startswith(MARKER_PREFIX):
            return None
        match = _MARKER.fullmatch(raw)
        if match is None:
            raise Unreadable("a corrupt marker of a moved session")
        sid, permanent, expires = match.groups()
        return cls(sid.decode(), permanent == b"1", int(expires))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What step 1 read of a Flask-Session key.

    :param raw: the value, ``None`` when there is none.
    :param ttl: its remaining lifetime in milliseconds, ``None`` without
        one.
    :param foreign: the key holds another Redis type than a string.
    """

    raw: bytes | None
    ttl: int | None
    foreign: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """The outcome of moving one Flask-Session session.

    :param sid: the Flask-Session sid.
    :param outcome: what became of it.
    :param marker: the session of this extension's it leads to, with
        :attr:`Outcome.MOVED` and :attr:`Outcome.ALREADY_MOVED`.
    :param reason: why it was skipped, in words; never the data.
    """

    sid: str
    outcome: Outcome
    marker: Marker | None = None
    reason: str = ""
