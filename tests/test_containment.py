"""Containment of science scripts (``app.sandbox``, ``app.runner``, ``app.runs``).

A hostile script (``tests/scripts/escape.py``) on a real rq worker: it links its log to the
instance's secret key, reads and writes outside its run folder, leaves a grandchild with a clean
environment and a session of its own. Checked from outside: nothing outside its run folder was
read (the secret key, the run database, another session never reach the log, the products or the
bundle) or changed, and the grandchild is gone when the run ends. Also the fallback (no
bubblewrap), the log cap, and the bundle made once at the end and served as a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from app import accounts, catalog, runs, sandbox, settings
from app.runner import Runner
from tests.conftest import ROOT, app_settings, wait_for

SCRIPTS = ROOT / "tests" / "scripts"
DEADLINE = 60.0
#: What the escape script appends to files it manages to write.
MARK = b"ESCAPE-WAS-HERE"


def bwrap_problem() -> str | None:
    bwrap = sandbox.find_bwrap()
    return sandbox.probe(bwrap) if bwrap else "bubblewrap (bwrap) is not installed"


@pytest.fixture
def needs_bwrap() -> None:
    problem = bwrap_problem()
    if problem:
        if os.environ.get("CI"):  # CI must really run the sandbox tests
            raise RuntimeError(f"the sandbox tests need bubblewrap: {problem}")
        pytest.skip(f"{problem} (`make test` installs Debian's bubblewrap when run as root)")


@pytest.fixture
def env(request, tmp_path, sample_index, redis_url) -> dict[str, Any]:
    """Settings of the app and of the worker (the ``worker`` fixture); ``REGIO_SANDBOX`` from
    the test's indirect parameter (default ``bwrap``: a run fails if the sandbox does not work)."""
    values = app_settings(tmp_path, sample_index, redis_url, SCRIPTS)
    values["SANDBOX"] = getattr(request, "param", "bwrap")
    return values


def marked_processes(marker: str) -> list[int]:
    """Live (not zombie) processes of this host with ``marker`` as an argument."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in argv and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def new_session(client, truth) -> dict[str, Any]:
    """A session on a source of the sample archive, its covering exposures selected."""
    src = next(s for s in truth["sources"] if s["expected"])
    body = {"source": f'icrs;circle({src["ra"]},{src["dec"]},30")'}
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201, response.get_json()
    session = response.get_json()
    assert session["selection"]["exposures"], session
    return session


def launch(client, session: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/sessions/{session['id']}/runs", json={"script": "escape", "params": params}
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def wait_run(client, run_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = client.get(f"/api/runs/{run_id}").get_json()
        return run if run["phase"] in ("COMPLETED", "ERROR", "ABORTED") else None

    return wait_for(ended, f"run {run_id} to end")


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every regular file below ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def run_escape(client, env, truth, tries: str) -> dict[str, Any]:
    """Launch the escape script, let it go once its grandchild runs, wait for the end. Returns
    what the checks need: the run, its folder, the grandchild's pids, the secrets planted."""
    sessions = Path(env["SESSIONS"])
    instance = Path(env["INSTANCE"])
    secret = (instance / "secret_key").read_bytes()  # written by create_app
    victim = new_session(client, truth)
    victim_note = b"victim-session-note-" + os.urandom(8).hex().encode()
    (sessions / victim["id"] / "note.txt").write_bytes(victim_note)
    accounts.create_user(accounts.db_path(sessions), "bob@example.org", "Bob", "A long pass 42!")
    before = {
        "instance": digests(instance),
        "victim": digests(sessions / victim["id"]),
        "accounts": hashlib.sha256(accounts.db_path(sessions).read_bytes()).hexdigest(),
        "scripts": digests(SCRIPTS),
    }
    redis_url = urlparse(env["REDIS_URL"])
    session = new_session(client, truth)
    run = launch(
        client, session, tries=tries, instance=str(instance),
        redis=f"{redis_url.hostname}:{redis_url.port}",
    )  # fmt: skip
    run_dir = sessions / session["id"] / "runs" / run["id"]
    marker = f"regio-escape-{run['id']}"
    grandchild = wait_for(lambda: marked_processes(marker), "the grandchild to run")
    (run_dir / "go").touch()
    done = wait_run(client, run["id"])
    return {
        "run": done, "dir": run_dir, "marker": marker, "grandchild": grandchild,
        "secret": secret, "victim": victim, "victim_note": victim_note, "before": before,
    }  # fmt: skip


