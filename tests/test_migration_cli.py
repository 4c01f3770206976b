"""``flask relay-session migrate-flask-session``: every Flask-Session session
moved at once (see ``docs/migrating.rst``).

It walks the keys with ``SCAN``, never ``KEYS``; counts what it moved and
what it skipped; writes nothing with ``--dry-run``; can be run again and
interrupted; and a request moving the same session at the same moment ends
in the same one session. After it, the cookies of Flask-Session still find
their sessions on first use. The slow proof moves 10,000 sessions while
requests keep coming, with the command interrupted once.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import typing as t
from collections import Counter
from collections import defaultdict

import msgspec
import pytest
import redis
from click.testing import Result
from flask import Flask

from flask_relay_session.migration import FlaskSessionMigration
from flask_relay_session.migration import Marker
from flask_relay_session.serialization import loads

from .apps.migration_app import relay_app
from .helpers import client_with
from .helpers import sid_of
from .redis_servers import RedisServer
from .wsgi_servers import REPO_ROOT

COMMAND = ["relay-session", "migrate-flask-session"]
APP = "tests.apps.migration_app:create_app()"


def summary(**counts: int) -> str:
    """The summary the command prints, every count 0 unless given."""
    names = [
        "moved",
        "already moved",
        "skipped as pickled",
        "skipped as undecodable",
        "skipped as too large",
        "skipped as empty",
        "already gone",
    ]
    return "".join(
        f"{name}: {counts.get(name.replace(' ', '_'), 0)}\n" for name in names
    )


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=[*COMMAND, *args])


def plant(client: redis.Redis, data: dict[str, t.Any] | bytes, ttl: int = 3600) -> str:
    sid = secrets.token_urlsafe(32)
    raw = data if isinstance(data, bytes) else msgspec.msgpack.encode(data)
    client.set("session:" + sid, raw, ex=ttl)
    return sid


def user(name: str) -> dict[str, t.Any]:
    """A Flask-Session session of a signed-in user with a cart."""
    return {"_permanent": True, "_user_id": name, "_fresh": True, "cart": [name]}


def stored_data(client: redis.Redis, sid: str) -> dict[str, t.Any] | None:
    """The data of this extension's session ``sid`` (JSON layout)."""
    raw = client.get(f"sess:{{{sid}}}")
    return None if raw is None else t.cast(dict[str, t.Any], loads(raw)["data"])


def markers(client: redis.Redis) -> dict[str, Marker]:
    """Every Flask-Session key that holds a marker, by sid."""
    found = {}
    for key in client.scan_iter(match="session:*", count=1000):
        if client.type(key) != b"string":
            continue
        raw = client.get(key)
        marker = None if raw is None else Marker.parse(raw)
        if marker is not None:
            found[key.decode().removeprefix("session:")] = marker
    return found


def our_sids(client: redis.Redis) -> set[str]:
    return {
        key.decode()[len("sess:{") : -1]
        for key in client.scan_iter(match="sess:{*", count=1000)
    }


def test_the_command_moves_every_session_and_counts_what_it_skipped(
    redis_client: redis.Redis,
) -> None:
    app = relay_app(redis_client, RELAY_SESSION_MAX_SIZE=10_000)
    users = {plant(redis_client, user(f"user-{n}")): f"user-{n}" for n in range(25)}
    users[plant(redis_client, msgspec.json.encode(user("json")))] = "json"
    import pickle

    plant(redis_client, pickle.dumps({"_user_id": "old"}))
    plant(redis_client, pickle.dumps({"_user_id": "older"}, protocol=0))
    plant(redis_client, b"\x00not a session")
    redis_client.hset("session:" + secrets.token_urlsafe(32), "a", "b")
    plant(redis_client, {"cart": "x" * 20_000})
    plant(redis_client, {"_permanent": True})
    earlier = plant(redis_client, user("earlier"))
    # Moved by a request before the command ran.
    assert client_with(app, earlier).get("/me").json["user"] == "earlier"
    # Not Flask-Session's: other keys under its prefix, never read.
    redis_client.set("session:lock:{abc}", b"\x80")
    redis_client.set("session:too-short", b"\x80")

    result = run(app, "--batch", "7")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout == summary(
        moved=26,
        already_moved=1,
        skipped_as_pickled=2,
        skipped_as_undecodable=2,
        skipped_as_too_large=1,
        skipped_as_empty=1,
    )
    assert "Moving Flask-Session's sessions" in result.stderr
    found = markers(redis_client)
    assert len(found) == 27
    assert our_sids(redis_client) == {marker.sid for marker in found.values()}
    # Each marker lives as long as its session; the cookie's first use
    # follows it, gets this extension's cookie, and ends the marker after
    # the grace period.
    for sid, name in users.items():
        marker = found[sid]
        assert marker.permanent is True
        assert stored_data(redis_client, marker.sid) == {
            "_user_id": name,
            "_fresh": True,
            "cart": [name],
        }
        assert redis_client.pttl("session:" + sid) > 3_500_000
    sid, name = next(iter(users.items()))
    browser = client_with(app, sid)
    me = browser.get("/me").json
    assert (me["user"], me["cart"], me["permanent"]) == (name, [name], True)
    assert sid_of(browser) == found[sid].sid
    assert redis_client.pttl("session:" + sid) <= 60_000

    # Run again: nothing left to move, nothing changes.
    before = set(redis_client.keys("*"))
    again = run(app)
    assert again.stdout == summary(
        already_moved=27,
        skipped_as_pickled=2,
        skipped_as_undecodable=2,
        skipped_as_too_large=1,
        skipped_as_empty=1,
    )
    assert set(redis_client.keys("*")) == before


