"""Requests per second under load: gunicorn workers driven by ``wrk``.

Each backend's app (:func:`benchmarks.apps.create_wsgi`) runs under
gunicorn with several sync workers on a free loopback port. A pool of
sessions is seeded first; then the load generator sends a read-heavy mix
(90 % ``GET /read``, 10 % ``POST /write``) and a write-heavy one (10 % /
90 %), each request carrying the cookie of a random session of the pool.
The backends are interleaved: each cell is run in several short rounds that
visit the backends in a shuffled order, and reports the median round.

``wrk`` (Debian: ``apt-get install -y wrk``) is the load generator when it
is installed; otherwise a Python thread pool with keep-alive connections
takes its place (it measures less: the client then competes for the CPU).
Every run is bounded in time, and only talks to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request
from dataclasses import asdict
from dataclasses import dataclass

from .latency import MAX_COOKIE
from .redis_tools import LOOPBACK
from .redis_tools import BenchRedis
from .redis_tools import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Read share of each mix.
MIXES = {"read-heavy": 0.9, "write-heavy": 0.1}

#: Sessions in the pool the load generator picks from.
SESSIONS = 64


@dataclass
class LoadResult:
    backend: str
    size: int
    mix: str
    requests_per_second: float
    requests: int
    errors: int
    latency_ms_avg: float
    tool: str

    def as_dict(self) -> dict[str, t.Any]:
        return asdict(self)


class Gunicorn:
    """The benchmark app of one backend under gunicorn, on loopback."""

    def __init__(self, backend: str, redis_url: str | None, workers: int) -> None:
        self.backend = backend
        self.port = free_port()
        self.workers = workers
        self.directory = tempfile.mkdtemp(prefix="relay-bench-gunicorn-")
        self.env = dict(os.environ, BENCH_BACKEND=backend)
        if redis_url:
            self.env["BENCH_REDIS_URL"] = redis_url
        self.env.pop("GUNICORN_CMD_ARGS", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Gunicorn:
        log = open(os.path.join(self.directory, "gunicorn.log"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"{LOOPBACK}:{self.port}",
                "--workers",
                str(self.workers),
                "--worker-class",
                "sync",
                "--keep-alive",
                "5",
                "--timeout",
                "30",
                "--graceful-timeout",
                "3",
                "--log-level",
                "warning",
                "--chdir",
                REPO_ROOT,
                "benchmarks.apps:create_wsgi()",
            ],  # fmt: skip
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/noop", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn for {self.backend} did not start")

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def seed_sessions(url: str, size: int, count: int) -> list[str]:
    """Create ``count`` sessions of ``size`` bytes; return their cookies."""
    cookies = []
    for _ in range(count):
        request = urllib.request.Request(
            f"{url}/seed?size={size}", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            for header in reply.headers.get_all("Set-Cookie") or []:
                if header.startswith("session="):
                    cookies.append(header.split(";", 1)[0])
    if len(cookies) != count:
        raise RuntimeError(f"seeding gave {len(cookies)} cookies of {count}")
    return cookies


_WRK_SCRIPT = """\
local cookies = {%(cookies)s}
local read_share = %(read_share)s
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
init = function(args)
  math.randomseed(os.time() * 1000 + seed)
