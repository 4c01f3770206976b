"""Per-request cost, measured in process with raw WSGI calls.

Each backend's app is called directly (``app.wsgi_app(environ,
start_response)``), with no HTTP server in between, so the time measured is
the framework plus the session backend plus its Redis round trips on
loopback. Backends are interleaved: every repeat visits each (size, route)
cell and runs the backends in a shuffled order, so slow drifts of the
machine spread over all of them alike.

Each batch starts from a freshly seeded session (so ``append`` never grows
it far), then runs ``batch`` requests, each timed on its own. Per cell the
result holds the median µs per request over all the requests of all the
repeats (robust against the bursts of a busy machine; the mean of each
batch is kept too), and, over all batches, the
Redis round trips and bytes the client sent per request and the Redis
server time per request (``INFO commandstats``, reset before each batch).
"""

from __future__ import annotations

import gc
import io
import random
import statistics
import time
import typing as t
import warnings
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field

from flask import Flask
from werkzeug.test import EnvironBuilder

from .apps import REDIS_BACKENDS
from .apps import ROUTE_METHODS
from .apps import BackendUnavailable
from .apps import create_app
from .redis_tools import BenchRedis
from .redis_tools import Counter
from .redis_tools import counting_client
from .redis_tools import reset_stats
from .redis_tools import server_usec

#: Browsers drop cookies larger than this (RFC 6265 asks for at least 4096
#: bytes per cookie, name and attributes included).
MAX_COOKIE = 4093


@dataclass
class Cell:
    """The measurements of one (backend, size, route)."""

    backend: str
    size: int
    route: str
    #: The mean µs per request of each batch.
    us_repeats: list[float] = field(default_factory=list)
    #: The µs of every request.
    samples: list[float] = field(default_factory=list, repr=False)
    requests: int = 0
    round_trips: int = 0
    bytes_sent: int = 0
    server_usec: float = 0.0
    server_calls: int = 0

    @property
    def us(self) -> float:
        """The median µs per request over every request of every repeat."""
        return statistics.median(self.samples) if self.samples else float("nan")

    def as_dict(self) -> dict[str, t.Any]:
        data = asdict(self)
        del data["samples"]
        data["us_repeats"] = [round(us, 1) for us in self.us_repeats]
        n = max(self.requests, 1)
        ordered = sorted(self.samples)
        data.update(
            us=round(self.us, 1),
            us_mean=round(statistics.fmean(ordered), 1) if ordered else None,
            us_p90=round(ordered[int(len(ordered) * 0.9)], 1) if ordered else None,
            round_trips_per_request=self.round_trips / n,
            bytes_per_request=self.bytes_sent / n,
            server_us_per_request=self.server_usec / n,
        )
        return data


