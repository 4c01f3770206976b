"""The benchmark suite's report (``benchmarks/report.py``) and options.

The targets are checked on made-up results, so that each one is seen to
pass, fail, and say what it lacks; the tables, the reST and the charts are
built from the same results, in the current format (one run per reply
parser) and in the older one (one run). One short end-to-end run of
``python -m benchmarks`` checks that ``--parser both`` measures each parser,
and short ones of ``python -m benchmarks.cpu``, ``python -m
benchmarks.memory_scaling`` and ``python -m benchmarks.codec`` that they
report every cell.
Drawing the charts and the end-to-end run take several seconds each: they
are marked slow.
"""

from __future__ import annotations

import json
import os
import typing as t

import pytest

report = pytest.importorskip("benchmarks.report", reason="needs the repository")
run = pytest.importorskip("benchmarks.run", reason="needs the repository")

KB = 1024
SIZES = [1 * KB, 16 * KB, 64 * KB, 256 * KB]
ROUTES = ["noop", "read", "write", "append", "locked-incr"]
BACKENDS = [
    "relay-json",
    "relay-hash",
    "relay-memory",
    "flask-session",
    "flask-session-norefresh",
    "cookie",
]

#: µs per request of each backend, before the size factor: every target met.
PASSING = {
    "relay-json": 100.0,
    "relay-hash": 100.0,
    "relay-memory": 50.0,
    "flask-session": 400.0,
    "flask-session-norefresh": 300.0,
    "cookie": 60.0,
}


def latency_rows(us: dict[str, float], scale: float = 1.0) -> list[dict[str, t.Any]]:
    rows = []
    for backend, base in us.items():
        for size in SIZES:
            if backend == "cookie" and size > 1 * KB:
                continue
            for route in ROUTES:
                rows.append(
                    {
                        "backend": backend,
                        "size": size,
                        "route": route,
                        "us": base * scale * (1 + size / (64 * KB)),
                        "round_trips_per_request": 1.0,
                        "bytes_per_request": 200.0 + size,
                        "server_us_per_request": 5.0,
                    }
                )
    return rows


def throughput_rows(rps: dict[str, float]) -> list[dict[str, t.Any]]:
    return [
        {
            "backend": backend,
            "size": size,
            "mix": mix,
            "requests_per_second": value / (1 + size / (64 * KB)),
            "requests": 1000,
            "errors": 0,
            "latency_ms_avg": 5.0,
            "tool": "wrk",
        }
        for backend, value in rps.items()
        for size in (1 * KB, 64 * KB)
        for mix in ("read-heavy", "write-heavy")
    ]


def make_results(
    us: dict[str, float] | None = None,
    rps: dict[str, float] | None = None,
    parsers: t.Sequence[str] = ("hiredis", "python"),
) -> dict[str, t.Any]:
    runs = {
        parser: latency_rows(us or PASSING, scale=1.0 + 0.5 * number)
        for number, parser in enumerate(parsers)
    }
    results: dict[str, t.Any] = {
        "meta": {
            "started": "2026-01-01 00:00 UTC",
            "mode": "quick",
            "machine": "test",
            "python": "3",
            "redis": "7",
            "redis_py": "8",
            "parser": parsers[0],
            "parsers": list(parsers),
            "hiredis": "3.5.0",
            "throughput_parser": "hiredis",
            "flask": "3",
            "flask_session": "0.8",
            "flask_relay_session": "0",
            "sizes": SIZES,
            "routes": ROUTES,
            "backends": BACKENDS,
            "repeats": 1,
            "batch": 1,
            "workers": 4,
            "connections": 16,
            "duration": 1.0,
            "load_tool": "wrk",
            "seconds": 1.0,
        },
        "latency": runs[parsers[0]],
        "latency_by_parser": runs,
        "throughput": throughput_rows(
            rps or {"relay-hash": 2000.0, "flask-session": 1000.0, "cookie": 3000.0}
        ),
        "notes": [],
    }
    results["targets"] = report.check_targets(results)
    return results


def by_name(checks: list[dict[str, t.Any]], words: str) -> dict[str, t.Any]:
    (found,) = [check for check in checks if words in check["target"]]
    return found


