"""A counter, a cart and a login: what flask-relay-session does, in one page.

On the embedded in-memory store (nothing else to install or run)::

    python -m pip install -e . && flask --app examples/demo.py run

On Redis, with one variable set::

    RELAY_SESSION_REDIS=redis://localhost:6379/0 flask --app examples/demo.py run

The first log line names the store in use. Then open http://127.0.0.1:5000/.
After each action the page lists what that request sent to the store, as the
extension's :mod:`~flask_relay_session.signals` reported it: the paths each
save wrote, a rotation, a destroy. ``/state`` answers the session's data as
JSON, for ``curl``.
"""

from __future__ import annotations

import logging
import os
import typing as t
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urlsplit

from flask import Flask
from flask import flash
from flask import g
from flask import get_flashed_messages
from flask import redirect
from flask import render_template_string
from flask import request
from flask import request_finished
from flask import session
from flask import url_for

from flask_relay_session import MemorySessionStore
from flask_relay_session import RelaySession
from flask_relay_session import signals

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from flask_relay_session import Session

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev only: change me")
# Unset: sessions live in a MemorySessionStore inside this process (the
# extension logs a warning saying so, since that is not for production).
app.config["RELAY_SESSION_REDIS"] = os.environ.get("RELAY_SESSION_REDIS")
app.config["RELAY_SESSION_KEY_PREFIX"] = os.environ.get(
    "RELAY_SESSION_KEY_PREFIX", "sess:"
)
relay = RelaySession(app)


