"""Turn benchmark results into markdown tables, target checks and charts.

``results.json`` (written by :mod:`benchmarks.run`) holds:

``meta``
    the run's settings and versions; ``parser`` is the reply parser of the
    run in ``latency`` (the one the targets are judged on, hiredis when
    installed), ``parsers`` every parser measured.
``latency``
    one row per (backend, size, route) of the per-request run with
    ``meta["parser"]``.
``latency_by_parser``
    ``{parser: rows}`` for every parser measured (``latency`` again under
    its own parser). Results of older runs lack it: :func:`latency_runs`
    then falls back on ``latency``.
``throughput``, ``notes``, ``targets``
    the load test, what was skipped, and :func:`check_targets`.
"""

from __future__ import annotations

import math
import os
import typing as t

from .apps import ROUTES

LABELS = {
    "relay-json": "RelaySession (json)",
    "relay-hash": "RelaySession (hash)",
    "relay-memory": "RelaySession (memory)",
    "flask-session": "Flask-Session (defaults)",
    "flask-session-norefresh": "Flask-Session (no refresh)",
    "cookie": "Flask cookie session",
}
#: One color per backend in every chart (the Okabe-Ito palette, which stays
#: distinct for color-blind readers): the extension in blue, green and
#: purple, Flask-Session in vermillion and orange, the cookie in grey.
COLORS = {
    "relay-json": "#0072B2",
    "relay-hash": "#009E73",
    "relay-memory": "#CC79A7",
    "flask-session": "#D55E00",
    "flask-session-norefresh": "#E69F00",
    "cookie": "#8C8C8C",
}
PARSER_LABELS = {"hiredis": "hiredis", "python": "pure-Python parser"}
#: Backends that do not talk to Redis (no bytes, no server time, no parser).
NO_REDIS = ("relay-memory", "cookie")
#: The layout the docs recommend, which the targets hold it to.
RECOMMENDED = "relay-hash"
KB = 1024

Row = dict[str, t.Any]


def size_label(size: int) -> str:
    return f"{size // KB} KB"


def _index(latency: t.Sequence[Row]) -> dict[tuple[str, int, str], Row]:
    return {(row["backend"], row["size"], row["route"]): row for row in latency}


def _order(values: t.Iterable[str], reference: t.Sequence[str]) -> list[str]:
    present = set(values)
    return [value for value in reference if value in present]


def _fmt_bytes(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1024:,.1f} KB"
    return f"{value:,.0f}"


def _parser_label(parser: str) -> str:
    return PARSER_LABELS.get(parser, parser)


def latency_runs(results: dict[str, t.Any]) -> dict[str, list[Row]]:
    """Every per-request run by reply parser, the judged one first."""
    primary = results["meta"].get("parser", "?")
    runs = dict(results.get("latency_by_parser") or {})
    runs[primary] = results["latency"]
    return {primary: runs.pop(primary), **runs}


