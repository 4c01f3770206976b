"""Switching from Flask-Session without logging anyone out.

With ``RELAY_SESSION_MIGRATE_FLASK_SESSION = True``, a request whose cookie
is not this extension's but a well-formed Flask-Session cookie costs one
lookup of the session Flask-Session stored. Found and decodable, it becomes
a new session of this extension's, under a new id, with the same data and
the remaining TTL, and the response carries this extension's cookie; the
Flask-Session key is replaced by a short-lived marker that sends concurrent
requests with the same old cookie to the same new session. Nothing is ever
unpickled. ``flask relay-session migrate-flask-session`` moves every
session at once.

- :mod:`~flask_relay_session.migration.formats`: Flask-Session's cookies
  and stored sessions, read as Flask-Session 0.7 and 0.8 read them, without
  the pickle fallback.
- :mod:`~flask_relay_session.migration.outcome`: what a move ends in, and
  the marker it leaves behind.
- :mod:`~flask_relay_session.migration.mover`: moving a session on its
  first request, and why the order of the steps loses nothing, on Redis
  Cluster too.
- :mod:`~flask_relay_session.migration.bulk`: moving every session at once.

The decoding needs :mod:`msgspec`, the ``flask-session`` extra:
``pip install 'flask-relay-session[flask-session]'``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from .formats import FlaskSessionData as FlaskSessionData
from .formats import Unreadable as Unreadable
from .mover import FlaskSessionMigration as FlaskSessionMigration
from .outcome import Marker as Marker
from .outcome import Move as Move
from .outcome import Outcome as Outcome
