"""SPEC §8: what clients get when values, cookies or the store go wrong."""

from __future__ import annotations

import logging
import typing as t

import pytest
import redis
from flask import Flask
from flask import jsonify
from flask import make_response
from flask import redirect
from flask import request
from flask import session
from flask import stream_with_context

from flask_relay_session import MemorySessionStore
from flask_relay_session import RelaySession
from flask_relay_session import SessionSerializationError
from flask_relay_session import SessionStoreError

from .helpers import client_with
from .helpers import sid_of
from .redis_servers import RedisServer
from .redis_servers import no_retry

MakeApp = t.Callable[..., Flask]


def add_routes(app: Flask) -> Flask:
    @app.get("/read")
    def read() -> t.Any:
        return jsonify(dict(session))

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/bad")
    def bad() -> str:
        session["good"] = "kept out too"
        session["cart"] = {"items": [1, object()]}
        return "ok"

    @app.get("/bad-explicit")
    def bad_explicit() -> str:
        session["good"] = "kept out too"
        session["cart"] = {"items": [1, {1, 2}]}
        try:
            session.save()  # type: ignore[attr-defined]
        except SessionSerializationError as error:
            session.clear_dirty()  # type: ignore[attr-defined]
            return str(error), 400
        return "saved"

    return app


def test_unencodable_value_names_its_path_and_writes_nothing(
    make_app: MakeApp,
) -> None:
    app = add_routes(make_app())
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/bad-explicit")
    assert response.status_code == 400
    assert "session['cart']['items'][1]" in response.text
    assert "'set'" in response.text
    assert client.get("/read").json == {"a": "1"}


def test_unencodable_value_at_the_end_of_the_request_is_a_server_error(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = add_routes(make_app())
    app.testing = False
    client = app.test_client()
    client.get("/set/a/1")
    with caplog.at_level(logging.ERROR):
        response = client.get("/bad")
    assert response.status_code == 500
    assert client.get("/read").json == {"a": "1"}
    # Logged once, as the request's error; the 500 response saves nothing.
    errors = [record for record in caplog.records if record.exc_info]
    assert len(errors) == 1, [record.getMessage() for record in errors]


def test_session_larger_than_max_size_is_refused_and_nothing_is_written(
    make_app: MakeApp,
) -> None:
    app = add_routes(make_app(RELAY_SESSION_MAX_SIZE=2000))

    @app.get("/grow/<int:size>")
    def grow(size: int) -> tuple[str, int]:
        session["other"] = "y"
        session["blob"] = "x" * size
        try:
            session.save()  # type: ignore[attr-defined]
        except SessionSerializationError as error:
            session.clear_dirty()  # type: ignore[attr-defined]
            return str(error), 413
        return "saved", 200

    client = app.test_client()
    assert client.get("/grow/1000").status_code == 200
    response = client.get("/grow/1990")
    assert response.status_code == 413
    assert "RELAY_SESSION_MAX_SIZE" in response.text
    assert client.get("/read").json == {"other": "y", "blob": "x" * 1000}
    too_big = client.get("/grow/5000")
    assert too_big.status_code == 413
    assert client.get("/read").json == {"other": "y", "blob": "x" * 1000}


@pytest.fixture
def own_server(start_redis: t.Callable[..., RedisServer]) -> RedisServer:
    return start_redis("redis7")


def outage_app(server: RedisServer) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        RELAY_SESSION_REDIS=redis.Redis(
            host=server.host,
            port=server.port,
            retry=no_retry(),
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        ),
    )
    RelaySession(app)
    return add_routes(app)


