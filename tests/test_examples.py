"""The apps in ``examples/`` work as their docstrings say.

Each example is imported from its file, as ``flask --app examples/<name>.py``
does, with no ``RELAY_SESSION_*`` variable in the environment, so it runs on
the embedded :class:`~flask_relay_session.MemorySessionStore`; tests that set
``RELAY_SESSION_REDIS`` run it on Redis.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import re
import types
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import SessionStoreError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_SESSION_") or name == "SECRET_KEY":
            monkeypatch.delenv(name)


def load_example(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"examples_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def assert_memory_store(app: Flask) -> None:
    assert isinstance(app.extensions["relay_session"].store, MemorySessionStore)


def page_text(client: FlaskClient) -> str:
    """Load the demo's page and return its text as a browser shows it."""
    page = client.get("/").get_data(as_text=True)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def last_request(text: str) -> str:
    """The list of what the last request sent to the store, on a demo page."""
    _, found, after = text.partition(" The last request sent to the store: ")
    assert found, text
    return after.partition(" Session ")[0]


def shown_sid(text: str) -> str:
    """The start of the session id a demo page shows."""
    match = re.search(r" Session (\w{12})…", text)
    assert match is not None, text
    return match.group(1)


def test_demo_counts_fills_the_cart_and_rotates_on_login() -> None:
    app = load_example("demo").app
    assert_memory_store(app)
    client = app.test_client()

    assert client.get("/").status_code == 200
    assert client.post("/count").status_code == 302
    client.post("/count")
    client.post("/cart/pear")
    client.post("/cart/pear")
    client.post("/cart/plum")
    assert "saved cart.plum, _flashes" in page_text(client)
    before = client.get("/state").get_json()
    assert before["visits"] == 2
    assert before["cart"] == {"pear": 2, "plum": 1}

    client.post("/login", data={"name": "ada"})
    after = client.get("/state").get_json()
    assert after["sid"] != before["sid"]
    assert after["user"] == "ada"
    assert after["visits"] == 2
    assert after["cart"] == {"pear": 2, "plum": 1}

    client.post("/logout")
    gone = client.get("/state").get_json()
    assert gone["sid"] != after["sid"]
    assert (gone["user"], gone["visits"], gone["cart"]) == (None, 0, {})


def test_demo_page_says_why_an_unstored_session_id_changes() -> None:
    client = load_example("demo").app.test_client()
    first, second = page_text(client), page_text(client)
    assert shown_sid(first) != shown_sid(second)
    assert "empty, so not kept in the store" in first
    assert "until then each reload shows a new id" in first

    client.post("/count")
    page_text(client)  # shows and removes the flashed message
    stored = page_text(client)
    assert "not kept in the store" not in stored
    assert shown_sid(stored) == shown_sid(page_text(client))


def test_demo_sign_in_lists_the_rotation_and_the_saved_paths() -> None:
    client = load_example("demo").app.test_client()
    client.post("/count")
    before = client.get("/state").get_json()["sid"]
    client.post("/login", data={"name": "ada"})
    text = page_text(client)
    after = shown_sid(text)
    assert after != before[:12]
    report = last_request(text)
    assert report == (
        f"moved the session and all its data from {before[:12]}… to {after}…"
        " saved user, _flashes (Flask's own key, for flashed messages)"
    )


def test_demo_sign_in_on_a_new_session_says_nothing_moved() -> None:
    client = load_example("demo").app.test_client()
    client.post("/login", data={"name": "ada"})
    text = page_text(client)
    assert last_request(text) == (
        f"gave the session a new id, {shown_sid(text)}… (nothing was stored yet)"
        " saved user, _flashes (Flask's own key, for flashed messages);"
        " the session was new, so this stored it for the first time"
    )


def test_demo_sign_out_lists_the_destroy_and_the_new_session() -> None:
    client = load_example("demo").app.test_client()
    client.post("/login", data={"name": "ada"})
    signed_in = shown_sid(page_text(client))
    client.post("/logout")
    text = page_text(client)
    assert last_request(text) == (
        f"deleted session {signed_in}…; the rest of the request used a new,"
        f" empty one, {shown_sid(text)}…"
        " saved _flashes (Flask's own key, for flashed messages);"
        " the session was new, so this stored it for the first time"
    )
    # A request with no view, as a browser sends, keeps the list.
    assert client.get("/favicon.ico").status_code == 404
    # Showing the message emptied that new session, so the store deleted it.
    assert last_request(page_text(client)) == (
        "saved _flashes (Flask's own key, for flashed messages);"
        " that left the session empty, so it was deleted"
    )


def test_demo_lists_every_saved_path_and_names_flasks_own() -> None:
    demo = load_example("demo")
    saved: list[frozenset[tuple[str, ...]]] = []

    @demo.signals.session_saved.connect_via(demo.app)
    def record(
        sender: Flask, paths: frozenset[tuple[str, ...]], **extra: object
    ) -> None:
        saved.append(paths)

    client = demo.app.test_client()
    client.post("/cart/pear")
    client.post("/cart/plum")
    assert saved[-1] == {("cart", "plum"), ("_flashes",)}
    assert last_request(page_text(client)) == (
        "saved cart.plum, _flashes (Flask's own key, for flashed messages)"
    )


def test_demo_page_has_no_space_before_a_comma() -> None:
    client = load_example("demo").app.test_client()
    client.post("/login", data={"name": "ada"})
    page = client.get("/").get_data(as_text=True)
    assert re.search(r"\s,", page) is None
    assert "…</code>, signed in as <strong>ada</strong>" in page