def served(client, run_id: str) -> dict[str, bytes]:
    """Everything the API serves of a run: log, products manifest, each product, the bundle's
    members."""
    out = {"log": client.get(f"/api/runs/{run_id}/log").data}
    products = client.get(f"/api/runs/{run_id}/products")
    out["products"] = products.data
    for product in products.get_json():
        with client.get(product["url"]) as response:
            out[product["file"]] = response.data
    with client.get(f"/api/runs/{run_id}/bundle.zip") as response:
        assert response.status_code == 200, response.data[:300]
        with zipfile.ZipFile(io.BytesIO(response.data)) as zf:
            for name in zf.namelist():
                out[f"bundle:{name}"] = zf.read(name)
    return out


# ------------------------------------------------------------------------------ the sandbox


def test_the_escape_script_stays_in_its_run_folder(needs_bwrap, client, env, truth, worker):
    seen = run_escape(client, env, truth, "everything")
    run, run_dir = seen["run"], seen["dir"]
    sessions, instance = Path(env["SESSIONS"]), Path(env["INSTANCE"])
    assert run["phase"] == "COMPLETED", run

    # its grandchild (clean environment, own session) ended with the run
    assert seen["grandchild"]
    wait_for(lambda: not marked_processes(seen["marker"]), "the grandchild to be gone", 5)

    # nothing it could read outside its folder reaches what the service serves
    everything = served(client, run["id"])
    log = everything["log"].decode()
    assert "[regio] sandbox: bubblewrap" in log
    for name, data in everything.items():
        assert seen["secret"] not in data, f"the secret key leaked through {name}"
        assert seen["victim_note"] not in data, f"another session leaked through {name}"
        assert b"SQLite format 3" not in data, f"the run database leaked through {name}"
    assert everything["stolen.txt"] == MARK + b"\n"  # it read nothing
    # (its writes to regio.db and accounts.db may "succeed" in the tests: the sessions folder
    # lies under /tmp, the script's private tmpfs, so they land in throwaway files there; the
    # real files are checked below)
    for what in (
        "read the secret key", "read the run database", "read the other sessions",
        "write the instance", "write the scripts folder", "reach Redis",
        "replace its log with a link to the secret key", "write a kernel setting",
    ):  # fmt: skip
        assert f"[escape] {what}: blocked" in log, what

    # the links it made are not served, at any level; its set-user-ID program is disarmed
    products = json.loads(everything["products"])
    assert [p["file"] for p in products] == ["stolen.txt", "suid"]
    assert not (run_dir / "output" / "suid").stat().st_mode & 0o6000
    for name in ("secret.txt", "instance/secret_key"):
        response = client.get(f"/api/runs/{run['id']}/products/{name}")
        assert response.status_code == 400 and b"symbolic link" in response.data, name

    # nothing outside its folder changed
    assert digests(instance) == seen["before"]["instance"]
    assert digests(sessions / seen["victim"]["id"]) == seen["before"]["victim"]
    assert digests(SCRIPTS) == seen["before"]["scripts"]
    accounts_db = accounts.db_path(sessions)
    assert hashlib.sha256(accounts_db.read_bytes()).hexdigest() == seen["before"]["accounts"]
    regio_db = runs.db_path(sessions)
    assert MARK not in regio_db.read_bytes()
    with sqlite3.connect(regio_db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    # its own log is intact: the runner's lines, start to end
    assert log.startswith("[regio] run ") and "[regio] COMPLETED after " in log
    assert not (run_dir / "log.txt").is_symlink()


@pytest.mark.parametrize("env", ["off"], indirect=True)
def test_the_fallback_still_ends_descendants_and_follows_no_link(client, env, truth, worker):
    """Without bubblewrap the script has the worker's rights (no file isolation): it manages to
    replace its log with a link to the secret key, but the service never follows it, and its
    grandchild still ends with it (the reaper, a child subreaper)."""
    seen = run_escape(client, env, truth, "links")
    run = seen["run"]
    assert run["phase"] == "COMPLETED", run
    wait_for(lambda: not marked_processes(seen["marker"]), "the grandchild to be gone", 5)
    assert (seen["dir"] / "log.txt").is_symlink()  # it did replace it
    everything = served(client, run["id"])
    assert everything["log"] == b""  # a link reads as no log
    for name, data in everything.items():
        assert seen["secret"] not in data, f"the secret key leaked through {name}"
    assert "bundle:" + run["id"] + "/log.txt" not in everything
    assert not (seen["dir"] / "output" / "suid").stat().st_mode & 0o6000
    assert client.get(f"/api/runs/{run['id']}/products/secret.txt").status_code == 400


def test_the_layout_never_shows_the_sessions_or_the_instance(tmp_path):
    sessions, instance = tmp_path / "sessions", tmp_path / "instance"
    run_dir = sessions / "abcdefgh" / "runs" / "r1"
    archive = instance / "demo-archive"
    for folder in (run_dir, archive, tmp_path / "data", sessions / "abcdefgh" / "x"):
        folder.mkdir(parents=True)
    (tmp_path / "link-to-sessions").symlink_to(sessions)
    plan = sandbox.layout(
        run_dir,
        read_only=[
            tmp_path / "data", archive, tmp_path, tmp_path / "link-to-sessions", instance,
            sessions / "abcdefgh" / "x", tmp_path / "missing", "relative/path",
        ],
        private=[sessions, instance],
        allowed=[archive],
    )  # fmt: skip
    assert plan.read_only == [tmp_path / "data", archive]
    hidden = dict(plan.hidden)
    assert set(hidden) == {
        tmp_path,
        tmp_path / "link-to-sessions",
        instance,
        sessions / "abcdefgh" / "x",
    }
    assert hidden[tmp_path].startswith("it holds ")
    assert hidden[sessions / "abcdefgh" / "x"].startswith("it lies inside ")
    argv = sandbox.bwrap_command("bwrap", ["python", "s.py"], plan)
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == [str(run_dir)] * 2
    assert ["--ro-bind-try", f"{run_dir}/log.txt", f"{run_dir}/log.txt"] == argv[
        argv.index(f"{run_dir}/log.txt") - 1 : argv.index(f"{run_dir}/log.txt") + 2
    ]
    assert {"--unshare-pid", "--unshare-net", "--die-with-parent"} <= set(argv)
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-3:] == ["--", "python", "s.py"]