def test_the_targets_are_exactly_the_issues() -> None:
    checks = make_results()["targets"]
    assert [check["target"] for check in checks] == [
        "RelaySession (hash): every route at 1, 16, 64 and 256 KB no slower than"
        " Flask-Session (defaults)",
        "RelaySession (hash): read no slower than Flask-Session (no refresh) at"
        " every size",
        "RelaySession (hash): every route at 64 and 256 KB at most half of"
        " Flask-Session (defaults)",
        "RelaySession (json): every route at 1 KB within 1.1× of Flask-Session"
        " (defaults)",
        "Throughput: RelaySession (hash) at least Flask-Session (defaults) in"
        " every cell",
        "Throughput: RelaySession (hash) at least 1.3× Flask-Session (defaults)"
        " at 64 KB",
        "RelaySession (memory): no slower than Flask cookie session on any route"
        " at 1 KB",
    ]
    assert {check["status"] for check in checks} == {"pass"}
    assert all(check["passed"] is True for check in checks)


def test_a_failing_target_gives_its_numbers() -> None:
    us = dict(PASSING, **{"relay-hash": 250.0, "relay-json": 450.0})
    checks = make_results(us, rps={"relay-hash": 1200.0, "flask-session": 1000.0})[
        "targets"
    ]
    half = by_name(checks, "at most half")
    assert half["passed"] is False
    assert half["status"] == "FAIL (10 of 10)"
    # 64 KB: 250 × 2 vs 400 × 2.
    assert "64 KB: noop 500 vs 800 (0.62×) ✗" in half["detail"]
    assert by_name(checks, "no slower than Flask-Session (defaults)")["passed"]
    json_check = by_name(checks, "within 1.1×")
    assert json_check["status"] == "FAIL (5 of 5)"
    # 1 KB: 450 × (1 + 1/64) vs 400 × (1 + 1/64).
    assert "read 457 vs 406 (1.12×) ✗" in json_check["detail"]
    assert by_name(checks, "in every cell")["passed"] is True
    at_64 = by_name(checks, "1.3×")
    assert at_64["passed"] is False
    assert "64 KB: read-heavy 600 vs 500 (1.20×) ✗" in at_64["detail"]


def test_the_targets_are_judged_on_the_first_parser() -> None:
    results = make_results()
    # The pure-Python run is slower everywhere; only a slow hiredis run fails.
    slow = latency_rows(dict(PASSING, **{"relay-hash": 1000.0}))
    results["latency_by_parser"]["python"] = slow
    assert {c["status"] for c in report.check_targets(results)} == {"pass"}
    results["latency"] = slow
    assert (
        by_name(report.check_targets(results), "every route at 1, 16")["passed"]
        is False
    )


def test_missing_cells_are_not_measured() -> None:
    results = make_results()
    results["latency"] = [r for r in results["latency"] if r["size"] <= 64 * KB]
    results["throughput"] = [r for r in results["throughput"] if r["size"] == 1 * KB]
    checks = report.check_targets(results)
    every = by_name(checks, "every route at 1, 16")
    assert every["status"] == "pass (partly measured)"
    assert "not measured: 256 KB noop" in every["detail"]
    assert by_name(checks, "1.3×")["status"] == "not measured"
    assert by_name(checks, "1.3×")["passed"] is None
    assert by_name(checks, "in every cell")["status"] == "pass"
    results["throughput"] = []
    assert by_name(report.check_targets(results), "in every cell")["passed"] is None


def test_markdown_and_rst_report_both_parsers() -> None:
    results = make_results()
    text = report.markdown(results)
    assert "parsers: hiredis 3.5.0 and pure-Python parser" in text
    assert "## Per request, in process (hiredis)" in text
    assert "## Reply parser" in text
    # hiredis / pure Python (the change), 1 KB read of relay-hash: 102 / 152.
    assert "| RelaySession (hash) | 1 KB | 102 / 152 (+50%) |" in text
    assert "Judged on the per-request run with hiredis" in text
    rst = report.rst_tables(results)
    assert "Reply parser\n~~~~~~~~~~~~" in rst
    assert "Targets\n~~~~~~~" in rst


