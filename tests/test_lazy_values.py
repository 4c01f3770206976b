"""A request decodes only the stored values it reads.

The memory store and both Redis layouts give the session each top-level
value still encoded (:class:`~flask_relay_session.serialization.LazyValue`);
the session decodes one the first time the request reads its key. The JSON
layout splits its document with ``msgspec``, and without it, or for a
document ``msgspec`` cannot split, decodes it whole. These tests count the
decodes, and check that a value never read is written back, when it is,
exactly as it was stored.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable
from collections.abc import Iterator

import pytest
from flask import Flask
from flask import jsonify
from flask import session

from flask_relay_session import RedisSessionStore
from flask_relay_session.changes import Changes
from flask_relay_session.serialization import LazyValue
from flask_relay_session.stores import layouts

from .redis_servers import RedisServer

#: The stores that hand out values still encoded.
LAZY_STORES = ["memory", "redis7-hash", "redis6-hash", "redis7-json", "redis6-json"]

BIG = {f"key{index}": {"items": list(range(50)), "n": index} for index in range(40)}


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the stored values decoded, by the length of their JSON."""
    seen: list[int] = []
    decode = LazyValue.decode

    def counting(self: LazyValue) -> t.Any:
        seen.append(len(self.json))
        return decode(self)

    monkeypatch.setattr(LazyValue, "decode", counting)
    yield seen


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app()

    @app.post("/seed")
    def seed() -> str:
        session.update(BIG)
        session["user"] = {"name": "ada"}
        return "ok"

    @app.get("/user")
    def user() -> t.Any:
        return jsonify(session["user"])

    @app.post("/touch")
    def touch() -> str:
        session["key3"]["n"] = -3
        session["seen"] = True
        return "ok"

    @app.post("/forced")
    def forced() -> str:
        session.get("key7")
        session.modified = True
        return "ok"

    @app.get("/all")
    def everything() -> t.Any:
        return jsonify(dict(session))

    return app


@pytest.mark.parametrize("store_config", LAZY_STORES, indirect=True)
def test_a_request_decodes_only_the_values_it_reads(
    app: Flask, decodes: list[int]
) -> None:
    client = app.test_client()
    client.post("/seed")
    decodes.clear()
    assert client.get("/user").json == {"name": "ada"}
    assert len(decodes) == 1
    decodes.clear()
    assert client.post("/touch").status_code == 200
    assert len(decodes) == 1  # key3; "seen" is only set
    decodes.clear()
    assert client.post("/forced").status_code == 200
    assert len(decodes) == 1  # key7, written back as it was stored
    decodes.clear()
    expected = dict(BIG, user={"name": "ada"}, seen=True)
    expected["key3"] = {"items": list(range(50)), "n": -3}
    assert client.get("/all").json == expected
    assert len(decodes) == len(expected)


@pytest.mark.parametrize("store_config", ["redis7-json"], indirect=True)
def test_without_msgspec_the_json_layout_decodes_its_document_whole(
    app: Flask, decodes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layouts, "split_document", None)
    client = app.test_client()
    client.post("/seed")
    assert client.get("/user").json == {"name": "ada"}
    assert client.post("/touch").status_code == 200
    expected = dict(BIG, user={"name": "ada"}, seen=True)
    expected["key3"] = {"items": list(range(50)), "n": -3}
    assert client.get("/all").json == expected
    assert decodes == []


def test_a_document_msgspec_cannot_split_is_decoded_whole(
    redis7_server: RedisServer,
) -> None:
    # JSON that Python reads and msgspec refuses (a lone surrogate escape,
    # which the package never writes), as another program might store it.
    document = b'{"data":{"a":"\\ud800x","b":[1]},"meta":{"createdAt":17000}}'
    assert layouts.split_document is not None
    assert layouts.split_document(document) is None
    sid = "a" * 64
    with redis7_server.client() as client:
        store = RedisSessionStore(client, layout="json")
        client.set(store.session_key(sid), document, px=60_000)
        stored = store.load(sid, ttl=None)
        client.delete(store.session_key(sid))
    assert stored is not None
    assert stored.data == {"a": "\ud800x", "b": [1]}
    assert stored.created_at == 17000


def test_a_value_never_read_is_written_back_byte_for_byte() -> None:
    changes = Changes()
    stored = b'{"b":[1,2.5,"x"]}'
    changes.show({"a": LazyValue(stored), "b": LazyValue(b"1")})
    changes.forced = True
    changes.read_keys = None
    changes.data["b"] = 2
    encoded = dict(changes.encode(changes.pending(new=False)))
    assert encoded == {("a",): stored, ("b",): b"2"}
