"""A minimal app on the embedded in-memory store.

Run it with::

    flask --app examples/demo.py run
"""

from __future__ import annotations

from flask import Flask
from flask import session

from flask_relay_session import RelaySession

app = Flask(__name__)
app.config["SECRET_KEY"] = "dev only: change me"
# No RELAY_SESSION_REDIS: the session lives in a MemorySessionStore (the
# extension logs a warning saying so, since it is not for production).
RelaySession(app)


@app.get("/")
def index() -> dict[str, int]:
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"]}