def redact_password(url: str) -> str:
    """Return the Redis ``url`` with its password, if any, replaced by ``***``.

    redis-py takes a password from the user info (``redis://user:pw@host``)
    or from a ``password`` query argument; both are hidden.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        # The user info ends at the last "@", as urlsplit itself reads it.
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        hidden = [(name, "***" if name == "password" else v) for name, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return parts.geturl()


# INFO, so that this line shows under ``flask run``.
app.logger.setLevel(logging.INFO)
if isinstance(app.extensions["relay_session"].store, MemorySessionStore):
    app.logger.info(
        "Sessions are kept in the memory store of this process; set"
        " RELAY_SESSION_REDIS=redis://localhost:6379/0 to keep them in Redis."
    )
else:
    app.logger.info(
        "Sessions are kept in Redis at %s, under the key prefix %r.",
        redact_password(app.config["RELAY_SESSION_REDIS"]),
        app.config["RELAY_SESSION_KEY_PREFIX"],
    )

#: The cookie that carries what a request sent to the store on to the next
#: page. It cannot travel in the session: the session is saved after the
#: view, so what was saved is only known once the session is already saved.
LAST_REQUEST_COOKIE = "demo_last_request"

#: The session keys that Flask itself writes, and what they hold.
FLASK_KEYS = {"_flashes": "Flask's own key, for flashed messages"}

PAGE = """<!doctype html>
<title>flask-relay-session demo</title>
<style>body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
form { display: inline; } code { background: #eee; padding: 0 .2em; }</style>
<h1>flask-relay-session demo</h1>
{% for message in messages %}<p><strong>{{ message }}</strong></p>{% endfor %}
{% if last_request %}<p>The last request sent to the store:</p>
<ul>{% for line in last_request %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
<p>Session <code>{{ sid[:12] }}…</code>
{%- if user %}, signed in as <strong>{{ user }}</strong>{% endif %}
{%- if empty %} (empty, so not kept in the store: a session is stored with its
first write and deleted once empty; until then each reload shows a new
id){% endif %}</p>

<h2>Counter: {{ visits }}</h2>
<form method=post action="{{ url_for('count') }}"><button>+1</button></form>

<h2>Cart</h2>
<ul>{% for item, quantity in cart.items() %}
<li>{{ item }} × {{ quantity }}</li>{% else %}<li>empty</li>{% endfor %}</ul>
{% for item in ["apple", "pear", "plum"] %}
<form method=post action="{{ url_for('add', item=item) }}">
<button>add {{ item }}</button></form>{% endfor %}

<h2>Account</h2>
{% if user %}
<form method=post action="{{ url_for('logout') }}"><button>sign out</button></form>
{% else %}
<form method=post action="{{ url_for('login') }}">
<input name=name placeholder=name required><button>sign in</button></form>
{% endif %}
<p>Signing in moves the session to a new id (<code>rotate_id()</code>):
watch the id above change while the counter and cart stay.</p>
"""


def note(line: str) -> None:
    """Add ``line`` to what this request sent to the store."""
    g.setdefault("store_log", []).append(line)


def describe_paths(paths: frozenset[tuple[str, ...]]) -> str:
    """List saved paths as dotted names, the app's first, then Flask's own."""
    names = sorted(
        (".".join(path) for path in paths), key=lambda name: (name in FLASK_KEYS, name)
    )
    return ", ".join(
        f"{name} ({FLASK_KEYS[name]})" if name in FLASK_KEYS else name for name in names
    )


@signals.session_saved.connect_via(app)
def note_save(
    sender: Flask,
    paths: frozenset[tuple[str, ...]],
    created: bool,
    emptied: bool,
    **extra: t.Any,
) -> None:
    """Note the paths a save wrote (set or removed)."""
    line = f"saved {describe_paths(paths)}"
    if created:
        line += "; the session was new, so this stored it for the first time"
    if emptied:
        line += "; that left the session empty, so it was deleted"
    note(line)


@signals.session_rotated.connect_via(app)
def note_rotation(sender: Flask, sid: str, old_sid: str | None, **extra: t.Any) -> None:
    """Note that :meth:`~flask_relay_session.Session.rotate_id` moved the session."""
    if old_sid is None:
        note(f"gave the session a new id, {sid[:12]}… (nothing was stored yet)")
    else:
        note(f"moved the session and all its data from {old_sid[:12]}… to {sid[:12]}…")


@signals.session_destroyed.connect_via(app)
def note_destroy(sender: Flask, sid: str, session: Session, **extra: t.Any) -> None:
    """Note that :meth:`~flask_relay_session.Session.destroy` deleted a session."""
    note(
        f"deleted session {sid[:12]}…; the rest of the request used a new,"
        f" empty one, {session.sid[:12]}…"
    )


@request_finished.connect_via(app)
def pass_on_store_log(sender: Flask, response: Response, **extra: t.Any) -> None:
    """Hand what this request sent to the store on to the next page.

    Sent after the session was saved, while the response can still change.
    Requests the app has no view for, such as a browser's ``/favicon.ico``,
    leave the previous request's list alone.
    """
    lines = g.pop("store_log", None)
    if lines:
        response.set_cookie(
            LAST_REQUEST_COOKIE, "\n".join(lines), httponly=True, samesite="Lax"
        )
    elif request.endpoint is not None and LAST_REQUEST_COOKIE in request.cookies:
        response.delete_cookie(LAST_REQUEST_COOKIE, httponly=True, samesite="Lax")


@app.get("/")
def index() -> str:
    # First: showing the messages removes them from the session.
    messages = get_flashed_messages()
    return render_template_string(
        PAGE,
        messages=messages,
        last_request=request.cookies.get(LAST_REQUEST_COOKIE, "").splitlines(),
        sid=relay.session.sid,
        empty=not session,
        visits=session.get("visits", 0),
        cart=session.get("cart", {}),
        user=session.get("user"),
    )


@app.get("/state")
def state() -> dict[str, t.Any]:
    return {
        "sid": relay.session.sid,
        "visits": session.get("visits", 0),
        "cart": session.get("cart", {}),
        "user": session.get("user"),
    }


@app.post("/count")
def count() -> Response:
    # A read-modify-write: under the lock, two tabs clicking at once both
    # count. The message is flashed inside the block, so that one save
    # writes both.
    with relay.session.lock():
        session["visits"] = session.get("visits", 0) + 1
        flash("Counted.")
    return redirect(url_for("index"))


@app.post("/cart/<item>")
def add(item: str) -> Response:
    # Nested values are tracked: this marks only "cart.<item>", so adding a
    # pear in one tab and a plum in another keeps both.
    cart = session.setdefault("cart", {})
    cart[item] = cart.get(item, 0) + 1
    flash(f"Added one {item}.")
    return redirect(url_for("index"))


@app.post("/login")
def login() -> Response:
    # Against session fixation: a new id for the signed-in session, and the
    # old one deleted rather than redirected, so a planted cookie is useless.
    # Rotating first means the name is only ever stored under the new id.
    name = request.form["name"].strip() or "anonymous"
    relay.session.rotate_id(grace_period=0)
    session["user"] = name
    flash(f"Signed in as {name}.")
    return redirect(url_for("index"))


@app.post("/logout")
def logout() -> Response:
    # Deleted from the store; the rest of the request gets a fresh session.
    relay.session.destroy()
    flash("Signed out.")
    return redirect(url_for("index"))
