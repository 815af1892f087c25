"""Benchmark of the run engine: what a run costs beyond its script, and what live log streams
cost the API, each measured against a reference in the same run.

``run_overhead``: wall time of a 5 s script launched as a Regio run (create the run folder and
record, enqueue, a real ``rq worker`` subprocess forks a horse that supervises the script, the
record reaches COMPLETED as seen by polling it like the web page does), divided by the wall time
of the same script started directly as a subprocess. Lower is better; 1.00 is no overhead; the
goal is <= 1.05. Each is measured ``REPEATS`` times, alternating, and the medians are compared.

``ping_p99_streams_vs_idle``: p99 latency of ``GET /api/runs/<id>`` on gunicorn (threaded
workers, as ``make run`` starts it) while ``STREAMS`` server-sent-event log streams of a running
run are open, divided by the same with none open. Lower is better; the goal is <= 3.

Run: ``.venv/bin/python bench/runs.py``. The last line is ``RESULT run_overhead=<ratio> ...``.
"""

from __future__ import annotations

import functools
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from rq import Worker  # noqa: E402

from app import catalog, jobs, runs, shapes  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402
from app.sessions import SessionStore  # noqa: E402

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

    @functools.cached_property
    def session_id(self) -> str:
        """A real session for the runs (the API checks that a run's session exists)."""
        store = SessionStore(self.folder / "sessions")
        return store.create(shapes.parse('icrs;circle(149.59,-11.06,60")'), None)

    def new_run(self, seconds: float) -> runs.Run:
        run_id = runs.new_run_id()
        store = SessionStore(self.folder / "sessions")
        return runs.create(
            self.db,
            store.run_dir(self.session_id, run_id),
            run_id=run_id,
            session_id=self.session_id,
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


STREAMS = 10
PINGS = 300


@contextmanager
def web_server(bench: Bench) -> Iterator[str]:
    """gunicorn serving the app (threaded workers, as ``make run`` starts it) on a free port."""
    from app import settings
    from app.service import Service

    values = settings.load(
        {
            "PORT": free_port(),
            "REDIS_URL": bench_url(bench),
            "SESSIONS": bench.folder / "sessions",
            "SCRIPTS": bench.folder / "scripts",
            "INSTANCE": bench.folder / "instance",
            "INDEX": bench.folder / "index",
        },
        environ={},
    )
    (bench.folder / "instance" / "logs").mkdir(parents=True, exist_ok=True)
    service = Service(values)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update({s.env: str(values[s.name]) for s in settings.SETTINGS if s.type != "paths"})
    with open(bench.folder / "web.log", "wb") as log:
        web = subprocess.Popen(
            service.gunicorn_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{values['PORT']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/scripts", timeout=5).read()
                break
            except OSError:
                if web.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((bench.folder / "web.log").read_text()) from None
                time.sleep(0.1)
        yield url
    finally:
        web.terminate()
        web.wait(30)


def bench_url(bench: Bench) -> str:
    kwargs = bench.conn.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def ping_latencies(url: str, count: int) -> list[float]:
    """Seconds of ``count`` sequential GETs of a run record (what the page polls)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - started)
    return times


def open_stream(url: str, stop: threading.Event, received: list[int]) -> None:
    """Hold an SSE connection open, reading it, until ``stop`` is set."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", parts.path)
    response = conn.getresponse()
    while not stop.is_set():
        try:
            chunk = response.read1(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        received.append(len(chunk))
    conn.close()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def bench_streams(bench: Bench) -> dict[str, float]:
    """p99 latency of an API GET with ``STREAMS`` live log streams open, over the same idle."""
    run = bench.new_run(120.0)
    jobs.enqueue(run, bench.script, bench.conn, bench.db, scripts_dir=bench.folder / "scripts")
    while runs.get(bench.db, run.id).phase == runs.QUEUED:
        time.sleep(0.05)
    with web_server(bench) as base:
        ping = f"{base}/api/runs/{run.id}"
        ping_latencies(ping, 20)  # warm up
        idle = ping_latencies(ping, PINGS)
        stop = threading.Event()
        received: list[int] = []
        streams = [
            threading.Thread(
                target=open_stream, args=(f"{base}/api/runs/{run.id}/events", stop, received)
            )
            for _ in range(STREAMS)
        ]
        for thread in streams:
            thread.start()
        time.sleep(1.0)
        busy = ping_latencies(ping, PINGS)
        stop.set()
        for thread in streams:
            thread.join(10)
    jobs.cancel(run.id, bench.db, bench.conn, wait=10)
    ratio = p99(busy) / p99(idle)
    print(
        f"ping_p99_streams_vs_idle = {ratio:.2f} (lower is better; goal <= 3): p99 of GET "
        f"/api/runs/<id> is {p99(busy) * 1000:.1f} ms with {STREAMS} log streams open, "
        f"{p99(idle) * 1000:.1f} ms with none ({len(received)} stream chunks received)"
    )
    if not received:
        raise SystemExit("the log streams received nothing: the measurement is not valid")
    return {
        "ping_p99_streams_vs_idle": round(ratio, 3),
        "ping_p99_idle_ms": round(p99(idle) * 1000, 2),
        "ping_p99_streams_ms": round(p99(busy) * 1000, 2),
    }


# Each measurement takes the shared setup and returns {name: value} for the RESULT line.
MEASUREMENTS: list[Callable[[Bench], dict[str, float]]] = [bench_run_overhead, bench_streams]


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
