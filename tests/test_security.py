"""A security review of the session cookie, the store and the locks.

- Session ids: 256 bits from :mod:`secrets`, 64 hex digits, never repeated.
- Signatures: HMAC-SHA256 compared with :func:`hmac.compare_digest`; a
  cookie that does not verify never reaches the store, even when its id is
  real (an attacker who can read Redis learns ids, not cookies).
- No pickle anywhere: stored sessions are JSON, and a pickle planted in
  Redis is never unpickled.
- Session fixation: what :meth:`Session.rotate_id` does and does not
  protect against while the old id still redirects (SPEC §6), and the
  login pattern that closes the window.
- Locks expire: a client cannot hold a session's lock forever.
"""

from __future__ import annotations

import hmac
import inspect
import os
import pathlib
import pickle
import re
import time
import typing as t

import pytest
from flask import Flask
from flask import jsonify
from flask import session
from flask.testing import FlaskClient

import flask_relay_session
from flask_relay_session import RedisSessionStore
from flask_relay_session import RelaySession
from flask_relay_session import cookies
from flask_relay_session.cookies import CookieContent
from flask_relay_session.cookies import CookieSigner
from flask_relay_session.session import Session

from .redis_servers import CountingRedis
from .redis_servers import RedisServer

MakeApp = t.Callable[..., Flask]
PACKAGE = pathlib.Path(flask_relay_session.__file__).parent


