"""A counter, a cart and a login: what flask-relay-session does, in one page.

On the embedded in-memory store (nothing else to install or run)::

    python -m pip install -e . && flask --app examples/demo.py run

On Redis, with one variable set::

    RELAY_SESSION_REDIS=redis://localhost:6379/0 flask --app examples/demo.py run

Then open http://127.0.0.1:5000/. Each action shows which paths of the
session it changed: those paths, and nothing else, are what the request sent
to the store. ``/state`` answers the same as JSON, for ``curl``.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask
from flask import flash
from flask import get_flashed_messages
from flask import redirect
from flask import render_template_string
from flask import request
from flask import session
from flask import url_for

from flask_relay_session import RelaySession

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev only: change me")
# Unset: sessions live in a MemorySessionStore inside this process (the
# extension logs a warning saying so, since that is not for production).
app.config["RELAY_SESSION_REDIS"] = os.environ.get("RELAY_SESSION_REDIS")
app.config["RELAY_SESSION_KEY_PREFIX"] = os.environ.get(
    "RELAY_SESSION_KEY_PREFIX", "sess:"
)
relay = RelaySession(app)

PAGE = """<!doctype html>
<title>flask-relay-session demo</title>
<style>body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
form { display: inline; } code { background: #eee; padding: 0 .2em; }</style>
<h1>flask-relay-session demo</h1>
{% for message in messages %}<p><strong>{{ message }}</strong></p>{% endfor %}
<p>Session <code>{{ sid[:12] }}…</code>
{% if user %}, signed in as <strong>{{ user }}</strong>{% endif %}</p>

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


def report(action: str) -> None:
    """Flash which paths this request changed, before flashing adds its own."""
    paths = sorted(".".join(map(str, path)) for path in session.dirty_paths)
    flash(f"{action}: saved only {', '.join(paths) or 'nothing'}")


@app.get("/")
def index() -> str:
    return render_template_string(
        PAGE,
        messages=get_flashed_messages(),
        sid=session.sid,
        visits=session.get("visits", 0),
        cart=session.get("cart", {}),
        user=session.get("user"),
    )


@app.get("/state")
def state() -> dict[str, t.Any]:
    return {
        "sid": session.sid,
        "visits": session.get("visits", 0),
        "cart": session.get("cart", {}),
        "user": session.get("user"),
    }


@app.post("/count")
def count() -> Response:
    # A read-modify-write: under the lock, two tabs clicking at once both
    # count.
    with relay.session.lock():
        session["visits"] = session.get("visits", 0) + 1
        report("counted")
    return redirect(url_for("index"))


@app.post("/cart/<item>")
def add(item: str) -> Response:
    # Nested values are tracked: this marks only "cart.<item>", so adding a
    # pear in one tab and a plum in another keeps both.
    cart = session.setdefault("cart", {})
    cart[item] = cart.get(item, 0) + 1
    report(f"added {item}")
    return redirect(url_for("index"))


@app.post("/login")
def login() -> Response:
    old = session.sid
    session["user"] = request.form["name"].strip() or "anonymous"
    # Against session fixation: a new id for the signed-in session, and the
    # old one deleted rather than redirected, so a planted cookie is useless.
    relay.session.rotate_id(grace_period=0)
    flash(f"signed in; session id {old[:12]}… became {session.sid[:12]}…")
    return redirect(url_for("index"))


@app.post("/logout")
def logout() -> Response:
    # Deleted from the store; the rest of the request gets a fresh session.
    relay.session.destroy()
    flash("signed out; the old session is gone from the store")
    return redirect(url_for("index"))
