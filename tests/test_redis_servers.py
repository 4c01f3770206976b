"""The test infrastructure itself: real servers, the counter, fakeredis."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest
import redis

from .conftest import missing
from .conftest import needs_redis7
from .processes import LOOPBACK
from .processes import ManagedGroup
from .processes import ManagedProcess
from .processes import ProcessError
from .redis_servers import INSTALL_HINTS
from .redis_servers import RedisServer
from .redis_servers import RedisServerError
from .redis_servers import counting_client
from .redis_servers import no_retry
from .redis_servers import parse_packed_commands


def server_version(client: redis.Redis) -> str:
    version = client.info("server")["redis_version"]
    return version.decode() if isinstance(version, bytes) else str(version)


@needs_redis7("this test checks the version of the redis7 server")
def test_redis7_server_is_a_real_redis_7(redis7_server: RedisServer) -> None:
    with redis7_server.client() as client:
        assert server_version(client).startswith("7.")
    assert redis7_server.port != 6379


def test_redis6_server_is_a_real_redis_6_2(redis6_server: RedisServer) -> None:
    with redis6_server.client() as client:
        assert server_version(client).startswith("6.2.")
    assert redis6_server.port != 6379


def test_servers_run_on_loopback_without_persistence(
    redis_server: RedisServer,
) -> None:
    with redis_server.client(decode_responses=True) as client:
        config = client.config_get("*")
    assert config["bind"] == "127.0.0.1"
    assert config["save"] == ""
    assert config["appendonly"] == "no"
    assert config["dir"] == redis_server.directory


def test_redis_url_points_at_the_started_server(
    redis_url: str, redis_server: RedisServer
) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()


@pytest.mark.parametrize("step", ["write", "check"])
def test_each_test_starts_with_an_empty_server(
    redis_client: redis.Redis, step: str
) -> None:
    assert redis_client.dbsize() == 0
    assert redis_client.script_exists("0" * 40) == [False]
    redis_client.set("left-over", "x")
    redis_client.script_load("return 1")


def test_redis_client_returns_bytes(redis_client: redis.Redis) -> None:
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"


@pytest.mark.parametrize("protocol", [2, 3])
def test_counter_counts_a_get_as_one_round_trip(
    redis_server: RedisServer, protocol: int
) -> None:
    assert redis_server.port is not None
    with counting_client(
        redis_server.host, redis_server.port, protocol=protocol
    ) as client:
        client.set("k", b"value")
        client.counter.reset()

        assert client.get("k") == b"value"

        assert client.counter.round_trips == 1
        assert client.counter.commands == ["GET"]
        assert client.counter.bytes_sent == len(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        if protocol == 3:
            assert client.connection_pool.connection_kwargs["protocol"] == 3


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("transaction", [True, False])
def test_counter_counts_a_pipeline_as_one_round_trip(
    redis_server: RedisServer, protocol: int, transaction: bool
) -> None:
    assert redis_server.port is not None
    with counting_client(
        redis_server.host, redis_server.port, protocol=protocol
    ) as client:
        client.ping()  # connect first: the handshake is not counted anyway
        client.counter.reset()

        with client.pipeline(transaction=transaction) as pipe:
            pipe.set("a", 1).incr("a").get("a")
            assert pipe.execute() == [True, 2, b"2"]

        assert client.counter.round_trips == 1
        expected = ["SET", "INCRBY", "GET"]
        if transaction:
            expected = ["MULTI", *expected, "EXEC"]
        assert client.counter.commands == expected
        assert client.counter.batches == [expected]


def test_counter_ignores_the_connection_handshake(counting_redis) -> None:
    # The first command opens the connection (HELLO, CLIENT SETINFO, ...).
    counting_redis.get("missing")
    assert counting_redis.counter.commands == ["GET"]
    assert counting_redis.counter.round_trips == 1


def test_counter_sees_the_cost_of_an_unknown_script(counting_redis) -> None:
    script = counting_redis.register_script("return 1")

    assert script() == 1
    assert counting_redis.counter.commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
    assert counting_redis.counter.round_trips == 3

    counting_redis.counter.reset()
    assert script() == 1
    assert counting_redis.counter.commands == ["EVALSHA"]
    assert counting_redis.counter.round_trips == 1


def test_counter_counts_bytes_of_large_values(counting_redis) -> None:
    counting_redis.set("big", b"x" * 65536)
    assert counting_redis.counter.bytes_sent > 65536
    counting_redis.counter.reset()
    assert counting_redis.counter.bytes_sent == 0
    assert counting_redis.counter.commands == []


def test_parse_packed_commands_splits_a_pipeline() -> None:
    data = (
        b"*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nGET\r\n$3\r\na\r\n\r\n*1\r\n$4\r\nEXEC\r\n"
    )
    assert parse_packed_commands(data) == [
        (b"MULTI",),
        (b"GET", b"a\r\n"),
        (b"EXEC",),
    ]


def test_a_server_started_on_demand_survives_a_crash(redis_binaries) -> None:
    binary = redis_binaries.get("redis7") or redis_binaries.get("redis6")
    if binary is None:
        missing("redis6")
    with RedisServer(binary) as server:
        port = server.port
        with server.client(retry=no_retry()) as client:
            client.set("k", "v")
            server.kill()
            with pytest.raises(redis.ConnectionError):
                client.get("k")
            server.start()
            assert server.port == port
            assert client.get("k") is None  # nothing persisted
    assert not server.is_running()
    assert server.directory is None


def test_a_redis_server_that_cannot_start_shows_what_it_wrote(
    redis_binaries: dict[str, str],
) -> None:
    binary = redis_binaries.get("redis7") or redis_binaries.get("redis6")
    if binary is None:
        missing("redis6")
    server = RedisServer(binary, extra_args=["--no-such-option", "x"])
    # The config error goes to stderr, not to the log file.
    with pytest.raises(RedisServerError, match="Bad directive") as info:
        server.start()
    assert "exited (exit status 1) before it was ready" in str(info.value)
    assert server.process is None
    assert server.directory is None


def test_start_redis_gives_a_test_its_own_server(
    start_redis, redis_server: RedisServer
) -> None:
    name = "redis7" if redis_server.version[0] == 7 else "redis6"
    own = start_redis(name, extra_args=["--maxmemory", "1mb"])
    assert own.port != redis_server.port
    with own.client(decode_responses=True) as client:
        assert client.config_get("maxmemory") == {"maxmemory": "1048576"}


def test_fakeredis_client_uses_the_real_cjson(fakeredis_client) -> None:
    from .conftest import REAL_CJSON

    version = fakeredis_client.eval("return cjson._VERSION", 0)
    if not REAL_CJSON:
        pytest.skip(
            "fakeredis emulates cjson without Debian's lua-cjson;"
            f" to test with the real one, install {INSTALL_HINTS['cjson']}"
        )
    assert version == b"2.1.0"
    # The real cjson's lossy corners (see FACTS.md), unlike the emulation.
    roundtrip = "return cjson.encode(cjson.decode(ARGV[1]))"
    assert fakeredis_client.eval(roundtrip, 0, "[]") == b"{}"


# --------------------------------------------------------------------------
# The lifecycle of every managed process (tests/processes.py)
# --------------------------------------------------------------------------

#: Code that ignores SIGTERM, so only SIGKILL ends it.
IGNORE_SIGTERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "

#: Code that listens on the port given as its argument, then says "up".
LISTEN = (
    "import socket, sys, time; s = socket.socket();"
    " s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen();"
    " print('up', flush=True); time.sleep(60)"
)


class PythonProcess(ManagedProcess):
    """``python -c code <port>``, ready once it has printed ``up``."""

    poll_interval = 0.01
    stop_timeout = 1.0

    def __init__(
        self, code: str, *, port: int | None = None, startup_timeout: float = 10.0
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.code = code

    def command_line(self) -> list[str]:
        return [sys.executable, "-c", self.code, str(self.port)]

    def is_ready(self) -> bool:
        # A word of its own: "Address already in use" holds "ready".
        return "up" in self.full_log().split()


class ProcessPair(ManagedGroup):
    """Two processes; :meth:`set_up` raises after the first if asked to."""

    def __init__(self, fail: bool = False) -> None:
        self.first = PythonProcess(LISTEN)
        self.second = PythonProcess(LISTEN)
        self.fail = fail
        super().__init__([self.first, self.second])

    def set_up(self) -> None:
        self.first.start()
        if self.fail:
            raise RuntimeError("set-up failed")
        self.second.start()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies are dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_exited(process: ManagedProcess) -> None:
    deadline = time.monotonic() + 5
    while process.is_running():
        assert time.monotonic() < deadline, f"{process!r} is still running"
        time.sleep(0.01)


def test_a_process_that_is_never_ready_is_killed_and_its_output_shown() -> None:
    code = (
        IGNORE_SIGTERM
        + "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    )
    process = PythonProcess(code, startup_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(ProcessError, match="was not ready within 0.3 s") as info:
        process.start()
    # The shutdown (SIGTERM) was ignored: SIGKILL after stop_timeout.
    assert time.monotonic() - began < 5
    message = str(info.value)
    assert f"PythonProcess did not start on {LOOPBACK}:" in message
    assert ". Its output:\npid " in message
    assert not alive(int(message.rsplit("pid ", 1)[1].split()[0]))
    assert process.process is None
    assert process.directory is None
    assert not process.is_running()


def test_a_process_that_exits_before_it_is_ready_is_reported() -> None:
    code = "import sys; sys.exit('no such option')"
    with pytest.raises(ProcessError) as info:
        PythonProcess(code).start()
    message = str(info.value)
    assert "exited (exit status 1) before it was ready" in message
    assert message.endswith("Its output:\nno such option\n")

    with pytest.raises(ProcessError, match="It wrote nothing"):
        PythonProcess("").start()


def test_stop_is_idempotent() -> None:
    process = PythonProcess(LISTEN)
    process.stop()  # never started
    with process:
        directory = process.directory
        assert directory is not None and os.path.isdir(directory)
        assert process.is_running()
        assert "running" in repr(process)
    assert not os.path.exists(directory)
    process.stop()
    process.stop()
    assert process.process is None
    assert process.directory is None
    assert "stopped" in repr(process)


def test_kill_keeps_the_directory_and_the_port() -> None:
    with PythonProcess(LISTEN) as process:
        port, directory = process.port, process.directory
        process.kill()
        assert not process.is_running()
        assert process.directory == directory
        process.start()  # a kill is no crash: nothing to report
        assert process.is_running()
        assert (process.port, process.directory) == (port, directory)


def test_a_process_killed_from_outside_is_reported_by_stop() -> None:
    process = PythonProcess(LISTEN).start()
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGKILL)
    wait_until_exited(process)
    assert "exited (killed by SIGKILL)" in repr(process)

    with pytest.raises(ProcessError) as info:
        process.stop()
    message = str(info.value)
    assert f"PythonProcess on {process.address} exited on its own" in message
    assert "(killed by SIGKILL). Its output:\nup" in message
    assert process.process is None
    assert process.directory is None
    process.stop()  # reported once


def test_a_process_killed_from_outside_is_reported_by_start() -> None:
    with PythonProcess(LISTEN) as process:
        assert process.process is not None
        port = process.port
        process.process.terminate()
        wait_until_exited(process)

        with pytest.raises(
            ProcessError, match=r"exited on its own \(killed by SIGTERM"
        ):
            process.start()
        # Reported once: the next start brings it back on the same port.
        process.start()
        assert process.is_running()
        assert process.port == port


def test_a_port_taken_since_the_last_start_is_replaced() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        process = PythonProcess(LISTEN)
        process.port = taken.getsockname()[1]  # kept from an earlier start
        with process:
            assert process.is_running()
            assert process.port != taken.getsockname()[1]


def test_a_given_port_that_is_taken_is_not_replaced() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = PythonProcess(LISTEN, port=port)
        with pytest.raises(ProcessError, match="Address already in use"):
            process.start()
        assert process.port == port


def test_own_process_group_stops_the_whole_group() -> None:
    class Master(PythonProcess):
        own_process_group = True

    # A worker that ignores SIGTERM and outlives its master.
    worker = IGNORE_SIGTERM + "import time; time.sleep(60)"
    code = (
        "import subprocess, sys, time;"
        f" w = subprocess.Popen([sys.executable, '-c', {worker!r}]);"
        " print('up', w.pid, flush=True); time.sleep(60)"
    )
    with Master(code) as master:
        assert master.process is not None
        assert os.getpgid(master.process.pid) == master.process.pid
        worker_pid = int(master.full_log().split()[1])
        assert alive(worker_pid)
    assert not alive(worker_pid)


def test_a_group_that_fails_to_set_up_stops_what_it_started() -> None:
    pair = ProcessPair(fail=True)
    with pytest.raises(RuntimeError, match="set-up failed"):
        pair.start()
    assert pair.first.process is None
    assert pair.first.directory is None
    assert pair.second.process is None


def test_a_group_stops_every_process_even_when_one_fails_to() -> None:
    pair = ProcessPair().start()
    assert pair.second.process is not None
    pair.second.process.kill()
    wait_until_exited(pair.second)

    with pytest.raises(ProcessError, match="exited on its own"):
        pair.stop()
    assert pair.first.process is None
    assert pair.first.directory is None
    assert pair.second.directory is None
