"""The Python examples in ``README.rst`` and ``docs/*.rst`` run as written.

Every Python block is collected: ``.. code-block:: python`` (also ``code``
and ``sourcecode``, and those directives without a language), and ``::``
literal blocks that parse as Python statements (Sphinx highlights ``::``
blocks as Python). Each is one test, named after its file and line
(``docs/quickstart.rst:24``), and is handled by the first rule that applies:

1. A block right after the comment ``.. not-run: <reason>`` is skipped,
   with that reason.
2. A block whose ``:caption:`` names a ``test_*.py`` file is a pytest
   module. It is run with pytest in a folder holding every block of its
   page whose caption names a ``.py`` file (the app, ``conftest.py``), and
   must pass.
3. A block that contains ``Flask(`` is an app. It is executed in a fresh
   namespace; its apps are the ``Flask`` objects it leaves at the top level,
   or the one its ``create_app()`` returns. Every route of every app is
   called with the test client: once each on a fresh session, then all in a
   row, twice, on one client. URL variables get sample values, and a view
   that reads ``request.form`` gets a value for each field the block
   reads. An exception or a 5xx response fails the test. It runs on the
   memory store; a block that sets ``RELAY_SESSION_REDIS`` also runs on the
   suite's Redis 7 server, whose URL replaces the example's.
4. Anything else is a fragment: it must parse, and is skipped. A captioned
   ``.py`` file of rule 2 that is no test file (``conftest.py``) is run by
   the tests of its page, and skipped here too.

``pytest -ra`` lists the skipped blocks with the reason of each.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import typing as t
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound
from werkzeug.routing import Rule

from flask_relay_session import RelaySession
from flask_relay_session import SessionChainError
from flask_relay_session import SessionLockError
from flask_relay_session import SessionStoreError
from flask_relay_session.errors import error_response

from .redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]

#: The languages of a code block that mean Python; an empty one takes
#: Sphinx's default, Python, when the block parses.
PYTHON = {"python", "python3", "py"}

#: The value posted for a form field an example reads; other fields get "1".
FORM_VALUES = {"name": "ada", "password": "correct horse"}

#: Sample values for URL variables, tried in order until the URL matches.
URL_VALUES: tuple[object, ...] = ("apple", 1, 1.5, uuid.UUID(int=1), "a/b")

_CODE_DIRECTIVE = re.compile(
    r"(?P<indent> *)\.\. (?:code-block|code|sourcecode)::[ \t]*(?P<language>\S*)\s*$"
)
_OPTION = re.compile(r" *:(?P<name>[\w-]+):[ \t]*(?P<value>.*)$")
_NOT_RUN = re.compile(r" *\.\. not-run:[ \t]*(?P<reason>.+)$")
_TEST_FILE = re.compile(r"test_\w*\.py")


@dataclass
class Block:
    """A Python block of a document."""

    #: The document, relative to the repository.
    path: str
    #: The line of the directive or of the ``::``, from 1.
    line: int
    source: str
    caption: str = ""
    #: The reason of a ``.. not-run:`` comment before the block.
    not_run: str = ""
    #: The blocks of the same page captioned with a ``.py`` file name.
    files: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        """``"not-run"``, ``"pytest"``, ``"app"``, ``"support"`` or
        ``"fragment"``: the rule of the module docstring that applies.
        """
        if self.not_run:
            return "not-run"
        if _TEST_FILE.fullmatch(self.caption):
            return "pytest"
        if "Flask(" in self.source:
            return "app"
        if self.caption.endswith(".py") and any(
            _TEST_FILE.fullmatch(name) for name in self.files
        ):
            return "support"
        return "fragment"

    def sets_redis(self) -> bool:
        """Whether the block names the ``RELAY_SESSION_REDIS`` key."""
        return re.search(r"""["']RELAY_SESSION_REDIS["']""", self.source) is not None


def _indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(lines: list[str], start: int, indent: int) -> tuple[str, int]:
    """Return the dedented lines from ``start`` on that are indented more
    than ``indent`` (blank lines included), and the index after them.
    """
    end = start
    while end < len(lines) and (
        not lines[end].strip() or _indentation(lines[end]) > indent
    ):
        end += 1
    text = textwrap.dedent("\n".join(lines[start:end])).strip("\n")
    return text + "\n", end


def _is_python(source: str) -> bool:
    """Whether a block without a language is Python: it parses, and holds
    a statement, not just a bare expression such as ``redis-server``.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(
        not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call)
        for node in tree.body
    )


def _not_run_reason(lines: list[str], index: int) -> str:
    """The reason of a ``.. not-run:`` comment just above line ``index``."""
    index -= 1
    while index >= 0 and not lines[index].strip():
        index -= 1
    match = _NOT_RUN.match(lines[index]) if index >= 0 else None
    return match["reason"].strip() if match else ""


@dataclass
class CodeBlock:
    """A code directive or a ``::`` literal block, as written."""

    #: The line of the directive or of the ``::``, from 1.
    line: int
    #: The directive's language, lower case; ``None`` for a ``::`` block.
    language: str | None
    options: dict[str, str]
    source: str
    #: The reason of a ``.. not-run:`` comment before the block.
    not_run: str


def code_blocks(text: str) -> Iterator[CodeBlock]:
    """Yield the code blocks of a reST text, nested ones included."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _CODE_DIRECTIVE.match(line)
        stripped = line.strip()
        if directive is not None:
            indent = len(directive["indent"])
            options: dict[str, str] = {}
            start = index + 1
            while start < len(lines) and (option := _OPTION.match(lines[start])):
                if _indentation(lines[start]) <= indent:
                    break
                options[option["name"]] = option["value"].strip()
                start += 1
            source, end = _content(lines, start, indent)
            language: str | None = directive["language"].lower()
        elif stripped.endswith("::") and not stripped.startswith(".."):
            options = {}
            source, end = _content(lines, index + 1, _indentation(line))
            language = None
        else:
            index += 1
            continue
        if source.strip():
            reason = _not_run_reason(lines, index)
            yield CodeBlock(index + 1, language, options, source, reason)
        index = max(end, index + 1)


def blocks_of(path: Path, root: Path = ROOT) -> list[Block]:
    """Return the Python blocks of one reST document."""
    name = path.relative_to(root).as_posix()
    blocks = [
        Block(
            name,
            code.line,
            code.source,
            caption=code.options.get("caption", ""),
            not_run=code.not_run,
        )
        for code in code_blocks(path.read_text(encoding="utf-8"))
        if code.language in PYTHON or (not code.language and _is_python(code.source))
    ]
    files = {b.caption: b.source for b in blocks if b.caption.endswith(".py")}
    for block in blocks:
        block.files = files
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in blocks_of(path)]