def test_unreachable_store_gives_503_when_the_view_reads(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = outage_app(own_server)
    client = app.test_client()
    client.get("/set/a/1")
    own_server.kill()
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        response = client.get("/read")
    assert response.status_code == 503
    assert response.json["error"] == "session_store_unavailable"
    assert any("store" in record.message for record in caplog.records)


def test_unreachable_store_gives_503_from_the_end_of_request_save(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = outage_app(own_server)
    client = app.test_client()
    client.get("/set/a/1")
    own_server.kill()
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        response = client.get("/set/b/2")
    assert response.status_code == 503
    assert response.json["error"] == "session_store_unavailable"
    assert "Set-Cookie" not in response.headers
    assert any("could not be saved" in record.message for record in caplog.records)


def test_service_resumes_by_itself_when_the_store_is_back(
    own_server: RedisServer,
) -> None:
    app = outage_app(own_server)
    client = app.test_client()
    client.get("/set/a/1")
    own_server.flush()  # an empty restart, as with a server that keeps nothing
    own_server.kill()
    assert client.get("/set/b/2").status_code == 503
    own_server.start()
    response = client.get("/set/c/3")
    assert response.status_code == 200
    assert client.get("/read").json == {"c": "3"}


@pytest.mark.parametrize("layout", ["json", "hash"])
def test_a_key_holding_no_session_gives_a_fresh_session_and_is_left_alone(
    redis_url: str, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        RELAY_SESSION_REDIS=client,
        RELAY_SESSION_LAYOUT=layout,
    )
    RelaySession(app)
    add_routes(app)
    browser = app.test_client()
    browser.get("/set/a/1")
    cookie = browser.get_cookie("session")
    assert cookie is not None
    key = app.extensions["relay_session"].store.session_key(cookie.value[:64])
    client.delete(key)
    if layout == "json":
        client.set(key, b"\xff not json")
    else:
        client.hset(key, mapping={"a": b"{not json", " created": b"x"})
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        response = browser.get("/read")
    assert response.status_code == 200
    assert response.json == {}
    assert any("not a session" in record.message for record in caplog.records)
    assert client.exists(key)
    assert browser.get("/set/b/2").status_code == 200
    assert browser.get("/read").json == {"b": "2"}


class FailingLoads(MemorySessionStore):
    """A memory store whose loads fail while ``down`` is set."""

    down = False

    def load(self, sid: str, *, ttl: int | None) -> t.Any:
        if self.down:
            raise SessionStoreError("the store is down")
        return super().load(sid, ttl=ttl)


def failing_loads_app() -> tuple[Flask, FailingLoads]:
    """An app with :func:`add_routes` on a :class:`FailingLoads` store."""
    store = FailingLoads()
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", RELAY_SESSION_STORE=store)
    RelaySession(app)
    return add_routes(app), store


def test_a_request_whose_read_failed_writes_nothing_even_if_the_store_is_back() -> None:
    app, store = failing_loads_app()

    @app.get("/write-then-read")
    def write_then_read() -> str:
        session["first"] = 1  # a write that needs no read
        store.down = True
        try:
            session.get("log")  # the read fails: 503
        finally:
            store.down = False  # the store is back before the request ends
        return "unreachable"

    browser = app.test_client()
    browser.get("/set/a/1")
    assert browser.get("/write-then-read").status_code == 503
    assert browser.get("/read").json == {"a": "1"}


# --------------------------------------------------------------------------
# What an error response tells the client
# --------------------------------------------------------------------------


def add_cached_download(app: Flask) -> Flask:
    """A view whose response may be cached and names a download."""

    @app.get("/download")
    def download() -> t.Any:
        session["downloads"] = 1
        response = make_response("id,name\n1,Ada\n")
        response.headers.update(
            {
                "Cache-Control": "public, max-age=3600",
                "Content-Disposition": "attachment; filename=report.csv",
                "Content-Language": "en",
                "ETag": '"v1"',
                "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT",
                "X-App": "kept",
            }
        )
        response.set_cookie("theme", "dark")
        return response

    return app


def assert_safe_error(response: t.Any, code: int, error: str, *secrets: str) -> None:
    """The error response says what happened, names nothing internal and
    cannot be cached; nothing of the view's representation is left.
    """
    assert response.status_code == code
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    for name in ("Content-Disposition", "Content-Language", "ETag", "Last-Modified"):
        assert name not in response.headers
    assert response.json["error"] == error
    message = response.json["message"]
    assert "try again" in message.lower()
    for secret in secrets:
        assert secret not in response.text


def test_a_store_error_response_names_no_internals(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = add_cached_download(outage_app(own_server))
    client = app.test_client()
    client.get("/set/a/1")
    own_server.kill()
    port = str(own_server.port)
    with caplog.at_level(logging.ERROR, "flask_relay_session"):
        from_the_view = client.get("/read")
        from_the_save = client.get("/download")
    for response in (from_the_view, from_the_save):
        assert_safe_error(
            response, 503, "session_store_unavailable", port, "127.0.0.1", "Error"
        )
    # The view's other headers and cookies stay; the details go to the log.
    assert from_the_save.headers["X-App"] == "kept"
    assert "theme=dark" in from_the_save.headers["Set-Cookie"]
    assert any(port in record.getMessage() for record in caplog.records)


def test_a_lock_error_response_names_no_settings(make_app: MakeApp) -> None:
    app = add_cached_download(add_routes(make_app(RELAY_SESSION_LOCK_RETRIES=0)))

    @app.get("/locked")
    def locked() -> str:
        with session.lock():  # type: ignore[attr-defined]
            return "unreachable"

    client = app.test_client()
    client.get("/set/a/1")
    cookie = client.get_cookie("session")
    assert cookie is not None
    app.extensions["relay_session"].store.lock(cookie.value[:64], "other", 60_000)
    for response in (client.get("/locked"), client.get("/download")):
        assert_safe_error(response, 409, "session_locked", "RELAY_SESSION")


# --------------------------------------------------------------------------
# A store that fails while the response is finished
# --------------------------------------------------------------------------


def read_after_the_view(app: Flask) -> Flask:
    """An ``after_request`` function that reads the session, as Flask-Login's
    does on every response, and a view that never touches it.
    """

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.after_request
    def stamp(response: t.Any) -> t.Any:
        response.headers["X-Theme"] = str(session.get("theme"))
        return response

    return app


def test_a_store_failing_for_an_after_request_function_gives_503_not_500(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = read_after_the_view(outage_app(own_server))
    client = app.test_client()
    client.get("/set/theme/dark")
    assert client.get("/untouched").headers["X-Theme"] == "dark"
    own_server.kill()
    with caplog.at_level(logging.ERROR):
        response = client.get("/untouched")
    assert_safe_error(
        response, 503, "session_store_unavailable", str(own_server.port), "Error"
    )
    assert "Set-Cookie" not in response.headers
    # The store's failure is logged by the extension, not as an error of the app.
    assert any("store failed" in record.getMessage() for record in caplog.records)
    assert not any(record.name == app.logger.name for record in caplog.records)


def test_flask_login_gives_503_not_500_when_the_store_is_down(
    own_server: RedisServer,
) -> None:
    from flask_login import LoginManager
    from flask_login import UserMixin
    from flask_login import login_user

    class User(UserMixin):
        id = 7

    app = outage_app(own_server)
    login = LoginManager(app)
    login.user_loader(lambda user_id: User() if user_id == "7" else None)

    @app.post("/login")
    def log_in() -> str:
        login_user(User())
        return "ok"

    @app.get("/about")
    def about() -> str:
        return "a page that reads no session"

    client = app.test_client()
    client.post("/login")
    assert client.get("/about").status_code == 200
    own_server.kill()
    response = client.get("/about")
    assert response.status_code == 503
    assert response.json["error"] == "session_store_unavailable"


def test_an_after_request_write_after_a_failed_read_saves_nothing() -> None:
    app, store = failing_loads_app()

    @app.get("/count-visits")
    def count_visits() -> str:
        session["view"] = "written before the read"  # needs no read
        store.down = True
        return "ok"

    @app.after_request
    def count(response: t.Any) -> t.Any:
        if request.path == "/count-visits":
            session["visits"] = session.get("visits", 0) + 1
            store.down = False  # the store is back before the session is saved
        return response

    browser = app.test_client()
    browser.get("/set/a/1")
    response = browser.get("/count-visits")
    assert response.status_code == 503
    assert response.json["error"] == "session_store_unavailable"
    assert browser.get("/read").json == {"a": "1"}


def test_a_broken_chain_found_after_the_view_gets_the_chain_handler() -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret", RELAY_SESSION_STORE=MemorySessionStore()
    )
    relay = RelaySession(app)
    read_after_the_view(add_routes(app))

    @relay.broken_chain_handler
    def to_login(error: Exception) -> t.Any:
        return redirect("/login-again")

    @app.get("/rotate")
    def rotate() -> str:
        session["theme"] = "dark"
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    client = app.test_client()
    client.get("/rotate")
    old_cookie = client.get_cookie("session").value  # type: ignore[union-attr]
    client.get("/rotate")
    app.extensions["relay_session"].store.delete(sid_of(client))
    straggler = client_with(app, old_cookie)
    response = straggler.get("/untouched")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login-again"
    assert straggler.get_cookie("session") is None


def test_a_read_that_fails_while_the_response_streams_raises_as_before() -> None:
    """Only the functions that finish the response before the session is
    saved read a failed load as empty: a streamed body that reads the
    session after that gets the error, as a view does.
    """
    app, store = failing_loads_app()

    @app.get("/stream")
    def stream() -> t.Any:
        def body() -> t.Iterator[str]:
            yield "theme: "
            store.down = True
            yield str(session.get("theme"))

        return stream_with_context(body())

    browser = app.test_client()
    browser.get("/set/theme/dark")
    with pytest.raises(SessionStoreError):
        browser.get("/stream").get_data()


def test_any_read_of_the_stored_session_after_the_view_is_answered_not_raised() -> None:
    """Not only the mapping's methods: ``user_id`` and ``created_at`` load
    the session too, and an ``after_request`` function may read them.
    """
    app, store = failing_loads_app()

    @app.get("/down")
    def down() -> str:
        store.down = True
        return "ok"

    @app.after_request
    def log_user(response: t.Any) -> t.Any:
        if request.path == "/down":
            response.headers["X-User"] = str(session.user_id)  # type: ignore[attr-defined]
            response.headers["X-Since"] = str(session.created_at)  # type: ignore[attr-defined]
            store.down = False
        return response

    browser = app.test_client()
    browser.get("/set/a/1")
    response = browser.get("/down")
    assert response.status_code == 503
    assert response.json["error"] == "session_store_unavailable"
    assert browser.get("/read").json == {"a": "1"}
