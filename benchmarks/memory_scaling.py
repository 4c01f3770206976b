"""Whether a write to the memory store costs the same however many
sessions it holds.

``python -m benchmarks.memory_scaling`` fills a
:class:`~flask_relay_session.MemorySessionStore` with 1,000, 10,000 and
100,000 live sessions, then times writes that each create one more, as new
visitors do, and prints the µs per write for each. Every write also checks
:attr:`~flask_relay_session.MemorySessionStore.eviction_batch` sessions for
expiry: that check must cost the same at every size. No Redis is needed.

To measure another copy of the package, such as an older commit's
(``git archive <commit> flask_relay_session | tar -x -C <tree>``), run it
from outside the repository, where the checkout does not come first on
the path: ``cd /tmp && PYTHONPATH=<tree>:<repository> python -m
benchmarks.memory_scaling``.
"""

from __future__ import annotations

import argparse
import time
import typing as t

from flask_relay_session import MemorySessionStore
from flask_relay_session.serialization import dumps
from flask_relay_session.stores.base import Change

#: A session's lifetime: long enough that none expires during a run.
LIFETIME_MS = 3_600_000


def write_cost(held: int, writes: int) -> float:
    """Return the µs per write that creates a session, in a store that
    already holds ``held`` live sessions, over ``writes`` writes.
    """
    store = MemorySessionStore()
    now = store._now()
    changes = [Change(("n",), dumps(1))]

    def create(n: int) -> None:
        store.merge(
            f"{n:064x}",
            changes,
            now=now,
            ttl=LIFETIME_MS,
            create=True,
            lock_token=None,
            max_size=4096,
        )

    for n in range(held):
        create(n)
    began = time.perf_counter()
    for n in range(held, held + writes):
        create(n)
    return (time.perf_counter() - began) / writes * 1e6


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_scaling")
    parser.add_argument(
        "--held", default="1000,10000,100000", help="sessions held, comma-separated"
    )
    parser.add_argument("--writes", type=int, default=20_000, help="writes timed")
    args = parser.parse_args(argv)
    print("| sessions held | µs per write |")
    print("|---:|---:|")
    for held in (int(count) for count in args.held.split(",")):
        print(f"| {held:,} | {write_cost(held, args.writes):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
