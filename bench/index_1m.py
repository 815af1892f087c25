"""Benchmark of the index at a million footprints: build, memory, queries, appends.

    .venv/bin/python bench/index_1m.py [--size 1000000] [--queries 1000] [--naive-sample 20000]
        [--naive-queries 100] [--seed 2024]

``--size 20000`` runs the same steps quickly. Steps, each in its own child process so that its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, interpreter and imports
included) is its own:

1. ``bench/out/mix-<size>/``: ``python -m indexer synth-catalog --mocs <size>`` (a mixed XMM /
   Chandra / Swift-XRT / eROSITA-tile archive, ``demo.synth.mixed_catalog``), made once and
   reused (its time is printed when it is made);
2. build: ``build_index([an empty folder], index, rebuild=True)``, the full build every removal
   triggers in ingest: exposures derived again from the stored footprints, the MOC set written
   again from the database, streaming;
3. queries: ``Index.load`` then ``Index.query_moc`` (full result rows with coverage and
   off-axis angle) on seeded random regions (circles and polygons of 1' to 5 deg, half around
   catalogue pointings), the region MOCs made beforehand; p50 and p90;
4. the naive reference: the same regions against a random sample of ``--naive-sample``
   footprints as in-memory mocpy MOCs (``moc.intersection(region).empty()`` each), its time
   scaled by size / sample (the loop is linear in the number of MOCs); the hits found on the
   sample must be exactly our hits within the sample;
5. append: 1,000 new exposures (another mixed sample, new obsids, placeholder files so they are
   indexed like files, with their MOC FITS files): recorded in the database as a build records
   the files it read, then published (``indexer.build.publish_added``: the step ``build_index``
   runs when only new files arrived); then queries again on the segmented set.

RESULT lines, one figure each: ``query_1m_p50_ms`` (wall time; ``query_1m_cpu_p50_ms`` is the
process's CPU time for the same queries), ``build_1m_s``, ``rss_1m_mb`` (the larger
of the build's and the query process's peaks; both printed too), ``append_1k_s``,
``query_1m_vs_naive`` (extrapolated naive median / our median on the same regions).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.index_query import regions_around  # noqa: E402

OUT = ROOT / "bench" / "out"
APPEND = 1000


def log(message: str) -> None:
    print(message, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def in_child(function, *args):
    """Run ``function(*args)`` in a fresh process (spawn: nothing inherited); its result."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(function, args)


# --- steps (each runs in a child) -----------------------------------------------------------------


def step_synth(folder: str, size: int, seed: int) -> dict:
    from demo.synth import mixed_catalog

    started = time.perf_counter()
    report = mixed_catalog(Path(folder), size, seed=seed)
    return {**report, "seconds": time.perf_counter() - started, "rss_mb": peak_rss_mb()}


def step_build(folder: str, empty: str) -> dict:
    from indexer.build import build_index

    started, cpu_started = time.perf_counter(), time.process_time()
    report = build_index([Path(empty)], Path(folder), rebuild=True)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "exposures": report.exposures,
        "rss_mb": peak_rss_mb(),
    }


def random_regions(folder: str, count: int, seed: int) -> list[str]:
    """DS9 strings: half around catalogue pointings (rows drawn by id), half anywhere; radius
    1' to 5 deg log-uniform; 20 % convex polygons (5-8 vertices), the rest circles."""
    conn = sqlite3.connect(f"file:{folder}/index.db?mode=ro", uri=True)
    n = conn.execute("select max(id) from exposures").fetchone()[0]

    def pointing(rng: np.random.Generator) -> tuple[float, float]:
        row = None
        while row is None or row[0] is None:
            row = conn.execute(
                "select ra_pnt, dec_pnt from exposures where id = ?", [int(rng.integers(n)) + 1]
            ).fetchone()
        return row

    try:
        return regions_around(pointing, count, seed)
    finally:
        conn.close()


