"""SPEC §11: the ``flask relay-session`` operator commands.

Run with Flask's CLI runner on the memory store and on real Redis 7 and 6.2
in both layouts (``store_config``), and on a custom store that implements
``SessionStoreAdmin``; an unreachable server and the exit codes are checked
too. Counting across a cluster's primaries is in ``test_cluster.py``.
"""

from __future__ import annotations

import json
import typing as t

import pytest
from click.testing import Result
from flask import Flask
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session.cli import EXIT_NOT_FOUND
from flask_relay_session.cli import EXIT_UNREACHABLE
from flask_relay_session.cli import EXIT_UNSUPPORTED
from flask_relay_session.stores import SessionRecord

from .helpers import CustomStore
from .helpers import sid_of
from .redis_servers import free_port

MakeApp = t.Callable[..., Flask]


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["relay-session", *args])


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app()

    @app.post("/set")
    def set_values() -> str:
        for key, value in t.cast(dict[str, t.Any], request.get_json()).items():
            session[key] = value
        return "ok"

    @app.post("/rotate")
    def rotate() -> str:
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    return app


def browser_with(app: Flask, data: dict[str, t.Any]) -> FlaskClient:
    browser = app.test_client()
    assert browser.post("/set", json=data).status_code == 200
    return browser


def hold_lock(app: Flask, sid: str, ttl: int = 60_000) -> None:
    assert app.extensions["relay_session"].store.lock(sid, "operator-test", ttl)


def test_group_is_registered_and_lists_its_commands(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0
    for command in ("ping", "count", "show", "delete", "unlock"):
        assert command in result.output


def test_ping_reports_the_store_and_loads_the_scripts(app: Flask) -> None:
    store = app.extensions["relay_session"].store
    result = run(app, "ping")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("ok")
    if isinstance(store, MemorySessionStore):
        assert "in-process memory store" in result.output
        return
    assert isinstance(store, RedisSessionStore)
    version = store.redis.info("server")["redis_version"]
    assert f"server: Redis {version}" in result.output
    assert f"{store.layout} layout" in result.output
    assert f"scripts: {len(store.scripts)} loaded with SCRIPT LOAD" in result.output
    assert "(already cached: 0)" in result.output
    assert all(store.redis.script_exists(*(s.sha for s in store.scripts)))
    again = run(app, "ping")
    assert f"(already cached: {len(store.scripts)})" in again.output


def test_count_reports_live_sessions_and_held_locks(app: Flask) -> None:
    browsers = [browser_with(app, {"n": number}) for number in range(5)]
    hold_lock(app, sid_of(browsers[0]))
    hold_lock(app, sid_of(browsers[3]))
    result = run(app, "count")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["sessions: 5", "locks: 2"]


def test_count_of_an_empty_store_is_zero(app: Flask) -> None:
    result = run(app, "count")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["sessions: 0", "locks: 0"]


def test_show_prints_the_stored_document_ttl_and_lock(app: Flask) -> None:
    browser = browser_with(
        app, {"user": {"name": "ada", "roles": ["admin"]}, "cart": []}
    )
    sid = sid_of(browser)
    result = run(app, "show", sid)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"session {sid}"
    assert lines[1].startswith("expires in: ")
    assert "lock: free" in lines
    document = json.loads(result.stdout[result.stdout.index("\n{") :])
    assert document["data"]["user"] == {"name": "ada", "roles": ["admin"]}
    # Shown as stored: an empty list is tagged, so that cjson keeps it.
    assert document["data"]["cart"] == {" l": 0}
    assert document["meta"]


def test_show_accepts_a_whole_cookie_value_and_reports_a_held_lock(
    app: Flask,
) -> None:
    browser = browser_with(app, {"a": 1})
    cookie = browser.get_cookie("session")
    assert cookie is not None
    hold_lock(app, sid_of(browser), ttl=30_000)
    result = run(app, "show", cookie.value)
    assert result.exit_code == 0, result.output
    assert "lock: held, expires in " in result.output


def test_show_says_clearly_when_the_id_was_rotated_away(app: Flask) -> None:
    browser = browser_with(app, {"a": 1})
    old_sid = sid_of(browser)
    assert browser.post("/rotate").status_code == 200
    new_sid = sid_of(browser)
    result = run(app, "show", old_sid)
    assert result.exit_code == 0, result.output
    assert f"session {old_sid} was rotated away: it redirects to {new_sid}" in (
        result.output
    )
    assert "grace period left: " in result.output

    followed = run(app, "show", "--follow", old_sid)
    assert followed.exit_code == 0, followed.output
    assert f"session {old_sid} redirects to {new_sid}" in followed.output
    assert f"session {new_sid}\n" in followed.output
    assert '"a": 1' in followed.output


def test_show_of_a_missing_session_exits_1(app: Flask) -> None:
    result = run(app, "show", "ab" * 32)
    assert result.exit_code == EXIT_NOT_FOUND
    assert "does not exist" in result.stderr
    assert result.stdout == ""


def test_a_malformed_sid_is_a_usage_error(app: Flask) -> None:
    result = run(app, "show", "sess:{*}")
    assert result.exit_code == 2
    assert "64 hex digits" in result.output


def test_deleting_a_rotated_away_id_logs_out_the_session_it_leads_to(
    app: Flask,
) -> None:
    browser = browser_with(app, {"user": "ada"})
    old_sid = sid_of(browser)
    assert browser.post("/rotate").status_code == 200
    new_sid = sid_of(browser)
    result = run(app, "delete", old_sid)
    assert result.exit_code == 0, result.output
    assert f"deleted session {old_sid}" in result.output
    assert run(app, "show", old_sid).exit_code == EXIT_NOT_FOUND
    assert run(app, "show", new_sid).exit_code == EXIT_NOT_FOUND
    with browser.session_transaction() as current:
        assert dict(current) == {}


def test_delete_removes_the_session_and_the_cookie_stops_working(
    app: Flask,
) -> None:
    browser = browser_with(app, {"user": "ada"})
    sid = sid_of(browser)
    result = run(app, "delete", sid)
    assert result.exit_code == 0, result.output
    assert f"deleted session {sid}" in result.output
    assert run(app, "show", sid).exit_code == EXIT_NOT_FOUND
    with browser.session_transaction() as current:
        assert dict(current) == {}
    again = run(app, "delete", sid)
    assert again.exit_code == EXIT_NOT_FOUND
    assert "nothing deleted" in again.stderr


def test_unlock_releases_a_lock_whoever_holds_it(app: Flask) -> None:
    browser = browser_with(app, {"n": 1})
    sid = sid_of(browser)
    store = app.extensions["relay_session"].store
    hold_lock(app, sid)
    assert store.is_locked(sid)
    result = run(app, "unlock", sid)
    assert result.exit_code == 0, result.output
    assert f"released the lock of session {sid}" in result.output
    assert not store.is_locked(sid)
    again = run(app, "unlock", sid)
    assert again.exit_code == EXIT_NOT_FOUND
    assert "is not locked" in again.stderr


def test_unreachable_redis_exits_3_for_every_command() -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret",
        TESTING=True,
        RELAY_SESSION_REDIS=f"redis://127.0.0.1:{free_port()}/0",
    )
    RelaySession(app)
    sid = "cd" * 32
    for args in (["ping"], ["count"], ["show", sid], ["delete", sid], ["unlock", sid]):
        result = run(app, *args)
        assert result.exit_code == EXIT_UNREACHABLE, (args, result.output)
        assert "cannot be reached" in result.stderr


