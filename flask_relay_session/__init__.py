"""Server-side Flask sessions in Redis that merge concurrent writes."""

from __future__ import annotations

from . import signals as signals
from .errors import RelaySessionError as RelaySessionError
from .errors import SessionChainBrokenError as SessionChainBrokenError
from .errors import SessionChainError as SessionChainError
from .errors import SessionConfigError as SessionConfigError
from .errors import SessionDepthError as SessionDepthError
from .errors import SessionLockError as SessionLockError
from .errors import SessionSerializationError as SessionSerializationError
from .errors import SessionStoreError as SessionStoreError
from .extension import RelaySession as RelaySession
from .session import Session as Session
from .stores import MemorySessionStore as MemorySessionStore
from .stores import RedisSessionStore as RedisSessionStore
from .stores import SessionStore as SessionStore