def step_query(folder: str, count: int, seed: int, naive_sample: int, naive_queries: int) -> dict:
    from indexer import shapes
    from indexer.index import Index

    regions = random_regions(folder, count, seed)
    started = time.perf_counter()
    index = Index.load(folder)
    load_seconds = time.perf_counter() - started
    region_mocs = [index.region_moc(text) for text in regions]
    centres = []
    for text in regions:
        centre = shapes.centre(shapes.parse_ds9(text))
        centres.append((centre.ra.deg, centre.dec.deg))
    times, cpu, hits = [], [], []
    for moc, centre in zip(region_mocs, centres, strict=True):
        started, cpu_started = time.perf_counter(), time.process_time()
        results = index.query_moc(moc, centre)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        hits.append({int(r["id"]) for r in results})
        # freed here, off the clock: otherwise the next query's time would include freeing
        # this answer's rows (up to ~1 ms for the large regions, +0.4 ms on the median)
        del results
    full = []
    for text in regions[:200]:
        started = time.perf_counter()
        index.query(text)
        full.append(time.perf_counter() - started)
    rss = peak_rss_mb()
    out = {
        "n_mocs": len(index.mocset),
        "segments": len(index.mocset.segments),
        "ranges": index.mocset.n_ranges,
        "load_s": load_seconds,
        "p50_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * float(np.percentile(times, 90)),
        "p99_ms": 1e3 * float(np.percentile(times, 99)),
        "cpu_p50_ms": 1e3 * statistics.median(cpu),
        "text_p50_ms": 1e3 * statistics.median(full),
        "hits_median": statistics.median(len(h) for h in hits),
        "rss_mb": rss,
    }
    if naive_queries:
        out.update(naive(index, region_mocs[:naive_queries], hits, times, naive_sample, seed))
    return out


def naive(index, region_mocs, hits, times, sample: int, seed: int) -> dict:
    """The naive loop over a sample of the footprints, extrapolated to the whole set."""
    rng = np.random.default_rng(seed + 1)
    n = len(index.mocset)
    positions = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    ids = np.asarray(index.mocset.ids)[positions]
    mocs = [index.mocset.moc(int(p)) for p in positions]
    naive_times, identical = [], True
    for k, region in enumerate(region_mocs):
        started = time.perf_counter()
        found = {int(ids[i]) for i, moc in enumerate(mocs) if not moc.intersection(region).empty()}
        naive_times.append(time.perf_counter() - started)
        identical &= found == hits[k] & set(ids.tolist())
    scale = n / len(positions)
    naive_ms = 1e3 * statistics.median(naive_times) * scale
    ours_ms = 1e3 * statistics.median(times[: len(region_mocs)])
    return {
        "naive_sample": len(positions),
        "naive_ms_extrapolated": naive_ms,
        "ours_ms_same_queries": ours_ms,
        "vs_naive": naive_ms / ours_ms,
        "identical": identical,
    }