def test_demo_logs_the_memory_store_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    load_example("demo")
    lines = [r.getMessage() for r in caplog.records if r.name == "examples_demo"]
    assert lines == [
        "Sessions are kept in the memory store of this process; set"
        " RELAY_SESSION_REDIS=redis://localhost:6379/0 to keep them in Redis."
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://ada:s3cret@[::1]:6380/2", "rediss://ada:***@[::1]:6380/2"),
        (
            "redis://ada@localhost/0?password=s3cret",
            "redis://ada@localhost/0?password=***",
        ),
        ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ],
)
def test_demo_logs_the_redis_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    url: str,
    shown: str,
) -> None:
    # Nothing connects at start-up, so no server is needed.
    monkeypatch.setenv("RELAY_SESSION_REDIS", url)
    caplog.set_level(logging.INFO)
    load_example("demo")
    lines = [r.getMessage() for r in caplog.records if r.name == "examples_demo"]
    assert lines == [
        f"Sessions are kept in Redis at {shown}, under the key prefix 'sess:'."
    ]
    assert "s3cret" not in caplog.text


def test_demo_store_outage_message_ends_in_one_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on port 1: every store operation fails.
    monkeypatch.setenv("RELAY_SESSION_REDIS", "redis://127.0.0.1:1/0")
    client = load_example("demo").app.test_client()
    response = client.post("/count")
    assert response.status_code == 503
    message = response.get_json()["message"]
    assert message == SessionStoreError.public_message
    assert message.endswith(".") and not message.endswith("..")


def test_demo_lists_the_same_on_redis(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("RELAY_SESSION_REDIS", redis_url)
    client = load_example("demo").app.test_client()
    client.post("/count")
    client.post("/cart/plum")
    assert "saved cart, _flashes" in page_text(client)
    client.post("/login", data={"name": "ada"})
    report = last_request(page_text(client))
    assert "moved the session and all its data" in report
    assert "saved user, _flashes" in report
    client.post("/logout")
    assert "deleted session" in page_text(client)
    assert client.get("/state").get_json()["visits"] == 0


def test_shop_checks_out_once_and_keeps_the_cart_across_login() -> None:
    app = load_example("shop").app
    assert_memory_store(app)
    client = app.test_client()

    client.post("/cart/tea", data={"quantity": "2"})
    client.post("/cart/cup")
    cart = client.post("/cart/tea").get_json()
    assert cart["items"]["tea"]["quantity"] == 3
    assert cart["total"] == 3 * 650 + 1200
    assert client.post("/checkout").status_code == 401

    anonymous = session_cookie(client)
    login = client.post("/login", data={"name": "ada"}).get_json()
    assert session_cookie(client) != anonymous
    assert login["cart"]["total"] == 3150

    response = client.post("/checkout")
    assert response.status_code == 201
    assert response.get_json()["credit"] == 10_000 - 3150
    # A second click finds the cart empty instead of ordering again.
    again = client.post("/checkout")
    assert again.status_code == 402
    assert again.get_json()["message"] == "the cart is empty"

    # Refused inside the lock: the credit taken in the block is not saved.
    client.post("/cart/pot", data={"quantity": "3"})
    assert client.post("/checkout").status_code == 402
    orders = client.get("/orders").get_json()
    assert len(orders["orders"]) == 1
    assert orders["credit"] == 10_000 - 3150
    assert client.get("/cart").get_json()["items"]["pot"]["quantity"] == 3


def test_shop_cart_removal_deletes_only_that_product() -> None:
    client = load_example("shop").app.test_client()
    client.post("/cart/tea")
    client.post("/cart/cup")
    cart = client.delete("/cart/tea").get_json()
    assert list(cart["items"]) == ["cup"]


def test_factory_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "from the environment")
    monkeypatch.setenv("RELAY_SESSION_LOCK_TTL", "10")
    monkeypatch.setenv("RELAY_SESSION_KEY_PREFIX", "example:")
    app = load_example("factory").create_app()
    assert_memory_store(app)
    assert app.secret_key == "from the environment"
    settings = app.extensions["relay_session"].settings
    assert settings.lock_ttl == 10_000
    assert settings.key_prefix == "example:"


def test_factory_counts_rotates_and_handles_a_broken_chain() -> None:
    app = load_example("factory").create_app({"TESTING": True})
    assert_memory_store(app)
    client = app.test_client()

    assert client.post("/counter").get_json() == {"counter": 1}
    assert client.post("/counter").get_json() == {"counter": 2}
    first_cookie = session_cookie(client)
    first = client.get("/").get_json()

    assert client.post("/sudo").status_code == 403
    client.post("/login", data={"name": "ada"})
    member_cookie = session_cookie(client)
    client.post("/sudo")
    state = client.get("/").get_json()
    assert state["sid"] != first["sid"]
    assert (state["user"], state["role"], state["counter"]) == ("ada", "admin", 2)

    # The login deleted the anonymous id: a cookie planted before it leads
    # to an empty session, not to the signed-in one.
    planted = app.test_client()
    planted.set_cookie("session", first_cookie)
    assert planted.get("/").get_json()["user"] is None

    # The privilege change left a redirect for the grace period; once the
    # session is destroyed, that chain is broken and the app's handler sends
    # the visitor to the start.
    client.post("/logout")
    old = app.test_client()
    old.set_cookie("session", member_cookie)
    response = old.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert old.get("/").get_json()["user"] is None


def test_factory_apps_do_not_share_sessions() -> None:
    factory = load_example("factory")
    one = factory.create_app({"TESTING": True})
    two = factory.create_app({"TESTING": True})
    client = one.test_client()
    client.post("/counter")
    other = two.test_client()
    other.set_cookie("session", session_cookie(client))
    assert other.get("/").get_json()["counter"] == 0
