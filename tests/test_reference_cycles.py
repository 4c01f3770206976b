"""A finished request leaves no garbage cycle behind.

The objects of a request's session (the session, its changes, its lock, its
loaded values) must be freed by reference counting as soon as the request
ends. Objects caught in a reference cycle wait for Python's cyclic garbage
collector instead, and make it run more often: before the session's lock
held its session weakly, every request left one such cycle, and the
collector took about 13 µs of a 1 KB read (``benchmarks``' read route,
``gc.callbacks`` timing, 3,000 requests).

Each test runs requests with the collector paused, then collects with
:data:`gc.DEBUG_SAVEALL`, which keeps what it finds in :data:`gc.garbage`,
and asserts that none of the package's objects is on a cycle. Flask and
Werkzeug leave cycles of their own (the URL matcher's closure; a view's
exception and the frames of its traceback, which hold the request's
session); they are not ours to assert on. The tests silence the app's and
the package's loggers: pytest keeps every log record, and a record of an
error keeps the error's traceback, its frames and so the request's session
alive, out of the collector's sight.
"""

from __future__ import annotations

import gc
import logging
import types
from collections.abc import Callable

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from .helpers import current
from .helpers import sid_of

PACKAGE = "flask_relay_session"


def cycles_through_the_package(run: Callable[[], object]) -> list[str]:
    """Run ``run`` with the garbage collector paused; return the names of
    the package's objects that the collector then finds on a reference
    cycle (objects that are only held by a cycle of others', such as an
    exception's traceback, are not on one).
    """
    gc.collect()
    gc.disable()
    try:
        run()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        garbage = {id(thing): thing for thing in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    names = []
    for thing in garbage.values():
        name = _package_name(thing)
        if name is not None and _reaches(thing, thing, garbage):
            names.append(name)
    return sorted(names)


def _package_name(thing: object) -> str | None:
    if isinstance(thing, types.FunctionType):
        module, name = thing.__module__, thing.__qualname__
    else:
        module, name = type(thing).__module__, type(thing).__qualname__
    return f"{module}.{name}" if module.startswith(PACKAGE) else None


def _reaches(start: object, target: object, garbage: dict[int, object]) -> bool:
    """Whether ``target`` is reachable from ``start``'s referents, through
    the ``garbage`` only.
    """
    seen: set[int] = set()
    todo = [start]
    while todo:
        for referent in gc.get_referents(todo.pop()):
            if referent is target:
                return True
            if id(referent) in garbage and id(referent) not in seen:
                seen.add(id(referent))
                todo.append(referent)
    return False


def add_views(app: Flask) -> None:
    @app.post("/seed")
    def seed() -> str:
        session.update(n=0, cart={"items": [1, 2]}, user={"name": "ada"})
        return "ok"

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(session.get("n"))

    @app.post("/write")
    def write() -> str:
        session["n"] = session.get("n", 0) + 1
        return "ok"

    @app.post("/append")
    def append() -> str:
        session["cart"]["items"].append(3)
        return "ok"

    @app.post("/locked")
    def locked() -> str:
        with current().lock():
            session["n"] = session.get("n", 0) + 1
        return "ok"

    @app.post("/rotate")
    def rotate() -> str:
        current().rotate_id()
        return "ok"

    @app.post("/bind")
    def bind() -> str:
        current().bind_user("ada")
        return "ok"

    @app.post("/destroy")
    def destroy() -> str:
        current().destroy()
        return "ok"

    @app.post("/fail")
    def fail() -> str:
        session["n"] = -1
        raise RuntimeError("the view failed")


#: Each case: the requests to make after seeding, and their status.
CASES = {
    "noop": [("GET", "/noop", 200)],
    "read": [("GET", "/read", 200)],
    "write": [("POST", "/write", 200)],
    "nested append": [("POST", "/append", 200)],
    "locked section": [("POST", "/locked", 200)],
    "rotation": [("POST", "/rotate", 200), ("GET", "/read", 200)],
    "bound to a user": [("POST", "/bind", 200), ("POST", "/write", 200)],
    "destroy": [("POST", "/destroy", 200), ("GET", "/read", 200)],
    "view raises": [("POST", "/fail", 500)],
}


@pytest.fixture
def quiet_app(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Flask]:
    """Return a factory of apps with the views above, whose log records,
    and the package's, are dropped.
    """
    monkeypatch.setattr(logging.getLogger(PACKAGE), "disabled", True)

    def make(**config: object) -> Flask:
        app = make_app(TESTING=False, **config)
        monkeypatch.setattr(app.logger, "disabled", True)
        add_views(app)
        return app

    return make


@pytest.fixture
def app(quiet_app: Callable[..., Flask]) -> Flask:
    return quiet_app()


def seeded(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert client.post("/seed").status_code == 200
    return client


@pytest.mark.parametrize("case", CASES)
def test_a_request_leaves_no_cycle_of_the_packages_objects(
    app: Flask, case: str
) -> None:
    client = seeded(app)

    def requests() -> None:
        for method, path, status in CASES[case]:
            assert client.open(path, method=method).status_code == status

    assert cycles_through_the_package(requests) == []


def test_a_forged_cookie_leaves_no_cycle(app: Flask) -> None:
    client = seeded(app)
    client.set_cookie("session", f"{sid_of(client)}.forged")

    def forged() -> None:
        assert client.get("/read").data == b"None"

    assert cycles_through_the_package(forged) == []


def test_a_lock_held_elsewhere_leaves_no_cycle(quiet_app: Callable[..., Flask]) -> None:
    app = quiet_app(RELAY_SESSION_LOCK_RETRIES=0)
    client = seeded(app)
    store = app.extensions["relay_session"].store
    assert store.lock(sid_of(client), "another request", 10_000)

    def refused() -> None:
        assert client.post("/locked").status_code == 409

    assert cycles_through_the_package(refused) == []


def test_the_check_finds_a_cycle_of_the_packages_objects() -> None:
    """The helper above would see the cycle these tests guard against."""
    from flask_relay_session.locking import SessionLock

    def leave_a_cycle() -> None:
        lock = SessionLock.__new__(SessionLock)
        lock.__dict__["itself"] = lock

    assert cycles_through_the_package(leave_a_cycle) == [
        f"{PACKAGE}.locking.SessionLock"
    ]
