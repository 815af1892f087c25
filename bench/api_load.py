"""Benchmark of the API under load: launching runs and creating sessions with 20 concurrent users,
against a reference request measured in the same run, on the real service.

The service is started as ``make run`` starts it: gunicorn with ``app.service.Service
.gunicorn_command`` (gevent by default), a private Redis, ``--workers`` real rq workers and the
demo archive (``demo.archive``, ``--observations`` XMM observations plus its Chandra ones) indexed
by ``indexer.build``. The script the users launch naps for a second (``regio_kit``), so the
workers really run every launched run meanwhile without the science's CPU hiding the API's.

Users (``--users`` threads, each with its own HTTP connection): each one, ``--iterations``
times, creates a session on a source of the archive (its own region: a circle and an annulus a
few arcseconds off the source, different per user and iteration; every covering exposure with
events selected, as the page does), waits (think time), launches the run on it with a fresh
``client_key``, and waits again. Think times are drawn uniformly in ``--think`` seconds, so the
users are not in step. Then a burst: every user launches at the same instant (a barrier),
``--bursts`` times, the worst case of 20 clicks at once.

Also measured first, one request at a time: the web worker's CPU time per session creation and
per launch (``session_cpu_ms``, ``launch_cpu_ms``; from ``/proc``, as ``bench/streams.py``
does), which a busy machine changes much less than latencies.

Printed: p50/p90/p99 of ``POST /api/sessions`` (``session_*``) and ``POST
/api/sessions/ID/runs`` (``launch_*``) under the paced users, the burst launches
(``launch_burst_*``), and the reference: ``GET /api/health`` p50 on a quiet service, measured
in the same run just before (``ping_p50_ms``), with ``launch_p50_vs_ping`` and
``session_p50_vs_ping``. Then ``ping_p99_1000_streams_vs_idle``: ``bench/streams.py``'s
measurement (its functions, on this service: one running run logging twice a second, 1,000
server-sent-event streams of it open, ``GET /api/health`` p99 against none open; ``--stream-
rounds`` alternating rounds pooled; 0 skips it).

Loopback only; every loop is bounded in count and time. Run:
``.venv/bin/python bench/api_load.py [--users 20] [--iterations 8] [--streams 1000]``.
``--no-client-key`` leaves the key out (for a service from before idempotent launches).
The last line is ``RESULT launch_p50_ms=... session_p50_ms=... ...``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import jobs, runs, settings  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402
from app.service import raise_open_files_limit  # noqa: E402
from bench import streams as stream_bench  # noqa: E402

USERS = 20
ITERATIONS = 8
THINK = (0.5, 2.0)  # seconds a user waits between two requests (uniform)
BURSTS = 5
PINGS = 300  # reference GETs on the quiet service
REQUEST_TIMEOUT = 60.0

NAP = '''"""Benchmark script: naps for a second in one stage."""
import time

from regio_kit import main, stage


def run(inp):
    with stage("nap"):
        time.sleep(1.0)


if __name__ == "__main__":
    main(run)
'''
NAP_MANIFEST = """title = "Nap (benchmark)"
version = "1"
executable = "nap.py"
documentation = "Naps for a second."
time_limit = 600
"""


@contextmanager
def service(tmp: Path, args: argparse.Namespace) -> Iterator[dict]:
    """Redis, ``args.workers`` rq workers, the demo archive's index and gunicorn as ``make run``
    starts it. Yields what ``bench.streams`` functions expect (url, values, conn, tmp, web)."""
    from demo.archive import generate_archive
    from indexer.build import build_index

    started = time.monotonic()
    truth = generate_archive(
        tmp / "archive", observations=args.observations, seed=1, events_scale=args.events_scale
    )
    build_index([tmp / "archive"], tmp / "index")
    print(f"demo archive and index ready in {time.monotonic() - started:.1f} s", flush=True)
    scripts = tmp / "scripts"
    scripts.mkdir()
    (scripts / "regio_kit.py").write_text((ROOT / "scripts" / "regio_kit.py").read_text())
    (scripts / "nap.py").write_text(NAP)
    (scripts / "nap.toml").write_text(NAP_MANIFEST)
    (scripts / "talk.py").write_text(stream_bench.SCRIPT)  # for the streams measurement
    (scripts / "talk.toml").write_text(stream_bench.MANIFEST)
    with EmbeddedRedis(tmp / "redis", port=free_port()) as server:
        values = settings.load(
            {
                "PORT": free_port(),
                "REDIS_URL": server.url,
                "SESSIONS": tmp / "sessions",
                "SCRIPTS": scripts,
                "INSTANCE": tmp / "instance",
                "INDEX": tmp / "index",
                "ARCHIVE": [tmp / "archive"],
                "WEB_WORKER_CLASS": args.worker_class,
                "WEB_PROCESSES": args.web_processes,
                "WEB_CONNECTIONS": max(args.streams, args.users) + 500,
                "STREAMS_PER_USER": max(args.streams, 1),
            },
            environ={},
        )
        (tmp / "instance" / "logs").mkdir(parents=True)
        env = stream_bench.child_env(values)
        children = []
        for number in range(args.workers):
            with open(tmp / f"worker-{number}.log", "wb") as log:
                children.append(subprocess.Popen(
                    jobs.worker_command(server.url, name=f"bench-api-{number}"),
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        try:
            web, url = stream_bench.start_web(values, env, tmp / "web.log")
            children.append(web)
            yield {
                "url": url, "values": values, "conn": server.client(), "tmp": tmp,
                "web": web.pid, "truth": truth,
            }  # fmt: skip
        finally:
            for proc in children:
                proc.terminate()
            for proc in children:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class Client:
    """One user: a keep-alive HTTP connection (a new one after an error)."""

    def __init__(self, url: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, float]:
        """``(status, JSON answer, seconds)``. A kept-alive connection the server closed while
        it was idle (gunicorn's keep-alive is a few seconds) is opened again and the request
        sent once more, as browsers do (the launches carry a client_key: never two runs)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    self.host, int(self.port), timeout=REQUEST_TIMEOUT
                )
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if reused and attempt == 1:
                    continue
                raise
            seconds = time.perf_counter() - started
            return response.status, json.loads(raw) if raw else {}, seconds
        raise AssertionError("unreachable")


