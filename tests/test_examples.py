"""The apps in ``examples/`` work as their docstrings say, on the memory store.

Each example is imported from its file, as ``flask --app examples/<name>.py``
does, with no ``RELAY_SESSION_*`` variable in the environment, so it runs on
the embedded :class:`~flask_relay_session.MemorySessionStore`.
"""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore

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
    page = client.get("/").get_data(as_text=True)
    assert "saved only cart.plum" in page
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
