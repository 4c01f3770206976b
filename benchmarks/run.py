"""Run the benchmark suite: ``python -m benchmarks [--quick]``.

Writes ``benchmarks/results/results.md``, ``results.json``, ``results.rst``
(the tables for the docs) and the PNG charts, and with ``--docs`` copies the
charts to ``docs/_static/``. See ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
import typing as t
from importlib import metadata

from . import report
from .apps import ALL_BACKENDS
from .apps import ROUTES
from .latency import build_backends
from .latency import run_latency
from .redis_tools import BenchRedis

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
SIZES = (1024, 16 * 1024, 64 * 1024, 256 * 1024)

MODES: dict[str, dict[str, t.Any]] = {
    "quick": {
        "repeats": 3,
        "batch": 20,
        "load_sizes": (1024,),
        "duration": 3.0,
    },
    "full": {
        "repeats": 9,
        "batch": 40,
        "load_sizes": (1024, 64 * 1024),
        "duration": 10.0,
    },
}


def parse_args(argv: t.Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark flask-relay-session against Flask-Session and"
        " Flask's cookie session.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run (about 1-2 minutes)"
    )
    parser.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        help="comma-separated, from: " + ", ".join(ALL_BACKENDS),
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(s // 1024) for s in SIZES),
        help="session sizes in KB, comma-separated (default: 1,16,64,256)",
    )
    parser.add_argument(
        "--routes", default=",".join(ROUTES), help="comma-separated routes"
    )
    parser.add_argument("--repeats", type=int, help="repeats per cell")
    parser.add_argument("--batch", type=int, help="requests per batch")
    parser.add_argument(
        "--no-throughput", action="store_true", help="skip the gunicorn load test"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of load per throughput cell"
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="gunicorn workers (default 4)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="load generator connections"
    )
    parser.add_argument(
        "--parser",
        choices=("auto", "python", "hiredis"),
        default="auto",
        help="redis-py reply parser for the in-process run (auto: hiredis if"
        " installed)",
    )
    parser.add_argument(
        "--output",
        help="where to write the results (default benchmarks/results, or"
        " benchmarks/results/quick with --quick)",
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="copy the charts to docs/_static/ for the Performance page",
    )
    return parser.parse_args(argv)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: t.Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = dict(MODES[mode])
    repeats = args.repeats or settings["repeats"]
    batch = args.batch or settings["batch"]
    duration = args.duration or settings["duration"]
    backends = [name for name in args.backends.split(",") if name]
    unknown = set(backends) - set(ALL_BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backends: {', '.join(sorted(unknown))}")
    sizes = [int(kb) * 1024 for kb in args.sizes.split(",") if kb]
    routes = [route for route in args.routes.split(",") if route]
    if args.output is None:
        args.output = os.path.join(HERE, "results", *(["quick"] if args.quick else []))
    os.makedirs(args.output, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.monotonic()
    with BenchRedis() as server:
        log(f"Redis {server.version} on {server.url} (started by the benchmark)")
        parser_name = args.parser
        if parser_name == "auto":
            from redis.utils import HIREDIS_AVAILABLE

            parser_name = "hiredis" if HIREDIS_AVAILABLE else "python"
        built, skipped = build_backends(backends, server, args.parser, log)
        log(
            f"Per-request run ({mode}): {len(built)} backends × {len(sizes)} sizes"
            f" × {len(routes)} routes, {repeats} repeats × {batch} requests"
        )
        cells, notes = run_latency(
            built,
            server=server,
            sizes=sizes,
            routes=routes,
            repeats=repeats,
            batch=batch,
            log=log,
        )
        throughput = []
        load_tool = shutil.which("wrk") and "wrk" or "Python threads"
        if not args.no_throughput:
            load_backends = [b.name for b in built if b.name != "relay-memory"]
            log(
                f"Throughput: gunicorn × {args.workers} workers,"
                f" {args.connections} connections, {duration:g} s per cell"
            )
            from .throughput import run_throughput

            throughput = [
                result.as_dict()
                for result in run_throughput(
                    load_backends,
                    server=server,
                    sizes=settings["load_sizes"],
                    duration=duration,
                    workers=args.workers,
                    connections=args.connections,
                    log=log,
                )
            ]
        redis_version = server.version

    results: dict[str, t.Any] = {
        "meta": {
            "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"
            ),
            "mode": mode,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs,"
            f" {platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "redis": redis_version,
            "redis_py": _version("redis"),
            "parser": parser_name,
            "flask": _version("flask"),
            "flask_session": _version("flask-session"),
            "flask_relay_session": _version("flask-relay-session"),
            "sizes": sizes,
            "routes": routes,
            "backends": [b.name for b in built],
            "repeats": repeats,
            "batch": batch,
            "workers": args.workers,
            "connections": args.connections,
            "duration": duration,
            "load_tool": load_tool,
            "seconds": round(time.monotonic() - started, 1),
        },
        "latency": [cell.as_dict() for cell in cells],
        "throughput": throughput,
        "notes": skipped + notes,
    }
    results["targets"] = report.check_targets(results)

    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report.markdown(results)
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.output, "results.rst"), "w") as f:
        f.write(report.rst_tables(results))
    charts = report.charts(results, args.output)
    if not charts:
        log(
            "NOTE: matplotlib is not installed: no charts"
            " (pip install -r benchmarks/requirements.txt)"
        )
    if args.docs:
        static = os.path.join(REPO_ROOT, "docs", "_static")
        os.makedirs(static, exist_ok=True)
        for name in charts:
            shutil.copy(os.path.join(args.output, name), static)
    log("")
    log(text)
    log(f"Results in {args.output} ({results['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