def add_views(app: Flask) -> Flask:
    @app.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(
            user=session.get("user"),
            cart=session.get("cart"),
            new=session.new,
            redirected=session.is_redirected,  # type: ignore[attr-defined]
        )

    @app.post("/cart/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", []).append(item)
        return "ok"

    @app.post("/login/rotate/<user>")
    def login_rotate(user: str) -> str:
        session["user"] = user
        session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/login/rotate-now/<user>")
    def login_rotate_now(user: str) -> str:
        session["user"] = user
        session.rotate_id(grace_period=0)  # type: ignore[attr-defined]
        return "ok"

    @app.post("/login/fresh/<user>")
    def login_fresh(user: str) -> str:
        # Keep what the anonymous session held, but under a new id whose
        # old one leads nowhere: the planted cookie is worthless at once.
        kept = dict(session)
        session.destroy()  # type: ignore[attr-defined]
        session.update(kept)
        session["user"] = user
        return "ok"

    @app.post("/incr")
    def incr() -> str:
        with session.lock():  # type: ignore[attr-defined]
            session["n"] = session.get("n", 0) + 1
        return "ok"

    return app


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def browser_with(app: Flask, cookie: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


# --------------------------------------------------------------------------
# Session ids
# --------------------------------------------------------------------------


def test_session_ids_are_256_bits_from_secrets_token_hex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = inspect.getsource(cookies.new_session_id)
    assert "secrets.token_hex(32)" in source
    calls: list[int] = []
    real = cookies.secrets.token_hex

    def spy(nbytes: int | None = None) -> str:
        calls.append(t.cast(int, nbytes))
        return real(nbytes)

    monkeypatch.setattr(cookies.secrets, "token_hex", spy)
    sid = cookies.new_session_id()
    assert calls == [32]
    assert re.fullmatch(r"[0-9a-f]{64}", sid)


def test_session_ids_are_distinct_and_evenly_spread() -> None:
    sids = [cookies.new_session_id() for _ in range(20_000)]
    assert len(set(sids)) == len(sids)
    assert all(re.fullmatch(r"[0-9a-f]{64}", sid) for sid in sids)
    # Every hex digit at every position: about 1/16 each (20000/16 = 1250).
    for position in (0, 31, 63):
        counts = {digit: 0 for digit in "0123456789abcdef"}
        for sid in sids:
            counts[sid[position]] += 1
        assert min(counts.values()) > 1000
        assert max(counts.values()) < 1500


def test_the_app_issues_new_ids_for_every_new_session(make_app: MakeApp) -> None:
    app = add_views(make_app())
    seen = set()
    for _ in range(50):
        browser = app.test_client()
        assert browser.post("/cart/x").status_code == 200
        sid = cookie_of(browser).split(".")[0]
        assert re.fullmatch(r"[0-9a-f]{64}", sid)
        seen.add(sid)
    assert len(seen) == 50


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------


def test_signatures_are_compared_with_hmac_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[t.Any, t.Any]] = []
    real = hmac.compare_digest

    def spy(a: t.Any, b: t.Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(cookies.hmac, "compare_digest", spy)
    signer = CookieSigner(["old secret", "secret"])
    value = signer.sign(CookieContent(cookies.new_session_id(), True, 2_000_000_000))
    assert signer.verify(value) is not None
    assert len(calls) == 1
    calls.clear()
    sid, signature, flags = value.split(".")
    forged = f"{sid}.{'A' * 43}.{flags}"
    assert signer.verify(forged) is None
    # Each accepted key was compared, all in constant time.
    assert len(calls) == 2
    assert all(b == "A" * 43 for _, b in calls)
    body = inspect.getsource(CookieSigner.verify).split('"""')[-1]
    assert not re.search(r"signature\s*[!=]=|[!=]=\s*signature", body)


def test_a_cookie_signed_with_another_key_is_rejected() -> None:
    attacker = CookieSigner(["guessed secret"])
    server = CookieSigner(["secret"])
    content = CookieContent(cookies.new_session_id(), False, 2_000_000_000)
    assert server.verify(attacker.sign(content)) is None
    # And the key is not used raw: an HMAC of the message with SECRET_KEY
    # itself (without the derivation) is not the signature either.
    raw = hmac.digest(b"secret", f"{content.sid}.02000000000".encode(), "sha256")
    import base64

    naive = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert server.verify(f"{content.sid}.{naive}.02000000000") is None


def test_an_attacker_who_reads_redis_cannot_use_the_ids_it_holds(
    counting_redis: CountingRedis,
) -> None:
    """Redis read access reveals session ids; without ``SECRET_KEY`` none of
    them can be turned into a cookie, and trying costs the store nothing."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="server secret", RELAY_SESSION_REDIS=counting_redis)
    RelaySession(app)
    add_views(app)
    victim = app.test_client()
    assert victim.post("/login/rotate/victim").status_code == 200
    stolen_sid = cookie_of(victim).split(".")[0]
    assert counting_redis.exists(f"sess:{{{stolen_sid}}}")
    attempts = [
        stolen_sid,
        f"{stolen_sid}.{'A' * 43}.02000000000",
        CookieSigner(["not the secret"]).sign(
            CookieContent(stolen_sid, True, 2_000_000_000)
        ),
        cookie_of(victim).rsplit(".", 1)[0] + ".19999999999",  # longer expiry
        cookie_of(victim).replace(".0", ".1", 1),  # made permanent
    ]
    for cookie in attempts:
        counting_redis.counter.reset()
        response = app.test_client(use_cookies=False).get(
            "/whoami", headers={"Cookie": f"session={cookie}"}
        )
        assert response.json == {
            "user": None,
            "cart": None,
            "new": True,
            "redirected": False,
        }
        assert counting_redis.counter.round_trips == 0


def test_session_ids_in_cookies_cannot_carry_key_syntax() -> None:
    """Only 64 lowercase hex digits reach a key name: no braces to break the
    cluster hash tag, no glob characters, no separators."""
    signer = CookieSigner(["secret"])
    for sid in ("a" * 63 + "}", "{" + "a" * 63, "*" * 64, "A" * 64, "a" * 65):
        value = signer.sign(CookieContent(sid, False, 2_000_000_000))
        assert signer.verify(value) is None


# --------------------------------------------------------------------------
# No pickle
# --------------------------------------------------------------------------


def test_bound_values_are_hashed_unambiguously() -> None:
    assert cookies.bind_values(["a|b", "c"]) != cookies.bind_values(["a", "b|c"])
    assert cookies.bind_values(["ab", ""]) != cookies.bind_values(["a", "b"])
    assert cookies.bind_values(["1:a"]) != cookies.bind_values(["1", "a"])
    assert cookies.bind_values([None]) != cookies.bind_values([""])
    assert cookies.bind_values([None]) != cookies.bind_values(["-"])
    assert cookies.bind_values("agent") == cookies.bind_values(["agent"])
    with pytest.raises(TypeError, match="RELAY_SESSION_SIGN_WITH"):
        cookies.bind_values(["agent", 42])  # type: ignore[list-item]


def test_a_cookie_bound_to_two_values_does_not_verify_with_a_shifted_split(
    make_app: MakeApp,
) -> None:
    app = add_views(
        make_app(
            RELAY_SESSION_SIGN_WITH=lambda request: [
                request.headers.get("X-Tenant"),
                request.headers.get("X-Agent"),
            ]
        )
    )
    client = app.test_client()
    bound = {"X-Tenant": "a|b", "X-Agent": "c"}
    client.post("/cart/apple", headers=bound)
    assert client.get("/whoami", headers=bound).json["cart"] == ["apple"]
    shifted = {"X-Tenant": "a", "X-Agent": "b|c"}
    assert client.get("/whoami", headers=shifted).json["cart"] is None
    # A header the client does not send binds as "absent", not as a 500.
    client.post("/cart/pear", headers={"X-Tenant": "t"})
    assert client.get("/whoami", headers={"X-Tenant": "t"}).json["cart"] == ["pear"]


def test_the_package_never_uses_pickle_or_other_code_loading_formats() -> None:
    forbidden = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|shelve|marshal|jsonpickle)\b"
        r"|\b(pickle|marshal|shelve|dill)\.\w+"
        r"|yaml\.(unsafe_)?load\b"
        r"|(?<![.\w])(eval|exec)\(",
        re.MULTILINE,
    )
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for match in forbidden.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(PACKAGE)}: {match.group(0)}")
    assert offenders == []
    # The Lua scripts load no code either.
    for path in sorted(PACKAGE.rglob("*.lua")):
        text = path.read_text()
        assert not re.search(r"\b(loadstring|load|dofile|require)\s*\(", text), path


class Planted:
    def __reduce__(self) -> tuple[t.Any, ...]:
        return (os.system, ("touch PWNED",))


def test_a_pickle_planted_in_redis_is_never_unpickled(
    redis_server: RedisServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = Flask(__name__)
    app.config.update(SECRET_KEY="secret", RELAY_SESSION_REDIS=redis_server.url)
    RelaySession(app)
    add_views(app)
    browser = app.test_client()
    assert browser.post("/cart/x").status_code == 200
    sid = cookie_of(browser).split(".")[0]
    with redis_server.client() as client:
        client.set(f"sess:{{{sid}}}", pickle.dumps(Planted()))
    response = browser.get("/whoami")
    assert not (tmp_path / "PWNED").exists()
    # The request fails (the document is not JSON) rather than serving it.
    assert response.status_code != 200 or response.json["cart"] is None


# --------------------------------------------------------------------------
# Session fixation
# --------------------------------------------------------------------------


@pytest.fixture
def fixation_app(redis_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret",
        RELAY_SESSION_REDIS=redis_url,
        RELAY_SESSION_ROTATION_GRACE_PERIOD=30,
    )
    RelaySession(app)
    return add_views(app)


def plant(app: Flask) -> tuple[str, FlaskClient]:
    """The attacker gets a session cookie of their own and plants it in the
    victim's browser; the victim shops, then logs in with it."""
    attacker = app.test_client()
    assert attacker.post("/cart/bait").status_code == 200
    planted = cookie_of(attacker)
    victim = browser_with(app, planted)
    assert victim.post("/cart/book").status_code == 200
    return planted, victim


def test_rotation_on_login_gives_the_victim_a_new_cookie(fixation_app: Flask) -> None:
    planted, victim = plant(fixation_app)
    assert victim.post("/login/rotate/victim").status_code == 200
    assert cookie_of(victim) != planted
    assert victim.get("/whoami").json["user"] == "victim"


def test_within_the_grace_period_a_planted_cookie_follows_the_rotation(
    fixation_app: Flask,
) -> None:
    """SPEC §6 by design: the old id redirects to the new session during the
    grace period, and the request that follows it is handed the new cookie.
    An attacker polling with the planted cookie thus gets into the logged-in
    session, and keeps the new cookie for the session's whole lifetime.
    ``rotate_id()`` with a grace period is no defence against fixation:
    see the tests below for the two login patterns that are.
    """
    planted, victim = plant(fixation_app)
    assert victim.post("/login/rotate/victim").status_code == 200
    attacker = browser_with(fixation_app, planted)
    assert attacker.get("/whoami").json["user"] == "victim"
    upgraded = cookie_of(attacker)
    assert upgraded == cookie_of(victim)
    # Even once the redirect is gone, the upgraded cookie still works.
    store = fixation_app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    store.redis.delete(store.session_key(planted.split(".")[0]))
    assert browser_with(fixation_app, upgraded).get("/whoami").json["user"] == "victim"


def test_after_the_grace_period_a_planted_cookie_gives_a_fresh_session(
    fixation_app: Flask,
) -> None:
    planted, victim = plant(fixation_app)
    assert victim.post("/login/rotate/victim").status_code == 200
    store = fixation_app.extensions["relay_session"].store
    assert isinstance(store, RedisSessionStore)
    old_key = store.session_key(planted.split(".")[0])
    ttl = store.redis.pttl(old_key)
    assert 25_000 < ttl <= 30_000  # the redirect lives for the grace period
    store.redis.pexpire(old_key, 1)  # fast-forward to its end
    time.sleep(0.01)
    response = browser_with(fixation_app, planted).get("/whoami")
    assert response.status_code == 200
    assert response.json["user"] is None
    assert response.json["new"] is True
    assert victim.get("/whoami").json["user"] == "victim"


def test_destroy_and_copy_on_login_locks_a_planted_cookie_out_at_once(
    fixation_app: Flask,
) -> None:
    planted, victim = plant(fixation_app)
    assert victim.post("/login/fresh/victim").status_code == 200
    assert victim.get("/whoami").json == {
        "user": "victim",
        "cart": ["bait", "book"],
        "new": False,
        "redirected": False,
    }
    attacker = browser_with(fixation_app, planted)
    assert attacker.get("/whoami").json == {
        "user": None,
        "cart": None,
        "new": True,
        "redirected": False,
    }
    assert cookie_of(victim) != planted
    # The attacker's cookie led nowhere, so the response dropped it.
    assert attacker.get_cookie("session") is None


@pytest.mark.skipif(
    "grace_period" not in inspect.signature(Session.rotate_id).parameters,
    reason="Session.rotate_id has no grace_period parameter",
)
def test_rotation_without_grace_on_login_locks_a_planted_cookie_out_at_once(
    fixation_app: Flask,
) -> None:
    planted, victim = plant(fixation_app)
    assert victim.post("/login/rotate-now/victim").status_code == 200
    assert victim.get("/whoami").json == {
        "user": "victim",
        "cart": ["bait", "book"],
        "new": False,
        "redirected": False,
    }
    attacker = browser_with(fixation_app, planted)
    response = attacker.get("/whoami")
    assert response.status_code == 200
    assert response.json["user"] is None
    assert response.json["new"] is True
    assert attacker.get_cookie("session") is None
    store = fixation_app.extensions["relay_session"].store
    assert store.redis.exists(store.session_key(planted.split(".")[0])) == 0


# --------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------


def test_a_lock_left_behind_expires_and_cannot_block_the_session_forever(
    redis_url: str,
) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret",
        RELAY_SESSION_REDIS=redis_url,
        RELAY_SESSION_LOCK_TTL=0.3,
        RELAY_SESSION_LOCK_RETRIES=20,
        RELAY_SESSION_LOCK_BACKOFF=0.01,
    )
    RelaySession(app)
    add_views(app)
    browser = app.test_client()
    assert browser.post("/incr").status_code == 200
    sid = cookie_of(browser).split(".")[0]
    store = app.extensions["relay_session"].store
    # A holder that crashed, or a client that took the lock and vanished.
    assert store.lock(sid, "crashed holder", 300)
    assert 0 < store.redis.pttl(store.lock_key(sid)) <= 300
    started = time.monotonic()
    assert browser.post("/incr").status_code == 200
    waited = time.monotonic() - started
    assert 0.2 < waited < 2.0
    assert browser.get("/whoami").status_code == 200
    assert store.redis.exists(store.lock_key(sid)) == 0


def test_every_lock_a_request_takes_has_the_configured_ttl(redis_url: str) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="secret", RELAY_SESSION_REDIS=redis_url, RELAY_SESSION_LOCK_TTL=2
    )
    RelaySession(app)
    add_views(app)
    seen: list[int] = []

    @app.post("/slow-lock")
    def slow_lock() -> str:
        with session.lock():  # type: ignore[attr-defined]
            store = app.extensions["relay_session"].store
            seen.append(store.redis.pttl(store.lock_key(session.sid)))  # type: ignore[attr-defined]
            session["x"] = 1
        return "ok"

    browser = app.test_client()
    assert browser.post("/incr").status_code == 200
    assert browser.post("/slow-lock").status_code == 200
    assert len(seen) == 1 and 1_000 < seen[0] <= 2_000
