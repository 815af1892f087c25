"""Runs on real rq workers (app.jobs, app.runner, app.reconciler): phases, failures, cancel,
time limits, lost workers, the reconciler.

Most tests start real ``rq worker`` subprocesses (they catch import-path and pickling problems
SimpleWorker hides, and only they can be killed); SimpleWorker runs the rest in-process. Nothing
here asserts a duration: every wait polls a condition under a generous deadline.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job, JobStatus

from app import catalog, jobs, plumbing, reconciler, runner, runs
from app.runs import ABORTED, COMPLETED, ERROR, EXECUTING, QUEUED, Run
from tests.conftest import ROOT, wait_for

SCRIPTS = ROOT / "tests" / "scripts"
HEARTBEAT = 2.0  # seconds: short, so the reconciler notices lost runs quickly in the tests
DEADLINE = 30.0


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a reaped-later orphan counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class Engine:
    """A run database, a Redis connection, and the runs a test launched (killed at teardown)."""

    def __init__(self, db: Path, conn: redis.Redis) -> None:
        self.db = db
        self.conn = conn
        self.catalog = catalog.load_catalog(SCRIPTS)
        self.launched: list[str] = []

    def create(self, name: str, session: str = "s1", **params: Any) -> Run:
        script = self.catalog[name]
        run_id = runs.new_run_id()
        run = runs.create(
            self.db, self.db.parent / session / run_id, run_id=run_id, session_id=session,
            script=script, params=catalog.validate_params(script, params),
            observations=[{"obsid": "0001", "camera": "PN", "path": "/nowhere.fits"}],
        )  # fmt: skip
        self.launched.append(run.id)
        return run

    def launch(self, name: str, **params: Any) -> Run:
        run = self.create(name, **params)
        jobs.enqueue(
            run,
            self.catalog[name],
            self.conn,
            self.db,
            scripts_dir=SCRIPTS,
            heartbeat_ttl=HEARTBEAT,
        )
        return run

    def get(self, run: Run) -> Run:
        return runs.get(self.db, run.id)

    def wait_phase(self, run: Run, phases: set[str], reconcile: bool = False) -> Run:
        def reached() -> Run | None:
            if reconcile:
                reconciler.reconcile(self.db, self.conn, heartbeat_ttl=HEARTBEAT)
            current = self.get(run)
            return current if current.phase in phases else None

        return wait_for(reached, f"run {run.id} to become {'/'.join(sorted(phases))}")

    def wait_running(self, run: Run, stage: str, processes: int) -> list[int]:
        """Wait for the run to reach ``stage`` with ``processes`` processes; their pids."""

        def ready() -> list[int] | None:
            pids = runner.run_processes(run.id)
            return pids if self.get(run).stage == stage and len(pids) >= processes else None

        return wait_for(ready, f"run {run.id} to reach stage {stage!r}")

    def simple_worker(self) -> None:
        """Run the queued jobs in this process (SimpleWorker, burst mode)."""
        worker = SimpleWorker(
            [jobs.queue(self.conn)], connection=self.conn, serializer=jobs.SERIALIZER
        )
        worker.work(burst=True)


@pytest.fixture
def engine(tmp_path, redis_url) -> Iterator[Engine]:
    conn = redis.Redis.from_url(redis_url)
    eng = Engine(runs.db_path(tmp_path / "sessions"), conn)
    yield eng
    for run_id in eng.launched:  # a failed test must not leave scripts running
        runner.kill_run_processes(run_id)
    conn.close()


@pytest.fixture
def start_worker(redis_url, tmp_path) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Start a real ``rq worker`` subprocess named ``name`` (with ``jobs.worker_command``, or
    ``command``); all are stopped at teardown."""
    started: list[tuple[subprocess.Popen, Any]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env["PYTHONPATH"] = str(ROOT)

    def start(name: str, command: list[str] | None = None) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            command or jobs.worker_command(redis_url, name=name),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append((proc, log))
        with redis.Redis.from_url(redis_url) as conn:

            def registered() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"worker {name} exited: {worker_log(tmp_path, name)}")
                return name in {w.name for w in Worker.all(connection=conn)}

            wait_for(registered, f"worker {name} to register")
        return proc

    yield start
    for proc, _log in started:
        if proc.poll() is None:
            proc.terminate()
    for proc, log in started:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def worker_log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]