def bright_sources(truth: dict) -> list[dict]:
    """Sources seen by several observations, the most seen first."""
    seen = [(len(s.get("expected", {})), s) for s in truth["sources"]]
    return [s for n, s in sorted(seen, key=lambda x: -x[0]) if n >= 2] or truth["sources"]


def region(source: dict, rng: random.Random) -> dict:
    dra, ddec = rng.uniform(-5, 5) / 3600, rng.uniform(-5, 5) / 3600
    ra, dec = source["ra"] + dra, source["dec"] + ddec
    return {
        "source": f'icrs;circle({ra:.6f},{dec:.6f},30")',
        "background": f'icrs;annulus({ra:.6f},{dec:.6f},60",120")',
    }


def new_session(client: Client, source: dict, rng: random.Random) -> tuple[str, float]:
    status, answer, seconds = client.request("POST", "/api/sessions", region(source, rng))
    if status != 201:
        raise SystemExit(f"POST /api/sessions answered {status}: {answer}")
    return answer["id"], seconds


def launch(client: Client, session_id: str, with_key: bool) -> float:
    body: dict = {"script": "nap", "params": {}}
    if with_key:
        body["client_key"] = uuid.uuid4().hex
    status, answer, seconds = client.request("POST", f"/api/sessions/{session_id}/runs", body)
    if status != 202:
        raise SystemExit(f"POST /api/sessions/{session_id}/runs answered {status}: {answer}")
    return seconds


