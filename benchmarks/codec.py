"""What encoding and decoding a session costs, next to plain JSON codecs.

``python -m benchmarks.codec`` times, for the benchmark's sessions of 1, 64
and 256 KB (:func:`~benchmarks.apps.payload`):

- flask-relay-session's :func:`~flask_relay_session.serialization.dumps`,
  and apart from it its first step, the walk that tags what cjson would
  not keep (big integers, floats cjson writes differently, empty lists,
  tuples, bytes...); the second step is the standard library's C encoder;
- its :func:`~flask_relay_session.serialization.loads` of what ``dumps``
  wrote;
- the standard library's :mod:`json`, and :mod:`orjson` and
  :mod:`msgspec` when installed, encoding and decoding the same data with
  no tags: what the JSON text itself costs with each.

µs per call, the best of ``--repeats`` timings. The untagged codecs do less
than ``dumps`` and ``loads``: they give the floor under the tag walk, and
what a faster JSON encoder could save beneath it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import typing as t

from flask_relay_session import serialization

from .apps import payload

Codec = t.Callable[[t.Any], t.Any]


def codecs(data: t.Any) -> dict[str, Codec]:
    """Each operation to time, by name, given the data it encodes; those
    of a library that is not installed are left out.
    """
    stored = serialization.dumps(data)
    plain = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    found: dict[str, Codec] = {
        "dumps (flask-relay-session)": serialization.dumps,
        "  its tag walk": lambda value: serialization._Encoder(()).encode(value, 0),
        "loads (flask-relay-session)": lambda _: serialization.loads(stored),
        "json.dumps, untagged": lambda value: json.dumps(
            value, ensure_ascii=False, separators=(",", ":")
        ).encode(),
        "json.loads, untagged": lambda _: json.loads(plain),
    }
    try:
        orjson: t.Any = importlib.import_module("orjson")
    except ImportError:
        pass
    else:
        found["orjson.dumps, untagged"] = orjson.dumps
        found["orjson.loads, untagged"] = lambda _: orjson.loads(plain)
    try:
        msgspec: t.Any = importlib.import_module("msgspec")
    except ImportError:
        pass
    else:
        decoder = msgspec.json.Decoder()
        found["msgspec encode, untagged"] = msgspec.json.encode
        found["msgspec decode, untagged"] = lambda _: decoder.decode(plain)
    return found


def best_time(codec: Codec, data: t.Any, repeats: int) -> float:
    """The fastest of ``repeats`` timings of ``codec(data)``, in µs; each
    timing runs it often enough to last about a millisecond.
    """
    began = time.perf_counter()
    codec(data)
    calls = max(1, int(0.001 / max(time.perf_counter() - began, 1e-7)))
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(calls):
            codec(data)
        best = min(best, (time.perf_counter() - began) / calls)
    return best * 1e6


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codec")
    parser.add_argument("--sizes", default="1,64,256", help="session sizes in KB")
    parser.add_argument("--repeats", type=int, default=20, help="timings per cell")
    args = parser.parse_args(argv)
    sizes = [int(kb) for kb in args.sizes.split(",")]
    rows: dict[str, list[float]] = {}
    for kb in sizes:
        data = payload(kb * 1024)
        for name, codec in codecs(data).items():
            rows.setdefault(name, []).append(best_time(codec, data, args.repeats))
    print(f"µs per call, best of {args.repeats}\n")
    print("| operation | " + " | ".join(f"{kb} KB" for kb in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(f"{cell:,.1f}" for cell in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
