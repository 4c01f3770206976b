"""Real WSGI servers for multi-process tests: gunicorn on a loopback port.

:class:`GunicornServer` runs an app under gunicorn in processes of its own,
the way it is deployed: several worker processes, each with a pool of
threads (``-k gthread``), so that concurrent requests for one session really
run at the same time in different processes, each with its own Redis
connections. It is started with the test suite's own interpreter
(``sys.executable -m gunicorn``), so it works from any virtualenv (the
development venv, CI's ``.venv-ci``) without ``bin/gunicorn`` on ``PATH``.

::

    with GunicornServer(
        "tests.apps.relay_app:create_app()",
        env={"RELAY_TEST_REDIS_URL": redis_server.url},
    ) as server:
        requests.get(server.url + "/read")

The app is given as gunicorn's ``module:variable`` or ``module:factory()``,
imported from the repository root, and configured through ``env`` (added to
this process's environment). :meth:`GunicornServer.start` returns once every
worker has loaded the app (a ``post_worker_init`` hook reports it in the
log) and the port answers HTTP. :meth:`GunicornServer.stop` shuts gunicorn
down (``SIGINT`` to the master, then ``SIGKILL`` to the whole process
group), reaps the master and checks that no worker survives. On Linux the
master also gets ``SIGTERM`` if the test process dies without cleaning up,
so no server outlives the test run. The lifecycle is that of every process
the suite starts: :class:`~tests.processes.ManagedProcess`.

The :func:`gunicorn_servers` context manager starts any number of them and
stops them all at its end; a test module turns it into a fixture::

    @pytest.fixture
    def serve_app():
        with gunicorn_servers() as start:
            yield start

    def test_something(serve_app, redis_server):
        server = serve_app("tests.apps.relay_app:create_app()",
                           env={"RELAY_TEST_REDIS_URL": redis_server.url})

:class:`HttpClient` is a keep-alive HTTP/1.1 client for such a server, one
per client thread, that sends exactly the ``Cookie`` header it is given (no
cookie jar); its :class:`HttpReply` gives the cookie a response sets
(:meth:`HttpReply.cookie`, :func:`cookie_sid`) and the worker that served it.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

from .processes import ManagedProcess
from .processes import ProcessError

#: The repository root, where gunicorn imports ``tests.apps...`` from.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The line each worker logs once it has loaded the app.
READY_MARKER = "wsgi-test-worker-ready"

# Settings given by file, so that gunicorn versions that do not know them
# ignore them instead of failing on an unknown option. The control socket
# (gunicorn 25.1+) defaults to one path per user: two servers at once would
# fight over it.
_CONFIG_FILE = f"""\
control_socket_disable = True


def post_worker_init(worker):
    worker.log.info("{READY_MARKER} pid=%s", worker.pid)
"""

# Environment variables of gunicorn itself that must not leak in from the
# developer's shell.
_GUNICORN_ENV = ("GUNICORN_CMD_ARGS",)


class WsgiServerError(ProcessError):
    """A test WSGI server did not start or stop cleanly, or a request failed."""


def gunicorn_available() -> bool:
    """Whether gunicorn is importable by this interpreter."""
    return importlib.util.find_spec("gunicorn") is not None


def gunicorn_command() -> list[str]:
    """The command that runs gunicorn with this interpreter."""
    return [sys.executable, "-m", "gunicorn"]


class GunicornServer(ManagedProcess):
    """An app under gunicorn, on a free loopback port.

    It runs in a process group of its own (see
    :attr:`~tests.processes.ManagedProcess.own_process_group`): a stop
    reaches every worker.

    :param app: gunicorn's app spec, ``"package.module:app"`` or
        ``"package.module:create_app()"``, importable from ``chdir``.
    :param env: environment variables for the server, on top of this
        process's environment (use them to configure the app).
    :param workers: worker processes.
    :param threads: threads per worker.
    :param worker_class: gunicorn's ``-k``; ``gthread`` serves ``threads``
        requests at once in each worker.
    :param extra_args: more gunicorn command line options.
    :param chdir: the directory gunicorn imports the app from; the
        repository root by default.
    :param timeout: gunicorn's worker ``--timeout`` in seconds.
    :param startup_timeout: seconds to wait for every worker to be ready.
    """

    error_class = WsgiServerError
    directory_prefix = "relay-gunicorn-"
    log_name = "gunicorn.log"
    stop_timeout = 10.0
    own_process_group = True

    def __init__(
        self,
        app: str,
        env: Mapping[str, str] | None = None,
        *,
        workers: int = 2,
        threads: int = 8,
        worker_class: str = "gthread",
        extra_args: Iterable[str] = (),
        chdir: str = REPO_ROOT,
        timeout: int = 30,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, cwd=chdir)
        self.app = app
        self.env = dict(env or {})
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.extra_args = list(extra_args)
        self.chdir = chdir
        self.timeout = timeout

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        if self.port is None:
            raise WsgiServerError("the server was never started")
        return f"http://{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """``gunicorn (<app>)``."""
        return f"gunicorn ({self.app})"

    def ready_workers(self) -> set[int]:
        """The pids of the workers that have loaded the app so far."""
        pids = set()
        for line in self.log().splitlines():
            if READY_MARKER in line and "pid=" in line:
                pids.add(int(line.rsplit("pid=", 1)[1].split()[0]))
        return pids

    def command_line(self) -> list[str]:
        """gunicorn with its configuration file, written here, and options."""
        assert self.port is not None and self.directory is not None
        config = os.path.join(self.directory, "gunicorn.conf.py")
        with open(config, "w") as f:
            f.write(_CONFIG_FILE)
        return [
            *gunicorn_command(),
            "--config", config,
            "--bind", self.address,
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--worker-class", self.worker_class,
            "--timeout", str(self.timeout),
            "--graceful-timeout", "3",
            "--chdir", self.chdir,
            "--error-logfile", os.path.join(self.directory, self.log_name),
            "--log-level", "info",
            *self.extra_args,
            self.app,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """This process's environment with :attr:`env` and ``chdir`` added."""
        env = {k: v for k, v in os.environ.items() if k not in _GUNICORN_ENV}
        python_path = [self.chdir, *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env

    def is_ready(self) -> bool:
        """Whether every worker has loaded the app and the port answers."""
        return len(self.ready_workers()) >= self.workers and self._answers_http()

    def _answers_http(self) -> bool:
        """Whether the port answers HTTP (any status, even 404)."""
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    def shutdown(self) -> None:
        """``SIGINT`` to the master: a quick shutdown.

        The master stops and reaps its workers; ``SIGTERM`` would wait out
        keep-alive connections first.
        """
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)


