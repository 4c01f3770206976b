"""Signals and log lines of a session's life, on memory and real Redis.

Signals are blinker signals in :mod:`flask_relay_session.signals`, sent with
the app as sender; log lines go to the ``flask_relay_session`` logger, debug
lines prefixed with the request's log id.
"""

from __future__ import annotations

import contextlib
import logging
import re
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from blinker import ANY
from blinker import NamedSignal
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import signals

from .helpers import sid_of

MakeApp = t.Callable[..., Flask]

FAST_LOCKS = {"RELAY_SESSION_LOCK_RETRIES": 2, "RELAY_SESSION_LOCK_BACKOFF": 0.01}


@contextmanager
def recording(
    signal: NamedSignal, sender: object = None
) -> Iterator[list[tuple[object, dict[str, t.Any]]]]:
    """Collect ``(sender, kwargs)`` of every send while the block runs."""
    sent: list[tuple[object, dict[str, t.Any]]] = []

    def receiver(sender: object, **kwargs: t.Any) -> None:
        sent.append((sender, kwargs))

    with signal.connected_to(receiver, sender=ANY if sender is None else sender):
        yield sent


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app(**FAST_LOCKS)

    @app.post("/set")
    def set_values() -> str:
        for key, value in t.cast(dict[str, t.Any], request.get_json()).items():
            session[key] = value
        return "ok"

    @app.post("/cart/add/<item>")
    def add_to_cart(item: str) -> str:
        session["cart"]["items"].append(item)
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.post("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.post("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/login")
    def login() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        session["user"] = "ada"
        return "ok"

    @app.post("/destroy")
    def destroy() -> str:
        session.destroy()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/incr")
    def incr() -> str:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return "ok"

    return app


def post(client: FlaskClient, url: str, json: t.Any = None, **kwargs: t.Any) -> None:
    response = client.post(url, json=json, **kwargs)
    assert response.status_code == 200, response.text


def hold_lock(app: Flask, sid: str) -> None:
    assert app.extensions["relay_session"].store.lock(sid, "other", 60_000)


# -- signals ---------------------------------------------------------------


def test_first_save_sends_created_then_saved_with_the_app_as_sender(
    app: Flask,
) -> None:
    browser = app.test_client()
    with (
        recording(signals.session_created) as created,
        recording(signals.session_saved) as saved,
    ):
        post(browser, "/set", {"a": 1, " spaced": {"b": 2}})
    sid = sid_of(browser)
    assert [(sender, kw["sid"]) for sender, kw in created] == [(app, sid)]
    assert len(saved) == 1
    sender, kwargs = saved[0]
    assert sender is app
    assert kwargs["sid"] == sid
    assert kwargs["session"].sid == sid
    assert kwargs["paths"] == frozenset({("a",), (" spaced",)})
    assert kwargs["created"] is True
    assert kwargs["emptied"] is False


def test_later_saves_send_only_saved_with_the_changed_paths(app: Flask) -> None:
    browser = app.test_client()
    post(browser, "/set", {"cart": {"items": []}, "user": "ada"})
    with (
        recording(signals.session_created) as created,
        recording(signals.session_saved) as saved,
    ):
        post(browser, "/cart/add/apple")
        assert browser.get("/read").json == {
            "cart": {"items": ["apple"]},
            "user": "ada",
        }
    assert created == []
    assert len(saved) == 1  # the read saved nothing
    kwargs = saved[0][1]
    assert kwargs["paths"] == frozenset({("cart", "items")})
    assert kwargs["created"] is False


def test_emptying_a_session_is_a_save_that_says_so(app: Flask) -> None:
    browser = app.test_client()
    post(browser, "/set", {"a": 1})
    with recording(signals.session_saved) as saved:
        post(browser, "/clear")
    assert [kw["emptied"] for _, kw in saved] == [True]


def test_receivers_connected_to_another_app_get_nothing(
    app: Flask, make_app: MakeApp
) -> None:
    other = make_app()
    with recording(signals.session_saved, sender=other) as saved:
        post(app.test_client(), "/set", {"a": 1})
    assert saved == []


def test_rotation_sends_the_old_and_new_ids(app: Flask) -> None:
    browser = app.test_client()
    post(browser, "/set", {"a": 1})
    old_sid = sid_of(browser)
    with recording(signals.session_rotated) as rotated:
        post(browser, "/rotate")
    new_sid = sid_of(browser)
    assert new_sid != old_sid
    assert [(s, kw["old_sid"], kw["sid"]) for s, kw in rotated] == [
        (app, old_sid, new_sid)
    ]


def test_rotating_a_new_session_sends_no_old_id(app: Flask) -> None:
    browser = app.test_client()
    with recording(signals.session_rotated) as rotated:
        post(browser, "/login")
    assert [(kw["old_sid"], kw["sid"]) for _, kw in rotated] == [
        (None, sid_of(browser))
    ]


def test_destroy_sends_the_deleted_id(app: Flask) -> None:
    browser = app.test_client()
    post(browser, "/set", {"a": 1})
    sid = sid_of(browser)
    with recording(signals.session_destroyed) as destroyed:
        post(browser, "/destroy")
    assert len(destroyed) == 1
    sender, kwargs = destroyed[0]
    assert sender is app
    assert kwargs["sid"] == sid
    assert kwargs["session"].sid != sid  # the request goes on with a new one


def test_lock_timeout_is_signalled_and_logged_when_acquiring(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    browser = app.test_client()
    post(browser, "/set", {"n": 1})
    sid = sid_of(browser)
    hold_lock(app, sid)
    with (
        recording(signals.lock_timeout) as timeouts,
        caplog.at_level(logging.WARNING, "flask_relay_session"),
    ):
        assert browser.post("/incr").status_code == 409
    assert [(s, kw["sid"], kw["operation"], kw["retries"]) for s, kw in timeouts] == [
        (app, sid, "acquire", 2)
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"acquire session {sid[:8]}…: gave up waiting for the session lock" in m
        for m in warnings
    )
    assert not any(sid in message for message in caplog.messages)


def test_lock_timeout_is_signalled_when_a_save_waits_in_vain(app: Flask) -> None:
    browser = app.test_client()
    post(browser, "/set", {"n": 1})
    hold_lock(app, sid_of(browser))
    with recording(signals.lock_timeout) as timeouts:
        assert browser.post("/set", json={"n": 2}).status_code == 409
    assert [kw["operation"] for _, kw in timeouts] == ["save"]


def test_no_receivers_means_no_send(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: t.Any, **kwargs: t.Any) -> None:
        raise AssertionError("sent a signal nobody listens to")

    def elsewhere(sender: t.Any, **kwargs: t.Any) -> None:
        raise AssertionError("heard another app's signal")

    monkeypatch.setattr(signals, "send", fail)
    browser = app.test_client()
    # Receivers of another app's signals do not count.
    other = Flask("other")
    with contextlib.ExitStack() as stack:
        for signal in (
            signals.session_created,
            signals.session_saved,
            signals.session_rotated,
            signals.session_destroyed,
            signals.lock_timeout,
        ):
            stack.enter_context(signal.connected_to(elsewhere, sender=other))
        post(browser, "/set", {"a": 1})
        post(browser, "/rotate")
        post(browser, "/incr")
        post(browser, "/destroy")


# -- logging ---------------------------------------------------------------


def debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flask_relay_session" and record.levelno == logging.DEBUG
    ]


def test_debug_lines_cover_load_save_lock_and_rotation(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    browser = app.test_client()
    post(browser, "/set", {"cart": {"items": []}})
    old = sid_of(browser)[:8]
    with caplog.at_level(logging.DEBUG, "flask_relay_session"):
        post(browser, "/cart/add/apple", headers={"X-Request-ID": "req-42"})
        post(browser, "/incr")
        post(browser, "/rotate")
    new = sid_of(browser)[:8]
    lines = debug_lines(caplog)
    assert (
        f"[req-42] load session {old}…: found, top-level keys: 1, expiry refreshed"
        in lines
    )
    assert f"[req-42] save session {old}…: session['cart']['items']" in lines
    assert any(
        re.fullmatch(rf"\[[0-9a-f]{{8}}\] lock session {old}…: acquired, attempt 1", m)
        for m in lines
    )
    assert any(m.endswith(f"unlock session {old}…: released") for m in lines)
    assert any(
        m.endswith(f"rotate session {old}… to {new}…, the old id redirects")
        for m in lines
    )
    assert not any(sid_of(browser) in line for line in lines)


def test_debug_lines_show_a_redirect_being_followed(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    browser = app.test_client()
    post(browser, "/set", {"a": 1})
    cookie = browser.get_cookie("session")
    assert cookie is not None
    post(browser, "/rotate")
    stale = app.test_client()
    stale.set_cookie("session", cookie.value)
    with caplog.at_level(logging.DEBUG, "flask_relay_session"):
        assert stale.get("/read").json == {"a": 1}
    old, new = cookie.value[:8], sid_of(browser)[:8]
    assert any(
        m.endswith(f"load session {old}…: followed a rotation redirect to {new}…")
        for m in debug_lines(caplog)
    )


def test_a_request_id_that_does_not_look_like_one_is_not_logged(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    browser = app.test_client()
    with caplog.at_level(logging.DEBUG, "flask_relay_session"):
        post(browser, "/set", {"a": 1}, headers={"X-Request-ID": "forged] line [admin"})
    lines = debug_lines(caplog)
    assert lines
    assert all(re.match(r"\[[0-9a-f]{8}\] ", line) for line in lines)