def test_a_dry_run_counts_and_writes_nothing(redis_client: redis.Redis) -> None:
    app = relay_app(redis_client)
    for n in range(5):
        plant(redis_client, user(f"user-{n}"))
    plant(redis_client, b"\x80\x04garbage.")

    def everything() -> dict[bytes, tuple[bytes | None, int]]:
        return {
            key: (redis_client.get(key), redis_client.ttl(key))
            for key in redis_client.keys("*")
        }

    before = everything()
    result = run(app, "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == (
        summary(moved=5, skipped_as_pickled=1).replace("moved:", "would move:", 1)
        + "dry run: nothing was written\n"
    )
    assert everything() == before


def test_the_command_needs_the_migration_setting(redis_client: redis.Redis) -> None:
    app = relay_app(redis_client, RELAY_SESSION_MIGRATE_FLASK_SESSION=False)
    result = run(app)
    assert result.exit_code == 2
    assert "RELAY_SESSION_MIGRATE_FLASK_SESSION = True" in result.stderr


def test_an_unreachable_redis_exits_3(redis_client: redis.Redis) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    down = redis.Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    app = relay_app(redis_client, RELAY_SESSION_MIGRATE_FLASK_SESSION_REDIS=down)
    result = run(app)
    assert result.exit_code == 3
    assert "cannot be reached" in result.stderr


