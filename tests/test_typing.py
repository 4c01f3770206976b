"""Users get the session's own members typed, without casts.

``mypy --strict`` checks ``tests/typing/check_user_code.py``, a small app
that uses ``relay.session.rotate_id()``, ``relay.session.lock()`` and the
other members of §2, and a broken variant to prove the check sees real
types rather than ``Any``. The package is found as a user finds an installed
package: its own errors are the job of the CI's ``mypy --strict
flask_relay_session`` step, so they are silenced here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USER_CODE = ROOT / "tests" / "typing" / "check_user_code.py"


def run_mypy(*files: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            *map(str, files),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_user_code_using_session_members_passes_mypy_strict() -> None:
    result = run_mypy(USER_CODE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_mypy_rejects_wrong_use_of_session_members(tmp_path: Path) -> None:
    broken = tmp_path / "broken_user_code.py"
    broken.write_text(
        "from flask_relay_session import RelaySession\n"
        "relay = RelaySession()\n"
        "sid: int = relay.session.sid\n"
        "relay.session.rotate_id(True)\n"
        "with relay.session.lock(timeout=1):\n"
        "    pass\n"
        "relay.session.is_locked.hex()\n",
        encoding="utf-8",
    )
    result = run_mypy(broken)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["3", "4", "5", "7"], (
        result.stdout + result.stderr
    )


def test_the_typed_user_app_runs() -> None:
    spec = importlib.util.spec_from_file_location("check_user_code", USER_CODE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    client = module.create_app().test_client()
    assert client.post("/login/ada").json == {"rotated": True}
    assert client.post("/visit").json == {"visits": 1}
    assert client.post("/visit").json == {"visits": 2}
    info = client.get("/info").json
    assert info["lifetime"] == pytest.approx(31 * 24 * 3600, abs=1)
    assert client.post("/checkpoint").json == {"saved": True}
    assert client.post("/logout").json == {"ok": True}
    assert client.get_cookie("session") is None
