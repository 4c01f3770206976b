"""Profile the library's own CPU per request.

``python -m benchmarks.profile`` runs the ``read`` and ``write`` routes at
1 KB and 64 KB on the memory store and on Redis (both layouts) under
:mod:`cProfile`, and prints, per case, the µs per request, the share of the
time spent in :mod:`flask_relay_session` itself, and its hottest functions.
``--pyinstrument`` prints pyinstrument's call tree instead. The full
``pstats`` dumps go to ``benchmarks/results/profiles/``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import typing as t

from .apps import ROUTE_METHODS
from .apps import create_app
from .latency import WsgiCaller
from .redis_tools import BenchRedis
from .redis_tools import Counter
from .redis_tools import counting_client

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "flask_relay_session"


def _requests(size: int) -> int:
    return 400 if size <= 1024 else 60


def run_case(
    caller: WsgiCaller, route: str, size: int, mode: str, top: int, dump: str
) -> None:
    cookie = caller.seed(size)
    environ = caller.environ(ROUTE_METHODS[route], f"/{route}", cookie)
    for _ in range(5):
        caller(environ)
    count = _requests(size)
    if mode == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0001)
        profiler.start()
        for _ in range(count):
            caller(environ)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return
    began = time.perf_counter()
    for _ in range(count):
        caller(environ)
    plain = (time.perf_counter() - began) / count * 1e6
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(count):
        caller(environ)
    profile.disable()
    profile.dump_stats(dump)
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    own = 0.0
    rows = []
    for (filename, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        _cc, calls, tottime, cumtime, _callers = entry
        if PACKAGE in filename:
            own += tottime
            short = filename.split(PACKAGE + os.sep, 1)[1]
            rows.append((tottime, cumtime, calls, f"{short}:{line} {name}"))
    rows.sort(reverse=True)
    print(
        f"  {plain:8.0f} µs/request unprofiled; under cProfile"
        f" {total / count * 1e6:.0f} µs, of which {PACKAGE} itself"
        f" {own / count * 1e6:.0f} µs ({own / total:.0%})"
    )
    print("     own µs/req   cum µs/req  calls/req  function")
    for tottime, cumtime, calls, where in rows[:top]:
        print(
            f"    {tottime / count * 1e6:10.1f} {cumtime / count * 1e6:12.1f}"
            f" {calls / count:10.1f}  {where}"
        )
    print("    hottest functions overall (own time):")
    overall = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )
    for (filename, line, name), entry in overall[:8]:
        where = filename.rsplit("site-packages" + os.sep, 1)[-1]
        print(f"    {entry[2] / count * 1e6:10.1f} µs  {where}:{line} {name}")


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument(
        "--backends", default="relay-memory,relay-json,relay-hash", help="backends"
    )
    parser.add_argument("--routes", default="read,write", help="routes")
    parser.add_argument("--sizes", default="1,64", help="sizes in KB")
    parser.add_argument("--top", type=int, default=12, help="functions to show")
    parser.add_argument(
        "--pyinstrument", action="store_true", help="print pyinstrument call trees"
    )
    args = parser.parse_args(argv)
    directory = os.path.join(HERE, "results", "profiles")
    os.makedirs(directory, exist_ok=True)
    mode = "pyinstrument" if args.pyinstrument else "cprofile"
    with BenchRedis() as server:
        for backend in args.backends.split(","):
            client = None
            if backend != "relay-memory":
                client = counting_client(server.url, Counter())
            caller = WsgiCaller(create_app(backend, redis_client=client))
            for size in (int(kb) * 1024 for kb in args.sizes.split(",")):
                for route in args.routes.split(","):
                    print(f"\n== {backend} /{route} {size // 1024} KB")
                    dump = os.path.join(
                        directory, f"{backend}-{route}-{size // 1024}kb.pstats"
                    )
                    run_case(caller, route, size, mode, args.top, dump)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