def test_a_request_moving_the_same_session_at_the_same_moment_ends_in_one(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = relay_app(redis_client)
    sids = [plant(redis_client, user(f"user-{n}")) for n in range(6)]
    migration = app.extensions["relay_session"].interface.migration
    assert isinstance(migration, FlaskSessionMigration)
    read = migration.read
    raced: dict[str, str] = {}

    def read_then_race(batch: t.Sequence[str]) -> t.Any:
        snapshots = read(batch)
        if len(batch) > 1:
            # Between the command's read and its move, requests move every
            # other session of the batch themselves.
            for sid in batch[::2]:
                browser = client_with(app, sid)
                browser.get("/me")
                raced[sid] = sid_of(browser)
        return snapshots

    monkeypatch.setattr(migration, "read", read_then_race)
    result = run(app)
    assert result.stdout == summary(moved=3, already_moved=3)
    found = markers(redis_client)
    assert our_sids(redis_client) == {marker.sid for marker in found.values()}
    assert len(our_sids(redis_client)) == len(sids)
    for sid, new in raced.items():
        assert found[sid].sid == new


def test_our_own_keys_under_the_same_prefix_are_left_alone(
    redis_client: redis.Redis,
) -> None:
    app = relay_app(redis_client, RELAY_SESSION_KEY_PREFIX="session:")
    browser = app.test_client()
    browser.post("/login/live")
    live = set(redis_client.keys("*"))
    assert any(b"{" in key for key in live)
    plant(redis_client, user("old"))
    result = run(app)
    assert result.stdout == summary(moved=1)
    assert live <= set(redis_client.keys("*"))
    assert browser.get("/me").json["user"] == "live"


# --------------------------------------------------------------------------
# 10,000 sessions while requests keep coming
# --------------------------------------------------------------------------

SESSIONS = 10_000


def command(redis_server: RedisServer, *args: str) -> subprocess.Popen[str]:
    """The command in a process of its own, as an operator runs it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RELAY_TEST_", "FLASK_"))
    }
    env.update(
        RELAY_TEST_REDIS_URL=redis_server.url,
        PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")])),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", APP, *COMMAND, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def parse_summary(output: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in output.splitlines():
        name, _, number = line.rpartition(": ")
        if number.isdigit():
            counts[name] = int(number)
    return counts


def read_all(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    """``GET`` each of ``keys``, a thousand per round trip."""
    values: list[bytes | None] = []
    for start in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 1000]:
            pipe.get(key)
        values += pipe.execute()
    return values


def markers_of(client: redis.Redis, sids: list[str]) -> dict[str, Marker]:
    """The markers the Flask-Session keys of ``sids`` hold, by sid."""
    found = {}
    values = read_all(client, [f"session:{sid}" for sid in sids])
    for sid, raw in zip(sids, values, strict=True):
        marker = None if raw is None else Marker.parse(raw)
        if marker is not None:
            found[sid] = marker
    return found


@pytest.mark.slow
def test_ten_thousand_sessions_move_while_requests_keep_coming(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    report: t.Callable[[str], None],
) -> None:
    import pickle

    from .apps import DEFAULT_SECRET_KEY

    pipe = redis_client.pipeline(transaction=False)
    names = {}
    for n in range(SESSIONS):
        sid = secrets.token_urlsafe(32)
        names[sid] = f"user-{n}"
        pipe.set("session:" + sid, msgspec.msgpack.encode(user(f"user-{n}")), ex=3600)
    for n in range(10):
        pipe.set(
            "session:" + secrets.token_urlsafe(32), pickle.dumps({"n": n}), ex=3600
        )
    pipe.execute()
    sids = list(names)

    # The app serving the traffic. Its markers outlive the test, so that
    # every old key can be checked at the end.
    app = relay_app(
        redis_client,
        SECRET_KEY=DEFAULT_SECRET_KEY,
        RELAY_SESSION_MIGRATE_FLASK_SESSION_GRACE_PERIOD=3600,
        RELAY_SESSION_LOCK_RETRIES=200,
        RELAY_SESSION_LOCK_BACKOFF=0.005,
    )
    added: dict[str, list[str]] = defaultdict(list)
    added_lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    requests = Counter[str]()
    #: The cookie of each browser once it got this extension's: a browser
    #: keeps the cookie it is given.
    cookies: dict[str, str] = {}

    def traffic(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not stop.is_set():
            sid = rng.choice(sids)
            browser = client_with(app, cookies.get(sid, sid))
            for _ in range(rng.randint(1, 3)):
                n += 1
                item = f"item-{seed}-{n}"
                response = browser.post(f"/cart/{item}")
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    return
                with added_lock:
                    added[sid].append(item)
                    requests["writes"] += 1
            me = browser.get("/me").json
            if me["user"] != names[sid]:
                failures.append(f"{sid[:8]}… read as {me}")
                return
            cookies[sid] = t.cast(t.Any, browser.get_cookie("session")).value

    threads = [threading.Thread(target=traffic, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    sample = sids[:: SESSIONS // 100]
    try:
        # Interrupted once, in the middle: SIGKILL, as a crash would.
        first = command(redis_server, "--batch", "200")
        deadline = time.monotonic() + 120
        while len(markers_of(redis_client, sample)) < len(sample) // 4:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        interrupted = len(markers_of(redis_client, sids))

        started = time.monotonic()
        second = command(redis_server, "--batch", "500")
        output, errors = second.communicate(timeout=300)
        took = time.monotonic() - started
        assert second.returncode == 0, output + errors
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    counts = parse_summary(output)
    assert counts["moved"] + counts["already moved"] == SESSIONS, output
    assert counts["skipped as pickled"] == 10
    assert counts["already moved"] >= interrupted

    # Every old key leads to a session of its own, which holds the old data
    # and every write made to it. The only session no marker names is at
    # most the copy the interruption left between its two steps, which
    # expires with its TTL.
    found = markers_of(redis_client, sids)
    assert set(found) == set(sids)
    targets = [found[sid].sid for sid in sids]
    assert len(set(targets)) == SESSIONS
    orphans = our_sids(redis_client) - set(targets)
    assert len(orphans) <= 1
    stored = read_all(redis_client, [f"sess:{{{new}}}" for new in targets])
    for sid, raw in zip(sids, stored, strict=True):
        assert raw is not None, sid
        data = loads(raw)["data"]
        assert data["_user_id"] == names[sid]
        assert sorted(data["cart"]) == sorted([names[sid], *added.get(sid, [])])

    third = command(redis_server)
    output, _ = third.communicate(timeout=120)
    assert parse_summary(output)["already moved"] == SESSIONS
    report(
        f"{SESSIONS} sessions: the interrupted run moved about {interrupted}; the"
        f" second moved {counts['moved']} in {took:.1f} s, found"
        f" {counts['already moved']} moved already (by the first run or by"
        f" requests) and skipped {counts['skipped as pickled']} pickles;"
        f" meanwhile {requests['writes']} writes through {len(added)} sessions'"
        f" cookies, none lost; {len(orphans)} orphan copy from the interruption"
    )