end
request = function()
  local cookie = cookies[math.random(#cookies)]
  if math.random() < read_share then
    return wrk.format("GET", "/read", {["Cookie"] = cookie})
  end
  return wrk.format("POST", "/write", {["Cookie"] = cookie}, "")
end
"""


def run_wrk(
    url: str,
    cookies: t.Sequence[str],
    read_share: float,
    duration: float,
    connections: int,
) -> tuple[float, int, int, float]:
    """Run ``wrk``; return requests/s, requests, errors, mean latency (ms)."""
    quoted = ", ".join(f'"{cookie}"' for cookie in cookies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % {"cookies": quoted, "read_share": read_share})
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                "2",
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(duration))}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                url,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match:
        errors += int(match.group(1))
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        out,
    )
    if match:
        errors += sum(int(part) for part in match.groups())
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    latency_ms = 0.0
    if latency:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
        latency_ms = float(latency.group(1)) * scale
    return rps, requests, errors, latency_ms


def run_threads(
    url: str,
    cookies: t.Sequence[str],
    read_share: float,
    duration: float,
    connections: int,
) -> tuple[float, int, int, float]:
    """The fallback load generator: threads with keep-alive connections."""
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + duration
    totals = {"requests": 0, "errors": 0, "latency": 0.0}
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
        requests = errors = 0
        latency = 0.0
        while time.monotonic() < deadline:
            cookie = rng.choice(cookies)
            read = rng.random() < read_share
            began = time.perf_counter()
            try:
                conn.request(
                    "GET" if read else "POST",
                    "/read" if read else "/write",
                    body=None if read else b"",
                    headers={"Cookie": cookie},
                )
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
            latency += time.perf_counter() - began
            requests += 1
        conn.close()
        with lock:
            totals["requests"] += requests
            totals["errors"] += errors
            totals["latency"] += latency

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 30)
    elapsed = time.monotonic() - began
    requests = int(totals["requests"])
    return (
        requests / elapsed,
        requests,
        int(totals["errors"]),
        totals["latency"] / max(requests, 1) * 1000,
    )


def run_throughput(
    backends: t.Sequence[str],
    *,
    server: BenchRedis,
    sizes: t.Sequence[int],
    duration: float,
    workers: int,
    connections: int,
    rounds: int = 3,
    log: t.Callable[[str], None] = print,
) -> list[LoadResult]:
    """Run every backend and mix; return the results.

    Every backend's gunicorn runs at once (idle ones cost nothing), and the
    ``duration`` of each cell is split into ``rounds`` runs that visit the
    backends in a shuffled order, so that a busy spell of the machine does
    not fall on one backend only. A cell reports the median of its rounds.
    """
    tool = "wrk" if shutil.which("wrk") else "threads"
    generate = run_wrk if tool == "wrk" else run_threads
    if tool != "wrk":
        log("NOTE: wrk not found (apt-get install -y wrk): using Python threads")
    rng = random.Random(2)
    step = max(1.0, duration / rounds)
    samples: dict[tuple[str, int, str], list[tuple[float, int, int, float]]] = {}
    with contextlib.ExitStack() as stack:
        apps = {}
        for backend in backends:
            try:
                apps[backend] = stack.enter_context(
                    Gunicorn(backend, server.url, workers)
                )
            except RuntimeError as error:
                log(f"NOTE: {error} (skipped)")
        for size in sizes:
            cookies = {}
            for backend, app in apps.items():
                seeded = seed_sessions(app.url, size, SESSIONS)
                if max(len(cookie) for cookie in seeded) > MAX_COOKIE + 8:
                    log(f"NOTE: {backend} at {size // 1024} KB: cookie over 4 KB")
                    continue
                cookies[backend] = seeded
            for mix, read_share in MIXES.items():
                for backend in cookies:  # warm up
                    url = apps[backend].url
                    generate(url, cookies[backend], read_share, 1.0, connections)
                for _ in range(rounds):
                    order = list(cookies)
                    rng.shuffle(order)
                    for backend in order:
                        samples.setdefault((backend, size, mix), []).append(
                            generate(
                                apps[backend].url,
                                cookies[backend],
                                read_share,
                                step,
                                connections,
                            )
                        )
                for backend in cookies:
                    runs = samples[(backend, size, mix)]
                    rps = statistics.median(run[0] for run in runs)
                    log(
                        f"  {backend:<24} {size // 1024:>4} KB {mix:<12}"
                        f" {rps:8.0f} req/s (rounds: "
                        + ", ".join(f"{run[0]:.0f}" for run in runs)
                        + ")"
                    )
            with server.admin() as admin:
                admin.flushdb()
    results = []
    for (backend, size, mix), runs in samples.items():
        results.append(
            LoadResult(
                backend,
                size,
                mix,
                round(statistics.median(run[0] for run in runs), 1),
                sum(run[1] for run in runs),
                sum(run[2] for run in runs),
                round(statistics.median(run[3] for run in runs), 2),
                tool,
            )
        )
    return results
