"""How long ``with session.lock():`` waits to enter, alone and contended.

Run with ``python -m benchmarks.lock_latency``. It starts its own Redis on a
free loopback port and measures the time from calling ``session.lock()`` to
running the block's first line (acquiring the lock and reloading the
session), first with no other request wanting the lock, then with eight
threads incrementing one counter under the lock. It checks the counter at
the end: a lost increment would be a bug, not a slow lock.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import typing as t

from flask import Flask
from flask import session

from flask_relay_session import RelaySession
from flask_relay_session import Session

from .redis_tools import BenchRedis


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def make_app(url: str, waits: list[float]) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="benchmark",
        RELAY_SESSION_REDIS=url,
        RELAY_SESSION_LOCK_RETRIES=1000,
        RELAY_SESSION_LOCK_BACKOFF=0.001,
    )
    RelaySession(app)

    @app.get("/init")
    def init() -> str:
        session["n"] = 0
        return "ok"

    @app.get("/incr")
    def incr() -> str:
        current = t.cast(Session, session._get_current_object())  # type: ignore[attr-defined]
        started = time.perf_counter()
        with current.lock():
            waits.append(time.perf_counter() - started)
            current["n"] += 1
        return "ok"

    @app.get("/n")
    def n() -> str:
        return str(session["n"])

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1000, help="uncontended runs")
    parser.add_argument("--threads", type=int, default=8, help="contending threads")
    parser.add_argument("--per-thread", type=int, default=100, help="runs per thread")
    options = parser.parse_args()
    with BenchRedis() as server:
        waits: list[float] = []
        app = make_app(server.url, waits)
        client = app.test_client()
        client.get("/init")
        cookie = client.get_cookie("session")
        assert cookie is not None
        for _ in range(50):
            client.get("/incr")
        waits.clear()
        for _ in range(options.runs):
            client.get("/incr")
        alone = list(waits)
        waits.clear()

        def worker() -> None:
            own = app.test_client()
            own.set_cookie("session", cookie.value)
            for _ in range(options.per_thread):
                own.get("/incr")

        threads = [threading.Thread(target=worker) for _ in range(options.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        contended = list(waits)
        expected = 50 + options.runs + options.threads * options.per_thread
        final = int(client.get("/n").text)
    for name, samples in (
        (f"uncontended ({len(alone)} runs)", alone),
        (f"{options.threads} threads contending ({len(contended)} runs)", contended),
    ):
        print(
            f"{name}: median {statistics.median(samples) * 1e6:.0f} µs,"
            f" p99 {percentile(samples, 0.99) * 1e6:.0f} µs"
        )
    print(f"counter: {final} (expected {expected})")
    if final != expected:
        raise SystemExit("increments were lost")


if __name__ == "__main__":
    main()
