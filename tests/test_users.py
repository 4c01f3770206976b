"""The sessions of a user: binding, listing, revoking (issue 13).

Every test runs on every store: memory, and Redis 7 and 6.2 with the JSON
and the hash layout. A session is bound with ``session.bind_user``; the
app lists a user's sessions with ``relay.sessions_of``, ends one with
``relay.revoke`` and all with ``relay.revoke_all``. What must hold:

- the list is exact: expired, destroyed, revoked, unbound and rotated-away
  sessions never appear, a session found through a rotation redirect appears
  once, and a session bound to another user moves;
- a revoked session never comes back, through any of its cookies;
- handles name sessions without giving their ids away, and a handle of
  another user's session, or a forged one, ends nothing;
- any string of up to 256 bytes is a user id, escaped in keys.
"""

from __future__ import annotations

import json
import string
import time
import typing as t
from collections.abc import Callable
from datetime import datetime
from datetime import timezone

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_relay_session import MemorySessionStore
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session import Session
from flask_relay_session import SessionConfigError
from flask_relay_session import signals
from flask_relay_session.stores.users import MAX_USER_ID_LENGTH
from flask_relay_session.stores.users import escape_user_id
from flask_relay_session.users import SessionInfo

from .helpers import CustomStore
from .helpers import current
from .helpers import now_ms
from .helpers import sid_of
from .test_expiry import Clock

MakeApp = Callable[..., Flask]


def relay_of(app: Flask) -> RelaySession:
    return t.cast(RelaySession, app.extensions["relay_session"].extension)


def add_views(app: Flask) -> Flask:
    """The views of the tests: a login as in the issue, and the user API."""
    relay = relay_of(app)

    @app.post("/login/<user>")
    def login(user: str) -> t.Any:
        session["user"] = user
        grace = request.args.get("grace", type=float)
        if grace is not None:
            current().rotate_id(grace_period=grace)
        current().bind_user(user)
        return jsonify(sid=current().sid)

    @app.post("/bind/<user>")
    def bind(user: str) -> str:
        current().bind_user(user)
        return "ok"

    @app.post("/permanent")
    def permanent() -> str:
        session.permanent = True
        return "ok"

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.post("/unbind")
    def unbind() -> str:
        current().unbind_user()
        return "ok"

    @app.post("/set/<key>")
    def set_value(key: str) -> str:
        session[key] = request.args.get("value", key)
        return "ok"

    @app.post("/rotate")
    def rotate() -> t.Any:
        current().rotate_id(grace_period=request.args.get("grace", 60, type=float))
        return jsonify(sid=current().sid)

    @app.post("/logout")
    def logout() -> str:
        current().destroy()
        return "ok"

    @app.get("/read")
    def read() -> t.Any:
        return jsonify(
            data=dict(session),
            user_id=current().user_id,
            sid=current().sid,
            new=current().new,
            redirected=current().is_redirected,
        )

    @app.get("/devices/<user>")
    def devices(user: str) -> t.Any:
        return jsonify([info.as_dict() for info in relay.sessions_of(user)])

    @app.post("/revoke/<user>/<handle>")
    def revoke(user: str, handle: str) -> t.Any:
        return jsonify(relay.revoke(user, handle))

    @app.post("/revoke-all/<user>")
    def revoke_all(user: str) -> t.Any:
        keep = request.args.get("except_current") == "1"
        return jsonify(relay.revoke_all(user, except_current=keep))

    return app


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return add_views(make_app())


def logged_in(app: Flask, user: str = "ada", grace: float | None = 0) -> FlaskClient:
    client = app.test_client()
    url = f"/login/{user}" if grace is None else f"/login/{user}?grace={grace}"
    assert client.post(url).status_code == 200
    return client


def devices(client: FlaskClient, user: str = "ada") -> list[dict[str, t.Any]]:
    response = client.get(f"/devices/{user}")
    assert response.status_code == 200, response.text
    return t.cast(list[dict[str, t.Any]], response.json)


def listed(app: Flask, user: str = "ada") -> list[SessionInfo]:
    with app.app_context():
        return relay_of(app).sessions_of(user)


def state(client: FlaskClient) -> dict[str, t.Any]:
    response = client.get("/read")
    assert response.status_code == 200, response.text
    return t.cast(dict[str, t.Any], response.json)