def paced_users(ctx: dict, args: argparse.Namespace) -> tuple[list[float], list[float], list]:
    """Every user creates a session and launches a run on it, ``iterations`` times, with think
    times between; returns (session seconds, launch seconds, [(user, client, session id)])."""
    sources = bright_sources(ctx["truth"])
    sessions_s: list[float] = []
    launches_s: list[float] = []
    users: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(args.users)

    def user(number: int) -> None:
        rng = random.Random(1000 + number)
        client = Client(ctx["url"])
        try:
            start.wait(60)
            time.sleep(rng.uniform(*args.think))  # users do not arrive in step
            session_id = None
            for _ in range(args.iterations):
                session_id, s = new_session(client, sources[number % len(sources)], rng)
                time.sleep(rng.uniform(*args.think))
                t = launch(client, session_id, args.client_key)
                with lock:
                    sessions_s.append(s)
                    launches_s.append(t)
                time.sleep(rng.uniform(*args.think))
            with lock:
                users.append((number, client, session_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=user, args=(n,)) for n in range(args.users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.iterations * (2 * args.think[1] + 3 * REQUEST_TIMEOUT) + 60)
    if errors:
        raise SystemExit(f"{len(errors)} user(s) failed; first: {errors[0]!r}")
    return sessions_s, launches_s, users


def bursts(users: list, args: argparse.Namespace) -> list[float]:
    """Every user launches at the same instant, ``args.bursts`` times."""
    out: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    for _ in range(args.bursts):
        barrier = threading.Barrier(len(users))

        def fire(client: Client, session_id: str, barrier=barrier) -> None:
            try:
                barrier.wait(60)
                seconds = launch(client, session_id, args.client_key)
                with lock:
                    out.append(seconds)
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=fire, args=(c, s)) for _, c, s in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT * 3)
        if errors:
            raise SystemExit(f"a burst launch failed: {errors[0]!r}")
        time.sleep(1.0)
    return out


def cpu_per_request(ctx: dict, args: argparse.Namespace, count: int = 20) -> tuple[float, float]:
    """Web worker CPU milliseconds per session creation and per launch, one request at a time
    (CPU time, unlike latency, hardly depends on what else the machine runs)."""
    client, rng = Client(ctx["url"]), random.Random(7)
    source = bright_sources(ctx["truth"])[0]
    before = stream_bench.cpu_seconds(ctx["web"])
    sessions = [new_session(client, source, rng)[0] for _ in range(count)]
    middle = stream_bench.cpu_seconds(ctx["web"])
    for session_id in sessions:
        launch(client, session_id, args.client_key)
    after = stream_bench.cpu_seconds(ctx["web"])
    return (middle - before) / count * 1000, (after - middle) / count * 1000


def pct(values: list[float], q: int) -> float:
    """The q-th percentile (q in 1..99) of ``values`` in milliseconds."""
    if q == 50:
        return statistics.median(values) * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50 {pct(values, 50):.1f} ms, p90 {pct(values, 90):.1f} ms, "
        f"p99 {pct(values, 99):.1f} ms, max {max(values) * 1000:.1f} ms"
    )


