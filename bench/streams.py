"""Benchmark of live log streams: how responsive the API stays while ``STREAMS`` server-sent-event
streams (``/api/runs/<id>/events``) are open, against the same API with none, in the same run.

``ping_p99_1000_streams_vs_idle``: p99 latency of ``GET /api/health`` (sequential requests, a new
connection each, like a monitoring probe) while 1,000 live log streams of a running run are
open and reading, divided by the same with no stream open. Lower is better; the goal is <= 3.
The run prints a log line every ``LINE_EVERY`` seconds, so every stream receives events while the
pings are timed; the measurement is refused unless nearly every stream received some.

The web server is gunicorn started with ``app.service.Service.gunicorn_command`` (as ``make
run`` starts it: gevent by default; ``--worker-class gthread`` measures the fallback, whose
REGIO_WEB_THREADS threads the streams hold, so the pings time out: bounded by ``PING_TIMEOUT``),
with a private Redis, one real rq worker and a one-observation demo index. Also checked: the
stream after REGIO_STREAMS_PER_USER (set to ``STREAMS``) is refused with 429.

Idle and busy phases alternate ``ROUNDS`` times and their pings are pooled (the machine is
shared: one phase at a noisy moment would decide alone). Also printed: the CPU the web worker
spends on the open streams alone (``streams_cpu_s_per_s``, seconds per second).

Loopback only; every loop is bounded in count and time. Run:
``.venv/bin/python bench/streams.py [--streams N] [--worker-class gevent|gthread] [--rounds R]``
(``BENCH_KEEP_LOG=1`` prints the web server's warnings at the end). The last line is
``RESULT ping_p99_1000_streams_vs_idle=<ratio> ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import catalog, jobs, runs, settings, shapes  # noqa: E402
from app.redis_server import EmbeddedRedis, free_port  # noqa: E402
from app.service import Service, raise_open_files_limit  # noqa: E402
from app.sessions import SessionStore  # noqa: E402

STREAMS = 1000
PINGS = 300  # sequential GETs per phase (p99 = the 3rd slowest)
PING_TIMEOUT = 10.0  # seconds; a ping that takes longer counts as this long
MAX_TIMEOUTS = 3  # pings that time out before the phase gives up (the rest count as timeouts)
LINE_EVERY = 0.5  # seconds between two log lines of the running run
OPEN_TIMEOUT = 120.0  # seconds to get every stream's response headers
SETTLE = 2.0  # seconds between opening the streams and timing the pings
ROUNDS = 3  # idle and busy phases alternate; their pings are pooled (the machine is shared)

SCRIPT = '''"""Benchmark script: prints a log line every few tenths of a second until it is stopped."""
import sys
import time

for k in range(1, 100_000):
    print(f"line {k}: the quick brown fox jumps over the lazy dog", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)
'''

MANIFEST = """title = "Talk (benchmark)"
version = "1"
executable = "talk.py"
documentation = "Prints a log line twice a second until it is cancelled."
time_limit = 3600
"""


@dataclass
class Stream:
    sock: socket.socket
    head: bytes = b""
    status: int | None = None
    received: int = 0  # bytes of body
    events_after_mark: int = 0
    closed: bool = False


@dataclass
class Streams:
    """Many SSE connections, read by one selector (no thread per stream on this side either)."""

    host: str
    port: int
    path: str
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    streams: list[Stream] = field(default_factory=list)

    def open(self, count: int) -> None:
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        for _ in range(count):
            sock = socket.create_connection((self.host, self.port), timeout=30)
            sock.sendall(request)
            sock.setblocking(False)
            stream = Stream(sock)
            self.streams.append(stream)
            self.selector.register(sock, selectors.EVENT_READ, stream)
            self.pump(0)

    def pump(self, seconds: float) -> None:
        """Read whatever arrived, for ``seconds`` (0: what is there now)."""
        deadline = time.monotonic() + seconds
        while True:
            for key, _ in self.selector.select(
                timeout=max(0.0, min(0.05, deadline - time.monotonic()))
            ):
                self._read(key.data)
            if time.monotonic() >= deadline:
                return

    def _read(self, stream: Stream) -> None:
        try:
            data = stream.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            stream.closed = True
            self.selector.unregister(stream.sock)
            return
        if stream.status is None:
            stream.head += data
            if b"\r\n\r\n" not in stream.head:
                return
            head, _, data = stream.head.partition(b"\r\n\r\n")
            stream.status = int(head.split(b" ", 2)[1])
        stream.received += len(data)
        stream.events_after_mark += data.count(b"event: log")

    def wait_open(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(s.status is None and not s.closed for s in self.streams):
            if time.monotonic() > deadline:
                raise SystemExit("the streams did not all get their response headers in time")
            self.pump(0.1)

    def mark(self) -> None:
        for stream in self.streams:
            stream.events_after_mark = 0

    def close(self) -> None:
        for stream in self.streams:
            if not stream.closed:
                self.selector.unregister(stream.sock)
            stream.sock.close()
        self.streams.clear()
        self.selector.close()


def child_env(values: dict) -> dict[str, str]:
    """The environment of a service child: the settings as the supervisor passes them
    (``Service._child_env``), no other ``REGIO_`` variable of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    for setting in settings.SETTINGS:
        value = values[setting.name]
        if isinstance(value, list):
            value = os.pathsep.join(map(str, value))
        env[setting.env] = "" if value is None else str(value)
    return env