# ------------------------------------------------------------------------- the happy path


def test_a_run_goes_queued_executing_completed_on_a_real_worker(engine, start_worker):
    run = engine.launch("stages", sleep=0.15, steps=3, plot=True)
    assert engine.get(run).phase == QUEUED
    assert runs.queue_position(engine.get(run), engine.conn) == 0
    start_worker("w1")
    seen: list[tuple[str, str | None]] = []
    live_log = ""

    def finished() -> bool:
        nonlocal live_log
        current = engine.get(run)
        if not seen or seen[-1] != (current.phase, current.stage):
            seen.append((current.phase, current.stage))
        if current.phase == EXECUTING and not live_log:
            live_log = runs.read_log(run.run_dir)[0]  # the web app tails the log while it runs
        return current.terminal

    wait_for(finished, "the run to finish")
    done = engine.get(run)
    assert done.phase == COMPLETED, done.error
    phases = [p for p, _ in seen]
    assert EXECUTING in phases, seen  # each step of 0.15 s is polled every 0.05 s
    assert phases.index(EXECUTING) < phases.index(COMPLETED)
    assert QUEUED not in phases[phases.index(EXECUTING) :]
    assert "[regio] run " in live_log
    assert [s["name"] for s in done.stages] == ["prepare", "extract", "finish"]
    assert (done.progress_done, done.progress_total) == (3, 3)
    assert done.exit_code == 0 and done.error is None and done.failing_stage is None
    assert done.worker == "w1" and done.host and done.started and done.ended
    assert done.started <= done.ended
    products = runs.list_products(run.run_dir)
    assert [p["file"] for p in products] == ["table.txt", "sub/counts.json", "plot.png"]
    log = runs.read_log(run.run_dir)[0]
    assert "[STAGE] extract\n[PROGRESS] 1/3\n" in log
    assert "done: émoji ✓\n" in log
    assert log.splitlines()[-1].startswith("[regio] COMPLETED after ")
    provenance = json.loads((Path(run.run_dir) / "provenance.json").read_text())
    assert provenance["phase"] == COMPLETED and provenance["params"]["steps"] == 3
    assert provenance["worker"] == "w1"
    job = Job.fetch(run.job_id, connection=engine.conn, serializer=jobs.SERIALIZER)
    # the record closes first; rq marks the job finished a few ms later, when execute returned
    wait_for(lambda: job.get_status() != JobStatus.STARTED, "rq to record the job's end")
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == COMPLETED
    assert not engine.conn.exists(runner.ALIVE_KEY.format(run.id))
    assert reconciler.reconcile(engine.db, engine.conn, queued_grace=0) == []


def test_a_failing_script_ends_error_naming_its_stage(engine, start_worker):
    start_worker("w1")
    run = engine.launch("fails", how="fail")
    done = engine.wait_phase(run, {ERROR, COMPLETED})
    assert done.phase == ERROR
    assert done.error == "stage 'extract' failed: no events in the source region"
    assert done.failing_stage == "extract" and done.exit_code == 1
    assert "reading the event list" in done.log_tail
    assert done.log_tail.splitlines()[-1] == "[ERROR] no events in the source region"
    assert json.loads((Path(run.run_dir) / "provenance.json").read_text())["phase"] == ERROR


@pytest.mark.parametrize(
    ("how", "error", "code"),
    [
        ("raise", "stage 'extract' failed: ValueError: the background region is empty", 1),
        ("exit", "stage 'extract' failed: giving up", 3),
    ],
)
def test_failures_without_the_kit_message(engine, how, error, code):
    run = engine.launch("fails", how=how)
    engine.simple_worker()
    done = engine.get(run)
    assert (done.phase, done.error, done.exit_code) == (ERROR, error, code)