def _cases() -> Iterator[t.Any]:
    for block in BLOCKS:
        if block.kind == "app":
            yield pytest.param(block, "memory", id=f"{block.id}-memory")
            if block.sets_redis():
                yield pytest.param(block, "redis7", id=f"{block.id}-redis7")
        else:
            yield pytest.param(block, None, id=block.id)


# --------------------------------------------------------------------------
# Running an app block
# --------------------------------------------------------------------------


def _form_fields(source: str) -> set[str]:
    """The names of the form fields a block reads: ``form["x"]`` and
    ``form.get("x")``, on ``request.form`` or on any name ``form``.
    """

    def is_form(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "form") or (
            isinstance(node, ast.Name) and node.id == "form"
        )

    fields = set()
    for node in ast.walk(ast.parse(source)):
        key: ast.AST | None = None
        if isinstance(node, ast.Subscript) and is_form(node.value):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and is_form(node.func.value)
            and node.args
        ):
            key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            fields.add(key.value)
    return fields


def _apps(namespace: dict[str, t.Any]) -> list[Flask]:
    apps = [value for value in namespace.values() if isinstance(value, Flask)]
    factory = namespace.get("create_app")
    if not apps and callable(factory):
        apps.append(factory())
    return apps


def _url(app: Flask, rule: Rule, method: str) -> str:
    """A URL of ``rule``, its variables filled with sample values."""
    adapter = app.url_map.bind("localhost")
    names = sorted(rule.arguments)
    for values in itertools.product(URL_VALUES, repeat=len(names)):
        arguments = dict(zip(names, values, strict=True))
        try:
            url = adapter.build(rule.endpoint, arguments, method=method)
            endpoint, _ = adapter.match(url, method=method)
        except (LookupError, ValueError, NotFound, MethodNotAllowed):
            continue
        if endpoint == rule.endpoint:
            return url
    raise AssertionError(f"no sample values fit the URL rule {rule.rule!r}")


def _calls(app: Flask) -> list[tuple[str, str]]:
    """Every ``(method, url)`` the app routes, but the static files."""
    calls = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            calls.append((method, _url(app, rule, method)))
    return calls


def _call(client: FlaskClient, method: str, url: str, form: dict[str, str]) -> None:
    data = form if method in {"POST", "PUT", "PATCH"} else None
    response = client.open(url, method=method, data=data)
    assert response.status_code < 500, (
        f"{method} {url} answered {response.status}: {response.get_data(as_text=True)}"
    )


