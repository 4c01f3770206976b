"""The ``flask relay-session`` operator commands.

::

    $ flask relay-session ping          # store reachable? scripts loaded?
    $ flask relay-session count         # live sessions and locks (SCAN)
    $ flask relay-session show SID      # the stored document and its TTL
    $ flask relay-session delete SID    # log a session out
    $ flask relay-session unlock SID    # free a lock left by a stuck request
    $ flask relay-session migrate-flask-session   # move Flask-Session's sessions
    $ flask relay-session user USER_ID  # the live sessions of a user
    $ flask relay-session revoke-user USER_ID  # log a user out everywhere

``SID`` is the 64 hex digit session id, or a whole session cookie value
(the id is the part before the first ``.``). The commands work on the store
the app is configured with, through the
:class:`~flask_relay_session.stores.SessionStoreAdmin` protocol: Redis, in
either layout, the memory store, which lives in the serving process and so
is always empty for a command run in another process, or a custom store
that implements the protocol.

Exit codes: ``0`` done, ``1`` no such session or lock, ``2`` usage error
(bad arguments, the extension not installed), ``3`` the store cannot be
reached, ``4`` the app's store does not implement
:class:`~flask_relay_session.stores.SessionStoreAdmin` (or, for ``user``
and ``revoke-user``,
:class:`~flask_relay_session.stores.users.SessionStoreUsers`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import typing as t
from collections import Counter
from datetime import datetime
from datetime import timezone

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import SessionConfigError
from .errors import SessionStoreError
from .stores.base import MAX_REDIRECT_DEPTH
from .stores.base import SessionStoreAdmin
from .stores.base import missing_methods

if t.TYPE_CHECKING:
    from .migration import FlaskSessionMigration

#: The command finished.
EXIT_OK = 0
#: The session or lock does not exist.
EXIT_NOT_FOUND = 1
#: Bad arguments, or the app does not use the extension (click's own code).
EXIT_USAGE = 2
#: The store cannot be reached.
EXIT_UNREACHABLE = 3
#: The app's store does not implement SessionStoreAdmin.
EXIT_UNSUPPORTED = 4

_SID = re.compile(r"[0-9a-f]{64}")


class StoreUnreachable(click.ClickException):
    """The store did not answer; exits with :data:`EXIT_UNREACHABLE`."""

    exit_code = EXIT_UNREACHABLE


class UnsupportedStore(click.ClickException):
    """The store does not implement the operator's view
    (:class:`~flask_relay_session.stores.SessionStoreAdmin`); exits with
    :data:`EXIT_UNSUPPORTED`.
    """

    exit_code = EXIT_UNSUPPORTED


def get_store() -> SessionStoreAdmin:
    """Return the current app's store, which the commands work on.

    :raises click.UsageError: the app does not use the extension.
    :raises UnsupportedStore: the store does not implement
        :class:`~flask_relay_session.stores.SessionStoreAdmin`.
    """
    state = current_app.extensions.get("relay_session")
    if state is None:
        raise click.UsageError(
            "flask-relay-session is not set up for this app: call"
            " RelaySession(app) or relay.init_app(app)"
        )
    store = state.store
    missing = missing_methods(store, SessionStoreAdmin)
    if missing:
        raise UnsupportedStore(
            "these commands need a store that implements the SessionStoreAdmin"
            " protocol (flask_relay_session.stores.SessionStoreAdmin); this app"
            f" uses {type(store).__module__}.{type(store).__qualname__}, which"
            f" has no {', '.join(missing)}"
        )
    return t.cast(SessionStoreAdmin, store)


@contextlib.contextmanager
def store_errors() -> t.Iterator[None]:
    """Turn the store's failures into :class:`StoreUnreachable`, naming the
    backend's error the store reports.
    """
    try:
        yield
    except SessionStoreError as error:
        cause = error.__cause__ or error
        raise StoreUnreachable(
            f"the session store cannot be reached: {type(cause).__name__}: {cause}"
        ) from error


@contextlib.contextmanager
def user_errors() -> t.Iterator[None]:
    """Turn what the user API raises into the commands' errors: a bad user
    id, a store that does not keep the sessions of users, or one that cannot
    be reached.
    """
    try:
        with store_errors():
            yield
    except (TypeError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="USER_ID") from error
    except SessionConfigError as error:
        raise UnsupportedStore(str(error)) from error
    except RuntimeError as error:  # no SECRET_KEY to name sessions with
        raise click.UsageError(str(error)) from error


def _extension() -> t.Any:
    """Return the extension that set up the current app (a
    :class:`~flask_relay_session.RelaySession`).

    :raises click.UsageError: the app does not use the extension.
    """
    get_store()
    return current_app.extensions["relay_session"].extension


def _moment(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _parse_sid(ctx: click.Context, param: click.Parameter, value: str) -> str:
    sid = value.strip().split(".", 1)[0].lower()
    if not _SID.fullmatch(sid):
        raise click.BadParameter(
            "expected a session id (64 hex digits) or a session cookie value",
            ctx,
            param,
        )
    return sid


def _duration(ms: int) -> str:
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f} h"
    if ms >= 60_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 1000:.1f} s"


def _expiry(ttl: int | None) -> str:
    if ttl is None:
        return "none (the key never expires)"
    at = datetime.now(timezone.utc).timestamp() + ttl / 1000
    moment = datetime.fromtimestamp(at, timezone.utc)
    return f"{_duration(ttl)} (until {moment:%Y-%m-%d %H:%M:%S} UTC)"


def _not_found(message: str) -> t.NoReturn:
    click.echo(message, err=True)
    raise click.exceptions.Exit(EXIT_NOT_FOUND)


cli = AppGroup(
    "relay-session",
    help="Inspect and manage the sessions of flask-relay-session.",
)

sid_argument = click.argument("sid", callback=_parse_sid)


@cli.command("ping")
def ping_command() -> None:
    """Check that the store answers, and load the Lua scripts into it.

    Shows the server version of every Redis node used.
    """
    store = get_store()
    with store_errors():
        lines = store.ping()
    for line in lines:
        click.echo(line)
    click.echo("ok")


@cli.command("count")
@click.option(
    "--count-hint",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="COUNT hint of each SCAN call: keys examined per round trip.",
)
@click.option(
    "--progress-every",
    type=click.IntRange(0),
    default=10_000,
    show_default=True,
    help="Report progress on stderr after this many matching keys; 0: never.",
)
def count_command(count_hint: int, progress_every: int) -> None:
    """Count the live sessions and the held locks.

    Walks the keys with incremental SCAN (every primary of a cluster),
    never KEYS, so Redis keeps serving requests. Ids rotated away that still
    redirect during their grace period count as sessions.
    """
    store = get_store()
    counts = {"session": 0, "lock": 0}
    with store_errors():
        estimate = store.size_hint()
        for matched, (kind, _) in enumerate(store.scan(batch=count_hint), 1):
            counts[kind] += 1
            if progress_every and matched % progress_every == 0:
                click.echo(
                    f"… {matched} matching keys so far (the database holds"
                    f" about {estimate} keys)",
                    err=True,
                )
    click.echo(f"sessions: {counts['session']}")
    click.echo(f"locks: {counts['lock']}")


@cli.command("show")
@sid_argument
@click.option(
    "--follow",
    is_flag=True,
    help="For an id rotated away, show the session its redirect leads to.",
)
def show_command(sid: str, follow: bool) -> None:
    """Show the stored session SID as pretty JSON, with its TTL and lock.

    The document is shown as stored: values Redis's cjson would alter are
    in their tagged form (one-key objects such as {" t": [...]}).
    """
    store = get_store()
    with store_errors():
        record = store.show(sid)
        hops = 0
        while record is not None and record.redirect_to is not None and follow:
            if hops == MAX_REDIRECT_DEPTH:
                break
            hops += 1
            click.echo(f"session {sid} redirects to {record.redirect_to}")
            sid = record.redirect_to
            record = store.show(sid)
    if record is None:
        if hops:
            _not_found(f"session {sid} does not exist: the rotation chain is broken")
        _not_found(f"session {sid} does not exist (expired, deleted or never stored)")
    if record.redirect_to is not None:
        click.echo(
            f"session {sid} was rotated away: it redirects to"
            f" {record.redirect_to} (show it with --follow)"
        )
        click.echo(f"grace period left: {_expiry(record.ttl)}")
    else:
        click.echo(f"session {sid}")
        click.echo(f"expires in: {_expiry(record.ttl)}")
    if record.key is not None:
        click.echo(f"key: {record.key}")
    if record.lock_ttl is None:
        click.echo("lock: free")
    else:
        click.echo(f"lock: held, expires in {_duration(record.lock_ttl)}")
    click.echo(
        json.dumps(record.document, indent=2, sort_keys=True, ensure_ascii=False)
    )


@cli.command("delete")
@sid_argument
def delete_command(sid: str) -> None:
    """Delete the session SID: its cookie no longer logs anybody in.

    An id rotated away leads to the session it was rotated to during its
    grace period: deleting it deletes that session too, as a logout through
    it would, and every redirect on the way.
    """
    store = get_store()
    with store_errors():
        if store.show(sid) is None:
            _not_found(f"session {sid} does not exist; nothing deleted")
        store.delete(sid)
    click.echo(f"deleted session {sid}")


@cli.command("unlock")
@sid_argument
def unlock_command(sid: str) -> None:
    """Release the lock of session SID, whoever holds it.

    For a lock left by a stuck request, before its RELAY_SESSION_LOCK_TTL
    runs out. A request that still holds it loses it: its next save fails
    with SessionLockError (409) instead of writing.
    """
    store = get_store()
    with store_errors():
        released = store.break_lock(sid)
    if not released:
        _not_found(f"session {sid} is not locked")
    click.echo(f"released the lock of session {sid}")


@cli.command("migrate-flask-session")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read and count every session, and write nothing.",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="COUNT hint of each SCAN call, and keys read per round trip.",
)
def migrate_flask_session_command(dry_run: bool, batch: int) -> None:
    """Move every session Flask-Session stored on Redis to this store.

    Needs RELAY_SESSION_MIGRATE_FLASK_SESSION = True, and reads
    Flask-Session's settings as the app does. Walks the Flask-Session keys
    with incremental SCAN, never KEYS. Each session moves as on its first
    request: under a new id, with its data and its remaining time to live,
    and its key becomes a marker that leads its cookie to the new session
    on first use. Nothing is ever unpickled: pickled sessions are skipped
    and counted. Safe to interrupt, to run again, and to run while the app
    serves requests: a session a request moves at the same moment ends as
    one session.
    """
    from .migration import Outcome
    from .migration.bulk import move_all
    from .migration.bulk import size_hint

    migration = _migration()
    lifetime = int(current_app.permanent_session_lifetime.total_seconds() * 1000)
    counts: Counter[Outcome] = Counter()
    with store_errors():
        estimate = size_hint(migration)
        label = "Moving Flask-Session's sessions"
        with click.progressbar(
            length=max(estimate, 1),
            label=label + (" (dry run)" if dry_run else ""),
            show_pos=True,
            file=sys.stderr,
        ) as bar:
            for move in move_all(
                migration,
                lifetime=lifetime,
                now=lambda: int(time.time() * 1000),
                batch=batch,
                dry_run=dry_run,
            ):
                counts[move.outcome] += 1
                bar.update(1)
    for outcome in Outcome:
        name = outcome.value
        if dry_run and outcome is Outcome.MOVED:
            name = "would move"
        click.echo(f"{name}: {counts[outcome]}")
    if dry_run:
        click.echo("dry run: nothing was written")


def _migration() -> FlaskSessionMigration:
    """Return the current app's migration from Flask-Session.

    :raises click.UsageError: the app does not use the extension, or does
        not move Flask-Session's sessions.
    """
    state = current_app.extensions.get("relay_session")
    if state is None:
        raise click.UsageError(
            "flask-relay-session is not set up for this app: call"
            " RelaySession(app) or relay.init_app(app)"
        )
    migration = state.interface.migration
    if migration is None:
        raise click.UsageError(
            "set RELAY_SESSION_MIGRATE_FLASK_SESSION = True in the app's"
            " configuration: it says where Flask-Session's sessions are, and"
            " lets their cookies find the moved sessions"
        )
    return t.cast("FlaskSessionMigration", migration)


@cli.command("user")
@click.argument("user_id")
def user_command(user_id: str) -> None:
    """List the live sessions of the user USER_ID, newest activity first.

    Each line gives the session's handle (pass it to RelaySession.revoke),
    when it was created, last seen and expires, and the client it was seen
    with when RELAY_SESSION_TRACK_CLIENT is on. Session ids are never
    shown.
    """
    extension = _extension()
    with user_errors():
        sessions = extension.sessions_of(user_id)
    if not sessions:
        click.echo(f"user {user_id!r} has no live sessions")
        return
    click.echo(f"user {user_id!r} has {len(sessions)} live sessions:")
    for info in sessions:
        line = (
            f"{info.handle}  created {_moment(info.created_at)}, last seen"
            f" {_moment(info.last_seen)}, expires {_moment(info.expires_at)}"
        )
        client = ", ".join(
            part for part in (info.ip, info.user_agent) if part is not None
        )
        click.echo(f"{line}, {client}" if client else line)


@cli.command("revoke-user")
@click.argument("user_id")
def revoke_user_command(user_id: str) -> None:
    """End every session of the user USER_ID: log them out everywhere.

    Their cookies no longer reach them, through any id they were rotated
    from; requests in flight with them go on with a new, empty session.
    """
    extension = _extension()
    with user_errors():
        ended = extension.revoke_all(user_id)
    click.echo(f"ended {ended} sessions of user {user_id!r}")
