"""What a session needs to know about its app: the store, the lifetime, the
clock, and when an expiry is due for a refresh.
"""

from __future__ import annotations

import random
import time
import typing as t
from dataclasses import dataclass
from datetime import timedelta

from .config import MAX_DURATION
from .config import Settings
from .config import duration_ms
from .stores.base import SessionStore


@dataclass(frozen=True)
class SessionPolicy:
    """What a session needs to know about its app, fixed for one request.

    :param store: where sessions are kept.
    :param settings: the extension's settings.
    :param lifetime: ``PERMANENT_SESSION_LIFETIME`` in milliseconds.
    :param refresh_each_request: ``SESSION_REFRESH_EACH_REQUEST``.
    :param clock: returns the current time in seconds.
    :param client: the request's user agent and address, recorded for the
        sessions of users with ``RELAY_SESSION_TRACK_CLIENT``; ``None``
        without.
    """

    store: SessionStore
    settings: Settings
    lifetime: int
    refresh_each_request: bool
    clock: t.Callable[[], float] = time.time
    client: tuple[str | None, str | None] | None = None

    def now(self) -> int:
        """The current time in milliseconds."""
        return int(self.clock() * 1000)

    def wait(self, attempt: int) -> None:
        """Sleep before lock attempt ``attempt``: linear backoff with jitter.

        Attempt n waits n × ``RELAY_SESSION_LOCK_BACKOFF`` on average, spread
        over ±50 % so that requests that collided once do not retry at the
        same instants again.
        """
        time.sleep(
            self.settings.lock_backoff * attempt * random.uniform(0.5, 1.5) / 1000
        )

    def refresh_due(
        self, permanent: bool, expires_at: int, *, writing: bool = False
    ) -> bool:
        """Whether a session expiring at ``expires_at`` should be extended.

        ``RELAY_SESSION_ROLLING`` decides: always, never, or once less than
        ``(1 - r) * lifetime`` remains. As with Flask's cookie sessions,
        ``SESSION_REFRESH_EACH_REQUEST = False`` limits the refresh of a
        permanent session to requests that write to it, since its cookie
        must be sent again whenever its expiry moves.
        """
        rolling = self.settings.rolling
        if rolling is False:
            return False
        if permanent and not writing and not self.refresh_each_request:
            return False
        if rolling is True:
            return True
        return expires_at - self.now() < (1 - rolling) * self.lifetime

    def write_ttl(
        self, *, new: bool, refreshed: bool, permanent: bool, expires_at: int
    ) -> int | None:
        """The lifetime a write sets, or ``None`` to keep the expiry.

        A new session gets the whole lifetime. An expiry the request already
        refreshed (when it loaded the session, or in an earlier save) is
        kept.
        """
        if new or (
            not refreshed and self.refresh_due(permanent, expires_at, writing=True)
        ):
            return self.lifetime
        return None

    def registered_until(self, now: int) -> int:
        """How long a registry entry written at ``now`` lasts: twice the
        lifetime plus ``RELAY_SESSION_LAST_SEEN_INTERVAL`` (see
        :mod:`flask_relay_session.stores.users`).
        """
        return now + 2 * self.lifetime + self.settings.last_seen_interval

    def grace(self, grace_period: float | timedelta | None) -> int:
        """Return a rotation's grace period in milliseconds.

        :param grace_period: in seconds or as a timedelta, from 0 to the
            longest duration a setting may give; ``None`` for
            ``RELAY_SESSION_ROTATION_GRACE_PERIOD``, itself by default the
            session lifetime.
        :raises ValueError: ``grace_period`` is out of that range.
        """
        if grace_period is None:
            return self.settings.rotation_grace_period or self.lifetime
        grace = duration_ms(grace_period, minimum=0)
        if grace is None:
            raise ValueError(
                "a grace period must be from 0 seconds to"
                f" {MAX_DURATION.days} days; got {grace_period!r}"
            )
        return grace
