"""The lifecycle of the processes the test suite starts.

:class:`ManagedProcess` owns what every server of the suite does the same
way: it picks a free loopback port, gives the process a temporary directory
of its own, starts it, waits until it is ready, stops it (a polite shutdown,
then ``SIGKILL``) and removes the directory again. A subclass gives only
what is its own: its command line (:meth:`ManagedProcess.command_line`), how
to tell it is ready (:meth:`ManagedProcess.is_ready`) and, if ``SIGTERM`` is
not the way, how to ask it to shut down (:meth:`ManagedProcess.shutdown`).
:class:`~tests.redis_servers.RedisServer` and
:class:`~tests.wsgi_servers.GunicornServer` are such subclasses.

:class:`ManagedGroup` starts several of them as one, and stops them all
again if that fails: :class:`~tests.redis_topologies.LocalCluster` and
:class:`~tests.redis_topologies.LocalSentinel` are groups.

Both are context managers::

    with RedisServer(binary) as server:
        ...
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterable
from types import TracebackType
from typing import TypeVar

#: The host the test servers bind to. Loopback only.
LOOPBACK = "127.0.0.1"

#: What a server (Redis, gunicorn, Python) writes when its port is taken.
_PORT_TAKEN = "Address already in use"

#: The file in a process's directory that gets its stdout and stderr.
_OUTPUT_NAME = "output.log"

_M = TypeVar("_M", bound="Managed")
_P = TypeVar("_P", bound="ManagedProcess")
_G = TypeVar("_G", bound="ManagedGroup")


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ProcessError(RuntimeError):
    """A managed process did not start, exited on its own or outlived its stop."""


class Managed(abc.ABC):
    """Something the suite starts and must stop; a context manager."""

    @abc.abstractmethod
    def start(self: _M) -> _M:
        """Start, return once ready, and return ``self``."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and clean up; calling it again does nothing."""

    def __enter__(self: _M) -> _M:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(Managed):
    """A subprocess on a loopback port, with a temporary directory of its own.

    :meth:`start` creates the directory (kept until :meth:`stop`), picks a
    free port unless one was given, runs :meth:`command_line` with stdout
    and stderr going to a file in the directory, and polls :meth:`is_ready`
    for up to ``startup_timeout`` seconds. A process that exits first or is
    not ready in time is stopped, its directory removed, and
    :attr:`error_class` raised with everything it wrote. When that says its
    port was taken (something else bound it after :func:`free_port` found it
    free) it is tried again on another port, unless the port was given.

    The port is kept from one start to the next, so clients reconnect to the
    same address once the process is back: :meth:`kill` is a crash that
    keeps the directory and the port, and :meth:`start` brings the process
    back. A process that exits although neither :meth:`stop` nor
    :meth:`kill` was called (a crash, or a kill from elsewhere) is reported:
    the next :meth:`start` or :meth:`stop` raises :attr:`error_class` with
    its exit status and its output, after reaping it.

    :param port: a fixed port; by default a free one is picked.
    :param startup_timeout: seconds to wait for :meth:`is_ready`.
    :param cwd: the working directory of the process; by default this
        process's.
    """

    #: The exception :meth:`start` and :meth:`stop` raise.
    error_class: type[ProcessError] = ProcessError
    #: The prefix of the temporary directory's name.
    directory_prefix = "relay-process-"
    #: The log file the process writes in its directory, if any.
    log_name: str | None = None
    #: Seconds between two calls of :meth:`is_ready`.
    poll_interval = 0.05
    #: Seconds :meth:`shutdown` is given before ``SIGKILL``.
    stop_timeout = 5.0
    #: Starts at most this many times while its port turns out to be taken.
    port_attempts = 5
    #: Run it in a session of its own: signals go to its whole process group
    #: (its workers too), whatever is left of the group after a stop is
    #: killed and reported, Ctrl-C in the terminal does not reach it, and on
    #: Linux it gets ``SIGTERM`` if the test process dies without stopping it.
    own_process_group = False

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 10.0,
        cwd: str | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.port = port
        self._fixed_port = port is not None
        self.startup_timeout = startup_timeout
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: str | None = None

    # -- what a subclass gives -----------------------------------------

    @property
    def label(self) -> str:
        """What messages call the process; its class name by default."""
        return type(self).__name__

    @abc.abstractmethod
    def command_line(self) -> list[str]:
        """The command to run, once :attr:`port` and :attr:`directory` are set.

        It may write configuration files into :attr:`directory` first.
        """

    @abc.abstractmethod
    def is_ready(self) -> bool:
        """Whether the running process is ready for the tests.

        ``False``, not an error, while the process is still starting.
        """

    def environment(self) -> dict[str, str] | None:
        """The process's environment; ``None`` (the default) is this one's."""
        return None

    def shutdown(self) -> None:
        """Ask the running process to exit: ``SIGTERM`` by default."""
        self.send_signal(signal.SIGTERM)

    # -- information ---------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> str | None:
        """The path of :attr:`log_name` while there is a directory."""
        if self.directory is None or self.log_name is None:
            return None
        return os.path.join(self.directory, self.log_name)

    def log(self) -> str:
        """The process's log file so far; empty without one."""
        return _read(self.log_path)

    def full_log(self) -> str:
        """The log file and what the process wrote to stdout and stderr."""
        if self.directory is None:
            return ""
        return self.log() + _read(os.path.join(self.directory, _OUTPUT_NAME))

    def is_running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        returncode = None if self.process is None else self.process.poll()
        if self.process is None:
            state = "stopped"
        elif returncode is None:
            state = "running"
        else:
            state = f"exited ({_exit_status(returncode)})"
        return f"<{type(self).__name__} {self.label} {self.address} {state}>"

    # -- lifecycle -----------------------------------------------------

    def start(self: _P) -> _P:
        """Start the process and return once :meth:`is_ready` says so.

        Does nothing if it runs already.

        :raises ProcessError: (:attr:`error_class`) it exited on its own
            since the last start, or it did not become ready.
        """
        if self.is_running():
            return self
        self._reap_crashed()
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix=self.directory_prefix)
        if self.port is None:
            self.port = free_port(self.host)
        attempts_left = 1 if self._fixed_port else self.port_attempts
        while True:
            attempts_left -= 1
            try:
                self._spawn()
                failure = self._wait_ready()
                if failure is not None:
                    self._terminate()
            except BaseException:
                self._clean_up()
                raise
            if failure is None:
                return self
            output = self.full_log()
            if _PORT_TAKEN not in output or attempts_left <= 0:
                self._remove_directory()
                raise self.error_class(
                    f"{self.label} did not start on {self.address}: it {failure}"
                    + _output_section(output)
                )
            self.port = free_port(self.host)

    def stop(self) -> None:
        """Stop the process and remove its directory.

        :meth:`shutdown`, then ``SIGKILL`` after :attr:`stop_timeout`
        seconds. Calling it again, or before :meth:`start`, does nothing.

        :raises ProcessError: (:attr:`error_class`) it had exited on its own,
            or (with :attr:`own_process_group`) part of its group survived.
        """
        crash = self._crash_report()
        self._clean_up()
        if crash is not None:
            raise self.error_class(crash)

    def kill(self) -> None:
        """``SIGKILL`` the process (a crash); the directory and port are kept."""
        process = self.process
        if process is None:
            return
        self.send_signal(signal.SIGKILL)
        process.wait(timeout=self.stop_timeout)
        self.process = None
        if self.own_process_group:
            survivors = _group_survivors(process.pid)
            if survivors:
                raise self.error_class(
                    f"processes {survivors} of {self.label}'s process group"
                    f" {process.pid} survived SIGKILL"
                )

    def pause(self) -> None:
        """``SIGSTOP`` the process: connections hang instead of failing."""
        if self.is_running():
            self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT`` a paused process."""
        if self.is_running():
            self.send_signal(signal.SIGCONT)

    def send_signal(self, signum: int) -> None:
        """Send a signal to the process, or to its whole process group.

        With :attr:`own_process_group` the group gets it even when its
        leader has exited: its orphans are still there.
        """
        process = self.process
        if process is None:
            return
        if self.own_process_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    # -- the steps -----------------------------------------------------

    def _spawn(self) -> None:
        assert self.directory is not None
        log_path = self.log_path
        if log_path is not None:
            # Only this attempt's log: an earlier "port taken" must not count.
            open(log_path, "w").close()
        with open(os.path.join(self.directory, _OUTPUT_NAME), "wb") as output:
            self.process = subprocess.Popen(
                self.command_line(),
                cwd=self.cwd,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_process_group,
                preexec_fn=_parent_death_signal() if self.own_process_group else None,
            )

    def _wait_ready(self) -> str | None:
        """``None`` once the process is ready, else what went wrong."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                return f"exited ({_exit_status(returncode)}) before it was ready"
            if self.is_ready():
                return None
            if time.monotonic() >= deadline:
                return f"was not ready within {self.startup_timeout:g} s"
            time.sleep(self.poll_interval)

    def _crash_report(self) -> str | None:
        """What to say of a process that exited with nobody stopping it."""
        if self.process is None:
            return None
        returncode = self.process.poll()
        if returncode is None:
            return None
        return (
            f"{self.label} on {self.address} exited on its own"
            f" ({_exit_status(returncode)})" + _output_section(self.full_log())
        )

    def _reap_crashed(self) -> None:
        crash = self._crash_report()
        if crash is not None:
            self._terminate()
            raise self.error_class(crash)

    def _terminate(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                self.resume()  # a stopped process cannot act on a shutdown
                self.shutdown()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=self.stop_timeout)
        finally:
            self.kill()

    def _remove_directory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _clean_up(self) -> None:
        try:
            self._terminate()
        finally:
            self._remove_directory()