def signed_out(client: FlaskClient) -> bool:
    """Whether the client's cookie reaches no stored session any more."""
    found = state(client)
    return bool(found["new"]) and found["data"] == {} and found["user_id"] is None


def registry(app: Flask, user: str) -> list[str] | None:
    """The ids in the Redis registry of ``user``; ``None`` on memory."""
    store = app.extensions["relay_session"].store
    if not isinstance(store, RedisSessionStore):
        return None
    return [sid.decode() for sid in store.redis.zrange(store.user_key(user), 0, -1)]


# --------------------------------------------------------------------------
# Binding and listing
# --------------------------------------------------------------------------


def test_a_bound_session_is_listed_with_its_times(app: Flask) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    client = logged_in(app)
    assert state(client)["user_id"] == "ada"
    (info,) = listed(app)
    assert isinstance(info, SessionInfo)
    for moment in (info.created_at, info.last_seen, info.expires_at):
        assert moment.tzinfo is timezone.utc
    assert before <= info.created_at <= info.last_seen < info.expires_at
    assert info.current is False  # no request is asking
    assert (info.user_agent, info.ip) == (None, None)  # not tracked by default
    (shown,) = devices(client)
    assert shown["current"] is True
    assert shown["handle"] == info.handle
    assert json.loads(json.dumps(shown)) == shown
    assert datetime.fromisoformat(shown["created_at"]) == info.created_at
    assert set(shown) == {
        "handle",
        "created_at",
        "last_seen",
        "expires_at",
        "current",
        "user_agent",
        "ip",
    }


def test_each_device_is_listed_once_and_only_the_asking_one_is_current(
    app: Flask,
) -> None:
    clients = [logged_in(app) for _ in range(3)]
    logged_in(app, "bob")
    for client in clients:
        shown = devices(client)
        assert len(shown) == 3
        assert len({info["handle"] for info in shown}) == 3
        assert [info["current"] for info in shown].count(True) == 1
    assert len(listed(app, "bob")) == 1
    assert listed(app, "carol") == []


def test_the_list_is_newest_activity_first(make_app: MakeApp, clock: Clock) -> None:
    app = timed(make_app, clock, RELAY_SESSION_LAST_SEEN_INTERVAL=0)
    first, second = logged_in(app), logged_in(app)
    clock.advance(5)
    state(first)
    handles = [info.handle for info in listed(app)]
    assert handles[0] == current_handle(first)
    clock.advance(5)
    state(second)
    assert [info.handle for info in listed(app)] == handles[::-1]


def current_handle(client: FlaskClient, user: str = "ada") -> str:
    """The handle of the client's own session, in the list of ``user``."""
    return next(info["handle"] for info in devices(client, user) if info["current"])


def test_a_new_session_is_bound_by_the_save_that_stores_it(app: Flask) -> None:
    @app.post("/fresh-login")
    def fresh_login() -> t.Any:
        current().bind_user("ada")
        bound = current().user_id
        nothing_yet = relay_of(app).sessions_of("ada") == []
        session["user"] = "ada"
        return jsonify(bound=bound, nothing_yet=nothing_yet)

    @app.post("/bind-and-list")
    def bind_and_list() -> t.Any:
        session["user"] = "ada"
        current().bind_user("ada")
        return jsonify([i.current for i in relay_of(app).sessions_of("ada")])

    client = app.test_client()
    assert client.post("/fresh-login").json == {"bound": "ada", "nothing_yet": True}
    assert len(listed(app)) == 1
    assert state(client)["user_id"] == "ada"
    # Listing in the request that bound a new session stores it first.
    assert sorted(app.test_client().post("/bind-and-list").json) == [False, True]


def test_a_new_session_that_stores_nothing_stays_unbound(app: Flask) -> None:
    client = app.test_client()
    client.post("/bind/ada")
    assert client.get_cookie("session") is None
    assert listed(app) == []
    assert registry(app, "ada") in (None, [])