def test_the_worker_refuses_another_version_of_the_script(engine, tmp_path):
    other = tmp_path / "other-scripts"
    shutil.copytree(SCRIPTS, other, symlinks=True)
    manifest = other / "stages.toml"
    manifest.write_text(manifest.read_text().replace('version = "1.0"', 'version = "2.0"'))
    run = engine.create("stages")
    jobs.enqueue(run, engine.catalog["stages"], engine.conn, engine.db, scripts_dir=other)
    engine.simple_worker()
    done = engine.get(run)
    assert done.phase == ERROR
    assert "this worker has version 2.0 of 'stages', the run asked for 1.0" in done.error
    assert "ERROR: the script cannot start" in runs.read_log(run.run_dir)[0]


def test_a_script_that_cannot_start_ends_error(engine, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "noshebang.sh").write_text("echo hello\n")  # execve refuses it: no #! line
    (folder / "noshebang.sh").chmod(0o755)
    (folder / "noshebang.toml").write_text(
        'title = "T"\nversion = "1"\nexecutable = "noshebang.sh"\ndocumentation = "D"\n'
        "time_limit = 10\n"
    )
    script = catalog.load_script(folder, "noshebang")
    run_id = runs.new_run_id()
    run = runs.create(
        engine.db,
        engine.db.parent / run_id,
        run_id=run_id,
        session_id="s",
        script=script,
        params={},
    )
    jobs.enqueue(run, script, engine.conn, engine.db, scripts_dir=folder)
    engine.simple_worker()
    done = engine.get(run)
    assert done.phase == ERROR and done.error.startswith("the script cannot start: [Errno 8]")
    assert "ERROR: the script cannot start" in runs.read_log(run.run_dir)[0]


def test_execute_needs_an_rq_worker(engine):
    with pytest.raises(RuntimeError, match="inside an rq worker"):
        jobs.execute("x", str(engine.db))


# ----------------------------------------------------------------------------------- cancel


def test_cancel_a_queued_run(engine):
    run = engine.launch("stages")
    other = engine.launch("stages")
    cancelled = jobs.cancel(run.id, engine.db, engine.conn)
    assert cancelled.phase == ABORTED and cancelled.error == "cancelled before it started"
    assert (
        Job.fetch(run.job_id, connection=engine.conn, serializer=jobs.SERIALIZER).get_status()
        == JobStatus.CANCELED
    )
    assert runs.queue_position(engine.get(other), engine.conn) == 0  # it left the queue
    engine.simple_worker()
    assert engine.get(run).phase == ABORTED  # the worker did not run it
    assert engine.get(other).phase == COMPLETED
    assert "[regio] run " not in runs.read_log(run.run_dir)[0]
    assert jobs.cancel(run.id, engine.db, engine.conn).phase == ABORTED  # idempotent
    assert jobs.cancel(other.id, engine.db, engine.conn).phase == COMPLETED  # finished: untouched


def test_cancel_a_running_run_kills_its_whole_process_group(engine, start_worker):
    start_worker("w1")
    run = engine.launch("slow")
    pids = engine.wait_running(run, "wait", processes=3)  # bash and two sleeps
    done = jobs.cancel(run.id, engine.db, engine.conn, wait=DEADLINE)
    assert done.phase == ABORTED and done.error == "cancelled"
    assert done.failing_stage is None
    wait_for(lambda: not any(alive(p) for p in pids), "the script and its children to die")
    assert runner.run_processes(run.id) == []
    assert "[regio] stopping the script: cancelled" in runs.read_log(run.run_dir)[0]
    assert not engine.conn.exists(runner.CANCEL_KEY.format(run.id))


# -------------------------------------------------------------------------- time limit


def test_time_limit_ends_the_run_and_its_children(engine, start_worker):
    start_worker("w1")
    run = engine.launch("slow_short")
    pids = engine.wait_running(run, "wait", processes=3)
    done = engine.wait_phase(run, {ERROR, COMPLETED, ABORTED})
    assert done.phase == ERROR and done.error == "time limit exceeded (2 s)"
    assert done.failing_stage == "wait"
    wait_for(lambda: not any(alive(p) for p in pids), "the script and its children to die")
    assert runner.run_processes(run.id) == []


# ----------------------------------------------------------------------------- lost workers