def run_app_block(block: Block, redis_url: str | None) -> None:
    original = RelaySession.init_app

    def init_app(self: RelaySession, app: Flask) -> None:
        # The example's Redis, if it names one, is the suite's server or,
        # on the memory store, none.
        if "RELAY_SESSION_REDIS" in app.config:
            if redis_url is None:
                del app.config["RELAY_SESSION_REDIS"]
            else:
                app.config["RELAY_SESSION_REDIS"] = redis_url
        original(self, app)

    namespace: dict[str, t.Any] = {"__name__": "doc_example"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RelaySession, "init_app", init_app)
        exec(compile(block.source, block.id, "exec"), namespace)
        apps = _apps(namespace)
    assert apps, "the block defines Flask( but no app was found"
    form = {name: FORM_VALUES.get(name, "1") for name in _form_fields(block.source)}
    for app in apps:
        state = app.extensions.get("relay_session")
        assert state is not None, "the app does not use RelaySession"
        if redis_url is not None:
            assert type(state.store).__name__ == "RedisSessionStore"
        # An exception in a view fails the test with its traceback.
        app.config["PROPAGATE_EXCEPTIONS"] = True
        calls = _calls(app)
        for method, url in calls:
            _call(app.test_client(), method, url, form)
        client = app.test_client()
        for method, url in calls * 2:
            _call(client, method, url, form)


# --------------------------------------------------------------------------
# Running a pytest module block
# --------------------------------------------------------------------------


def run_pytest_block(block: Block, folder: Path) -> None:
    for name, source in block.files.items():
        (folder / name).write_text(source, encoding="utf-8")
    # Keep the repository's pytest configuration out of the example's run.
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-W", "error::DeprecationWarning:flask_relay_session", block.caption],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration reaches an example from the environment."""
    for name in list(os.environ):
        if name.startswith(("RELAY_SESSION_", "FLASK_RELAY_SESSION_")) or name in {
            "SECRET_KEY",
            "FLASK_SECRET_KEY",
        }:
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("block", "store"), list(_cases()))
def test_python_block(
    block: Block, store: str | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    kind = block.kind
    if kind == "not-run":
        pytest.skip(f"marked not-run: {block.not_run}")
    if kind == "pytest":
        run_pytest_block(block, tmp_path)
        return
    if kind == "app":
        if store == "memory":
            run_app_block(block, None)
            return
        server: RedisServer = request.getfixturevalue("redis7_server")
        if not server.is_running():
            server.start()
        try:
            run_app_block(block, server.url)
        finally:
            server.flush()
        return
    # A fragment, or a support file of its page's pytest blocks: it parses.
    compile(block.source, block.id, "exec")
    if kind == "support":
        pytest.skip(f"{block.caption}: run by the test_*.py blocks of its page")
    pytest.skip("a fragment, not a whole app (no Flask(): it parses, and is not run")


def test_the_readme_and_quickstart_examples_are_run() -> None:
    run = {}
    for block in BLOCKS:
        if block.kind == "app":
            run[block.path] = run.get(block.path, 0) + 1
    assert run.get("README.rst", 0) >= 1
    assert run.get("docs/quickstart.rst", 0) >= 4
    assert any(block.kind == "pytest" for block in BLOCKS)


def test_the_collector_finds_every_kind_of_block(tmp_path: Path) -> None:
    page = tmp_path / "page.rst"
    page.write_text(
        textwrap.dedent(
            """\
            A literal block::

                import flask

            A shell line::

                redis-server --port 0

            .. code-block:: python
                :caption: myapp.py

                from flask import Flask
                app = Flask(__name__)

            -   In a list:

                .. code-block:: python

                    session["a"] = 1

            .. not-run: needs a Sentinel
            .. code-block:: python

                app = Flask(__name__)

            .. code-block:: text

                not python

            .. code-block:: pycon

                >>> 1
            """
        ),
        encoding="utf-8",
    )
    blocks = blocks_of(page, tmp_path)
    assert [(b.line, b.kind) for b in blocks] == [
        (1, "fragment"),
        (9, "app"),
        (17, "fragment"),
        (22, "not-run"),
    ]
    assert blocks[1].caption == "myapp.py"
    assert blocks[1].source == "from flask import Flask\napp = Flask(__name__)\n"
    assert blocks[2].source == 'session["a"] = 1\n'
    assert blocks[3].not_run == "needs a Sentinel"
    assert blocks[0].files == {"myapp.py": blocks[1].source}


def test_troubleshooting_shows_each_error_body_as_sent() -> None:
    page = (ROOT / "docs" / "troubleshooting.rst").read_text(encoding="utf-8")
    shown = [
        json.loads(code.source) for code in code_blocks(page) if code.language == "json"
    ]
    for error in (SessionLockError(), SessionChainError(), SessionStoreError()):
        response = error_response(error)
        assert response.headers["Cache-Control"] == "no-store"
        assert f"``{error.code} " in page
        assert json.loads(response.get_data()) in shown, error.error_code
