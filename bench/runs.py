"""Benchmark of the run engine: what a run costs beyond its script, measured in the same process.

``run_overhead``: wall time of a 5 s script launched as a Regio run (create the run folder and
record, enqueue, a real ``rq worker`` subprocess forks a horse that supervises the script, the
record reaches COMPLETED as seen by polling it like the web page does), divided by the wall time
of the same script started directly as a subprocess. Lower is better; 1.00 is no overhead; the
goal is <= 1.05. Each is measured ``REPEATS`` times, alternating, and the medians are compared.

Run: ``.venv/bin/python bench/runs.py``. The last line is ``RESULT run_overhead=<ratio> ...``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from rq import Worker  # noqa: E402

from app import catalog, jobs, runs  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402

SCRIPT_SECONDS = 5.0
REPEATS = 3
POLL = 0.01  # seconds between reads of the run record

SCRIPT = '''"""Benchmark script: sleeps in ten steps, reporting progress through the kit."""
import time

from regio_kit import main, progress, stage


def run(inp):
    seconds = inp["params"]["seconds"]
    with stage("work"):
        for k in range(1, 11):
            time.sleep(seconds / 10)
            progress(k, 10)


if __name__ == "__main__":
    main(run)
'''

MANIFEST = """title = "Sleep (benchmark)"
version = "1"
executable = "sleep.py"
documentation = "Sleeps for the given number of seconds."
time_limit = 600

[[parameters]]
name = "seconds"
type = "float"
default = 5.0
min = 0
"""


@dataclass
class Bench:
    """What the measurements share: a scripts folder, a run database, Redis."""

    folder: Path
    script: catalog.Script
    db: Path
    conn: redis.Redis

    def new_run(self, seconds: float) -> runs.Run:
        run_id = runs.new_run_id()
        return runs.create(
            self.db,
            self.folder / "sessions" / "bench" / run_id,
            run_id=run_id,
            session_id="bench",
            script=self.script,
            params=catalog.validate_params(self.script, {"seconds": seconds}),
        )

    def direct(self, seconds: float) -> float:
        """Seconds to run the script directly as a subprocess."""
        run = self.new_run(seconds)
        started = time.perf_counter()
        subprocess.run(
            [*self.script.command(), str(Path(run.run_dir) / runs.INPUT)],
            cwd=run.run_dir,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        return time.perf_counter() - started

    def through_a_worker(self, seconds: float) -> float:
        """Seconds from creating a run to seeing it COMPLETED in its record."""
        started = time.perf_counter()
        run = self.new_run(seconds)
        jobs.enqueue(run, self.script, self.conn, self.db, scripts_dir=self.folder / "scripts")
        while not (current := runs.get(self.db, run.id)).terminal:
            time.sleep(POLL)
        elapsed = time.perf_counter() - started
        if current.phase != runs.COMPLETED:
            raise SystemExit(f"benchmark run ended {current.phase}: {current.error}")
        return elapsed


@contextmanager
def bench_setup() -> Iterator[Bench]:
    """A private Redis, one real rq worker and a scripts folder with the benchmark script."""
    with tempfile.TemporaryDirectory(prefix="regio-bench-") as tmp:
        folder = Path(tmp)
        scripts = folder / "scripts"
        scripts.mkdir()
        (scripts / "sleep.py").write_text(SCRIPT)
        (scripts / "sleep.toml").write_text(MANIFEST)
        (scripts / "regio_kit.py").symlink_to(ROOT / "scripts" / "regio_kit.py")
        with EmbeddedRedis(folder / "redis", port=free_port()) as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
            env["PYTHONPATH"] = str(ROOT)
            with open(folder / "worker.log", "wb") as log:
                worker = subprocess.Popen(
                    jobs.worker_command(server.url, name="bench"),
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            conn = server.client()
            try:
                while "bench" not in {w.name for w in Worker.all(connection=conn)}:
                    if worker.poll() is not None:
                        raise SystemExit((folder / "worker.log").read_text())
                    time.sleep(0.05)
                script = catalog.load_script(scripts, "sleep")
                yield Bench(folder, script, runs.db_path(folder / "sessions"), conn)
            finally:
                worker.terminate()
                worker.wait(30)
                conn.close()


def bench_run_overhead(bench: Bench) -> dict[str, float]:
    bench.direct(0.0)  # warm up the interpreter's file cache and the worker
    bench.through_a_worker(0.0)
    direct: list[float] = []
    through: list[float] = []
    for i in range(REPEATS):
        direct.append(bench.direct(SCRIPT_SECONDS))
        through.append(bench.through_a_worker(SCRIPT_SECONDS))
        print(f"  repeat {i + 1}: direct {direct[-1]:.3f} s, as a run {through[-1]:.3f} s")
    d, t = statistics.median(direct), statistics.median(through)
    ratio = t / d
    print(
        f"run_overhead = {ratio:.3f} (lower is better; 1.00 = no overhead; goal <= 1.05): "
        f"a {SCRIPT_SECONDS:g} s script takes {t:.3f} s as a run, {d:.3f} s run directly "
        f"(+{(t - d) * 1000:.0f} ms)"
    )
    return {"run_overhead": round(ratio, 4), "run_s": round(t, 3), "direct_s": round(d, 3)}


# Each measurement takes the shared setup and returns {name: value} for the RESULT line.
# The HTTP API work adds ``ping_p99_streams_vs_idle`` here (p99 latency of a ping while live log
# streams are open, over the same with none open), with a web server subprocess of its own.
MEASUREMENTS: list[Callable[[Bench], dict[str, float]]] = [bench_run_overhead]


def main() -> int:
    results: dict[str, float] = {}
    with bench_setup() as bench:
        for measure in MEASUREMENTS:
            print(f"== {measure.__name__}")
            results.update(measure(bench))
    print("RESULT " + " ".join(f"{name}={value}" for name, value in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