def test_binding_to_another_user_moves_the_session(app: Flask) -> None:
    client = logged_in(app)
    handle = current_handle(client)
    client.post("/bind/bob")
    assert state(client)["user_id"] == "bob"
    assert current_handle(client, "bob") == handle
    assert listed(app, "ada") == []
    assert [info.handle for info in listed(app, "bob")] == [handle]
    assert registry(app, "ada") in (None, [])
    assert registry(app, "bob") in (None, [sid_of(client)])
    # Binding again to the same user changes nothing.
    client.post("/bind/bob")
    assert [info.handle for info in listed(app, "bob")] == [handle]


def test_unbinding_and_destroying_take_the_session_off_the_list(app: Flask) -> None:
    kept, unbound, destroyed = logged_in(app), logged_in(app), logged_in(app)
    unbound.post("/unbind")
    found = state(unbound)
    assert found["user_id"] is None and found["data"] == {"user": "ada"}
    destroyed.post("/logout")
    assert signed_out(destroyed)
    assert [info["current"] for info in devices(kept)] == [True]
    assert registry(app, "ada") in (None, [sid_of(kept)])
    # The fresh session a logout leaves is bound to nobody.
    destroyed.post("/set/cart")
    assert state(destroyed)["user_id"] is None
    assert len(listed(app)) == 1


# --------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("grace", [0, 60])
def test_after_a_rotation_the_user_has_one_entry_for_the_new_id(
    app: Flask, grace: int
) -> None:
    client = logged_in(app)
    old_sid, old_handle = sid_of(client), current_handle(client)
    new_sid = client.post(f"/rotate?grace={grace}").json["sid"]
    assert new_sid == sid_of(client) != old_sid
    (info,) = listed(app)
    assert info.handle == current_handle(client) != old_handle
    assert state(client)["user_id"] == "ada"
    # The old id keeps its entry while it redirects, not listed: so that
    # revoke_all deletes the redirect too.
    expected = sorted([old_sid, new_sid]) if grace else [new_sid]
    assert sorted(registry(app, "ada") or expected) == expected


def test_a_session_found_through_a_redirect_is_listed_once(app: Flask) -> None:
    client = logged_in(app)
    old_cookie = client.get_cookie("session")
    assert old_cookie is not None
    client.post("/rotate?grace=60")
    other = app.test_client()
    other.set_cookie("session", old_cookie.value)
    shown = other.get("/devices/ada").json
    assert [info["current"] for info in shown] == [True]
    assert shown[0]["handle"] == current_handle(client)


def test_a_login_that_rotates_an_anonymous_session_binds_the_new_id(
    app: Flask,
) -> None:
    client = app.test_client()
    client.post("/set/cart")
    anonymous = sid_of(client)
    client.post("/login/ada?grace=0")
    assert sid_of(client) != anonymous
    assert state(client)["data"] == {"cart": "cart", "user": "ada"}
    assert registry(app, "ada") in (None, [sid_of(client)])
    assert len(listed(app)) == 1


# --------------------------------------------------------------------------
# Revoking
# --------------------------------------------------------------------------


def test_revoke_ends_that_session_only_and_for_good(app: Flask) -> None:
    asking, target = logged_in(app), logged_in(app)
    handle = current_handle(target)
    ended: list[dict[str, t.Any]] = []

    def on_revoked(sender: Flask, **extra: t.Any) -> None:
        ended.append(extra)

    with signals.session_revoked.connected_to(on_revoked, app):
        assert asking.post(f"/revoke/ada/{handle}").json is True
        assert asking.post(f"/revoke/ada/{handle}").json is False
    assert signed_out(target)
    assert state(asking)["user_id"] == "ada"
    assert [info["handle"] for info in devices(asking)] == [current_handle(asking)]
    ((event),) = ended
    assert event["user_id"] == "ada" and event["handle"] == handle
    assert isinstance(event["session"], Session) and len(event["sid"]) == 64
    # Its data never comes back, whatever its cookie does next.
    target.post("/set/again")
    assert state(target)["data"] == {"again": "again"}
    assert state(target)["user_id"] is None


def test_revoking_the_asking_session_signs_it_out_in_the_same_request(
    app: Flask,
) -> None:
    @app.post("/revoke-mine/<handle>")
    def revoke_mine(handle: str) -> t.Any:
        done = relay_of(app).revoke("ada", handle)
        return jsonify(done=done, new=current().new, data=dict(session))

    client = logged_in(app)
    handle = current_handle(client)
    assert client.post(f"/revoke-mine/{handle}").json == {
        "done": True,
        "new": True,
        "data": {},
    }
    assert client.get_cookie("session") is None
    assert signed_out(client)


