"""Benchmark of refusals: the CPU time each hostile request costs before it is refused.

Replays the corpus of ``tests/test_hostile.py`` (single-user and accounts mode) against the real
app (Flask test client, a real Redis, an index of a small generated archive) and measures the
CPU time of the request thread for each request (``time.thread_time``: the request runs in this
thread; garbage collections it triggers are included). Each request is sent ``--repeats`` times
(a refusal stores nothing, so repeats see the same state) after one warm-up pass; a request's
cost is the median of its repeats. Every answer must be the JSON 4xx the test expects.

Python's full (generation 2) garbage collections scan every object of the process, ~250,000
after astropy, regions and mocpy are imported, and cost ~100-150 ms each; one falls every few
hundred requests on whichever request allocates at that moment, valid or not. The time they
take inside each request is measured too (``gc.callbacks``) and reported apart: ``max_cpu_ms``
is the costliest request's median, ``worst_single_ms`` the costliest single send, and
``worst_single_without_gc_ms`` the same less the collections inside it. ``--gc-freeze`` shows
what ``gc.freeze()`` after start-up would change.

Reference, measured in the same run: a valid request creating a session from a 30" circle
(parse, validate, query the index, write the session folder). The goal is ``max_cpu_ms`` under
100: no refusal costs more than 0.1 s of CPU.

Run: ``.venv/bin/python bench/hostile.py [--repeats 5] [--top 10]``. The last line is
``RESULT max_cpu_ms=... n_requests=... worst_single_ms=... worst_single_without_gc_ms=...
gc_full_collections=... gc_full_max_ms=... reference_ms=... max_vs_reference=...``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402
from tests.conftest import app_settings  # noqa: E402
from tests.test_hostile import (  # noqa: E402
    SCRIPTS,
    Case,
    accounts_requests,
    build_world,
    hostile_requests,
)

OUT = ROOT / "bench" / "out"
OBSERVATIONS, SEED = 2, 1234


def log(message: str) -> None:
    print(message, flush=True)


def sample_index() -> tuple[Path, tuple[float, float]]:
    """A small generated archive and its index under bench/out (made once, reused)."""
    from demo.archive import generate_archive
    from indexer.build import build_index

    archive = OUT / f"hostile-archive-{OBSERVATIONS}-{SEED}"
    index = OUT / f"hostile-index-{OBSERVATIONS}-{SEED}"
    if not (archive / "truth.json").is_file():
        log(f"generating {archive} ...")
        generate_archive(archive, observations=OBSERVATIONS, seed=SEED)
    if not (index / "manifest.json").is_file():
        log(f"indexing into {index} ...")
        build_index([archive], index)
    truth = json.loads((archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    return index, (src["ra"], src["dec"])


class GCClock:
    """CPU time spent in garbage collections [ms], per generation, while it is installed."""

    def __init__(self) -> None:
        self.started = 0.0
        self.total = 0.0
        self.full: list[float] = []
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.thread_time()
            return
        spent = (time.thread_time() - self.started) * 1000
        self.total += spent
        if info["generation"] == 2:
            self.full.append(spent)


GC = GCClock()


def cpu_ms(case: Case, world: dict) -> tuple[float, float]:
    """CPU time of one request and of the collections inside it [ms], after checking that it
    got the expected JSON refusal."""
    gc_before = GC.total
    start = time.thread_time()
    with case.send(world["client"], world) as response:
        data = response.data
        status = response.status_code
    elapsed = (time.thread_time() - start) * 1000
    in_gc = GC.total - gc_before
    body = json.loads(data)
    if (
        status != case.status
        or body.get("status") != status
        or case.fragment not in body.get("message", "")
    ):
        raise AssertionError(f"{case.name}: {status} {body}")
    return elapsed, in_gc


def reference_ms(world: dict, repeats: int) -> float:
    """Median CPU time [ms] of creating a session from a 30" circle (a valid request)."""
    ids = world["ids"]
    body = {"source": f'icrs;circle({ids["ra"]},{ids["dec"]},30")'}
    times = []
    for _ in range(repeats + 1):
        start = time.thread_time()
        response = world["client"].post("/api/sessions", json=body, headers=world["headers"])
        times.append((time.thread_time() - start) * 1000)
        assert response.status_code == 201, response.get_json()
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=10, help="print the N costliest requests")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the app is built, as a server could after start-up: the objects "
        "of the imports are no longer scanned by full collections",
    )
    args = parser.parse_args()
    logging.getLogger("regio.catalog").setLevel(logging.CRITICAL)  # tests/scripts/broken.toml
    OUT.mkdir(parents=True, exist_ok=True)
    index, (ra, dec) = sample_index()
    with tempfile.TemporaryDirectory(prefix="regio-bench-hostile-") as tmp:
        tmp = Path(tmp)
        redis = EmbeddedRedis(tmp / "redis", port=free_port()).start()
        try:
            worlds = {}
            for mode, cases in (("none", hostile_requests()), ("accounts", accounts_requests())):
                app = create_app(
                    {**app_settings(tmp / mode, index, redis.url, SCRIPTS), "AUTH": mode}
                )
                worlds[mode] = (build_world(app, ra, dec), cases)
            costs: dict[str, list[float]] = {}
            without_gc: list[float] = []
            for world, cases in worlds.values():
                for case in cases:  # warm-up: lazy imports, caches
                    cpu_ms(case, world)
            if args.gc_freeze:
                gc.freeze()
            GC.full.clear()
            for _ in range(args.repeats):
                for mode, (world, cases) in worlds.items():
                    for case in cases:
                        spent, in_gc = cpu_ms(case, world)
                        costs.setdefault(f"{mode}: {case.name}", []).append(spent)
                        without_gc.append(spent - in_gc)
            full_collections = list(GC.full)
            reference = reference_ms(worlds["none"][0], args.repeats)
        finally:
            redis.stop()
    medians = {name: statistics.median(times) for name, times in costs.items()}
    worst_name, worst_times = max(costs.items(), key=lambda item: max(item[1]))
    worst_single = max(worst_times)
    log(f"{len(medians)} hostile requests, {args.repeats} repeats each; costliest (median ms):")
    for name, ms in sorted(medians.items(), key=lambda item: -item[1])[: args.top]:
        log(f"  {ms:7.2f}  {name}")
    log(f"worst single request: {worst_single:.2f} ms ({worst_name}: {sorted(worst_times)})")
    log(f"reference (valid session creation, median): {reference:.2f} ms")
    top = max(medians.values())
    log(
        f"full garbage collections during the requests: {len(full_collections)}, "
        f"{max(full_collections, default=0):.1f} ms at most"
    )
    log(
        f"RESULT max_cpu_ms={top:.2f} n_requests={len(medians)} "
        f"worst_single_ms={worst_single:.2f} "
        f"worst_single_without_gc_ms={max(without_gc):.2f} "
        f"gc_full_collections={len(full_collections)} "
        f"gc_full_max_ms={max(full_collections, default=0):.2f} "
        f"reference_ms={reference:.2f} max_vs_reference={top / reference:.2f}"
    )


if __name__ == "__main__":
    main()