class CustomAdminStore(CustomStore):
    """A store of the app's own that implements ``SessionStoreAdmin`` too."""

    def ping(self) -> list[str]:
        return ["store: a custom one"]

    def scan(self, *, batch: int = 1000) -> t.Iterator[tuple[t.Any, str]]:
        return self.inner.scan(batch=batch)

    def size_hint(self) -> int:
        return self.inner.size_hint()

    def show(self, sid: str) -> SessionRecord | None:
        return self.inner.show(sid)

    def break_lock(self, sid: str) -> bool:
        return self.inner.break_lock(sid)


def custom_app(store: object) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="secret", TESTING=True, RELAY_SESSION_STORE=store)
    RelaySession(app)

    @app.post("/set")
    def set_values() -> str:
        session.update(t.cast(dict[str, t.Any], request.get_json()))
        return "ok"

    return app


def test_a_store_without_the_admin_protocol_exits_4_naming_it() -> None:
    result = run(custom_app(CustomStore()), "count")
    assert result.exit_code == EXIT_UNSUPPORTED
    assert "SessionStoreAdmin" in result.stderr
    assert "CustomStore" in result.stderr
    assert "ping, scan, size_hint, show, break_lock" in result.stderr


def test_every_command_works_on_a_custom_store_with_the_admin_protocol() -> None:
    app = custom_app(CustomAdminStore())
    browser = browser_with(app, {"user": "ada"})
    sid = sid_of(browser)
    hold_lock(app, sid)
    assert run(app, "ping").stdout == "store: a custom one\nok\n"
    assert run(app, "count").stdout == "sessions: 1\nlocks: 1\n"
    shown = run(app, "show", sid)
    assert shown.exit_code == 0, shown.output
    assert '"user": "ada"' in shown.stdout
    assert run(app, "unlock", sid).exit_code == 0
    assert run(app, "delete", sid).exit_code == 0
    assert run(app, "count").stdout == "sessions: 0\nlocks: 0\n"


def test_an_app_without_the_extension_has_no_group() -> None:
    app = Flask(__name__)
    result = app.test_cli_runner().invoke(args=["relay-session", "count"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_count_scans_incrementally_and_reports_progress(
    redis_url: str, counting_redis: t.Any
) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret", TESTING=True, RELAY_SESSION_REDIS=counting_redis
    )
    RelaySession(app)
    store = app.extensions["relay_session"].store
    with counting_redis.pipeline(transaction=False) as pipe:
        for number in range(250):
            pipe.set(store.session_key(f"{number:064x}"), b"{}", px=60_000)
        for number in range(7):
            pipe.set(store.lock_key(f"{number:064x}"), b"t", px=60_000)
        for number in range(40):
            pipe.set(f"other:{number}", b"x")
        pipe.execute()
    counting_redis.counter.reset()
    result = run(app, "count", "--count-hint", "50", "--progress-every", "100")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["sessions: 250", "locks: 7"]
    assert "200 matching keys so far" in result.stderr
    assert "about 297 keys" in result.stderr
    commands = counting_redis.counter.commands
    assert "KEYS" not in commands
    assert commands.count("SCAN") > 1  # incremental, not one sweep


def test_count_ignores_keys_that_only_share_the_prefix(redis_url: str) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret",
        TESTING=True,
        RELAY_SESSION_REDIS=redis_url,
        RELAY_SESSION_KEY_PREFIX="app[1]*:",
    )
    RelaySession(app)
    store = app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    store.redis.set(store.session_key("ab" * 32), b"{}")
    store.redis.set("app[1]*:unrelated", b"x")
    store.redis.set("app1x:{" + "ab" * 32 + "}", b"x")  # matched by an unescaped [1]
    assert list(store.scan()) == [("session", "ab" * 32)]
