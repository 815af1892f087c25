"""Benchmark: from Run to products, for the real spectra job, against a plain numpy floor.

``run_to_products_s``: the real ``generate_spectra`` job (3 observations x 2 MOS cameras of
RXCJ0958 in ``../shared/data/xmm-rxcj0958``, source circle 60" and background annulus 180-300"
about the cluster, the manifest's defaults) through a real ``rq worker`` subprocess on a private
Redis, bubblewrap as in production: wall time from the moment rq hands the job to the worker
(the job's ``started_at``) to the moment the run record is COMPLETED with its products listed
(``products.json``), as the page sees it by polling. Median of ``REPEATS`` runs, after one
warm-up run.

``numpy_floor_s``: a plain numpy read + filter + count of the same events in the same process:
each event list read with astropy (the columns X, Y, PI, PATTERN, FLAG), the standard MOS
filters ((FLAG & 0x766ba000) == 0, PATTERN <= 12, as the script applies them) and the same source circle and
background annulus in each list's X/Y pixels, counted. Median of ``REPEATS``.

``run_to_products_vs_numpy_floor``: their ratio (lower is better; it shows progress across
machines). Goal: products in <= 3 s on the 2-core development machine.

Both the warm start (``REGIO_WARM=auto``, the default) and the cold start (``REGIO_WARM=off``)
are measured, each with its own worker and Redis, their runs alternating (a machine busy with
other work slows both alike; the load average is printed); the RESULT lines carry the warm
figures (the default) and the cold ones with a ``cold_`` prefix. ``--before CHECKOUT`` also
measures the cold runs of another checkout (e.g. ``git worktree add /tmp/before <commit>``),
with that checkout's own code: ``before_`` figures.

Run: ``.venv/bin/python bench/run_to_products.py [--repeats N] [--mode warm|cold|both]
[--before CHECKOUT]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
#: The Regio checkout measured: this one, or REGIO_BENCH_CODE (``--before``).
ROOT = Path(os.environ.get("REGIO_BENCH_CODE") or HERE).resolve()
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from rq import Worker  # noqa: E402
from rq.job import Job  # noqa: E402

from app import catalog, jobs, runs, settings, shapes  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402
from app.sessions import SessionStore  # noqa: E402
from tests.science_helpers import build_input  # noqa: E402 - the input as the runner writes it

DATA = HERE.parent / "shared" / "data" / "xmm-rxcj0958"
SOURCE = 'icrs;circle(149.59,-11.06,60")'
BACKGROUND = 'icrs;annulus(149.59,-11.06,180",300")'
REPEATS = 5
POLL = 0.01
RUN_TIMEOUT = 600
MOS_FLAG_MASK = 0x766BA000


def event_lists() -> list[Path]:
    paths = sorted(DATA.glob("*/mos*_exp1_clean_evts.fits"))
    if len(paths) != 6:
        raise SystemExit(f"expected 3 observations x 2 MOS event lists in {DATA}, found {paths}")
    return paths


# ------------------------------------------------------------------------------ numpy floor


def _circle(text: str) -> tuple[float, float, float, float]:
    """(x, y, r_in, r_out) of a DS9 physical circle or annulus."""
    m = re.search(r"(circle|annulus)\(([^)]*)\)", text)
    if m is None:
        raise SystemExit(f"not a circle or annulus: {text}")
    values = [float(v) for v in m[2].split(",")]
    return (values[0], values[1], 0.0, values[2]) if m[1] == "circle" else tuple(values)  # type: ignore[return-value]


def numpy_floor(observations: list[dict]) -> tuple[float, list[tuple[int, int]]]:
    """Seconds for a plain numpy read + filter + count of the events; the counts."""
    started = time.perf_counter()
    counts = []
    for obs in observations:
        with fits.open(obs["path"], memmap=False) as hdul:
            data = hdul["EVENTS"].data
            x, y = np.asarray(data["X"], float), np.asarray(data["Y"], float)
            pattern, flag = data["PATTERN"], data["FLAG"]
            good = ((flag & MOS_FLAG_MASK) == 0) & (pattern <= 12)
            found = []
            for name in ("source", "background"):
                cx, cy, r_in, r_out = _circle(obs["regions_pixel"][name])
                d2 = (x - cx) ** 2 + (y - cy) ** 2
                found.append(int(np.count_nonzero(good & (d2 > r_in * r_in) & (d2 <= r_out**2))))
        counts.append((found[0], found[1]))
    return time.perf_counter() - started, counts


# ------------------------------------------------------------------------------- the runs


@contextmanager
def worker(folder: Path, redis_url: str, mode: str) -> Iterator[None]:
    """A real rq worker (``jobs.worker_command``) with REGIO_WARM for ``mode``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update(
        PYTHONPATH=str(ROOT),
        REGIO_SESSIONS=str(folder / "sessions"),
        REGIO_INSTANCE=str(folder / "instance"),
        REGIO_SCRIPTS=str(ROOT / "scripts"),
        REGIO_REDIS_URL=redis_url,
    )
    if "WARM" in settings.BY_NAME:  # (an older checkout does not know it: it starts cold)
        env["REGIO_WARM"] = "auto" if mode == "warm" else "off"
    name = f"bench-{mode}-{os.getpid()}"
    with open(folder / f"worker-{mode}.log", "wb") as log:
        proc = subprocess.Popen(
            jobs.worker_command(redis_url, name=name), cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def one_run(folder: Path, conn, script: catalog.Script, inp: dict, session_id: str) -> float:
    """Seconds from the job's start in the worker to COMPLETED with products listed."""
    store = SessionStore(folder / "sessions")
    db = runs.db_path(folder / "sessions")
    run_id = runs.new_run_id()
    run = runs.create(
        db, store.run_dir(session_id, run_id), run_id=run_id, session_id=session_id,
        script=script, params=inp["params"], regions=inp["regions"],
        observations=inp["observations"],
    )  # fmt: skip
    jobs.enqueue(run, script, conn, db)
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run.id} did not end in {RUN_TIMEOUT} s (see the worker's log)")
        current = runs.get(db, run.id)
        if current.terminal:
            ended = dt.datetime.now(dt.UTC)
            break
        time.sleep(POLL)
    if current.phase != runs.COMPLETED:
        raise SystemExit(f"run {run.id} ended {current.phase}: {current.error}")
    products = json.loads((Path(current.run_dir) / runs.OUTPUT / "products.json").read_text())
    if len([p for p in products if p["kind"] == "spectrum"]) < 12:
        raise SystemExit(f"run {run.id} listed too few spectra: {products}")
    job = Job.fetch(run.job_id, connection=conn, serializer=jobs.SERIALIZER)
    started = job.started_at.replace(tzinfo=dt.UTC)
    log = (Path(current.run_dir) / "log.txt").read_text()
    how = "warm" if "[regio] start: warm" in log else "cold"
    seconds = (ended - started).total_seconds()
    marks = [("start", started)]
    marks += [
        (s["name"], dt.datetime.fromisoformat(s["started"].replace("Z", "+00:00")))
        for s in current.stages
    ]
    marks.append(("end", ended))
    steps = ", ".join(
        f"{name} {(b - a).total_seconds():.2f}"
        for (name, a), (_, b) in zip(marks, marks[1:], strict=False)
    )
    print(f" run {run.id}: {seconds:.2f} s ({how} start; {steps})")
    return seconds


@contextmanager
def setup(mode: str, stack: ExitStack) -> Iterator[Callable[[dict], float]]:
    """A private Redis and a worker for ``mode``; yields a function running one job."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regio-bench-products-")))
    server = stack.enter_context(EmbeddedRedis(folder / "redis", port=free_port()))
    conn = server.client()
    stack.callback(conn.close)
    script = catalog.load_script(ROOT / "scripts", "generate_spectra")
    session_id = SessionStore(folder / "sessions").create(
        shapes.parse(SOURCE), shapes.parse(BACKGROUND)
    )
    stack.enter_context(worker(folder, server.url, mode))
    deadline = time.monotonic() + 120
    while not Worker.all(connection=conn):
        if time.monotonic() > deadline:
            raise SystemExit((folder / f"worker-{mode}.log").read_text())
        time.sleep(0.05)
    yield lambda inp: one_run(folder, conn, script, inp, session_id)


def measure_runs(modes: list[str], repeats: int, inp: dict) -> dict[str, list[float]]:
    """Seconds of each run per mode; the modes' runs alternate (a busy machine slows them
    alike)."""
    with ExitStack() as stack:
        runners = {mode: stack.enter_context(setup(mode, stack)) for mode in modes}
        for mode, run in runners.items():
            print(f"  {mode} warm-up:", end="")
            run(inp)  # file cache, fonts, the warm server's first fork
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(repeats):
            for mode, run in runners.items():
                print(f"  {mode}:", end="")
                times[mode].append(run(inp))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--mode", choices=("warm", "cold", "both"), default="both")
    parser.add_argument(
        "--before",
        type=Path,
        help="also measure the (cold) runs of this other checkout of Regio, e.g. a worktree of "
        "an older commit: the 'before' figures (RESULT names prefixed with before_)",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: the real data set is not at {DATA} (../shared/data)")
        return 0
    paths = event_lists()
    with tempfile.TemporaryDirectory() as tmp:
        inp = build_input("generate_spectra", paths, SOURCE, BACKGROUND, Path(tmp) / "output")
    n_events = sum(o["n_events"] for o in inp["observations"])
    print(f"{len(paths)} event lists, {n_events} events; load average {os.getloadavg()[0]:.1f}")

    numpy_floor(inp["observations"])  # warm-up: file cache, astropy imports
    floors = []
    for _ in range(args.repeats):
        seconds, counts = numpy_floor(inp["observations"])
        floors.append(seconds)
    floor = statistics.median(floors)
    print(f"numpy floor: {floor:.3f} s (source, background counts per list: {counts})")

    results: dict[str, float] = {}
    modes = [m for m in ("warm", "cold") if args.mode in ("both", m)]
    if "WARM" not in settings.BY_NAME:
        modes = ["cold"]  # an older checkout (--before): cold starts only
    print(f"== {', '.join(modes)} starts, alternating ({ROOT})")
    for mode, times in measure_runs(modes, args.repeats, inp).items():
        prefix = "" if mode == "warm" else "cold_"
        seconds = statistics.median(times)
        results[f"{prefix}run_to_products_s"] = round(seconds, 3)
        results[f"{prefix}run_to_products_vs_numpy_floor"] = round(seconds / floor, 1)
        results[f"{prefix}run_to_products_min_s"] = round(min(times), 3)  # the least disturbed
        print(
            f"{mode}: products {seconds:.2f} s after the job started, {seconds / floor:.0f}x floor"
        )
    if args.before:
        print(f"== before: the cold starts of {args.before}")
        env = {**os.environ, "REGIO_BENCH_CODE": str(args.before.resolve())}
        command = [sys.executable, __file__, "--mode", "cold", "--repeats", str(args.repeats)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        print("\n".join("  " + line for line in out.stdout.splitlines() if "RESULT" not in line))
        if out.returncode != 0:
            raise SystemExit(f"the before measurement failed:\n{out.stderr[-3000:]}")
        for line in out.stdout.splitlines():
            if line.startswith("RESULT cold_run_to_products"):
                _, name, value = line.split()
                results["before_" + name.removeprefix("cold_")] = float(value)
    results["numpy_floor_s"] = round(floor, 4)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores: above 2, others' work)")
    for name, value in results.items():
        print(f"RESULT {name} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