def step_append(folder: str, seed: int) -> dict:
    from demo.synth import mixed_rows
    from indexer import store
    from indexer.build import DB_NAME, publish_added

    run = f"B{time.time_ns() % 10**12:012d}"  # new obsids on every run of the benchmark
    pairs = [pair for chunk in mixed_rows(APPEND, seed=seed) for pair in chunk]
    files = OUT / "append-files" / run
    files.mkdir(parents=True)
    records = []
    for k, (row, ranges) in enumerate(pairs):
        row["obsid"] = f"{run}{row['obsid']}"
        path = files / f"{k:04d}.fits"
        path.write_bytes(b"")  # a placeholder: the footprint is given, not read from it
        meta = {key: v for key, v in row.items() if key not in ("id", "path", "moc_file")}
        records.append(
            {
                "path": str(path),
                "size": 0,
                "mtime_ns": 0,
                "checksum": run,
                "meta": meta,
                "depth": 13,
                "ranges": ranges,
            }  # fmt: skip
        )
    started = time.perf_counter()
    db = store.connect(Path(folder) / DB_NAME)
    store.insert_files(db, records)  # what the build's put_file calls store, in one go
    db.conn.close()
    report = publish_added(Path(folder), [r["path"] for r in records])
    seconds = time.perf_counter() - started
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    return {
        "seconds": seconds,
        "publish_s": report.seconds,
        "new": len(report.new_exposures),
        "segments": len(manifest["segments"]),
        "rss_mb": peak_rss_mb(),
    }


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--naive-queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    folder = OUT / f"mix-{args.size}"
    if not (folder / "manifest.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        log(f"synth-catalog --mocs {args.size} into {folder} ...")
        made = in_child(step_synth, str(folder), args.size, 1)
        log(f"  {made}")
    empty = OUT / "empty-archive"
    empty.mkdir(exist_ok=True)

    log("build (full, from the database) ...")
    built = in_child(step_build, str(folder), str(empty))
    log(f"  {built}")
    log("queries ...")
    queried = in_child(
        step_query, str(folder), args.queries, args.seed, args.naive_sample, args.naive_queries
    )
    log(f"  {queried}")
    log(f"append {APPEND} exposures ...")
    appended = in_child(step_append, str(folder), args.seed + 7)
    log(f"  {appended}")
    log("queries on the appended (segmented) set ...")
    after = in_child(step_query, str(folder), min(args.queries, 300), args.seed, 0, 0)
    log(f"  {after}")

    size = queried["n_mocs"]
    log("")
    log(f"index: {size} MOCs, {queried['ranges']} ranges; load {queried['load_s']:.3f} s")
    log(
        f"query (Index.query_moc, rows with coverage): p50 {queried['p50_ms']:.3f} ms, p90 "
        f"{queried['p90_ms']:.3f} ms, p99 {queried['p99_ms']:.3f} ms; hits median "
        f"{queried['hits_median']}; from DS9 text p50 {queried['text_p50_ms']:.2f} ms; CPU time "
        f"of the process per query p50 {queried['cpu_p50_ms']:.3f} ms (what a loaded machine "
        "adds to the wall time is not in it)"
    )
    log(
        f"naive mocpy loop on {queried['naive_sample']} sampled MOCs, scaled to {size}: "
        f"{queried['naive_ms_extrapolated']:.0f} ms per query (identical hits on the sample: "
        f"{queried['identical']})"
    )
    log(
        f"full build {built['seconds']:.1f} s ({built['cpu_s']:.1f} s of CPU), peak RSS "
        f"{built['rss_mb']:.0f} MB"
    )
    log(f"query process peak RSS {queried['rss_mb']:.0f} MB")
    log(
        f"append {APPEND}: {appended['seconds']:.2f} s (publish {appended['publish_s']:.2f} s), "
        f"{appended['segments']} segments now; queries after: p50 {after['p50_ms']:.3f} ms"
    )
    log("")
    log("query_1m_vs_naive = extrapolated naive median / ours on the same regions (higher: better)")
    log(f"RESULT query_1m_p50_ms {queried['p50_ms']:.3f}")
    log(f"RESULT query_1m_cpu_p50_ms {queried['cpu_p50_ms']:.3f}")
    log(f"RESULT build_1m_s {built['seconds']:.1f}")
    log(f"RESULT build_1m_cpu_s {built['cpu_s']:.1f}")
    log(f"RESULT rss_1m_mb {max(built['rss_mb'], queried['rss_mb']):.0f}")
    log(f"RESULT rss_1m_build_mb {built['rss_mb']:.0f}")
    log(f"RESULT rss_1m_query_mb {queried['rss_mb']:.0f}")
    log(f"RESULT append_1k_s {appended['seconds']:.2f}")
    log(f"RESULT query_1m_vs_naive {queried['vs_naive']:.0f}")
    log(f"RESULT query_1m_after_append_p50_ms {after['p50_ms']:.3f}")
    log(f"RESULT n_mocs {size}")
    return 0 if queried["identical"] and appended["new"] == APPEND else 1


if __name__ == "__main__":
    sys.exit(main())
