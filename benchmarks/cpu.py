"""Where a request's time goes: the web process's user and system CPU.

``python -m benchmarks.cpu`` calls each backend's app in process, as the
per-request run does, and reports per request, as medians over the rounds:
the process's user CPU (Python: Flask, the session backend, redis-py), its
system CPU (the kernel: sockets, and waking Redis and being woken by it),
and the wall time, which adds the wait for Redis. Each round visits every
route and runs the backends in a shuffled order, each from a freshly seeded
session. Redis's own time is not in any of the three CPU columns; the
per-request run reports it (``python -m benchmarks``).

Use it to tell whether a backend is slower for its Python, for its system
calls or for its wait on Redis, and to compare two copies of the package:
run from outside the repository, ``cd /tmp && PYTHONPATH=<tree>:<repository>
python -m benchmarks.cpu`` measures the package in ``<tree>``. A difference
smaller than the spread between rounds is noise.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import resource
import statistics
import time
import typing as t

import redis

from .apps import REDIS_BACKENDS
from .apps import ROUTE_METHODS
from .apps import create_app
from .latency import WsgiCaller
from .redis_tools import BenchRedis


def measure(
    caller: WsgiCaller, route: str, size: int, requests: int
) -> tuple[float, float, float]:
    """Return the user CPU, system CPU and wall time of one request of
    ``route`` on a fresh session of ``size`` bytes, in µs, averaged over
    ``requests`` requests.
    """
    cookie = caller.seed(size)
    environ = caller.environ(ROUTE_METHODS[route], f"/{route}", cookie)
    for _ in range(10):
        caller(environ)
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    for _ in range(requests):
        caller(environ)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        (after.ru_utime - before.ru_utime) / requests * 1e6,
        (after.ru_stime - before.ru_stime) / requests * 1e6,
        wall / requests * 1e6,
    )


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu")
    parser.add_argument(
        "--backends",
        default="relay-hash,relay-memory,flask-session,flask-session-norefresh,cookie",
        help="backends, comma-separated",
    )
    parser.add_argument("--routes", default="noop,read,write", help="routes")
    parser.add_argument("--size", type=int, default=1, help="session size in KB")
    parser.add_argument("--rounds", type=int, default=5, help="rounds")
    parser.add_argument("--requests", type=int, default=300, help="per cell and round")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    routes = args.routes.split(",")
    size = args.size * 1024
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with contextlib.ExitStack() as stack:
        server = None
        if any(backend in REDIS_BACKENDS for backend in backends):
            server = stack.enter_context(BenchRedis())
        callers = {}
        for backend in backends:
            client = None
            if server is not None and backend in REDIS_BACKENDS:
                client = stack.enter_context(redis.Redis.from_url(server.url))
            callers[backend] = WsgiCaller(create_app(backend, redis_client=client))
        for _ in range(args.rounds):
            for route in routes:
                for backend in random.sample(backends, len(backends)):
                    cell = samples.setdefault((route, backend), [])
                    cell.append(measure(callers[backend], route, size, args.requests))
    print(
        f"µs per request at {args.size} KB, median of {args.rounds} rounds of"
        f" {args.requests} requests\n"
    )
    print("| route | backend | user CPU | system CPU | wall |")
    print("|---|---|---|---|---|")
    for (route, backend), cell in samples.items():
        user, system, wall = (
            statistics.median(sample[column] for sample in cell) for column in range(3)
        )
        print(f"| {route} | {backend} | {user:,.0f} | {system:,.0f} | {wall:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