@contextlib.contextmanager
def gunicorn_servers() -> Iterator[Callable[..., GunicornServer]]:
    """Start servers with the returned function; all stop at the end.

    The function takes the arguments of :class:`GunicornServer` and returns
    a started server. Servers are stopped in reverse order, also when the
    block raises; a server that fails to stop does not keep the others
    running.
    """
    started: list[GunicornServer] = []

    def start(app: str, env: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        server = GunicornServer(app, env, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        errors = []
        for server in reversed(started):
            try:
                server.stop()
            except WsgiServerError as error:
                errors.append(error)
        if errors:
            raise errors[0]


#: ``serve(redis_server, **config)``: the test app under gunicorn, on that
#: Redis server, with ``RELAY_TEST_<KEY>`` settings (see :func:`app_servers`).
Serve = Callable[..., GunicornServer]


@contextlib.contextmanager
def app_servers(app: str, *, workers: int = 2, threads: int = 8) -> Iterator[Serve]:
    """Serve the test app ``app`` under gunicorn, one server per Redis
    server and configuration, started on first use and kept for the block.

    The returned ``serve(redis_server, **config)`` passes the server's URL
    as ``RELAY_TEST_REDIS_URL`` and each setting as ``RELAY_TEST_<KEY>``, in
    JSON, as the apps of ``tests/apps`` read them.
    """
    with gunicorn_servers() as start:
        cache: dict[tuple[tuple[str, str], ...], GunicornServer] = {}

        def serve(redis_server: Any, **config: object) -> GunicornServer:
            env = {"RELAY_TEST_REDIS_URL": redis_server.url}
            env.update({f"RELAY_TEST_{k}": json.dumps(v) for k, v in config.items()})
            key = tuple(sorted(env.items()))
            server = cache.get(key)
            if server is None or not server.is_running():
                server = cache[key] = start(app, env, workers=workers, threads=threads)
            return server

        yield serve


# --------------------------------------------------------------------------
# A keep-alive HTTP client with a hand-set Cookie header
# --------------------------------------------------------------------------


class HttpReply:
    """A response: status, headers and body, read in full."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        """The body decoded as JSON, or ``None`` if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def cookie(self, name: str = "session") -> str | None:
        """The ``name=value`` pair this response sets for ``name``.

        ``None`` when it sets no such cookie; ``"name="`` (an empty value)
        when it deletes it.
        """
        for header in self.headers.get_all("Set-Cookie") or ():
            pair = header.split(";", 1)[0].strip()
            if pair.split("=", 1)[0] == name:
                return pair
        return None

    @property
    def pid(self) -> int:
        """The worker process that served it (``X-Worker-Pid``), or 0."""
        return int(self.headers.get("X-Worker-Pid") or 0)

    def __repr__(self) -> str:
        return f"<HttpReply {self.status} {self.body[:200]!r}>"


def cookie_sid(cookie: str | None) -> str | None:
    """The session id in a ``session=<sid>.<mac>.<flags>`` pair, if any."""
    if not cookie or "=" not in cookie:
        return None
    value = cookie.split("=", 1)[1]
    return value.split(".", 1)[0] or None


class HttpClient:
    """One keep-alive HTTP/1.1 connection to a test server.

    Not thread-safe: give each client thread its own. The ``Cookie`` header
    is exactly what the caller passes (there is no cookie jar). A request on
    a reused connection that the server had closed meanwhile (its
    keep-alive timeout) is sent again once on a new connection;
    :attr:`resent` counts those.
    """

    def __init__(self, server: GunicornServer, timeout: float = 60.0) -> None:
        assert server.port is not None
        self.host = server.host
        self.port = server.port
        self.timeout = timeout
        self.connection: http.client.HTTPConnection | None = None
        self.used = False
        self.resent = 0

    def request(
        self,
        method: str,
        path: str,
        cookie: str | None = None,
        json_body: Any = None,
    ) -> HttpReply:
        headers = {}
        body = None
        if cookie:
            headers["Cookie"] = cookie
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            reused = self.connection is not None and self.used
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
                self.used = False
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionError) as error:
                self.close()
                if reused and attempt == 0:
                    self.resent += 1
                    continue
                raise WsgiServerError(f"{method} {path}: {error!r}") from error
            self.used = True
            if response.will_close:
                self.close()
            return HttpReply(response.status, response.headers, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
