"""Flask's own features that use the session, through Flask's public API.

Every test runs on the memory store and on real Redis 7 and 6.2 (the
``make_app`` fixture).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import typing as t

import pytest
from flask import Flask
from flask import Response
from flask import after_this_request
from flask import copy_current_request_context
from flask import flash
from flask import get_flashed_messages
from flask import jsonify
from flask import redirect
from flask import render_template_string
from flask import request
from flask import session
from flask import stream_with_context
from markupsafe import Markup
from werkzeug.test import TestResponse

from flask_relay_session import Session
from flask_relay_session.interface import RelaySessionInterface

MakeApp = t.Callable[..., Flask]


def cookie_names(response: TestResponse) -> list[str]:
    """The names of the cookies the response sets or deletes."""
    return [
        header.partition("=")[0] for header in response.headers.getlist("Set-Cookie")
    ]


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app()

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    return app


# -- flash --------------------------------------------------------------------


def test_flashed_messages_with_categories_and_markup_cross_a_redirect(
    app: Flask,
) -> None:
    @app.post("/login")
    def login() -> t.Any:
        flash("Welcome back")
        flash(Markup("<b>2</b> new messages"), "info")
        flash("<script>not markup</script>", "warning")
        return redirect("/home")

    @app.get("/home")
    def home() -> t.Any:
        return jsonify(
            messages=get_flashed_messages(with_categories=True),
            markup=[
                isinstance(message, Markup)
                for _, message in get_flashed_messages(with_categories=True)
            ],
        )

    client = app.test_client()
    response = client.post("/login", follow_redirects=True)
    assert [r.status_code for r in response.history] == [302]
    assert response.json == {
        "messages": [
            ["message", "Welcome back"],
            ["info", "<b>2</b> new messages"],
            ["warning", "<script>not markup</script>"],
        ],
        "markup": [False, True, False],
    }
    # Shown once: the next page has none left.
    assert client.get("/home").json == {"messages": [], "markup": []}
    assert client.get("/read").json == {}


def test_flashed_markup_renders_unescaped_and_plain_text_escaped(app: Flask) -> None:
    @app.get("/flash")
    def flash_view() -> t.Any:
        flash(Markup("<em>saved</em>"), "success")
        flash("<em>plain</em>", "error")
        return redirect("/page")

    @app.get("/page")
    def page() -> str:
        return render_template_string(
            "{% for category, message in get_flashed_messages(with_categories=true)"
            " %}[{{ category }}:{{ message }}]{% endfor %}"
        )

    client = app.test_client()
    response = client.get("/flash", follow_redirects=True)
    assert response.text == (
        "[success:<em>saved</em>][error:&lt;em&gt;plain&lt;/em&gt;]"
    )
    assert client.get("/page").text == ""


def test_flash_category_filter_keeps_nothing_for_later(app: Flask) -> None:
    @app.get("/flash")
    def flash_view() -> str:
        flash("a", "error")
        flash("b", "info")
        return "ok"

    @app.get("/errors")
    def errors() -> t.Any:
        return jsonify(get_flashed_messages(category_filter=["error"]))

    client = app.test_client()
    client.get("/flash")
    assert client.get("/errors").json == ["a"]
    # As in Flask: reading pops every message, filtered or not.
    assert client.get("/errors").json == []


# -- the test client's session_transaction --------------------------------------


def test_session_transaction_before_any_request_creates_the_session(
    app: Flask,
) -> None:
    client = app.test_client()
    with client.session_transaction() as sess:
        assert isinstance(sess, Session)
        assert len(sess) == 0
        sess["user_id"] = 42
        sess["cart"] = {"items": ["apple"]}
    assert client.get("/read").json == {"user_id": 42, "cart": {"items": ["apple"]}}


def test_session_transaction_after_a_request_sees_and_changes_its_data(
    app: Flask,
) -> None:
    @app.get("/add/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", {"items": []})["items"].append(item)
        return "ok"

    client = app.test_client()
    client.get("/add/apple")
    with client.session_transaction() as sess:
        assert sess["cart"] == {"items": ["apple"]}
        # A nested change, with no modified flag set by hand.
        sess["cart"]["items"].append("pear")
        sess["coupon"] = "SPRING"
    client.get("/add/plum")
    assert client.get("/read").json == {
        "cart": {"items": ["apple", "pear", "plum"]},
        "coupon": "SPRING",
    }
    with client.session_transaction() as sess:
        del sess["coupon"]
    assert client.get("/read").json == {"cart": {"items": ["apple", "pear", "plum"]}}


# -- stream_with_context --------------------------------------------------------


def test_streamed_response_reads_the_session_inside_the_generator(app: Flask) -> None:
    @app.get("/stream")
    def stream() -> Response:
        session["seen"] = True

        @stream_with_context
        def generate() -> t.Iterator[str]:
            yield f"user={session['user']};"
            yield f"seen={session['seen']}"

        return Response(generate())

    client = app.test_client()
    client.get("/set/user/ada")
    response = client.get("/stream")
    assert response.text == "user=ada;seen=True"
    # The write made before the response was returned is saved as usual.
    assert client.get("/read").json == {"user": "ada", "seen": True}


def test_streamed_generator_saves_writes_with_an_explicit_save(app: Flask) -> None:
    """``session.save()`` inside the generator persists its writes.

    The cookie already carries the session id, so nothing needs to reach
    the client: the next request reads the writes from the store.
    """

    @app.get("/stream")
    def stream() -> Response:
        @stream_with_context
        def generate() -> t.Iterator[str]:
            yield "working;"
            session["progress"] = {"done": 3}
            session.save()
            yield "done"

        return Response(generate())

    client = app.test_client()
    client.get("/set/user/ada")
    response = client.get("/stream")
    assert response.text == "working;done"
    # The headers went out before the write: no cookie, and none was needed.
    assert cookie_names(response) == []
    assert client.get("/read").json == {"user": "ada", "progress": {"done": 3}}


def test_streamed_generator_writes_are_saved_at_the_end_of_the_stream(
    app: Flask,
) -> None:
    @app.get("/stream")
    def stream() -> Response:
        @stream_with_context
        def generate() -> t.Iterator[str]:
            yield "working;"
            session["progress"] = {"done": 3}
            yield "done"

        return Response(generate())

    client = app.test_client()
    client.get("/set/user/ada")
    assert client.get("/stream").text == "working;done"
    assert client.get("/read").json == {"user": "ada", "progress": {"done": 3}}


# -- async views ------------------------------------------------------------------


def test_async_views_read_write_and_rotate_the_session(app: Flask) -> None:
    relay = app.extensions["relay_session"].extension

    @app.post("/async/login")
    async def async_login() -> t.Any:
        await asyncio.sleep(0)
        old_sid = relay.session.sid
        session["user"] = "ada"
        session["cart"]["items"].append("pear")
        relay.session.rotate_id()
        await asyncio.sleep(0)
        return jsonify(old=old_sid, new=relay.session.sid)

    @app.get("/async/read")
    async def async_read() -> t.Any:
        await asyncio.sleep(0)
        return jsonify(dict(session))

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["cart"] = {"items": ["apple"]}
    response = client.post("/async/login")
    assert response.json is not None
    assert response.json["old"] != response.json["new"]
    assert cookie_names(response) == ["session"]
    assert client.get("/async/read").json == {
        "user": "ada",
        "cart": {"items": ["apple", "pear"]},
    }


def test_async_view_holds_the_session_lock(app: Flask) -> None:
    relay = app.extensions["relay_session"].extension

    @app.post("/async/incr")
    async def async_incr() -> t.Any:
        with relay.session.lock():
            await asyncio.sleep(0)
            session["n"] = session.get("n", 0) + 1
            locked = relay.session.is_lock_owner
        return jsonify(n=session["n"], locked=locked)

    client = app.test_client()
    assert client.post("/async/incr").json == {"n": 1, "locked": True}
    assert client.post("/async/incr").json == {"n": 2, "locked": True}


# -- copied request contexts --------------------------------------------------------


def test_thread_with_copied_request_context_shares_the_session(app: Flask) -> None:
    @app.get("/work")
    def work() -> t.Any:
        seen: list[str] = []

        @copy_current_request_context
        def background() -> None:
            seen.append(session["user"])
            session["by_thread"] = True
            session["log"].append("thread")

        session["log"] = ["view"]
        thread = threading.Thread(target=background)
        thread.start()
        thread.join()
        # The view sees the thread's writes: it is the same session object.
        return jsonify(seen=seen, by_thread=session["by_thread"])

    client = app.test_client()
    client.get("/set/user/ada")
    response = client.get("/work")
    assert response.json == {"seen": ["ada"], "by_thread": True}
    assert client.get("/read").json == {
        "user": "ada",
        "by_thread": True,
        "log": ["view", "thread"],
    }


# -- templates ------------------------------------------------------------------


def test_templates_read_the_session(app: Flask) -> None:
    @app.get("/page")
    def page() -> str:
        return render_template_string(
            "{{ session.user }}"
            "|{% if session.cart %}{{ session.cart['items'] | length }}{% endif %}"
            "|{{ session.get('missing', 'none') }}|{{ 'user' in session }}"
        )

    client = app.test_client()
    assert client.get("/page").text == "||none|False"
    with client.session_transaction() as sess:
        sess["user"] = "<ada>"
        sess["cart"] = {"items": [1, 2, 3]}
    response = client.get("/page")
    # Autoescaped like any other template value.
    assert response.text == "&lt;ada&gt;|3|none|True"
    # Reading in a template changes nothing: no cookie is set.
    assert cookie_names(response) == []
    assert "Cookie" in response.vary


# -- after_request ----------------------------------------------------------------


def test_after_request_writes_are_saved(app: Flask) -> None:
    @app.after_request
    def remember_path(response: Response) -> Response:
        if request.path != "/read":
            session.setdefault("history", []).append(request.path)
        return response

    @app.get("/page/<name>")
    def page(name: str) -> str:
        @after_this_request
        def mark(response: Response) -> Response:
            session["last"] = name
            return response

        return "ok"

    client = app.test_client()
    first = client.get("/page/a")
    # The first write of a new session comes after the view: the cookie is
    # still set.
    assert cookie_names(first) == ["session"]
    client.get("/page/b")
    assert client.get("/read").json == {
        "history": ["/page/a", "/page/b"],
        "last": "b",
    }


# -- a cookie name chosen per request ------------------------------------------------


class TenantSessionInterface(RelaySessionInterface):
    """One session cookie per tenant, named after the ``X-Tenant`` header."""

    def get_cookie_name(self, app: Flask) -> str:
        tenant = request.headers.get("X-Tenant", "public")
        return f"{app.config['SESSION_COOKIE_NAME']}_{tenant}"


def test_overridden_get_cookie_name_keeps_one_session_per_cookie(
    app: Flask,
) -> None:
    # The extension has no hook for the interface class: replace the installed
    # interface with a subclass built on the same store and settings.
    state = app.extensions["relay_session"]
    interface = TenantSessionInterface(state.store, state.settings)
    app.session_interface = interface
    app.extensions["relay_session"] = dataclasses.replace(state, interface=interface)

    client = app.test_client()
    alpha = {"X-Tenant": "alpha"}
    beta = {"X-Tenant": "beta"}
    assert cookie_names(client.get("/set/user/ada", headers=alpha)) == ["session_alpha"]
    assert cookie_names(client.get("/set/user/bob", headers=beta)) == ["session_beta"]
    assert client.get("/read", headers=alpha).json == {"user": "ada"}
    assert client.get("/read", headers=beta).json == {"user": "bob"}
    assert client.get("/read").json == {}
    assert client.get_cookie("session") is None
    assert client.get_cookie("session_alpha") is not None

    with client.session_transaction(headers=beta) as sess:
        assert sess["user"] == "bob"
        sess["role"] = "admin"
    assert client.get("/read", headers=beta).json == {"user": "bob", "role": "admin"}
    assert client.get("/read", headers=alpha).json == {"user": "ada"}


# --------------------------------------------------------------------------
# The mapping, compared with Flask's own cookie session
# --------------------------------------------------------------------------


def dict_operations(current: t.Any) -> dict[str, t.Any]:
    """What a view sees from the dict methods of ``current``."""
    copied = current.copy()
    merged = current | {"b": 20, "c": 3}
    merged_into = {"b": 20, "c": 3} | current
    keys = list(reversed(current))
    popped = current.popitem()
    return {
        "copy": copied,
        "copy_type": type(copied).__name__,
        "or": merged,
        "or_type": type(merged).__name__,
        "ror": merged_into,
        "ror_type": type(merged_into).__name__,
        "reversed": keys,
        "popitem": list(popped),
        "after": dict(current),
        "equal": current == {"a": 1},
    }


def flask_cookie_session_results() -> dict[str, t.Any]:
    app = Flask(__name__)
    app.secret_key = "test secret"
    return run_dict_operations(app)


def run_dict_operations(app: Flask) -> dict[str, t.Any]:
    @app.get("/fill")
    def fill() -> str:
        session["a"] = 1
        session["b"] = {"x": [1, 2]}
        return "ok"

    @app.get("/operate")
    def operate() -> t.Any:
        return jsonify(dict_operations(session))

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    client = app.test_client()
    client.get("/fill")
    results = client.get("/operate").json
    results["stored"] = client.get("/read").json
    return t.cast(dict[str, t.Any], results)


def test_dict_methods_give_what_flasks_cookie_session_gives(make_app: MakeApp) -> None:
    expected = flask_cookie_session_results()
    assert expected["popitem"] == ["b", {"x": [1, 2]}]
    assert run_dict_operations(make_app()) == expected


def test_popitem_of_an_empty_session_raises_key_error(make_app: MakeApp) -> None:
    app = make_app()

    @app.get("/pop")
    def pop() -> str:
        with pytest.raises(KeyError):
            session.popitem()
        return "ok"

    assert app.test_client().get("/pop").text == "ok"


# --------------------------------------------------------------------------
# session.accessed, and the end of the request
# --------------------------------------------------------------------------


def test_only_requests_that_use_the_session_mark_it_accessed(
    make_app: MakeApp,
) -> None:
    app = make_app()

    @app.get("/nothing")
    def nothing() -> str:
        return ""

    @app.get("/read")
    def read() -> str:
        return str(session.get("a"))

    client = app.test_client()
    for path, used in (("/nothing", False), ("/read", True)):
        with client:
            response = client.get(path)
            # The request's context is kept: after the extension's teardown.
            opened = request.environ["flask_relay_session.session"]
            assert opened.accessed is used
        assert ("Cookie" in response.vary) is used


def test_an_error_opening_the_session_is_not_hidden_by_the_teardown(
    make_app: MakeApp,
) -> None:
    def sign_with(request: t.Any) -> str:
        raise RuntimeError("the tenant header is missing")

    app = make_app(RELAY_SESSION_SIGN_WITH=sign_with)

    @app.get("/")
    def index() -> str:
        return "unreachable"

    client = app.test_client()
    client.set_cookie("session", "a" * 64 + "." + "b" * 43 + ".01")
    with pytest.raises(RuntimeError, match="tenant header"):
        client.get("/")
