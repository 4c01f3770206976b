"""Turn benchmark results into markdown tables, target checks and charts."""

from __future__ import annotations

import math
import typing as t

LABELS = {
    "relay-json": "RelaySession (json)",
    "relay-hash": "RelaySession (hash)",
    "relay-memory": "RelaySession (memory)",
    "flask-session": "Flask-Session (defaults)",
    "flask-session-norefresh": "Flask-Session (no refresh)",
    "cookie": "Flask cookie session",
}
COLORS = {
    "relay-json": "#1f77b4",
    "relay-hash": "#2ca02c",
    "relay-memory": "#9467bd",
    "flask-session": "#d62728",
    "flask-session-norefresh": "#ff7f0e",
    "cookie": "#7f7f7f",
}

Row = dict[str, t.Any]


def size_label(size: int) -> str:
    return f"{size // 1024} KB"


def _index(latency: t.Sequence[Row]) -> dict[tuple[str, int, str], Row]:
    return {(row["backend"], row["size"], row["route"]): row for row in latency}


def _order(values: t.Iterable[str], reference: t.Sequence[str]) -> list[str]:
    present = set(values)
    return [value for value in reference if value in present]


def _fmt_bytes(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1024:,.1f} KB"
    return f"{value:,.0f}"


def latency_tables(results: dict[str, t.Any]) -> str:
    """One markdown table per session size."""
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
                if backend not in ("cookie", "relay-memory"):
                    detail = (
                        f" ({row['round_trips_per_request']:.0f} /"
                        f" {_fmt_bytes(row['bytes_per_request'])} /"
                        f" {row['server_us_per_request']:.0f})"
                    )
                cells.append(f"{row['us']:,.0f}{detail}")
            out.append(f"| {LABELS[backend]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def throughput_table(results: dict[str, t.Any]) -> str:
    rows = results.get("throughput") or []
    if not rows:
        return "(throughput not measured)\n"
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
            if row is None:
                cells.append("n/a")
            else:
                errors = f" ({row['errors']} errors)" if row["errors"] else ""
                cells.append(f"{row['requests_per_second']:,.0f}{errors}")
        out.append(f"| {LABELS[backend]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


def check_targets(results: dict[str, t.Any]) -> list[Row]:
    """Evaluate the issue's targets; each with met / missed / not measured."""
    index = _index(results["latency"])
    sizes = results["meta"]["sizes"]
    checks: list[Row] = []

    def add(target: str, met: bool | None, detail: str) -> None:
        status = "not measured" if met is None else ("met" if met else "MISSED")
        checks.append({"target": target, "status": status, "detail": detail})

    def get(backend: str, size: int, route: str) -> Row | None:
        return index.get((backend, size, route))

    expected = {"noop": 0, "read": 1, "write": 2}
    for backend in ("relay-json", "relay-hash"):
        found = []
        ok = True
        any_row = False
        for size in sizes:
            for route, want in expected.items():
                row = get(backend, size, route)
                if row is None:
                    continue
                any_row = True
                got = row["round_trips_per_request"]
                if not math.isclose(got, want):
                    ok = False
                    found.append(f"{route}@{size_label(size)}={got:g}")
        detail = "noop 0, read 1, write 2 at every size" if ok else ", ".join(found)
        add(
            f"{LABELS[backend]}: round trips noop 0, read 1, write 2",
            ok if any_row else None,
            detail if any_row else "backend not measured",
        )

    size = 1024
    for backend in ("relay-json", "relay-hash"):
        parts = []
        ok = True
        any_row = False
        for route in results["meta"]["routes"]:
            mine = get(backend, size, route)
            theirs = get("flask-session", size, route)
            if mine is None or theirs is None:
                continue
            any_row = True
            better = mine["us"] <= theirs["us"]
            ok = ok and better
            parts.append(f"{route} {mine['us']:.0f} vs {theirs['us']:.0f}")
        add(
            f"{LABELS[backend]}: µs/request at 1 KB no worse than Flask-Session"
            " defaults on every route",
            ok if any_row else None,
            "; ".join(parts) if any_row else "backend not measured",
        )

    size = 65536
    hash_write = get("relay-hash", size, "write")
    json_write = get("relay-json", size, "write")
    fs_write = get("flask-session", size, "write")
    if hash_write and fs_write:
        ratio = hash_write["bytes_per_request"] / fs_write["bytes_per_request"]
        add(
            "64 KB hash layout: a one-key write sends ≤ 1/100 of Flask-Session's bytes",
            ratio <= 0.01,
            f"{hash_write['bytes_per_request']:.0f} B vs"
            f" {fs_write['bytes_per_request']:.0f} B (1/{1 / ratio:.0f})",
        )
    else:
        add(
            "64 KB hash layout: write bytes ≤ 1/100 of Flask-Session",
            None,
            "relay-hash or 64 KB not measured",
        )
    if hash_write and json_write:
        ratio = hash_write["server_us_per_request"] / max(
            json_write["server_us_per_request"], 1e-9
        )
        add(
            "64 KB hash layout: Redis server time ≤ 1/10 of the JSON layout's",
            ratio <= 0.1,
            f"{hash_write['server_us_per_request']:.1f} µs vs"
            f" {json_write['server_us_per_request']:.1f} µs (1/{1 / ratio:.0f})",
        )
    else:
        add(
            "64 KB hash layout: server time ≤ 1/10 of JSON layout",
            None,
            "relay-hash or 64 KB not measured",
        )
    if hash_write and fs_write:
        add(
            "64 KB hash layout: one-key write faster per request than Flask-Session",
            hash_write["us"] < fs_write["us"],
            f"{hash_write['us']:.0f} µs vs {fs_write['us']:.0f} µs",
        )
    else:
        add(
            "64 KB hash layout: write faster than Flask-Session",
            None,
            "relay-hash or 64 KB not measured",
        )
    return checks


def targets_table(checks: t.Sequence[Row]) -> str:
    out = ["| target | status | numbers |", "|---|---|---|"]
    for check in checks:
        out.append(f"| {check['target']} | {check['status']} | {check['detail']} |")
    return "\n".join(out) + "\n"


def markdown(results: dict[str, t.Any]) -> str:
    meta = results["meta"]
    lines = [
        "# flask-relay-session benchmarks",
        "",
        f"Run {meta['started']} on {meta['machine']}; Redis {meta['redis']},"
        f" Python {meta['python']}, redis-py {meta['redis_py']}"
        f" (parser: {meta['parser']}), Flask {meta['flask']},"
        f" Flask-Session {meta['flask_session']}. Mode: {meta['mode']},"
        f" {meta['repeats']} repeats × {meta['batch']} requests per cell,"
        " backends interleaved.",
        "",
        "## Per request, in process",
        "",
        "Median µs per request over every request of every repeat (raw WSGI call,"
        " Redis on loopback). In brackets: Redis round trips, bytes sent to"
        " Redis and Redis server µs (`INFO commandstats`), per request.",
        "",
        latency_tables(results),
    ]
    if results.get("notes"):
        lines += ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [""]
    lines += [
        "## Throughput under load",
        "",
        f"gunicorn, {meta.get('workers', '?')} sync workers, load from"
        f" {meta.get('load_tool', '?')} with {meta.get('connections', '?')}"
        f" connections for {meta.get('duration', '?')} s per cell, all on"
        " loopback on the same machine. Requests per second; read-heavy = 90 %"
        " GET /read, 10 % POST /write; write-heavy = 10 % / 90 %.",
        "",
        throughput_table(results),
        "## Targets",
        "",
        targets_table(results["targets"]),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------


def charts(results: dict[str, t.Any], directory: str) -> list[str]:
    """Write the PNG charts; return their file names (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import os

    index = _index(results["latency"])
    sizes = results["meta"]["sizes"]
    routes = results["meta"]["routes"]
    backends = _order({row["backend"] for row in results["latency"]}, list(LABELS))
    written = []

    # µs per request by size, one panel per route.
    fig, grid = plt.subplots(
        1, len(routes), figsize=(4 * len(routes), 4), sharey=True, squeeze=False
    )
    axes = list(grid[0])
    for ax, route in zip(axes, routes, strict=True):
        for backend in backends:
            points = [
                (size // 1024, index[(backend, size, route)]["us"])
                for size in sizes
                if (backend, size, route) in index
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, marker="o", label=LABELS[backend], color=COLORS[backend]
                )
        ax.set_title(route)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([s // 1024 for s in sizes], [size_label(s) for s in sizes])
        ax.set_xlabel("session size")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("µs per request (log)")
    axes[-1].legend(fontsize=8, loc="upper left")
    fig.suptitle("Time per request by session size and route")
    fig.tight_layout()
    name = "bench_us_per_request.png"
    fig.savefig(os.path.join(directory, name), dpi=110)
    plt.close(fig)
    written.append(name)

    # µs per request at 1 KB, grouped bars by route.
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(backends), 1)
    for i, backend in enumerate(backends):
        ys = [index.get((backend, 1024, route), {}).get("us", 0) for route in routes]
        xs = [r + (i - len(backends) / 2 + 0.5) * width for r in range(len(routes))]
        ax.bar(xs, ys, width, label=LABELS[backend], color=COLORS[backend])
    ax.set_xticks(range(len(routes)), routes)
    ax.set_ylabel("µs per request")
    ax.set_title("Time per request, 1 KB session")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    name = "bench_us_1kb.png"
    fig.savefig(os.path.join(directory, name), dpi=110)
    plt.close(fig)
    written.append(name)

    # Bytes sent to Redis and server µs per request, by size (write route).
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for backend in backends:
        if backend in ("cookie", "relay-memory"):
            continue
        points = [
            (size // 1024, index[(backend, size, "write")])
            for size in sizes
            if (backend, size, "write") in index
        ]
        if not points:
            continue
        xs = [x for x, _ in points]
        left.plot(
            xs,
            [max(r["bytes_per_request"], 1) for _, r in points],
            marker="o",
            label=LABELS[backend],
            color=COLORS[backend],
        )
        right.plot(
            xs,
            [max(r["server_us_per_request"], 0.1) for _, r in points],
            marker="o",
            label=LABELS[backend],
            color=COLORS[backend],
        )
    for ax, title, label in (
        (left, "Bytes sent to Redis per write", "bytes per request (log)"),
        (right, "Redis server time per write", "server µs per request (log)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([s // 1024 for s in sizes], [size_label(s) for s in sizes])
        ax.set_xlabel("session size")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    name = "bench_bytes_by_size.png"
    fig.savefig(os.path.join(directory, name), dpi=110)
    plt.close(fig)
    written.append(name)

    rows = results.get("throughput") or []
    if rows:
        labels = list(dict.fromkeys((r["size"], r["mix"]) for r in rows))
        tbackends = _order({r["backend"] for r in rows}, list(LABELS))
        tindex = {(r["backend"], r["size"], r["mix"]): r for r in rows}
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / max(len(tbackends), 1)
        for i, backend in enumerate(tbackends):
            ys = [
                tindex.get((backend, *label), {}).get("requests_per_second", 0)
                for label in labels
            ]
            xs = [
                k + (i - len(tbackends) / 2 + 0.5) * width for k in range(len(labels))
            ]
            ax.bar(xs, ys, width, label=LABELS[backend], color=COLORS[backend])
        ax.set_xticks(range(len(labels)), [f"{size_label(s)}\n{m}" for s, m in labels])
        ax.set_ylabel("requests per second")
        ax.set_title("Throughput under load (gunicorn, loopback)")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        name = "bench_throughput.png"
        fig.savefig(os.path.join(directory, name), dpi=110)
        plt.close(fig)
        written.append(name)
    return written


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
    """The latency, throughput and target tables as reST."""
    return "\n".join(
        [
            markdown_to_rst_tables(latency_tables(results)),
            "Throughput",
            "~~~~~~~~~~",
            "",
            markdown_to_rst_tables(throughput_table(results)),
            "Targets",
            "~~~~~~~",
            "",
            markdown_to_rst_tables(targets_table(results["targets"])),
        ]
    )