def latency_tables(results: dict[str, t.Any]) -> str:
    """One markdown table per session size (the run of ``meta["parser"]``)."""
    latency = results["latency"]
    routes = results["meta"]["routes"]
    backends = _order({row["backend"] for row in latency}, list(LABELS))
    index = _index(latency)
    out = []
    for size in results["meta"]["sizes"]:
        out.append(f"#### {size_label(size)} session\n")
        header = "| backend | " + " | ".join(routes) + " |"
        out.append(
            "µs per request (round trips / bytes sent / Redis server µs per request)\n"
        )
        out.append(header)
        out.append("|---|" + "---:|" * len(routes))
        for backend in backends:
            cells = []
            for route in routes:
                row = index.get((backend, size, route))
                if row is None:
                    cells.append("n/a")
                    continue
                detail = ""
                if backend not in NO_REDIS:
                    detail = (
                        f" ({row['round_trips_per_request']:.0f} /"
                        f" {_fmt_bytes(row['bytes_per_request'])} /"
                        f" {row['server_us_per_request']:.0f})"
                    )
                cells.append(f"{row['us']:,.0f}{detail}")
            out.append(f"| {LABELS[backend]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def parser_table(results: dict[str, t.Any]) -> str:
    """µs per request of the Redis backends with each reply parser.

    Empty when only one parser was measured.
    """
    runs = latency_runs(results)
    if len(runs) < 2:
        return ""
    parsers = list(runs)
    indexes = {parser: _index(rows) for parser, rows in runs.items()}
    routes = results["meta"]["routes"]
    backends = _order(
        {row["backend"] for rows in runs.values() for row in rows}, list(LABELS)
    )
    backends = [b for b in backends if b not in NO_REDIS]
    first, others = parsers[0], parsers[1:]
    out = [
        "| backend | size | " + " | ".join(routes) + " |",
        "|---|---|" + "---:|" * len(routes),
    ]
    for size in results["meta"]["sizes"]:
        for backend in backends:
            cells = []
            for route in routes:
                base = indexes[first].get((backend, size, route))
                values = [indexes[p].get((backend, size, route)) for p in others]
                if base is None or any(v is None for v in values):
                    cells.append("n/a")
                    continue
                text = f"{base['us']:,.0f}"
                for value in values:
                    assert value is not None
                    change = value["us"] / base["us"] - 1
                    text += f" / {value['us']:,.0f} ({change:+.0%})"
                cells.append(text)
            out.append(
                f"| {LABELS[backend]} | {size_label(size)} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(out) + "\n"


def throughput_table(results: dict[str, t.Any]) -> str:
    """Requests per second, per backend, size and mix."""

    def cell(row: Row) -> str:
        errors = f" ({row['errors']} errors)" if row["errors"] else ""
        return f"{row['requests_per_second']:,.0f}{errors}"

    return _throughput_grid(results, cell) or "(throughput not measured)\n"


def throughput_cpu_table(results: dict[str, t.Any]) -> str:
    """The CPU per request under load: the workers' + Redis's, in µs; empty
    when the run could not measure it.
    """
    rows = results.get("throughput") or []
    if not any(row.get("worker_cpu_us") is not None for row in rows):
        return ""

    def cell(row: Row) -> str:
        workers, server = row.get("worker_cpu_us"), row.get("redis_cpu_us")
        if workers is None or server is None:
            return "n/a"
        return f"{workers:,.0f} + {server:,.0f}"

    return _throughput_grid(results, cell)


def _throughput_grid(results: dict[str, t.Any], cell: t.Callable[[Row], str]) -> str:
    """A table of the load test with a column per size and mix, a row per
    backend and ``cell(row)`` in each cell; empty without a load test.
    """
    rows = results.get("throughput") or []
    if not rows:
        return ""
    sizes = sorted({row["size"] for row in rows})
    mixes = list(dict.fromkeys(row["mix"] for row in rows))
    backends = _order({row["backend"] for row in rows}, list(LABELS))
    index = {(r["backend"], r["size"], r["mix"]): r for r in rows}
    columns = [(size, mix) for size in sizes for mix in mixes]
    out = [
        "| backend | " + " | ".join(f"{size_label(s)} {m}" for s, m in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for backend in backends:
        cells = []
        for column in columns:
            row = index.get((backend, *column))
            cells.append("n/a" if row is None else cell(row))
        out.append(f"| {LABELS[backend]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


class _Target:
    """One target: comparisons of a measured value against a reference.

    A comparison passes when ``mine <= limit * theirs`` (lower is better),
    or ``mine >= limit * theirs`` with ``higher_is_better``. A cell the
    target needs but the run lacks is reported as not measured.
    """

    def __init__(self, name: str, limit: float, higher_is_better: bool = False):
        self.name = name
        self.limit = limit
        self.higher_is_better = higher_is_better
        #: (group, label, mine, theirs, passed)
        self.compared: list[tuple[str, str, float, float, bool]] = []
        self.missing: list[str] = []

    def compare(
        self, group: str, label: str, mine: Row | None, theirs: Row | None, key: str
    ) -> None:
        if mine is None or theirs is None:
            self.missing.append(f"{group} {label}".strip())
            return
        a, b = float(mine[key]), float(theirs[key])
        if self.higher_is_better:
            passed = a >= self.limit * b
        else:
            passed = a <= self.limit * b
        self.compared.append((group, label, a, b, passed))

    def result(self) -> Row:
        failed = [c for c in self.compared if not c[4]]
        if not self.compared:
            passed: bool | None = None
            status = "not measured"
        elif failed:
            passed = False
            status = f"FAIL ({len(failed)} of {len(self.compared)})"
        else:
            passed = True
            status = "pass"
        if self.compared and self.missing:
            status += " (partly measured)"
        groups: dict[str, list[str]] = {}
        for group, label, a, b, ok in self.compared:
            ratio = a / b if b else math.inf
            mark = "" if ok else " ✗"
            groups.setdefault(group, []).append(
                f"{label} {a:,.0f} vs {b:,.0f} ({ratio:.2f}×){mark}"
            )
        parts = [
            (f"{group}: " if group else "") + ", ".join(items)
            for group, items in groups.items()
        ]
        if self.missing:
            parts.append("not measured: " + ", ".join(self.missing))
        return {
            "target": self.name,
            "status": status,
            "passed": passed,
            "detail": "; ".join(parts),
        }


def check_targets(results: dict[str, t.Any], layout: str = RECOMMENDED) -> list[Row]:
    """The issue's targets, each with its status and numbers.

    Judged on the per-request run of ``meta["parser"]`` (hiredis when it is
    installed) and on the load test. Each row: ``target``, ``status``
    (``pass``, ``FAIL (n of m)`` or ``not measured``, with ``(partly
    measured)`` when some needed cells are missing), ``passed`` (true, false
    or null) and ``detail`` (each comparison: ours vs theirs, the ratio, ✗
    where it fails).
    """
    index = _index(results["latency"])
    mine_label = LABELS.get(layout, layout)
    fs = LABELS["flask-session"]
    all_sizes = (1 * KB, 16 * KB, 64 * KB, 256 * KB)

    def latency_target(
        name: str,
        backend: str,
        reference: str,
        sizes: t.Sequence[int],
        routes: t.Sequence[str],
        limit: float,
    ) -> Row:
        target = _Target(name, limit)
        for size in sizes:
            for route in routes:
                target.compare(
                    size_label(size),
                    route,
                    index.get((backend, size, route)),
                    index.get((reference, size, route)),
                    "us",
                )
        return target.result()

    checks = [
        latency_target(
            f"{mine_label}: every route at 1, 16, 64 and 256 KB no slower than {fs}",
            layout,
            "flask-session",
            all_sizes,
            ROUTES,
            1.0,
        ),
        latency_target(
            f"{mine_label}: read no slower than {LABELS['flask-session-norefresh']}"
            " at every size",
            layout,
            "flask-session-norefresh",
            all_sizes,
            ("read",),
            1.0,
        ),
        latency_target(
            f"{mine_label}: every route at 64 and 256 KB at most half of {fs}",
            layout,
            "flask-session",
            (64 * KB, 256 * KB),
            ROUTES,
            0.5,
        ),
        latency_target(
            f"{LABELS['relay-json']}: every route at 1 KB within 1.1× of {fs}",
            "relay-json",
            "flask-session",
            (1 * KB,),
            ROUTES,
            1.1,
        ),
    ]

    rows = results.get("throughput") or []
    tindex = {(r["backend"], r["size"], r["mix"]): r for r in rows}
    cells = list(dict.fromkeys((r["size"], r["mix"]) for r in rows))
    every = _Target(
        f"Throughput: {mine_label} at least {fs} in every cell",
        1.0,
        higher_is_better=True,
    )
    at_64 = _Target(
        f"Throughput: {mine_label} at least 1.3× {fs} at 64 KB",
        1.3,
        higher_is_better=True,
    )
    mixes = list(dict.fromkeys(["read-heavy", "write-heavy"] + [m for _, m in cells]))
    for size, mix in cells:
        every.compare(
            size_label(size),
            mix,
            tindex.get((layout, size, mix)),
            tindex.get(("flask-session", size, mix)),
            "requests_per_second",
        )
    for mix in mixes:
        at_64.compare(
            size_label(64 * KB),
            mix,
            tindex.get((layout, 64 * KB, mix)),
            tindex.get(("flask-session", 64 * KB, mix)),
            "requests_per_second",
        )
    for target in (every, at_64):
        row = target.result()
        if not rows:
            row["detail"] = "throughput not measured"
        checks.append(row)

    checks.append(
        latency_target(
            f"{LABELS['relay-memory']}: no slower than {LABELS['cookie']} on"
            " any route at 1 KB",
            "relay-memory",
            "cookie",
            (1 * KB,),
            ROUTES,
            1.0,
        )
    )
    return checks


def targets_table(checks: t.Sequence[Row]) -> str:
    out = ["| target | status | numbers |", "|---|---|---|"]
    for check in checks:
        out.append(f"| {check['target']} | {check['status']} | {check['detail']} |")
    return "\n".join(out) + "\n"


def _parsers_text(meta: dict[str, t.Any]) -> str:
    parsers = meta.get("parsers") or [meta["parser"]]
    hiredis = meta.get("hiredis")
    names = [
        _parser_label(p) + (f" {hiredis}" if p == "hiredis" and hiredis else "")
        for p in parsers
    ]
    if len(names) == 1:
        return f"parser: {names[0]}"
    return "parsers: " + " and ".join(names)


def markdown(results: dict[str, t.Any]) -> str:
    meta = results["meta"]
    parser = meta["parser"]
    lines = [
        "# flask-relay-session benchmarks",
        "",
        f"Run {meta['started']} on {meta['machine']}; Redis {meta['redis']},"
        f" Python {meta['python']}, redis-py {meta['redis_py']}"
        f" ({_parsers_text(meta)}), Flask {meta['flask']},"
        f" Flask-Session {meta['flask_session']}. Mode: {meta['mode']},"
        f" {meta['repeats']} repeats × {meta['batch']} requests per cell,"
        " backends interleaved.",
        "",
        f"## Per request, in process ({_parser_label(parser)})",
        "",
        "Median µs per request over every request of every repeat (raw WSGI call,"
        " Redis on loopback), every Redis client with redis-py's"
        f" {_parser_label(parser)}. In brackets: Redis round trips, bytes sent to"
        " Redis and Redis server µs (`INFO commandstats`), per request.",
        "",
        latency_tables(results),
    ]
    table = parser_table(results)
    if table:
        parsers = list(latency_runs(results))
        others = " and ".join(_parser_label(p) for p in parsers[1:])
        lines += [
            "## Reply parser",
            "",
            f"The per-request run repeated with the {others} (every Redis backend"
            " on the same parser within a run). µs per request: with"
            f" {_parser_label(parsers[0])} / with {others} (the change). The"
            " targets are judged on the first.",
            "",
            table,
        ]
    if results.get("notes"):
        lines += ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [""]
    lines += [
        "## Throughput under load",
        "",
        f"gunicorn, {meta.get('workers', '?')} sync workers, load from"
        f" {meta.get('load_tool', '?')} with {meta.get('connections', '?')}"
        f" connections for {meta.get('duration', '?')} s per cell, all on"
        " loopback on the same machine"
        + (
            f", redis-py's {_parser_label(meta['throughput_parser'])} in the workers"
            if meta.get("throughput_parser")
            else ""
        )
        + ". Requests per second; read-heavy = 90 % GET /read, 10 % POST"
        " /write; write-heavy = 10 % / 90 %.",
        "",
        throughput_table(results),
    ]
    table = throughput_cpu_table(results)
    if table:
        lines += [
            "CPU per request under load, in µs: the gunicorn workers' (user and"
            " system) + the Redis server's, from `/proc`; the load generator's"
            " is left out. Where two backends differ in throughput, this says"
            " whose CPU the difference is.",
            "",
            table,
        ]
    lines += [
        "## Targets",
        "",
        f"Judged on the per-request run with {_parser_label(parser)} and on the"
        " load test; numbers are ours vs theirs (µs per request, or requests"
        " per second for throughput), ✗ where a comparison fails.",
        "",
        targets_table(results["targets"]),
    ]
    layouts = layout_comparison(results)
    if layouts:
        lines += [layouts, ""]
    return "\n".join(lines)


def layout_comparison(results: dict[str, t.Any]) -> str:
    """Whether the run bears out the recommended layout (hash over json)."""
    index = _index(results["latency"])
    faster = total = 0
    for (backend, size, route), row in index.items():
        if backend != "relay-json":
            continue
        other = index.get((RECOMMENDED, size, route))
        if other is None:
            continue
        total += 1
        faster += row["us"] < other["us"]
    if not total:
        return ""
    return (
        f"The targets use the recommended layout, {LABELS[RECOMMENDED]}; in"
        f" this run {LABELS['relay-json']} was faster than it in {faster} of"
        f" {total} (size, route) cells."
    )


# --------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------

#: The docs page shows images about 700 px wide: figures are WIDTH inches
#: at DPI, so every font below is about its point size on the page.
WIDTH = 7.5
DPI = 150
STYLE: dict[str, t.Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "xtick.labelsize": 11,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "hatch.linewidth": 0.8,
}


class _Series(t.NamedTuple):
    key: t.Any
    label: str
    color: str
    hatch: str | None = None


def _fmt_value(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value >= 1_000:
        return f"{value / 1000:.1f}k"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _fmt_size(value: float) -> str:
    if value >= 10 * 1024:
        return f"{value / 1024:.0f} KB"
    if value >= 1000:
        return f"{value / 1024:.1f} KB"
    return f"{value:.0f} B"


def _fmt_tick(value: float, _position: t.Any = None) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _nice_floor(value: float) -> float:
    """The largest of 1, 2 or 5 × 10^k at or below ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(m * power for m in (1, 2, 5) if m * power <= value)


def _grouped_bars(
    ax: t.Any,
    groups: t.Sequence[str],
    series: t.Sequence[_Series],
    value: t.Callable[[t.Any, int], float | None],
    *,
    log: bool | None = None,
    label: t.Callable[[float], str] | None = _fmt_value,
    label_size: float = 8,
) -> list[t.Any]:
    """Bars side by side (no series hides another), value labels on top.

    ``value(series_key, group_index)`` gives a bar's height, or None for a
    cell that was not measured (marked "n/a"). ``log`` None picks a log
    scale when the values span more than 20×. Returns one legend handle per
    series.
    """
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter
    from matplotlib.ticker import NullFormatter

    handles = [
        Patch(
            facecolor=s.color,
            hatch=s.hatch,
            edgecolor="white" if s.hatch else s.color,
            label=s.label,
        )
        for s in series
    ]
    width = 0.84 / max(len(series), 1)
    heights = [
        v
        for s in series
        for g in range(len(groups))
        if (v := value(s.key, g)) is not None and v > 0
    ]
    if not heights:
        return handles
    low, high = min(heights), max(heights)
    if log is None:
        log = high / low > 20
    # Room above the highest bar for its label: a share of the axis height.
    room = 0.2 if label else 0.04
    if log:
        ax.set_yscale("log")
        bottom = _nice_floor(low * 0.6)
        span = math.log10(high) - math.log10(bottom)
        ax.set_ylim(bottom, 10 ** (math.log10(high) + span * room / (1 - room)))
        ax.yaxis.set_major_formatter(FuncFormatter(_fmt_tick))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        bottom = 0
        ax.set_ylim(0, high / (1 - room))
    for i, s in enumerate(series):
        xs, ys, shown, missing = [], [], [], []
        for g in range(len(groups)):
            x = g + (i - (len(series) - 1) / 2) * width
            v = value(s.key, g)
            if v is None:
                missing.append(x)
            else:
                xs.append(x)
                ys.append(max(v, bottom))
                shown.append(v)
        bars = ax.bar(
            xs,
            ys,
            width,
            color=s.color,
            hatch=s.hatch,
            edgecolor="white" if s.hatch else s.color,
            linewidth=0,
        )
        if label is not None:
            ax.bar_label(
                bars,
                labels=[label(v) for v in shown],
                rotation=90,
                padding=2,
                fontsize=label_size,
            )
        for x in missing:
            ax.text(
                x,
                bottom,
                " n/a",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=label_size,
                color="#666666",
            )
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.55, len(groups) - 0.45)
    ax.tick_params(axis="x", length=0)
    ax.grid(True, axis="y", which="major", alpha=0.35)
    if log:
        ax.grid(True, axis="y", which="minor", alpha=0.12)
    return handles


def _backend_series(backends: t.Iterable[str]) -> list[_Series]:
    return [_Series(b, LABELS[b], COLORS[b]) for b in backends]


def _legend(fig: t.Any, handles: t.Sequence[t.Any], ncol: int = 3) -> None:
    """The legend under the plots, read row by row (the extension first)."""
    # matplotlib fills the legend column by column: put item i (row i //
    # ncol, column i % ncol) where that fill reaches it, when it can.
    n, rows = len(handles), math.ceil(len(handles) / ncol)
    where = {(i % ncol) * rows + i // ncol: i for i in range(n)}
    order = [where[p] for p in range(n)] if set(where) == set(range(n)) else []
    order = order or list(range(n))
    fig.legend(
        handles=[handles[i] for i in order],
        loc="outside lower center",
        ncol=ncol,
        frameon=False,
        handlelength=1.6,
        columnspacing=1.2,
    )


def charts(results: dict[str, t.Any], directory: str) -> list[str]:
    """Write the PNG charts; return their file names (empty without matplotlib).

    ``bench_us_<N>kb.png``
        µs per request at one session size, every route and backend
        (``bench_us_1kb.png`` and one per other size measured).
    ``bench_us_per_request.png``
        µs per request of ``read`` and ``write`` by session size.
    ``bench_bytes_by_size.png``
        bytes sent to Redis and Redis server µs per ``write``, by size.
    ``bench_parser.png``
        ``read`` and ``write`` with each reply parser (when two were run).
    ``bench_throughput.png``
        requests per second under load (when measured).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[str] = []

    def save(fig: t.Any, name: str) -> None:
        fig.savefig(os.path.join(directory, name), dpi=DPI)
        plt.close(fig)
        written.append(name)

    with plt.rc_context(t.cast(t.Any, STYLE)):
        _charts(results, plt, save)
    return written


def _subtitle(ax: t.Any, text: str) -> None:
    ax.set_title(text, fontsize=10, fontweight="normal")


def _charts(
    results: dict[str, t.Any], plt: t.Any, save: t.Callable[[t.Any, str], None]
) -> None:
    index = _index(results["latency"])
    sizes = results["meta"]["sizes"]
    routes = results["meta"]["routes"]
    backends = _order({row["backend"] for row in results["latency"]}, list(LABELS))
    parser = _parser_label(results["meta"]["parser"])
    redis_backends = [b for b in backends if b not in NO_REDIS]
    size_groups = [size_label(s) for s in sizes]

    def us(backend: str, size: int, route: str) -> float | None:
        row = index.get((backend, size, route))
        return None if row is None else float(row["us"])

    # One chart per session size: every route, every backend.
    for size in sizes:
        fig, ax = plt.subplots(figsize=(WIDTH, 4.8), layout="constrained")

        def at_size(backend: t.Any, g: int, size: int = size) -> float | None:
            return us(backend, size, routes[g])

        handles = _grouped_bars(ax, routes, _backend_series(backends), at_size)
        scale = " (log scale)" if ax.get_yscale() == "log" else ""
        ax.set_ylabel(f"µs per request{scale}")
        _subtitle(ax, f"median µs per request; Redis clients with {parser}")
        fig.suptitle(f"Time per request, {size_label(size)} session (lower is better)")
        _legend(fig, handles)
        save(fig, f"bench_us_{size // KB}kb.png")

    # read and write by session size.
    shown = [r for r in ("read", "write") if r in routes] or routes[:2]
    fig, axes = plt.subplots(
        len(shown),
        1,
        figsize=(WIDTH, 1.6 + 3.3 * len(shown)),
        layout="constrained",
        squeeze=False,
    )
    for ax, route in zip(axes[:, 0], shown, strict=True):

        def by_size(backend: t.Any, g: int, route: str = route) -> float | None:
            return us(backend, sizes[g], route)

        handles = _grouped_bars(
            ax, size_groups, _backend_series(backends), by_size, log=True
        )
        ax.set_title(f"{route}: {ROUTE_TEXT.get(route, route)}", loc="left")
        ax.set_ylabel("µs per request (log)")
    axes[-1, 0].set_xlabel("session size")
    fig.suptitle(f"Time per request by session size (lower is better; {parser})")
    _legend(fig, handles)
    save(fig, "bench_us_per_request.png")

    # Bytes sent to Redis and Redis server time per write.
    if redis_backends and "write" in routes:

        def write_value(key: str) -> t.Callable[[t.Any, int], float | None]:
            def value(backend: t.Any, g: int) -> float | None:
                row = index.get((backend, sizes[g], "write"))
                return None if row is None else float(row[key])

            return value

        fig, (top, bottom) = plt.subplots(
            2, 1, figsize=(WIDTH, 7.4), layout="constrained"
        )
        handles = _grouped_bars(
            top,
            size_groups,
            _backend_series(redis_backends),
            write_value("bytes_per_request"),
            log=True,
            label=_fmt_size,
            label_size=9,
        )
        top.set_title("Bytes sent to Redis per write", loc="left")
        top.set_ylabel("bytes (log)")
        _grouped_bars(
            bottom,
            size_groups,
            _backend_series(redis_backends),
            write_value("server_us_per_request"),
            log=True,
            label_size=9,
        )
        bottom.set_title("Redis server time per write (INFO commandstats)", loc="left")
        bottom.set_ylabel("server µs (log)")
        bottom.set_xlabel("session size")
        fig.suptitle("Redis cost of one write (lower is better)")
        _legend(fig, handles, ncol=2)
        save(fig, "bench_bytes_by_size.png")

    # The reply parsers side by side.
    runs = latency_runs(results)
    if len(runs) > 1 and redis_backends:
        from matplotlib.patches import Patch

        parsers = list(runs)
        indexes = {p: _index(rows) for p, rows in runs.items()}
        hatches = [None, "////", "....", "xxxx"]
        series = [
            _Series((b, p), LABELS[b], COLORS[b], hatches[i % len(hatches)])
            for b in redis_backends
            for i, p in enumerate(parsers)
        ]
        fig, axes = plt.subplots(
            len(shown),
            1,
            figsize=(WIDTH, 2.0 + 3.3 * len(shown)),
            layout="constrained",
            squeeze=False,
        )
        for ax, route in zip(axes[:, 0], shown, strict=True):

            def parser_value(key: t.Any, g: int, route: str = route) -> float | None:
                backend, p = key
                row = indexes[p].get((backend, sizes[g], route))
                return None if row is None else float(row["us"])

            _grouped_bars(
                ax, size_groups, series, parser_value, log=True, label_size=7.5
            )
            ax.set_title(f"{route}: {ROUTE_TEXT.get(route, route)}", loc="left")
            ax.set_ylabel("µs per request (log)")
        axes[-1, 0].set_xlabel("session size")
        handles = [Patch(color=COLORS[b], label=LABELS[b]) for b in redis_backends]
        handles += [
            Patch(
                facecolor="#777777",
                edgecolor="white",
                hatch=hatches[i % len(hatches)],
                label=f"{'solid' if i == 0 else 'hatched'}: {_parser_label(p)}",
            )
            for i, p in enumerate(parsers)
        ]
        _legend(fig, handles, ncol=2)
        fig.suptitle("Time per request by Redis reply parser (lower is better)")
        save(fig, "bench_parser.png")

    rows = results.get("throughput") or []
    if rows:
        cells = list(dict.fromkeys((r["size"], r["mix"]) for r in rows))
        tbackends = _order({r["backend"] for r in rows}, list(LABELS))
        tindex = {(r["backend"], r["size"], r["mix"]): r for r in rows}

        def rps(backend: t.Any, g: int) -> float | None:
            row = tindex.get((backend, *cells[g]))
            return None if row is None else float(row["requests_per_second"])

        fig, ax = plt.subplots(figsize=(WIDTH, 4.8), layout="constrained")
        handles = _grouped_bars(
            ax,
            [f"{size_label(s)}\n{m}" for s, m in cells],
            _backend_series(tbackends),
            rps,
            log=False,
            label=lambda v: f"{v:,.0f}",
            label_size=9,
        )
        ax.set_ylabel("requests per second")
        meta = results["meta"]
        _subtitle(
            ax,
            f"gunicorn, {meta.get('workers', '?')} sync workers,"
            f" {meta.get('load_tool', '?')} with {meta.get('connections', '?')}"
            " connections, loopback",
        )
        fig.suptitle("Throughput under load (higher is better)")
        _legend(fig, handles)
        save(fig, "bench_throughput.png")


#: What each route does, for chart titles.
ROUTE_TEXT = {
    "noop": "the session untouched",
    "read": "reads one small key",
    "write": "reads one key, sets another",
    "append": "appends to a nested list",
    "locked-incr": "n += 1 under session.lock()",
}


# --------------------------------------------------------------------------
# reStructuredText, for docs/performance.rst
# --------------------------------------------------------------------------


def _md_table_to_rst(lines: t.Sequence[str]) -> list[str]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in lines
        if not set(line.replace("|", "").strip()) <= set("-:")
    ]
    out = [".. list-table::", "    :header-rows: 1", ""]
    for row in rows:
        first = True
        for cell in row:
            cell = cell.replace("*", r"\*")
            out.append(f"    {'* -' if first else '  -'} {cell}")
            first = False
    out.append("")
    return out


def markdown_to_rst_tables(text: str) -> str:
    """Turn the markdown tables and headings of :func:`markdown` into reST."""
    out: list[str] = []
    table: list[str] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out += _md_table_to_rst(table)
            table = []
        if line.startswith("#### "):
            title = line[5:]
            out += [title, "~" * len(title)]
        elif line.startswith("#"):
            continue
        else:
            out.append(line.replace("`", "``"))
    return "\n".join(out)


def rst_tables(results: dict[str, t.Any]) -> str:
    """The latency, parser, throughput and target tables as reST."""
    parts = [markdown_to_rst_tables(latency_tables(results))]
    table = parser_table(results)
    if table:
        parsers = [_parser_label(p) for p in latency_runs(results)]
        parts += [
            "Reply parser",
            "~~~~~~~~~~~~",
            "",
            f"µs per request with {parsers[0]} / with {' and '.join(parsers[1:])}"
            " (the change).",
            "",
            markdown_to_rst_tables(table),
        ]
    parts += [
        "Throughput",
        "~~~~~~~~~~",
        "",
        markdown_to_rst_tables(throughput_table(results)),
    ]
    table = throughput_cpu_table(results)
    if table:
        parts += [
            "CPU per request under load, in µs: the workers' + Redis's.",
            "",
            markdown_to_rst_tables(table),
        ]
    parts += [
        "Targets",
        "~~~~~~~",
        "",
        markdown_to_rst_tables(targets_table(results["targets"])),
    ]
    return "\n".join(parts)