def test_another_users_handle_revokes_nothing(app: Flask) -> None:
    mallory, victim = logged_in(app, "mallory"), logged_in(app, "victim")
    handle = current_handle(victim, "victim")
    assert mallory.post(f"/revoke/mallory/{handle}").json is False
    with app.app_context():
        assert relay_of(app).revoke("mallory", handle) is False
        assert relay_of(app).revoke_all("mallory", except_current=False) == 1
    assert state(victim)["user_id"] == "victim"
    assert len(listed(app, "victim")) == 1


def test_a_stale_entry_of_a_session_moved_to_another_user_revokes_nothing(
    app: Flask,
) -> None:
    client = logged_in(app, "ada")
    handle = current_handle(client)
    store = app.extensions["relay_session"].store
    if isinstance(store, RedisSessionStore):
        # As if the move's last step, which drops the old entry, was lost.
        zrem = store.redis.zrem
        store.redis.zrem = lambda *args: 0  # type: ignore[method-assign]
        try:
            client.post("/bind/bob")
        finally:
            store.redis.zrem = zrem  # type: ignore[method-assign]
        assert registry(app, "ada") == [sid_of(client)]
    else:
        client.post("/bind/bob")
    with app.app_context():
        assert relay_of(app).revoke("ada", handle) is False
        assert relay_of(app).revoke_all("ada") == 0
        assert relay_of(app).sessions_of("ada") == []
    assert state(client)["user_id"] == "bob"


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "x",
        "A" * 22,
        "A" * 23,
        "%2F" * 8,
        "../../etc",
        "c45m2aqbtSOBhARRQAEN1A",
    ],
)
def test_forged_handles_revoke_nothing(app: Flask, forged: str) -> None:
    client = logged_in(app)
    with app.app_context():
        assert relay_of(app).revoke("ada", forged) is False
        assert relay_of(app).revoke("ada", t.cast(str, None)) is False
    assert state(client)["user_id"] == "ada"


