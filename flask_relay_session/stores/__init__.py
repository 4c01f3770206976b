"""Session stores: the protocols and the Redis and in-memory stores."""

from __future__ import annotations

from .base import Change as Change
from .base import EntryKind as EntryKind
from .base import MergeResult as MergeResult
from .base import MergeStatus as MergeStatus
from .base import SessionRecord as SessionRecord
from .base import SessionStore as SessionStore
from .base import SessionStoreAdmin as SessionStoreAdmin
from .base import SessionStoreLockLoad as SessionStoreLockLoad
from .base import StoredSession as StoredSession
from .memory import MemorySessionStore as MemorySessionStore
from .redis import RedisSessionStore as RedisSessionStore
