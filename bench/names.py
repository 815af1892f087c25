"""Benchmark of object-name look-ups (``indexer.names``) on a synthetic million-exposure index.

    .venv/bin/python bench/names.py [--exposures 1000000] [--queries 200] [--seed 7]

Writes an ``exposures`` table of N rows (3 cameras an observation, names like survey fields and
clusters: ``CL J0958.3-1104``, ``FIELD 123456``, ...) to a temporary SQLite database in the
index's layout, loads it with ``NameTable`` (what the first ``/api/resolve`` after a build pays),
then times look-ups of whole names, starts of names and text inside names against the reference
a first version would use: one pass over every distinct name per query, normalising each.
Both must return the same best name. Prints ``RESULT name value`` lines: ratios against the
reference measured in the same run, and the absolute numbers.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.names import NameTable, normalise  # noqa: E402


def synthetic_rows(exposures: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    prefixes = ["CL J", "RXC J", "FIELD ", "PKS ", "NGC ", "ABELL ", "XMMU J", "SDSS J"]
    rows = []
    observation = 0
    while len(rows) < exposures:
        observation += 1
        prefix = rng.choice(prefixes)
        ra, dec = rng.uniform(0, 360), rng.uniform(-90, 90)
        if prefix.endswith("J"):
            name = (
                f"{prefix}{int(ra / 15):02d}{int(ra * 4 % 60):02d}.{rng.randint(0, 9)}{dec:+05.0f}"
            )
        else:
            name = f"{prefix}{rng.randint(1, 400_000)}"
        for camera in ("EMOS1", "EMOS2", "EPN")[: exposures - len(rows)]:
            rows.append(("XMM", f"{observation:010d}", camera, name, ra, dec))
    return rows


def naive_find(rows_by_name: dict[str, list], text: str) -> str | None:
    """The reference: every distinct name normalised again for each query, whole > start > inside."""
    key = normalise(text)
    exact = prefix = inside = None
    for name in rows_by_name:
        n = normalise(name)
        if n == key:
            exact = name
        elif n.startswith(key) and (prefix is None or len(n) < len(normalise(prefix))):
            prefix = name
        elif len(key) >= 3 and key in n and (inside is None or len(n) < len(normalise(inside))):
            inside = name
    return exact or prefix or inside


def rank_of(name: str | None, text: str) -> tuple[int, int] | None:
    """Which rank a best answer has (whole, start, inside) and its length: both must agree."""
    if name is None:
        return None
    n, key = normalise(name), normalise(text)
    return (0 if n == key else 1 if n.startswith(key) else 2, len(n))


def timed(function, queries) -> tuple[list, list[float]]:
    answers, times = [], []
    for query in queries:
        start = time.perf_counter()
        answers.append(function(query))
        times.append(time.perf_counter() - start)
    return answers, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rows = synthetic_rows(args.exposures, args.seed)
    folder = Path(tempfile.mkdtemp(prefix="regio-names-"))
    try:
        run(args, rows, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, rows: list[tuple], folder: Path) -> None:
    db = sqlite3.connect(folder / "index.db")
    db.execute(
        "CREATE TABLE exposures (id INTEGER PRIMARY KEY, mission TEXT, obsid TEXT, "
        "camera TEXT, object TEXT, ra_pnt REAL, dec_pnt REAL)"
    )
    db.executemany(
        "INSERT INTO exposures (mission, obsid, camera, object, ra_pnt, dec_pnt) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()
    (folder / "manifest.json").write_text('{"database": "index.db"}')
    start = time.perf_counter()
    table = NameTable.load(folder)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    NameTable.load(folder)  # cached until the manifest changes
    cached_s = time.perf_counter() - start

    by_name: dict[str, list] = {}
    for row in rows:
        by_name.setdefault(row[3], []).append(row)
    rng = random.Random(args.seed + 1)
    names = list(by_name)
    picks = [rng.choice(names) for _ in range(args.queries)]
    kinds = {
        "whole": [p.lower().replace(" ", "") for p in picks],
        "start": [normalise(p)[: max(4, len(normalise(p)) - 3)] for p in picks],
        "inside": [normalise(p)[3:9] for p in picks],
    }
    print(f"{len(rows)} exposures, {len(names)} distinct names, {len(table.keys)} keys")
    print(f"load from SQLite: {load_s:.2f} s; cached: {cached_s * 1e3:.2f} ms")
    results = [f"RESULT names_load_s {load_s:.2f}"]
    for kind, queries in kinds.items():
        fast, fast_t = timed(lambda q: (table.find(q) or [None])[0], queries)
        count = max(10, args.queries // 20)  # the reference is slow: fewer queries
        slow, slow_t = timed(lambda q: naive_find(by_name, q), queries[:count])
        for query, got, want in zip(queries[:count], fast[:count], slow, strict=True):
            assert rank_of(got.object if got else None, query) == rank_of(want, query), (
                kind,
                query,
                got,
                want,
            )
        f_ms, s_ms = statistics.median(fast_t) * 1e3, statistics.median(slow_t) * 1e3
        print(f"{kind:>6}: indexed {f_ms:.3f} ms, one pass over the names {s_ms:.1f} ms (median)")
        results += [
            f"RESULT names_{kind}_ms {f_ms:.3f}",
            f"RESULT names_{kind}_naive_ms {s_ms:.1f}",
            f"RESULT names_{kind}_speedup {s_ms / f_ms:.1f}",
        ]
    print("\n".join(results))


if __name__ == "__main__":
    main()