def start_web(values: dict, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start gunicorn as ``make run`` does and wait (60 s at most) until it answers
    ``/api/health``; ``(process, base URL)``. Exits with the web log if it never does."""
    with open(log_path, "wb") as log:
        web = subprocess.Popen(
            Service(values).gunicorn_command(),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{values['PORT']}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/api/health", timeout=5).read()
            return web, url
        except OSError:
            if web.poll() is not None or time.monotonic() > deadline:
                web.kill()
                raise SystemExit(log_path.read_text()) from None
            time.sleep(0.1)


@contextmanager
def service(tmp: Path, worker_class: str, streams: int) -> Iterator[dict]:
    """Redis, one rq worker, an index and gunicorn as ``make run`` starts it."""
    from demo.archive import generate_archive
    from indexer.build import build_index

    generate_archive(tmp / "archive", observations=1, seed=1, chandra=0, events_scale=0.1)
    build_index([tmp / "archive"], tmp / "index")
    scripts = tmp / "scripts"
    scripts.mkdir()
    (scripts / "talk.py").write_text(SCRIPT)
    (scripts / "talk.toml").write_text(MANIFEST)
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
                "WEB_WORKER_CLASS": worker_class,
                "WEB_CONNECTIONS": streams + 500,
                "STREAMS_PER_USER": streams,
            },
            environ={},
        )
        (tmp / "instance" / "logs").mkdir(parents=True)
        env = child_env(values)
        with open(tmp / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                jobs.worker_command(server.url, name="bench-streams"),
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        web, url = start_web(values, env, tmp / "web.log")
        try:
            yield {
                "url": url, "values": values, "conn": server.client(), "tmp": tmp, "web": web.pid,
            }  # fmt: skip
        finally:
            web.terminate()
            worker.terminate()
            if os.environ.get("BENCH_KEEP_LOG"):
                text = (tmp / "web.log").read_text()
                print("\n".join(line for line in text.splitlines() if "INFO" not in line)[-5000:])
            for proc in (web, worker):
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def start_talking_run(ctx: dict) -> str:
    """A running run that logs a line every LINE_EVERY seconds."""
    values, conn = ctx["values"], ctx["conn"]
    store = SessionStore(values["SESSIONS"])
    session_id = store.create(shapes.parse('icrs;circle(149.59,-11.06,60")'), None)
    script = catalog.load_script(values["SCRIPTS"], "talk")
    run_id = runs.new_run_id()
    db = runs.db_path(values["SESSIONS"])
    run = runs.create(
        db, store.run_dir(session_id, run_id), run_id=run_id, session_id=session_id,
        script=script, params=catalog.validate_params(script, {}),
    )  # fmt: skip
    jobs.enqueue(run, script, conn, db, scripts_dir=values["SCRIPTS"])
    deadline = time.monotonic() + 60
    while runs.get(db, run_id).phase != runs.EXECUTING:
        if time.monotonic() > deadline:
            raise SystemExit(f"the run did not start: {(ctx['tmp'] / 'worker.log').read_text()}")
        time.sleep(0.05)
    return run_id


def ping_latencies(url: str, count: int, streams: Streams | None = None) -> list[float]:
    """Seconds of ``count`` sequential GETs (a new connection each); the streams are read
    between two pings so that the server never waits on this client."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=PING_TIMEOUT) as response:
                response.read()
            times.append(time.perf_counter() - started)
        except (urllib.error.URLError, TimeoutError, OSError):
            times.append(PING_TIMEOUT)
            if times.count(PING_TIMEOUT) >= MAX_TIMEOUTS:
                return times + [PING_TIMEOUT] * (count - len(times))
        if streams is not None:
            streams.pump(0)
    return times


def cpu_seconds(master: int) -> float:
    """CPU time (user + system) used so far by gunicorn's worker processes."""
    total = 0.0
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@dataclass
class Round:
    """One idle phase and one phase with the streams open."""

    idle: list[float]
    idle_record: list[float]
    busy: list[float]
    busy_record: list[float]
    opened: float  # seconds to open the streams
    streams_cpu: float  # web worker CPU seconds per second, streams open, no pings
    fed: int  # streams that received log events while the pings were timed
    events: int
    refused: int | None  # HTTP status of the stream over the per-user cap


def measure_round(ctx: dict, run_id: str, count: int) -> Round:
    base = ctx["url"]
    health, record = f"{base}/api/health", f"{base}/api/runs/{run_id}"
    idle = ping_latencies(health, PINGS)
    idle_record = ping_latencies(record, PINGS)
    port = int(base.rsplit(":", 1)[1])
    streams = Streams("127.0.0.1", port, f"/api/runs/{run_id}/events")
    started = time.monotonic()
    try:
        streams.open(count)
        streams.wait_open(OPEN_TIMEOUT)
        opened = time.monotonic() - started
        statuses = [s.status for s in streams.streams]
        if statuses.count(200) != count:
            raise SystemExit(f"not every stream was accepted: {sorted(set(map(str, statuses)))}")
        over = Streams("127.0.0.1", port, f"/api/runs/{run_id}/events")
        over.open(1)
        with contextlib.suppress(SystemExit):  # gthread: no thread left to answer
            over.wait_open(30)
        refused = over.streams[0].status
        over.close()
        streams.pump(SETTLE)
        cpu, clock = cpu_seconds(ctx["web"]), time.monotonic()
        streams.pump(SETTLE)
        streams_cpu = (cpu_seconds(ctx["web"]) - cpu) / (time.monotonic() - clock)
        streams.mark()
        busy = ping_latencies(health, PINGS, streams)
        busy_record = ping_latencies(record, PINGS, streams)
        streams.pump(LINE_EVERY * 2)
        fed = sum(1 for s in streams.streams if s.events_after_mark > 0 and not s.closed)
        events = sum(s.events_after_mark for s in streams.streams)
    finally:
        streams.close()
    time.sleep(1.0)  # let the server notice the closed streams
    return Round(idle, idle_record, busy, busy_record, opened, streams_cpu, fed, events, refused)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=STREAMS)
    parser.add_argument("--worker-class", choices=settings.WEB_WORKER_CLASSES, default="gevent")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    limit = raise_open_files_limit(args.streams + 1024)
    if limit < args.streams + 100:
        raise SystemExit(f"ulimit -n is {limit}: too low for {args.streams} streams")
    rounds: list[Round] = []
    with (
        tempfile.TemporaryDirectory(prefix="regio-bench-streams-") as tmp,
        service(Path(tmp), args.worker_class, args.streams) as ctx,
    ):
        run_id = start_talking_run(ctx)
        ping_latencies(f"{ctx['url']}/api/health", 20)  # warm up
        for number in range(1, args.rounds + 1):
            one = measure_round(ctx, run_id, args.streams)
            rounds.append(one)
            print(
                f"round {number}: GET /api/health p99 {p99(one.idle) * 1000:.1f} ms idle, "
                f"{p99(one.busy) * 1000:.1f} ms with {args.streams} streams open (medians "
                f"{statistics.median(one.idle) * 1000:.1f} / {statistics.median(one.busy) * 1000:.1f}"
                f" ms); streams opened in {one.opened:.1f} s, web worker CPU with them open and "
                f"no pings {one.streams_cpu:.2f} s/s; {one.fed}/{args.streams} streams fed "
                f"({one.events} log events); stream {args.streams + 1}: HTTP {one.refused}",
                flush=True,
            )
        jobs.cancel(run_id, runs.db_path(ctx["values"]["SESSIONS"]), ctx["conn"], wait=10)
        ctx["conn"].close()

    idle = [t for r in rounds for t in r.idle]
    busy = [t for r in rounds for t in r.busy]
    idle_record = [t for r in rounds for t in r.idle_record]
    busy_record = [t for r in rounds for t in r.busy_record]
    ratio = p99(busy) / p99(idle)
    ratio_record = p99(busy_record) / p99(idle_record)
    print(
        f"web server: gunicorn, {args.worker_class} worker; {args.rounds} rounds of {PINGS} "
        f"pings per phase, pooled"
    )
    print(
        f"GET /api/health p99: {p99(idle) * 1000:.1f} ms idle, {p99(busy) * 1000:.1f} ms with "
        f"{args.streams} streams open (medians {statistics.median(idle) * 1000:.1f} / "
        f"{statistics.median(busy) * 1000:.1f} ms; timeouts {busy.count(PING_TIMEOUT)})"
    )
    print(
        f"GET /api/runs/<id> p99: {p99(idle_record) * 1000:.1f} ms idle, "
        f"{p99(busy_record) * 1000:.1f} ms with the streams open"
    )
    print(f"ping_p99_{args.streams}_streams_vs_idle = {ratio:.2f} (lower is better; goal <= 3)")
    if any(r.fed < 0.99 * args.streams for r in rounds):
        raise SystemExit("the streams were not fed: the measurement is not valid")
    if any(r.refused != 429 for r in rounds):
        raise SystemExit("the stream over the per-user cap was not refused with 429")
    cpu = statistics.median(r.streams_cpu for r in rounds)
    print(
        f"RESULT ping_p99_{args.streams}_streams_vs_idle={ratio:.3f} "
        f"ping_p99_idle_ms={p99(idle) * 1000:.2f} ping_p99_streams_ms={p99(busy) * 1000:.2f} "
        f"run_p99_streams_vs_idle={ratio_record:.3f} streams_cpu_s_per_s={cpu:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