# ------------------------------------------------------------------------ runs in-process


class InProcess:
    """Runs supervised by ``app.runner.Runner`` in this process (as the rq job does), with the
    settings of the environment."""

    def __init__(self, sessions: Path, conn: redis.Redis) -> None:
        self.db = runs.db_path(sessions)
        self.conn = conn
        self.catalog = catalog.load_catalog(SCRIPTS)

    def run(self, name: str, **params: Any) -> runs.Run:
        script = self.catalog[name]
        run_id = runs.new_run_id()
        run = runs.create(
            self.db, self.db.parent / "s1" / "runs" / run_id, run_id=run_id, session_id="s1",
            script=script, params=catalog.validate_params(script, params),
        )  # fmt: skip
        Runner(run.id, self.db, self.conn, "in-process", SCRIPTS, heartbeat_ttl=10.0).run()
        return runs.get(self.db, run.id)


@pytest.fixture
def in_process(tmp_path, redis_url, monkeypatch) -> InProcess:
    for key in [k for k in os.environ if k.startswith("REGIO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("REGIO_SESSIONS", str(tmp_path / "sessions"))
    monkeypatch.setenv("REGIO_INSTANCE", str(tmp_path / "instance"))
    conn = redis.Redis.from_url(redis_url)
    yield InProcess(tmp_path / "sessions", conn)
    conn.close()


def test_the_log_is_capped_and_the_run_says_so(in_process, monkeypatch):
    monkeypatch.setenv("REGIO_LOG_MAX_BYTES", "2000")
    run = in_process.run("stages", steps=300)  # 900 progress lines, ~12 kB
    assert run.phase == "COMPLETED", run.error
    assert (run.progress_done, run.progress_total) == (300, 300)  # followed beyond the cap
    assert [s["name"] for s in run.stages] == ["prepare", "extract", "finish"]
    log = (Path(run.run_dir) / "log.txt").read_bytes()
    runner_lines = [line for line in log.splitlines() if line.startswith(b"[regio] ")]
    script_part = sum(len(line) + 1 for line in log.splitlines() if not line.startswith(b"[regio]"))
    assert script_part <= 2000
    assert len(log) < 2000 + sum(len(line) + 1 for line in runner_lines)
    assert run.log_dropped and run.log_dropped > 8000
    assert b"reached REGIO_LOG_MAX_BYTES (2000 bytes)" in log
    assert f"{run.log_dropped} bytes of the script's output were dropped".encode() in log
    assert log.splitlines()[-1].startswith(b"[regio] COMPLETED after ")
    assert not log.split(b"[regio] the log reached")[0].endswith(b"[PROGRESS")  # whole lines
    provenance = json.loads((Path(run.run_dir) / "provenance.json").read_text())
    assert provenance["log_dropped"] == run.log_dropped
    assert run.to_json()["log_dropped"] == run.log_dropped


def test_a_log_under_the_cap_is_whole(in_process):
    run = in_process.run("stages", steps=2)
    assert run.phase == "COMPLETED" and run.log_dropped == 0
    assert b"done: \xc3\xa9moji" in (Path(run.run_dir) / "log.txt").read_bytes()


def test_the_required_sandbox_refuses_to_run_without_bubblewrap(in_process, monkeypatch):
    monkeypatch.setenv("REGIO_SANDBOX", "bwrap")
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    run = in_process.run("stages")
    assert run.phase == "ERROR"
    assert run.error == (
        "the script cannot start: REGIO_SANDBOX=bwrap but bubblewrap (bwrap) is not installed"
    )


def test_auto_falls_back_and_says_so(in_process, monkeypatch):
    monkeypatch.setenv("REGIO_SANDBOX", "auto")
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    run = in_process.run("stages")
    assert run.phase == "COMPLETED", run.error
    log = runs.read_log(run.run_dir)[0]
    assert "[regio] sandbox: none, the fallback (bubblewrap (bwrap) is not installed)" in log


# --------------------------------------------------------------------------------- the bundle


def test_the_bundle_is_made_at_the_end_and_served_as_that_file(client, env, truth, redis_url):
    session = new_session(client, truth)
    response = client.post(
        f"/api/sessions/{session['id']}/runs", json={"script": "stages", "params": {"plot": True}}
    )
    run_id = response.get_json()["id"]
    assert client.get(f"/api/runs/{run_id}/bundle.zip").status_code == 409  # not ended yet
    with redis.Redis.from_url(redis_url) as conn:  # supervised here, as the rq job would
        db = runs.db_path(env["SESSIONS"])
        config = settings.load({**env, "SANDBOX": "auto"})
        Runner(run_id, db, conn, "here", SCRIPTS, 10.0, config=config).run()
    run = runs.get(db, run_id)
    assert run.phase == "COMPLETED", run.error
    folder = Path(run.run_dir)
    made = (folder / "bundle.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(made)) as zf:
        names = set(zf.namelist())
        log = zf.read(f"{run.id}/log.txt")
        provenance = json.loads(zf.read(f"{run.id}/provenance.json"))
    assert {f"{run.id}/output/plot.png", f"{run.id}/regions/source.reg"} <= names
    assert log.splitlines()[-1].startswith(b"[regio] COMPLETED after ")  # made at the end
    assert provenance["phase"] == "COMPLETED"
    (folder / "output" / "late.txt").write_text("written after the end")
    for _ in range(3):  # served from that file, never made again
        with client.get(f"/api/runs/{run.id}/bundle.zip") as response:
            assert response.status_code == 200 and response.data == made
            assert response.headers["Content-Length"] == str(len(made))
    assert (folder / "bundle.zip").read_bytes() == made
    (folder / "bundle.zip").unlink()  # e.g. a run ended before bundles were made at the end
    with client.get(f"/api/runs/{run.id}/bundle.zip") as response:
        assert response.status_code == 200
        assert f"{run.id}/output/late.txt" in zipfile.ZipFile(io.BytesIO(response.data)).namelist()
    assert (folder / "bundle.zip").is_file()  # made once, kept