def test_a_handle_gives_away_neither_the_id_nor_a_cookie(app: Flask) -> None:
    client = logged_in(app)
    sid = sid_of(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    handle = current_handle(client)
    assert len(handle) == 22
    assert set(handle) <= set(string.ascii_letters + string.digits + "-_")
    assert handle not in cookie.value and handle not in sid
    assert not any(sid[i : i + 6] in handle for i in range(0, 64, 6))
    # Neither the handle nor anything made of it logs anybody in.
    for value in (handle, f"{handle}.{handle}", cookie.value.replace(sid, handle)):
        other = app.test_client()
        other.set_cookie("session", value)
        assert signed_out(other)
    # The sid itself is no handle either.
    with app.app_context():
        assert relay_of(app).revoke("ada", sid) is False
    # Stable while the id lasts.
    assert current_handle(client) == handle


def test_handles_follow_the_secret_key_and_its_fallbacks(make_app: MakeApp) -> None:
    app = add_views(make_app())
    client = logged_in(app)
    old_handle = current_handle(client)
    app.config["SECRET_KEY_FALLBACKS"] = [app.config["SECRET_KEY"]]
    app.config["SECRET_KEY"] = "a new secret"
    assert current_handle(client) != old_handle
    # A handle shown before the key changed still works.
    with app.app_context():
        assert relay_of(app).revoke("ada", old_handle) is True
    assert signed_out(client)


def test_revoke_all_logs_out_everywhere(app: Flask) -> None:
    clients = [logged_in(app) for _ in range(4)]
    other_user = logged_in(app, "bob")
    ended: list[str] = []

    def on_revoked(sender: Flask, sid: str, **extra: t.Any) -> None:
        ended.append(sid)

    with signals.session_revoked.connected_to(on_revoked, app):
        with app.app_context():
            assert relay_of(app).revoke_all("ada") == 4
    assert sorted(ended) == sorted(sid_of(client) for client in clients)
    assert all(signed_out(client) for client in clients)
    assert listed(app) == []
    assert registry(app, "ada") in (None, [])
    assert state(other_user)["user_id"] == "bob"
    with app.app_context():
        assert relay_of(app).revoke_all("ada") == 0


def test_revoke_all_except_current_keeps_the_asking_session(app: Flask) -> None:
    asking = logged_in(app)
    others = [logged_in(app) for _ in range(3)]
    assert asking.post("/revoke-all/ada?except_current=1").json == 3
    assert all(signed_out(client) for client in others)
    assert state(asking)["user_id"] == "ada"
    assert [info["current"] for info in devices(asking)] == [True]
    # Without the flag, the asking session goes too, in that very request.
    assert asking.post("/revoke-all/ada").json == 1
    assert signed_out(asking)


def test_revoked_sessions_do_not_come_back_through_old_cookies(app: Flask) -> None:
    """A cookie from before a rotation still reaches the session during the
    grace period; revoking ends it through either cookie.
    """
    client = logged_in(app)
    old = client.get_cookie("session")
    assert old is not None
    client.post("/rotate?grace=60")
    with app.app_context():
        assert relay_of(app).revoke_all("ada") == 1
    stale = app.test_client()
    stale.set_cookie("session", old.value)
    assert signed_out(stale)
    assert signed_out(client)


def test_a_request_whose_session_is_revoked_under_it_keeps_only_its_own_change(
    app: Flask,
) -> None:
    """It loaded the signed-in session, then the session was revoked, then
    it writes: a fresh, unbound session holding only that write.
    """
    store = app.extensions["relay_session"].store

    @app.post("/slow-write")
    def slow_write() -> t.Any:
        seen = dict(session)
        # Another process revokes every session of the user meanwhile.
        store.end_sessions("ada", store.registered("ada", now=now_ms()))
        session["note"] = "mine"
        session.modified = True  # an app that forces every save
        return jsonify(seen)

    client = logged_in(app)
    client.post("/set/secret?value=s3cret")
    seen = client.post("/slow-write").json
    assert seen == {"user": "ada", "secret": "s3cret"}
    after = state(client)
    assert after["user_id"] is None
    assert after["data"] == {"note": "mine"}
    assert listed(app) == []


# --------------------------------------------------------------------------
# Expiry
# --------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


def timed(make_app: MakeApp, clock: Clock, **config: t.Any) -> Flask:
    """An app whose time moves with ``clock``, the store's too."""
    probe = make_app()
    if isinstance(probe.extensions["relay_session"].store, MemorySessionStore):
        config.setdefault("RELAY_SESSION_STORE", MemorySessionStore(clock=clock))
    config.setdefault("PERMANENT_SESSION_LIFETIME", 600)
    app = add_views(make_app(**config))
    app.session_interface.clock = clock  # type: ignore[attr-defined]
    store = app.extensions["relay_session"].store
    if isinstance(store, RedisSessionStore):
        clock.servers.append(store.redis)
    return app


def test_expired_sessions_leave_the_list_and_the_registry_expires_last(
    make_app: MakeApp, clock: Clock
) -> None:
    app = timed(make_app, clock, RELAY_SESSION_LAST_SEEN_INTERVAL=60)
    early = logged_in(app)
    clock.advance(300)
    late = logged_in(app)
    assert len(listed(app)) == 2
    clock.advance(301)  # the first session's lifetime is over
    time.sleep(0.01)  # Redis keys the clock moved past keep 1 ms
    assert [info["current"] for info in devices(late)] == [True]
    assert signed_out(early)
    assert registry(app, "ada") in (None, [sid_of(late)])
    store = app.extensions["relay_session"].store
    if isinstance(store, RedisSessionStore):
        # The registry outlives its last session, and no more than needed.
        ttl = store.redis.pttl(store.user_key("ada"))
        session_ttl = store.redis.pttl(store.session_key(sid_of(late)))
        assert session_ttl < ttl <= 2 * 600_000 + 60_000
    clock.advance(1261)
    time.sleep(0.01)
    if isinstance(store, RedisSessionStore):
        assert not store.redis.exists(store.user_key("ada"))
    else:
        assert store.registered("ada", now=0) == []
        assert "ada" not in store._users
    assert listed(app) == []


def test_binding_drops_the_entries_past_their_end(
    make_app: MakeApp, clock: Clock
) -> None:
    app = timed(make_app, clock)
    store = app.extensions["relay_session"].store
    logged_in(app)
    clock.advance(2 * 600 + 61)  # past the entry's end
    logged_in(app)
    with app.app_context():
        assert len(store.registered("ada", now=int(clock() * 1000))) == 1


def test_a_bound_session_kept_alive_keeps_its_entry(
    make_app: MakeApp, clock: Clock
) -> None:
    """Its entry's end moves with each recorded visit: an hour of visits a
    minute apart, six times its lifetime, never drops it from the list.
    """
    app = timed(make_app, clock)
    client = logged_in(app)
    for _ in range(60):
        clock.advance(61)
        assert state(client)["user_id"] == "ada"
        assert len(listed(app)) == 1


@pytest.mark.parametrize("visit", ["refresh", "blind write"])
def test_a_bound_session_used_without_being_read_keeps_its_entry(
    make_app: MakeApp, clock: Clock, visit: str
) -> None:
    """Requests that never read the session (a permanent session's expiry
    refresh, writes that do not load it) record visits too: the session
    outlives the entry its login wrote many times over, and stays listed.
    """
    app = timed(make_app, clock)
    client = logged_in(app)
    client.post("/permanent")
    (first,) = listed(app)
    for _ in range(30):
        clock.advance(61)
        if visit == "refresh":
            assert client.get("/noop").status_code == 200
        else:
            assert client.post("/set/x").status_code == 200
    (info,) = listed(app)
    assert (info.last_seen - first.last_seen).total_seconds() == pytest.approx(1830)
    assert state(client)["user_id"] == "ada"


def test_last_seen_is_recorded_at_most_once_per_interval(
    make_app: MakeApp, clock: Clock
) -> None:
    app = timed(make_app, clock, RELAY_SESSION_LAST_SEEN_INTERVAL=60)
    client = logged_in(app)
    (first,) = listed(app)
    clock.advance(30)
    state(client)
    client.post("/set/a")
    assert listed(app)[0].last_seen == first.last_seen
    clock.advance(31)
    state(client)  # a read records it
    (read,) = listed(app)
    assert (read.last_seen - first.last_seen).total_seconds() == pytest.approx(61)
    clock.advance(61)
    client.post("/set/b")  # a write records it with the write
    (written,) = listed(app)
    assert (written.last_seen - read.last_seen).total_seconds() == pytest.approx(61)
    assert written.created_at == first.created_at


# --------------------------------------------------------------------------
# User ids
# --------------------------------------------------------------------------

ODD_USER_IDS = [
    "{ada}",
    "}{",
    "%7B",
    "a%b",
    "user:{x}",
    " ",
    "\n\t\x00\x7f",
    "ünïcødé 🙂",
    "a" * MAX_USER_ID_LENGTH,
    "é" * (MAX_USER_ID_LENGTH // 2),
    '"quoted", \\ back/slash',
    ',"meta":{"user":"bob"}',
]


@pytest.mark.parametrize("user", ODD_USER_IDS)
def test_any_string_is_a_user_id(make_app: MakeApp, user: str) -> None:
    app = add_views(make_app())

    @app.post("/odd")
    def odd() -> str:
        session["x"] = 1
        current().bind_user(user)
        return "ok"

    @app.get("/odd-user")
    def odd_user() -> t.Any:
        return jsonify(current().user_id)

    clients = [app.test_client() for _ in range(2)]
    for client in clients:
        client.post("/odd")
        assert client.get("/odd-user").json == user
    assert len(listed(app, user)) == 2
    # Not the same as a user whose id it escapes to, nor any other.
    for other in {escape_user_id(user), user + " ", user.upper()} - {user}:
        if len(other.encode()) <= MAX_USER_ID_LENGTH:
            assert listed(app, other) == []
    store = app.extensions["relay_session"].store
    if isinstance(store, RedisSessionStore):
        key = store.user_key(user)
        # One hash tag, holding the escaped id; no brace of the id in it.
        assert key == "sess:user:{" + escape_user_id(user) + "}"
        assert key.count("{") == key.count("}") == 1
        assert store.redis.zcard(key) == 2
    with app.app_context():
        assert relay_of(app).revoke_all(user) == 2
    assert all(signed_out(client) for client in clients)


def test_user_ids_escape_to_distinct_keys() -> None:
    escaped = [escape_user_id(user) for user in ODD_USER_IDS]
    assert len(set(escaped)) == len(ODD_USER_IDS)
    assert escape_user_id("{") != escape_user_id("%7B") == "%257B"
    for value in escaped:
        assert "{" not in value and "}" not in value
        assert all(0x20 <= ord(char) != 0x7F for char in value)


@pytest.mark.parametrize(
    ("user", "error"),
    [
        ("", ValueError),
        ("a" * (MAX_USER_ID_LENGTH + 1), ValueError),
        ("é" * (MAX_USER_ID_LENGTH // 2 + 1), ValueError),
        ("\ud800", ValueError),
        (42, TypeError),
        (None, TypeError),
        (b"ada", TypeError),
    ],
)
def test_bad_user_ids_are_refused_before_anything_is_stored(
    app: Flask, user: t.Any, error: type[Exception]
) -> None:
    @app.post("/bad")
    def bad() -> str:
        session["x"] = 1
        with pytest.raises(error):
            current().bind_user(user)
        with pytest.raises(error):
            relay_of(app).sessions_of(user)
        with pytest.raises(error):
            relay_of(app).revoke(user, "x" * 22)
        with pytest.raises(error):
            relay_of(app).revoke_all(user)
        return "ok"

    client = app.test_client()
    assert client.post("/bad").status_code == 200
    assert state(client)["user_id"] is None


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def test_the_client_is_recorded_cut_only_when_asked(make_app: MakeApp) -> None:
    app = add_views(make_app(RELAY_SESSION_TRACK_CLIENT=True))
    client = app.test_client()
    agent = "Mozilla/5.0 " + "x" * 500
    client.post(
        "/login/ada",
        headers={"User-Agent": agent},
        environ_base={"REMOTE_ADDR": "2001:db8::1"},
    )
    (info,) = listed(app)
    assert info.user_agent == agent[:200]
    assert info.ip == "2001:db8::1"
    plain = add_views(make_app())
    plain.test_client().post("/login/bob", headers={"User-Agent": agent})
    (info,) = listed(plain, "bob")
    assert (info.user_agent, info.ip) == (None, None)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RELAY_SESSION_TRACK_CLIENT", "yes"),
        ("RELAY_SESSION_TRACK_USERS", 1),
        ("RELAY_SESSION_LAST_SEEN_INTERVAL", -1),
        ("RELAY_SESSION_LAST_SEEN_INTERVAL", "60"),
    ],
)
def test_invalid_settings_are_refused(key: str, value: object) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="s", TESTING=True, **{key: value})
    with pytest.raises(SessionConfigError, match=key):
        RelaySession(app)


def test_a_store_without_users_refuses_the_user_api() -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="s", TESTING=True, RELAY_SESSION_STORE=CustomStore())
    add_views(app_with(app))
    client = app.test_client()
    client.post("/set/a")
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(SessionConfigError, match="SessionStoreUsers"):
        client.post("/bind/ada")
    with app.app_context(), pytest.raises(SessionConfigError, match="Users"):
        relay_of(app).sessions_of("ada")
    tracked = Flask(__name__)
    tracked.config.update(SECRET_KEY="s", RELAY_SESSION_STORE=CustomStore())
    tracked.config["RELAY_SESSION_TRACK_USERS"] = True
    with pytest.raises(SessionConfigError, match="RELAY_SESSION_TRACK_USERS"):
        RelaySession(tracked)


def app_with(app: Flask) -> Flask:
    RelaySession(app)
    return app


def test_a_registry_key_that_holds_something_else_is_replaced(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    store = app.extensions["relay_session"].store
    if not isinstance(store, RedisSessionStore):
        pytest.skip("Redis only: the memory store has no keys")
    store.redis.set(store.user_key("ada"), "not a registry")
    assert listed(app) == []
    assert "not a sorted set" in caplog.text
    caplog.clear()
    client = logged_in(app)
    assert "not a sorted set; it was replaced" in caplog.text
    assert [info["current"] for info in devices(client)] == [True]


def test_a_huge_handle_is_refused_at_once(app: Flask) -> None:
    client = logged_in(app)
    with app.app_context():
        assert relay_of(app).revoke("ada", "A" * 100_000) is False
    assert state(client)["user_id"] == "ada"
