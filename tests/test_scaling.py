"""Bulk changes cost time linear in their size, not quadratic.

Each test does the same work at two sizes, :data:`LARGE` being four times
:data:`SMALL`, and compares the two times: work linear in the size takes
about four times as long, quadratic work sixteen times. Only ratios are
compared, never absolute times, so that a slow machine does not fail the
tests; and so that a busy one does not either, each time is the CPU time of
the process (time spent waiting for a CPU does not count), the best of
:data:`RUNS` runs, with the garbage collector paused as :mod:`timeit` does.

The app-level tests go through a real Flask app on the memory store, save
included; the others time the change tracking alone. They take seconds each,
so they are marked ``slow`` (run them with ``RELAY_SLOW_TESTS=1``).
"""

from __future__ import annotations

import gc
import math
import time
import typing as t

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import RelaySession
from flask_relay_session.tracking import DirtyPaths
from flask_relay_session.tracking import TrackedDict
from flask_relay_session.tracking import TrackedList

SMALL = 10_000
LARGE = 40_000
RUNS = 5
#: Linear work grows about 4 times from SMALL to LARGE, quadratic work 16.
MAX_GROWTH = 8

pytestmark = pytest.mark.slow


#: What to run untimed before each timing, and the work to time.
Run = tuple[t.Callable[[], object], t.Callable[[], object]]
#: Returns the :data:`Run` of a size.
Workload = t.Callable[[int], Run]


def assert_linear(workload: Workload) -> None:
    """Assert that the work grows far slower than its size squared.

    The runs of the two sizes alternate, so that a moment of load on the
    machine slows one run of each rather than all runs of one.
    """
    runs = {size: workload(size) for size in (SMALL, LARGE)}
    best = dict.fromkeys(runs, math.inf)
    for _ in range(RUNS):
        for size, (prepare, work) in runs.items():
            prepare()
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()
                work()
                best[size] = min(best[size], time.process_time() - start)
            finally:
                gc.enable()
    growth = best[LARGE] / best[SMALL]
    assert growth < MAX_GROWTH, (
        f"{LARGE} items took {best[LARGE]:.3f} s, {growth:.1f} times the"
        f" {best[SMALL]:.3f} s of {SMALL}: linear growth is 4, quadratic 16"
    )


# --------------------------------------------------------------------------
# Through an app on the memory store
# --------------------------------------------------------------------------


def make_app() -> Flask:
    """An app on the memory store, with routes that change many keys."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    RelaySession(app)

    @app.post("/prefs/<int:size>")
    def set_prefs(size: int) -> str:
        session["prefs"] = {str(i): 0 for i in range(size)}
        return "ok"

    @app.post("/prefs/update/<int:size>")
    def update_prefs(size: int) -> str:
        session["prefs"].update({str(i): 1 for i in range(size)})
        return "ok"

    @app.post("/prefs/clear")
    def clear_prefs() -> str:
        session["prefs"].clear()
        return "ok"

    @app.post("/keys/<int:size>")
    def set_keys(size: int) -> str:
        session.update({str(i): 0 for i in range(size)})
        return "ok"

    @app.post("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.get("/sizes")
    def sizes() -> dict[str, int]:
        return {"keys": len(session), "prefs": len(session.get("prefs", ()))}

    return app


def request(prepare: t.Callable[[FlaskClient, int], object], path: str) -> Workload:
    """The request ``POST path``, after ``prepare(client, size)``."""

    def workload(size: int) -> Run:
        client = make_app().test_client()

        def post() -> None:
            assert client.post(path.format(size=size)).status_code == 200

        return lambda: prepare(client, size), post

    return workload


def test_updating_many_keys_of_a_nested_dict_scales_linearly() -> None:
    def prepare(client: FlaskClient, size: int) -> None:
        client.post("/prefs/0")

    assert_linear(request(prepare, "/prefs/update/{size}"))


def test_clearing_a_large_nested_dict_scales_linearly() -> None:
    def prepare(client: FlaskClient, size: int) -> None:
        client.post(f"/prefs/{size}")
        assert client.get("/sizes").json == {"keys": 1, "prefs": size}

    assert_linear(request(prepare, "/prefs/clear"))


def test_top_level_session_clear_of_many_keys_scales_linearly() -> None:
    # ``session.clear()`` is the session's; its tracking is timed here.
    def prepare(client: FlaskClient, size: int) -> None:
        client.post(f"/keys/{size}")
        assert client.get("/sizes").json == {"keys": size, "prefs": 0}

    assert_linear(request(prepare, "/clear"))


# --------------------------------------------------------------------------
# The tracking alone
# --------------------------------------------------------------------------


def test_marking_many_paths_then_their_parent_scales_linearly() -> None:
    def workload(size: int) -> Run:
        dirty = DirtyPaths()
        paths = [("prefs", str(i), "value") for i in range(size)]

        def work() -> None:
            for path in paths:
                dirty.mark(path)
            for path in paths:
                dirty.mark(path[:2])
            dirty.mark(("prefs",))
            assert len(dirty) == 1

        return dirty.clear, work

    assert_linear(workload)


def test_bulk_changes_of_a_tracked_dict_scale_linearly() -> None:
    def workload(size: int) -> Run:
        items = {str(i): i for i in range(size)}
        dirty = DirtyPaths()
        root = TrackedDict({"prefs": {}}, dirty)

        def work() -> None:
            prefs = root["prefs"]
            prefs.update(items)
            assert len(dirty) == size
            prefs.clear()
            prefs.update(items)
            while prefs:
                prefs.popitem()
            assert len(dirty) == size

        return dirty.clear, work

    assert_linear(workload)


def test_reading_a_tracked_list_piece_by_piece_scales_linearly() -> None:
    def workload(size: int) -> Run:
        dirty = DirtyPaths()
        rows = TrackedList([], dirty, ("rows",))

        def prepare() -> None:
            rows[:] = [{"n": i} for i in range(size)]
            dirty.clear()

        def work() -> None:
            for i in range(size):
                assert rows[i : i + 1][0]["n"] == i
                assert rows[i]["n"] == i
            assert not dirty

        return prepare, work

    assert_linear(workload)


def test_changing_every_item_of_a_tracked_list_scales_linearly() -> None:
    def workload(size: int) -> Run:
        dirty = DirtyPaths()
        rows = TrackedList([], dirty, ("rows",))

        def prepare() -> None:
            rows[:] = [{"n": i} for i in range(size)]
            dirty.clear()

        def work() -> None:
            for row in rows:
                row["n"] += 1
            rows.extend(rows[:10])
            while rows:
                rows.pop()
            assert set(dirty) == {("rows",)}

        return prepare, work

    assert_linear(workload)