class ManagedGroup(Managed):
    """Several managed processes that start and stop as one.

    A subclass implements :meth:`set_up`, which starts the processes and
    does whatever else makes the whole ready. When that fails, every process
    is stopped before the error goes on. :meth:`stop` stops them in the
    reverse of the given order, each of them even if one fails to stop.

    :param processes: the processes, in the order they start.
    """

    def __init__(self, processes: Iterable[ManagedProcess]) -> None:
        self.processes = list(processes)

    @abc.abstractmethod
    def set_up(self) -> None:
        """Start the processes and wait until the whole is ready."""

    def start(self: _G) -> _G:
        """Run :meth:`set_up`; stop everything if it fails."""
        try:
            self.set_up()
        except BaseException:
            # The set-up's error is the one to see, not a consequence of it.
            with contextlib.suppress(ProcessError):
                self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process, last started first.

        :raises ProcessError: the first error of a process's
            :meth:`~ManagedProcess.stop`, once all were stopped.
        """
        errors = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except ProcessError as error:
                errors.append(error)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _read(path: str | None) -> str:
    if path is None or not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _output_section(output: str) -> str:
    if not output.strip():
        return ". It wrote nothing."
    return f". Its output:\n{output}"


def _exit_status(returncode: int | None) -> str:
    """``exit status 1`` or ``killed by SIGKILL``."""
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``SIGTERM`` when we die.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere ``None``.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


def _group_survivors(pgid: int, wait: float = 5.0) -> list[int]:
    """Pids still alive in process group ``pgid`` after up to ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        members = _group_members(pgid)
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are alive.

    Zombies do not count: a killed orphan stays one until init reaps it,
    which an init that does not reap (a container's) never does.
    """
    if not os.path.isdir("/proc"):  # pragma: no cover - not Linux
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # "pid (command) state ppid pgrp ...": the command may hold
                # spaces and parentheses, so split after its last ")".
                state, _ppid, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # it exited meanwhile
        if int(group) == pgid and state != "Z":
            members.append(int(entry))
    return members