def test_sigkill_of_the_worker_mid_run_ends_the_run_error(engine, start_worker):
    worker = start_worker("w1")
    run = engine.launch("slow")
    pids = engine.wait_running(run, "wait", processes=3)
    os.kill(worker.pid, signal.SIGKILL)
    done = engine.wait_phase(run, {ERROR, ABORTED, COMPLETED}, reconcile=True)
    # the horse sees its worker die and stops the script itself
    assert done.phase == ERROR and done.error == "worker lost (the rq worker process died)"
    wait_for(lambda: not any(alive(p) for p in pids), "no orphan script process")
    assert runner.run_processes(run.id) == []


def test_sigkill_of_the_worker_group_and_its_horse_is_settled_by_the_reconciler(
    engine, start_worker
):
    worker = start_worker("w1")
    run = engine.launch("slow")
    pids = engine.wait_running(run, "wait", processes=3)
    horse = parent_of(engine.get(run).pid)
    assert horse != worker.pid and parent_of(horse) == worker.pid
    os.killpg(worker.pid, signal.SIGKILL)  # the worker's process group...
    os.killpg(horse, signal.SIGKILL)  # ...and the horse's, which rq puts in a group of its own
    done = engine.wait_phase(run, {ERROR, ABORTED, COMPLETED}, reconcile=True)
    assert done.phase == ERROR
    assert done.error == f"worker lost (no heartbeat from w1 on {done.host} for {HEARTBEAT:g} s)"
    assert done.failing_stage == "wait" and "[STAGE] wait" in done.log_tail
    wait_for(lambda: not any(alive(p) for p in pids), "no orphan script process")
    assert runner.run_processes(run.id) == []
    assert reconciler.reconcile(engine.db, engine.conn) == []  # settled once


def test_two_workers_share_twenty_runs(engine, start_worker):
    start_worker("w1")
    start_worker("w2")
    launched = [engine.launch("stages", steps=1) for _ in range(20)]
    for run in launched:
        engine.wait_phase(run, {COMPLETED, ERROR, ABORTED})
    done = [engine.get(run) for run in launched]
    assert {r.phase for r in done} == {COMPLETED}
    assert {r.worker for r in done} == {"w1", "w2"}


# ---------------------------------------------------------------------------- reconciler


def test_reconcile_requeues_a_queued_run_whose_job_vanished(engine):
    run = engine.launch("stages")
    Job.fetch(
        run.job_id, connection=engine.conn, serializer=jobs.SERIALIZER
    ).delete()  # e.g. Redis lost its data
    reconcile = reconciler.reconcile
    assert reconcile(engine.db, engine.conn) == []  # too young: being enqueued right now
    assert reconcile(engine.db, engine.conn, queued_grace=0, scripts_dir=SCRIPTS) == [run.id]
    assert engine.get(run).requeues == 1
    engine.simple_worker()
    assert engine.get(run).phase == COMPLETED
    assert "queued again" in runs.read_log(run.run_dir)[0]


def test_reconcile_gives_up_requeueing_after_a_few_times(engine):
    run = engine.create("stages")
    runs.update(engine.db, run.id, requeues=reconciler.MAX_REQUEUES)
    assert reconciler.reconcile(engine.db, engine.conn, queued_grace=0) == [run.id]
    done = engine.get(run)
    assert done.phase == ERROR and done.error.startswith("the queue lost this run")


def test_reconcile_reports_a_job_that_failed_before_the_script_started(engine, tmp_path):
    run = engine.create("stages")
    elsewhere = runs.db_path(tmp_path / "elsewhere")  # the job cannot find its run record
    jobs.enqueue(run, engine.catalog["stages"], engine.conn, elsewhere, scripts_dir=SCRIPTS)
    engine.simple_worker()
    assert engine.get(run).phase == QUEUED
    assert reconciler.reconcile(engine.db, engine.conn, queued_grace=0) == [run.id]
    done = engine.get(run)
    assert done.phase == ERROR
    assert done.error.startswith("the worker could not start the run: rq job failed: ")
    assert "RunNotFound" in done.error


def lost_executing_run(engine: Engine) -> Run:
    """An EXECUTING record whose job and heartbeat are gone (as after a Redis restart)."""
    run = engine.create("stages")
    return runs.update(engine.db, run.id, phase=EXECUTING, started=plumbing.now(), worker="ghost")