def streams_ratio(ctx: dict, args: argparse.Namespace) -> tuple[float, float, float]:
    """``bench/streams.py``'s measurement on this service: (ratio, idle p99 ms, busy p99 ms)."""
    run_id = stream_bench.start_talking_run(ctx)
    stream_bench.ping_latencies(f"{ctx['url']}/api/health", 20)  # warm up
    rounds = []
    for number in range(1, args.stream_rounds + 1):
        one = stream_bench.measure_round(ctx, run_id, args.streams)
        rounds.append(one)
        fed = f"{one.fed}/{args.streams}"
        print(
            f"streams round {number}: /api/health p99 {stream_bench.p99(one.idle) * 1000:.1f} ms "
            f"idle, {stream_bench.p99(one.busy) * 1000:.1f} ms with {args.streams} streams open; "
            f"{fed} streams fed",
            flush=True,
        )
        if one.fed < 0.99 * args.streams:
            raise SystemExit("the streams were not fed: the measurement is not valid")
    jobs.cancel(run_id, runs.db_path(ctx["values"]["SESSIONS"]), ctx["conn"], wait=10)
    idle = [t for r in rounds for t in r.idle]
    busy = [t for r in rounds for t in r.busy]
    p99_idle, p99_busy = stream_bench.p99(idle), stream_bench.p99(busy)
    return p99_busy / p99_idle, p99_idle * 1000, p99_busy * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--think", type=float, nargs=2, default=THINK, metavar=("MIN", "MAX"))
    parser.add_argument("--bursts", type=int, default=BURSTS)
    parser.add_argument("--observations", type=int, default=12)
    parser.add_argument("--events-scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", choices=settings.WEB_WORKER_CLASSES, default="gevent")
    parser.add_argument(
        "--web-processes", type=int, default=settings.BY_NAME["WEB_PROCESSES"].default,
        help="gunicorn web processes (REGIO_WEB_PROCESSES)",
    )  # fmt: skip
    parser.add_argument("--streams", type=int, default=stream_bench.STREAMS)
    parser.add_argument("--stream-rounds", type=int, default=2)
    parser.add_argument("--no-client-key", dest="client_key", action="store_false")
    args = parser.parse_args()
    if args.streams and raise_open_files_limit(args.streams + 1024) < args.streams + 100:
        raise SystemExit(f"ulimit -n is too low for {args.streams} streams")
    with (
        tempfile.TemporaryDirectory(prefix="regio-bench-api-") as tmp,
        service(Path(tmp), args) as ctx,
    ):
        health = f"{ctx['url']}/api/health"
        stream_bench.ping_latencies(health, 20)  # warm up
        ping = stream_bench.ping_latencies(health, PINGS)
        print(summary("GET /api/health, quiet (reference)", ping), flush=True)
        warm = Client(ctx["url"])  # first requests import and load what later ones find ready
        session_id, _ = new_session(warm, bright_sources(ctx["truth"])[0], random.Random(0))
        launch(warm, session_id, args.client_key)
        status, answer, _ = warm.request("GET", f"/api/sessions/{session_id}")
        selected = len(answer.get("selection", {}).get("exposures", []))
        print(f"a session selects {selected} exposures (its run's input has their pixel regions)")
        session_cpu, launch_cpu = cpu_per_request(ctx, args)
        print(
            f"web worker CPU per request, one at a time: session {session_cpu:.1f} ms, "
            f"launch {launch_cpu:.1f} ms",
            flush=True,
        )

        started = time.monotonic()
        sessions_s, launches_s, users = paced_users(ctx, args)
        print(
            f"{args.users} users x {args.iterations} (session + launch), think "
            f"{args.think[0]}-{args.think[1]} s: {time.monotonic() - started:.1f} s",
            flush=True,
        )
        print(summary("POST /api/sessions", sessions_s))
        print(summary("POST /api/sessions/ID/runs", launches_s), flush=True)
        burst_s = bursts(users, args)
        print(summary(f"POST runs, {args.users} at once", burst_s), flush=True)
        queued = jobs.queue_length(ctx["conn"])
        print(f"runs still queued for the {args.workers} worker(s): {queued}")
        ctx["conn"].delete(f"rq:queue:{jobs.QUEUE_NAME}")  # the streams' run must not wait
        streams = streams_ratio(ctx, args) if args.streams else None
        ctx["conn"].close()

    ping50 = pct(ping, 50)
    result = {
        "launch_p50_ms": pct(launches_s, 50),
        "launch_p90_ms": pct(launches_s, 90),
        "launch_p99_ms": pct(launches_s, 99),
        "session_p50_ms": pct(sessions_s, 50),
        "session_p90_ms": pct(sessions_s, 90),
        "session_p99_ms": pct(sessions_s, 99),
        "launch_burst_p50_ms": pct(burst_s, 50),
        "launch_burst_p99_ms": pct(burst_s, 99),
        "ping_p50_ms": ping50,
        "session_cpu_ms": session_cpu,
        "launch_cpu_ms": launch_cpu,
        "launch_p50_vs_ping": pct(launches_s, 50) / ping50,
        "session_p50_vs_ping": pct(sessions_s, 50) / ping50,
    }
    if streams is not None:
        ratio, idle, busy = streams
        result[f"ping_p99_{args.streams}_streams_vs_idle"] = ratio
        result["streams_ping_p99_idle_ms"] = idle
        result["streams_ping_p99_busy_ms"] = busy
    print(
        f"goals: launch p50 <= 100 ms ({result['launch_p50_ms']:.1f}), session p50 <= 50 ms "
        f"({result['session_p50_ms']:.1f}), streams ratio <= 3"
    )
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