class WsgiCaller:
    """Calls one app the way a WSGI server would, minus the socket."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.wsgi = app.wsgi_app

    @staticmethod
    def environ(method: str, path: str, cookie: str | None) -> dict[str, t.Any]:
        headers = {"Cookie": f"session={cookie}"} if cookie else {}
        builder = EnvironBuilder(path=path, method=method, headers=headers)
        try:
            return builder.get_environ()
        finally:
            builder.close()

    def __call__(self, environ: dict[str, t.Any]) -> tuple[str, list[t.Any]]:
        environ = environ.copy()
        environ["wsgi.input"] = io.BytesIO(b"")
        reply: list[t.Any] = []

        def start_response(
            status: str, headers: list[t.Any], exc_info: t.Any = None
        ) -> t.Callable[[bytes], None]:
            reply[:] = [status, headers]
            return lambda data: None

        body = self.wsgi(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return reply[0], reply[1]

    def seed(self, size: int) -> str | None:
        """Create a session of about ``size`` bytes; return its cookie value."""
        status, headers = self(self.environ("POST", f"/seed?size={size}", None))
        if not status.startswith("200"):
            raise RuntimeError(f"seeding failed: {status}")
        for name, value in headers:
            if name.lower() == "set-cookie" and value.startswith("session="):
                return str(value.split(";", 1)[0].removeprefix("session="))
        raise RuntimeError("seeding set no session cookie")


@dataclass
class Backend:
    name: str
    caller: WsgiCaller
    counter: Counter | None


def build_backends(
    names: t.Sequence[str], server: BenchRedis | None, parser: str, log: t.Any
) -> tuple[list[Backend], list[str]]:
    """Build the apps; return them and the notes about the skipped ones."""
    backends: list[Backend] = []
    skipped: list[str] = []
    for name in names:
        counter = None
        client = None
        if name in REDIS_BACKENDS:
            if server is None:
                skipped.append(f"{name}: no Redis server")
                continue
            counter = Counter()
            client = counting_client(server.url, counter, parser=parser)
        try:
            app = create_app(name, redis_client=client)
        except BackendUnavailable as error:
            note = f"{error} (skipped)"
            log(f"NOTE: {note}")
            skipped.append(note)
            continue
        backends.append(Backend(name, WsgiCaller(app), counter))
    return backends, skipped


def run_latency(
    backends: t.Sequence[Backend],
    *,
    server: BenchRedis | None,
    sizes: t.Sequence[int],
    routes: t.Sequence[str],
    repeats: int,
    batch: int,
    seed: int = 1,
    log: t.Callable[[str], None] = print,
) -> tuple[list[Cell], list[str]]:
    """Run the interleaved benchmark; return the cells and skip notes."""
    rng = random.Random(seed)
    admin = server.admin() if server is not None else None
    cells: dict[tuple[str, int, str], Cell] = {}
    notes: list[str] = []
    too_big: set[tuple[str, int]] = set()

    # Warm up every backend and route once: the first call of a Lua script
    # sends its source, imports finish, caches fill.
    for backend in backends:
        cookie = backend.caller.seed(1024)
        for route in routes:
            backend.caller(
                backend.caller.environ(ROUTE_METHODS[route], f"/{route}", cookie)
            )

    started = time.monotonic()
    for repeat in range(repeats):
        for size in sizes:
            for route in routes:
                order = list(backends)
                rng.shuffle(order)
                for backend in order:
                    if (backend.name, size) in too_big:
                        continue
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        cookie = backend.caller.seed(size)
                    if backend.name == "cookie" and cookie and len(cookie) > MAX_COOKIE:
                        too_big.add((backend.name, size))
                        notes.append(
                            f"cookie at {size // 1024} KB: the cookie is"
                            f" {len(cookie)} bytes, over the 4 KB browsers"
                            " accept (not measured)"
                        )
                        continue
                    cell = cells.setdefault(
                        (backend.name, size, route), Cell(backend.name, size, route)
                    )
                    _run_batch(backend, cell, route, cookie, batch, admin)
                if admin is not None:
                    admin.flushdb()
        log(
            f"  repeat {repeat + 1}/{repeats} done ({time.monotonic() - started:.0f} s)"
        )
    if admin is not None:
        admin.close()
    return list(cells.values()), notes


def _run_batch(
    backend: Backend,
    cell: Cell,
    route: str,
    cookie: str | None,
    batch: int,
    admin: t.Any,
) -> None:
    caller = backend.caller
    environ = caller.environ(ROUTE_METHODS[route], f"/{route}", cookie)
    counter = backend.counter
    measure_server = counter is not None and admin is not None
    if measure_server:
        reset_stats(admin)
    if counter is not None:
        counter.reset()
    gc.collect()
    perf = time.perf_counter_ns
    samples = []
    status = ""
    for _ in range(batch):
        begin = perf()
        status, _headers = caller(environ)
        samples.append((perf() - begin) / 1000)
        if not status.startswith("200"):
            raise RuntimeError(f"{backend.name} /{route}: {status}")
    cell.samples += samples
    cell.us_repeats.append(statistics.fmean(samples))
    cell.requests += batch
    if counter is not None:
        cell.round_trips += counter.round_trips
        cell.bytes_sent += counter.bytes_sent
    if measure_server:
        usec, calls = server_usec(admin)
        cell.server_usec += usec
        cell.server_calls += calls
