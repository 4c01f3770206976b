"""Run the benchmark suite: ``python -m benchmarks [--quick]``.

Writes ``benchmarks/results/results.md``, ``results.json``, ``results.rst``
(the tables for the docs) and the PNG charts, and with ``--docs`` copies the
charts to ``docs/_static/``. See ``docs/performance.rst``.

The per-request run is made once per Redis reply parser (``--parser``; by
default ``both`` for the full run, ``auto`` with ``--quick`` to keep it
short): first with hiredis, which the targets are judged on, then with
redis-py's pure-Python parser, every Redis backend on the same parser within
a run (the backends without Redis are measured in the first run only).
Without hiredis installed, ``both`` measures the pure-Python parser alone
and says so in the notes. The throughput test runs once, with the parser
redis-py picks in the gunicorn workers (hiredis when installed).
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
from .apps import REDIS_BACKENDS
from .apps import ROUTES
from .latency import Backend
from .latency import build_backends
from .latency import run_latency
from .redis_tools import BenchRedis

PARSER_CHOICES = ("both", "hiredis", "python", "auto")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
SIZES = (1024, 16 * 1024, 64 * 1024, 256 * 1024)

MODES: dict[str, dict[str, t.Any]] = {
    "quick": {
        "repeats": 3,
        "batch": 20,
        "load_sizes": (1024,),
        "duration": 3.0,
        "parser": "auto",
    },
    "full": {
        "repeats": 9,
        "batch": 40,
        "load_sizes": (1024, 64 * 1024),
        "duration": 10.0,
        "parser": "both",
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
        choices=PARSER_CHOICES,
        help="redis-py reply parser of the per-request run: both (the run with"
        " hiredis, then again with the pure-Python parser; the targets are"
        " judged on hiredis), hiredis, python, or auto (hiredis if installed)."
        " Default: both, or auto with --quick (both adds about two thirds to"
        " the time of the per-request run)",
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


def parser_runs(choice: str, hiredis_available: bool) -> tuple[list[str], list[str]]:
    """The reply parsers to run, the judged one first, and notes about them.

    :raises SystemExit: ``hiredis`` asked for but not installed.
    """
    if choice == "hiredis" and not hiredis_available:
        raise SystemExit(
            "--parser hiredis: hiredis is not installed (pip install hiredis)"
        )
    if choice == "python":
        return ["python"], []
    if choice == "both":
        if hiredis_available:
            return ["hiredis", "python"], []
        return ["python"], [
            "hiredis is not installed: only the pure-Python parser was measured,"
            " and the targets are judged on it (pip install hiredis)"
        ]
    return ["hiredis" if hiredis_available else "python"], []


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
    started_at = datetime.datetime.now(datetime.timezone.utc)
    with BenchRedis() as server:
        log(f"Redis {server.version} on {server.url} (started by the benchmark)")
        from redis.utils import HIREDIS_AVAILABLE

        parsers, parser_notes = parser_runs(
            args.parser or settings["parser"], HIREDIS_AVAILABLE
        )
        for note in parser_notes:
            log(f"NOTE: {note}")
        runs: dict[str, list[t.Any]] = {}
        skipped: list[str] = []
        notes: list[str] = []
        built: list[Backend] = []
        for number, parser_name in enumerate(parsers):
            names = backends
            if number:
                # The parser only matters to the backends that talk to Redis.
                names = [name for name in backends if name in REDIS_BACKENDS]
            run_built, run_skipped = build_backends(names, server, parser_name, log)
            if not number:
                built, skipped = run_built, run_skipped
            if not run_built:
                continue
            log(
                f"Per-request run ({mode}, {parser_name} parser): {len(run_built)}"
                f" backends × {len(sizes)} sizes × {len(routes)} routes,"
                f" {repeats} repeats × {batch} requests"
            )
            cells, run_notes = run_latency(
                run_built,
                server=server,
                sizes=sizes,
                routes=routes,
                repeats=repeats,
                batch=batch,
                log=log,
            )
            runs[parser_name] = [cell.as_dict() for cell in cells]
            notes += [note for note in run_notes if note not in notes]
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
            "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
            "mode": mode,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs,"
            f" {platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "redis": redis_version,
            "redis_py": _version("redis"),
            "parser": parsers[0],
            "parsers": list(runs) or parsers[:1],
            "hiredis": _version("hiredis"),
            "throughput_parser": None
            if args.no_throughput
            else ("hiredis" if HIREDIS_AVAILABLE else "python"),
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
        "latency": runs.get(parsers[0], []),
        "latency_by_parser": runs,
        "throughput": throughput,
        "notes": parser_notes + skipped + notes,
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