def test_reconcile_is_safe_to_run_concurrently(engine):
    run = lost_executing_run(engine)
    barrier = threading.Barrier(6)
    changed: list[str] = []

    def reconcile() -> None:
        with redis.Redis(connection_pool=engine.conn.connection_pool) as conn:
            barrier.wait()
            changed.extend(reconciler.reconcile(engine.db, conn))

    threads = [threading.Thread(target=reconcile) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert changed == [run.id]
    done = engine.get(run)
    assert done.phase == ERROR and done.error == "worker lost (its job vanished from Redis)"
    assert runs.read_log(run.run_dir)[0].count("[regio] ERROR: worker lost") == 1


def test_a_pending_cancel_of_a_lost_run_ends_it_aborted(engine):
    run = lost_executing_run(engine)
    jobs.cancel(run.id, engine.db, engine.conn)  # nobody is there to act on it
    assert engine.get(run).phase == EXECUTING
    assert reconciler.reconcile(engine.db, engine.conn) == [run.id]
    assert engine.get(run).phase == ABORTED


def test_reconcile_leaves_healthy_runs_alone(engine):
    queued = engine.launch("stages")
    running = engine.launch("stages")
    runs.update(engine.db, running.id, phase=EXECUTING)
    engine.conn.set(runner.ALIVE_KEY.format(running.id), "w@h", px=60_000)
    assert reconciler.reconcile(engine.db, engine.conn, queued_grace=0) == []
    assert engine.get(queued).phase == QUEUED and engine.get(running).phase == EXECUTING


def test_reconciler_thread_settles_lost_runs(engine):
    run = lost_executing_run(engine)
    app = SimpleNamespace(
        extensions={"regio.settings": {"SESSIONS": engine.db.parent}, "regio.redis": engine.conn}
    )
    thread = reconciler.start_reconciler_thread(app, interval=0.1)
    try:
        assert app.extensions["regio.reconciler"] is thread
        engine.wait_phase(run, {ERROR})
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_worker_command_tunes_rq_heartbeats():
    command = jobs.worker_command("redis://h:1/0", name="w9")
    assert command[1:4] == ["-m", "rq.cli", "worker"]
    assert command[-1] == "regio" and "--name" in command and "w9" in command
    assert command[command.index("--worker-ttl") + 1] == str(jobs.WORKER_TTL)
    assert command[command.index("--serializer") + 1] == "rq.serializers.JSONSerializer"


def test_products_of_a_run_are_bundled(engine):
    run = engine.launch("stages")
    engine.simple_worker()
    path = runs.bundle(run.run_dir)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert f"{run.id}/provenance.json" in names and f"{run.id}/output/table.txt" in names


# ----------------------------------------------------------------------- JSON, never pickle


def test_a_job_is_json_in_redis(engine, start_worker):
    run = engine.launch("stages", steps=1)
    raw = engine.conn.hgetall(f"rq:job:{run.job_id}")
    data = zlib.decompress(raw[b"data"])  # rq compresses the payload
    assert not data.startswith(b"\x80"), "a pickle (protocol 2+ starts with 0x80)"
    func, instance, args, kwargs = json.loads(data)
    assert (func, instance) == ("app.jobs.execute", None)
    assert args == [run.id, str(engine.db)]
    assert kwargs == {"scripts_dir": str(SCRIPTS), "heartbeat_ttl": HEARTBEAT}
    start_worker("w-json")  # a real worker reads it and runs the run
    assert engine.wait_phase(run, {COMPLETED, ERROR}).phase == COMPLETED
    job = Job.fetch(run.job_id, connection=engine.conn, serializer=jobs.SERIALIZER)
    wait_for(lambda: job.get_status() == JobStatus.FINISHED, "rq to record the job's end")
    # the result rq keeps (base64 of the serialized value) is JSON too
    entries = engine.conn.xrange(f"rq:results:{run.job_id}")
    assert entries and json.loads(base64.b64decode(entries[-1][1][b"return_value"])) == COMPLETED


class _OpensAFile:
    """Unpickling this object creates a file: what a planted pickle could do on a worker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_the_worker_never_unpickles_what_it_finds_in_redis(
    engine, start_worker, tmp_path, redis_url
):
    from rq.serializers import PickleSerializer

    marker = tmp_path / "unpickled"
    planted = Queue(jobs.QUEUE_NAME, connection=engine.conn, serializer=PickleSerializer)
    job = planted.enqueue("builtins.print", _OpensAFile(marker))
    assert not marker.exists()
    run = engine.launch("stages", steps=1)  # queued behind the planted job
    # even started without --serializer (rq's default is pickle), RegioWorker reads JSON
    command = jobs.worker_command(redis_url, name="w-pickle")
    at = command.index("--serializer")
    del command[at : at + 2]
    start_worker("w-pickle", command)
    assert engine.wait_phase(run, {COMPLETED, ERROR}).phase == COMPLETED  # the worker goes on
    assert not marker.exists(), "the worker unpickled a job"
    status = Job.fetch(job.id, connection=engine.conn, serializer=jobs.SERIALIZER).get_status()
    assert status == JobStatus.FAILED


def test_the_worker_runs_nothing_but_regio_runs(engine, start_worker, tmp_path):
    marker = tmp_path / "opened"
    planted = jobs.queue(engine.conn).enqueue("builtins.open", str(marker), "w")  # valid JSON
    run = engine.launch("stages", steps=1)
    start_worker("w-allow")
    assert engine.wait_phase(run, {COMPLETED, ERROR}).phase == COMPLETED
    assert not marker.exists(), "the worker called a function named in Redis"
    job = Job.fetch(planted.id, connection=engine.conn, serializer=jobs.SERIALIZER)
    assert job.get_status() == JobStatus.FAILED
    assert "not a Regio job: refused" in job.latest_result().exc_string


def test_a_regio_job_imports_no_callback_named_in_redis(engine):
    run = engine.launch("stages")
    job = jobs.RegioJob.fetch(run.job_id, connection=engine.conn, serializer=jobs.SERIALIZER)
    job._success_callback_name = job._failure_callback_name = "os.system"
    job._stopped_callback_name = "os.system"
    assert (job.success_callback, job.failure_callback, job.stopped_callback) == (None,) * 3
    assert job.func is jobs.execute


def test_the_readme_worker_runs_runs_from_a_redis_with_a_password(tmp_path):
    """The README's multi-host recipe: a Redis that needs a password, a worker started with
    the README's command and the URL in RQ_REDIS_URL (not on its command line)."""
    import secrets
    import sys

    from app.redis_server import free_port, redis_server_binary

    flags = "--worker-class app.jobs.RegioWorker --serializer rq.serializers.JSONSerializer"
    assert flags in (ROOT / "README.md").read_text()
    password, port = secrets.token_urlsafe(16), free_port()
    server = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--requirepass",
         password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    worker = None
    log_path = tmp_path / "worker.log"
    conn = redis.Redis.from_url(url)
    engine = Engine(runs.db_path(tmp_path / "sessions"), conn)
    try:
        wait_for(lambda: _pings(conn), "the Redis with a password to answer")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()
        run = engine.launch("stages", steps=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGIO_", "RQ_"))}
        env.update(PYTHONPATH=str(ROOT), RQ_REDIS_URL=url, REGIO_REDIS_URL=url)
        command = [sys.executable, "-m", "rq.cli", "worker", *flags.split(),
                   "--worker-ttl", "30", "--job-monitoring-interval", "5", "--name", "w-readme",
                   "regio"]  # fmt: skip
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        done = engine.wait_phase(run, {COMPLETED, ERROR})
        assert done.phase == COMPLETED, (done.error, log_path.read_text())
        assert done.worker == "w-readme"
        assert jobs.worker_names(conn) == ["w-readme"]
        assert password not in Path(f"/proc/{worker.pid}/cmdline").read_text()
        assert reconciler.reconcile(engine.db, conn, queued_grace=0) == []
    finally:
        for run_id in engine.launched:
            runner.kill_run_processes(run_id)
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        conn.close()
    assert password not in log_path.read_text()


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.exceptions.ConnectionError:
        return False
