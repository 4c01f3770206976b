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

On Linux, each cell also reports the CPU the gunicorn workers and the Redis
server spent per request (``/proc/<pid>/stat``), which puts a gap between
two backends where it is: in the web processes or in Redis. The load
generator's own CPU is left out.
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
    #: CPU (user and system) of the gunicorn workers per request, in µs;
    #: ``None`` where ``/proc`` cannot tell.
    worker_cpu_us: float | None = None
    #: CPU of the Redis server per request, in µs, or ``None``.
    redis_cpu_us: float | None = None

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

    def worker_pids(self) -> list[int]:
        """The process ids of the gunicorn workers (children of the master)."""
        if self.process is None:
            return []
        return children(self.process.pid)

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: t.Iterable[int]) -> float | None:
    """The user and system CPU the processes ``pids`` have spent, in
    seconds, from ``/proc/<pid>/stat``; ``None`` where that cannot be read
    (not Linux, or a process gone).
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # The fields after the command name, which may hold spaces:
                # utime and stime are the 14th and 15th of the whole line.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The ids of the processes whose parent is ``pid`` (Linux), else ``[]``."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(entry))
    return found


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
    samples: dict[tuple[str, int, str], list[_Round]] = {}
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
                            _measured_round(
                                apps[backend],
                                server,
                                generate,
                                cookies[backend],
                                read_share,
                                step,
                                connections,
                            )
                        )
                for backend in cookies:
                    runs = samples[(backend, size, mix)]
                    rps = statistics.median(run.rps for run in runs)
                    log(
                        f"  {backend:<24} {size // 1024:>4} KB {mix:<12}"
                        f" {rps:8.0f} req/s (rounds: "
                        + ", ".join(f"{run.rps:.0f}" for run in runs)
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
                round(statistics.median(run.rps for run in runs), 1),
                sum(run.requests for run in runs),
                sum(run.errors for run in runs),
                round(statistics.median(run.latency_ms for run in runs), 2),
                tool,
                worker_cpu_us=_median_of(run.worker_cpu_us for run in runs),
                redis_cpu_us=_median_of(run.redis_cpu_us for run in runs),
            )
        )
    return results


@dataclass
class _Round:
    """One run of the load generator against one backend."""

    rps: float
    requests: int
    errors: int
    latency_ms: float
    worker_cpu_us: float | None
    redis_cpu_us: float | None


def _measured_round(
    app: Gunicorn,
    server: BenchRedis,
    generate: t.Callable[..., tuple[float, int, int, float]],
    *args: t.Any,
) -> _Round:
    """Run ``generate(app.url, *args)``, with the CPU the workers of ``app``
    and the Redis server spent meanwhile, per request.
    """
    workers = app.worker_pids()
    redis_pids = [] if server.process is None else [server.process.pid]
    before = cpu_seconds(workers), cpu_seconds(redis_pids)
    rps, requests, errors, latency_ms = generate(app.url, *args)
    after = cpu_seconds(workers), cpu_seconds(redis_pids)
    per_request = [
        None
        if start is None or end is None or not requests or not pids
        else round((end - start) / requests * 1e6, 1)
        for start, end, pids in zip(before, after, (workers, redis_pids), strict=True)
    ]
    return _Round(rps, requests, errors, latency_ms, *per_request)


def _median_of(values: t.Iterable[float | None]) -> float | None:
    """The median of ``values``, or ``None`` if any is missing."""
    known = list(values)
    if not known or any(value is None for value in known):
        return None
    return round(statistics.median(t.cast("list[float]", known)), 1)