def test_the_cpu_per_request_under_load_is_reported_where_measured() -> None:
    results = make_results()
    assert "CPU per request under load" not in report.markdown(results)
    assert "CPU per request under load" not in report.rst_tables(results)
    for row in results["throughput"]:
        if row["backend"] == "relay-hash":
            row.update(worker_cpu_us=612.4, redis_cpu_us=91.6)
        elif row["backend"] == "flask-session":
            row.update(worker_cpu_us=1443.0, redis_cpu_us=51.0)
    text = report.markdown(results)
    assert "CPU per request under load" in text
    assert "| RelaySession (hash) | 612 + 92 | 612 + 92 | 612 + 92 | 612 + 92 |" in text
    assert "| Flask-Session (defaults) | 1,443 + 51 |" in text
    # The cookie session's rows did not measure it.
    assert "| Flask cookie session | n/a | n/a | n/a | n/a |" in text
    assert "the workers' + Redis's" in report.rst_tables(results)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_the_load_test_reads_the_cpu_of_processes_from_proc() -> None:
    throughput = pytest.importorskip(
        "benchmarks.throughput", reason="needs the repository"
    )
    import subprocess
    import sys
    import time

    burn = (
        "import time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "input()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        assert child.pid in throughput.children(os.getpid())
        spent = 0.0
        for _ in range(200):
            spent = throughput.cpu_seconds([child.pid]) or 0.0
            if spent >= 0.25:
                break
            time.sleep(0.05)
        assert 0.25 <= spent < 5
    finally:
        child.communicate(b"\n", timeout=10)
    assert throughput.cpu_seconds([child.pid]) is None  # reaped: gone


def test_results_of_one_parser_and_of_older_runs() -> None:
    results = make_results(parsers=("python",))
    assert "## Reply parser" not in report.markdown(results)
    assert report.parser_table(results) == ""
    # An older results.json: no latency_by_parser, no parsers in meta.
    del results["latency_by_parser"]
    for key in ("parsers", "hiredis", "throughput_parser"):
        del results["meta"][key]
    assert list(report.latency_runs(results)) == ["python"]
    assert "(parser: pure-Python parser)" in report.markdown(results)
    assert report.rst_tables(results)


def test_parser_runs() -> None:
    assert run.parser_runs("both", True) == (["hiredis", "python"], [])
    parsers, notes = run.parser_runs("both", False)
    assert parsers == ["python"]
    assert "hiredis is not installed" in notes[0]
    assert run.parser_runs("auto", True) == (["hiredis"], [])
    assert run.parser_runs("auto", False) == (["python"], [])
    assert run.parser_runs("python", True) == (["python"], [])
    assert run.parser_runs("hiredis", True) == (["hiredis"], [])
    with pytest.raises(SystemExit, match="hiredis is not installed"):
        run.parser_runs("hiredis", False)
    assert run.parse_args([]).parser is None
    assert run.MODES["full"]["parser"] == "both"
    assert run.MODES["quick"]["parser"] == "auto"
    assert run.parse_args(["--parser", "python"]).parser == "python"


@pytest.mark.slow
def test_charts(tmp_path: t.Any) -> None:
    pytest.importorskip("matplotlib")
    written = report.charts(make_results(), str(tmp_path))
    assert written == [
        "bench_us_1kb.png",
        "bench_us_16kb.png",
        "bench_us_64kb.png",
        "bench_us_256kb.png",
        "bench_us_per_request.png",
        "bench_bytes_by_size.png",
        "bench_parser.png",
        "bench_throughput.png",
    ]
    for name in written:
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    one = make_results(parsers=("hiredis",))
    one["throughput"] = []
    (tmp_path / "one").mkdir()
    written = report.charts(one, str(tmp_path / "one"))
    assert "bench_parser.png" not in written
    assert "bench_throughput.png" not in written


@pytest.mark.slow
def test_run_measures_each_parser(
    tmp_path: t.Any, redis7_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m benchmarks --parser both``, as short as it gets."""
    from redis.utils import HIREDIS_AVAILABLE

    from benchmarks.redis_tools import BenchRedis

    monkeypatch.setattr(run, "BenchRedis", lambda: BenchRedis(redis7_binary))
    monkeypatch.setattr(report, "charts", lambda results, directory: [])
    code = run.main(
        [
            "--quick",
            "--parser",
            "both",
            "--no-throughput",
            "--backends",
            "relay-json,relay-hash,cookie",
            "--sizes",
            "1",
            "--routes",
            "read,write",
            "--repeats",
            "1",
            "--batch",
            "2",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    with open(os.path.join(tmp_path, "results.json")) as f:
        results = json.load(f)
    expected = ["hiredis", "python"] if HIREDIS_AVAILABLE else ["python"]
    meta = results["meta"]
    assert meta["parser"] == expected[0]
    assert meta["parsers"] == expected
    assert list(results["latency_by_parser"]) == expected
    assert results["latency"] == results["latency_by_parser"][expected[0]]
    # The cookie has no Redis client: it runs with the first parser only.
    backends = {row["backend"] for row in results["latency"]}
    assert backends == {"relay-json", "relay-hash", "cookie"}
    for rows in list(results["latency_by_parser"].values())[1:]:
        assert {row["backend"] for row in rows} == {"relay-json", "relay-hash"}
    assert len(results["targets"]) == 7
    with open(os.path.join(tmp_path, "results.md")) as f:
        assert ("## Reply parser" in f.read()) == HIREDIS_AVAILABLE


#: Lines of ``callgrind_annotate --inclusive=yes`` on a Redis server with
#: symbols, as ``benchmarks.lua_cost --where`` reads them: a share under
#: 10 % has a space inside its brackets, an inlined part of a function
#: comes later with its header file, and a recursive call carries ``'2``.
ANNOTATE_OUTPUT = """\
16,413,953 (100.0%)  /src/redis/src/scripting.c:evalShaCommand [/bin/redis]
 5,033,284 (30.66%)  /src/redis/src/scripting.c:luaRedisGenericCommand [/bin/redis]
 1,834,065 (11.20%)  /src/redis/src/server.c:call'2 [/bin/redis]
 1,192,505 ( 7.27%)  ./stdio-common/snprintf.c:snprintf [/lib/libc.so.6]
 1,171,167 ( 7.14%)  ???:luaSetGlobalArray [/bin/redis]
    90,000 ( 0.55%)  /src/redis/src/sds.h:luaRedisGenericCommand
--------------------------------------------------------------------------------
The following files chosen for auto-annotation could not be found:
"""


def test_lua_cost_reads_where_the_instructions_went() -> None:
    lua_cost = pytest.importorskip("benchmarks.lua_cost", reason="needs the repository")
    assert lua_cost.annotated(ANNOTATE_OUTPUT) == {
        "evalShaCommand": 16_413_953,
        "luaRedisGenericCommand": 5_033_284,
        "call": 1_834_065,
        "snprintf": 1_192_505,
        "luaSetGlobalArray": 1_171_167,
    }


def test_cpu_reports_user_system_and_wall_time_per_cell(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cpu = pytest.importorskip("benchmarks.cpu", reason="needs the repository")
    argv = ["--backends", "relay-memory,cookie", "--routes", "noop,write"]
    assert cpu.main([*argv, "--rounds", "2", "--requests", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "µs per request at 1 KB, median of 2 rounds of 20 requests"
    rows = [line.strip("|").split("|") for line in lines[4:]]
    assert sorted((route.strip(), backend.strip()) for route, backend, *_ in rows) == [
        ("noop", "cookie"),
        ("noop", "relay-memory"),
        ("write", "cookie"),
        ("write", "relay-memory"),
    ]
    for *_, user, system, wall in rows:
        assert float(wall.replace(",", "")) > 0
        assert float(user.replace(",", "")) >= 0
        assert float(system.replace(",", "")) >= 0


def test_memory_scaling_reports_each_number_of_sessions_held(
    capsys: pytest.CaptureFixture[str],
) -> None:
    scaling = pytest.importorskip(
        "benchmarks.memory_scaling", reason="needs the repository"
    )
    assert scaling.main(["--held", "10,100", "--writes", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["10", "100"]
    assert all(float(line.split("|")[2]) > 0 for line in lines[2:])


def test_codec_times_every_codec_that_is_installed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    codec = pytest.importorskip("benchmarks.codec", reason="needs the repository")
    assert codec.main(["--sizes", "1", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = {
        name.strip(): float(value.replace(",", ""))
        for name, value in (line.strip("|").split("|") for line in lines[4:])
    }
    assert {
        "dumps (flask-relay-session)",
        "its tag walk",
        "loads (flask-relay-session)",
        "json.dumps, untagged",
        "json.loads, untagged",
    } <= cells.keys()
    assert all(value > 0 for value in cells.values())
