"""Warm starts (``app.warm``): Python scripts forked by the worker's warm server inside their
bubblewrap sandbox.

Checked: a warm run of the real spectra job makes the same products as a cold one; the script
process of a warm start has no capability, no descriptor but its log (and read-only files), its
own PID namespace and the sandbox's file system; a warm script that is killed, or overruns its
time limit, fails only its run and the next one starts warm from the same server; the worker
restarts a warm server that died; the escape script started warm achieves nothing; a manifest
with ``cold_start = true`` starts cold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from astropy.io import fits

from app import catalog, runs, settings, warm
from app.runner import Runner
from tests import test_containment as containment
from tests.conftest import ROOT, wait_for
from tests.science_helpers import build_input
from tests.test_containment import MARK, digests, marked_processes, run_escape, served

# the containment tests' fixtures, shared (client and truth come from conftest, on this env)
env, needs_bwrap = containment.env, containment.needs_bwrap

SOURCE = 'icrs;circle(149.59,-11.06,60")'
BACKGROUND = 'icrs;annulus(149.59,-11.06,180",300")'

PROBE = '''"""Reports what the script process sees."""
import json, os, sys
from regio_kit import main, save_product, stage

def run(inp):
    with stage("look"):
        with open("/proc/self/status") as f:
            status = dict(line.rstrip("\\n").split(":\\t", 1) for line in f if ":\\t" in line)
        fds = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                fds[name] = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                pass
        seen = {
            "pid": os.getpid(), "status": status, "fds": fds, "tmp": os.listdir("/tmp"),
            "numpy_preloaded": "numpy" in sys.modules, "env": dict(os.environ),
            "argv": sys.argv, "cwd": os.getcwd(), "main": __name__,
        }
        out = os.path.join(inp["output_dir"], "seen.json")
        with open(out, "w") as f:
            json.dump(seen, f)
        save_product(inp["output_dir"], "seen.json", "other", "what the script saw")

if __name__ == "__main__":
    main(run)
'''

CRASH = '''"""Kills itself in its second stage."""
import os, signal
from regio_kit import main, stage

def run(inp):
    with stage("prepare"):
        print("about to crash", flush=True)
    with stage("crash"):
        os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    main(run)
'''

SLEEPER = '''"""Overruns its time limit, but tidies up when asked to stop (SIGTERM)."""
import signal, sys, time
from regio_kit import main, stage

def tidy(signum, frame):
    time.sleep(0.3)  # some cleaning, within the runner's grace
    print("tidied up after SIGTERM", flush=True)
    sys.exit(3)

def run(inp):
    signal.signal(signal.SIGTERM, tidy)
    with stage("sleep"):
        print("sleeping", flush=True)
        time.sleep(60)

if __name__ == "__main__":
    main(run)
'''

FONTS = '''"""Says whether matplotlib found its font list or had to build one."""
import logging, os, sys
from regio_kit import main, stage

def run(inp):
    with stage("fonts"):
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING)
        logging.getLogger("matplotlib.font_manager").setLevel(logging.DEBUG)
        import matplotlib.font_manager
        print("fonts:", len(matplotlib.font_manager.fontManager.ttflist), flush=True)

if __name__ == "__main__":
    main(run)
'''


def manifest(name: str, *, time_limit: int = 60, extra: str = "") -> str:
    return (
        f'title = "{name} (test)"\nversion = "1"\nexecutable = "{name}.py"\n'
        f'documentation = "A warm-start test script."\ntime_limit = {time_limit}\n{extra}'
    )


@pytest.fixture
def warm_scripts(tmp_path) -> Path:
    folder = tmp_path / "warm-scripts"
    folder.mkdir()
    (folder / "regio_kit.py").symlink_to(ROOT / "scripts" / "regio_kit.py")
    for name, text in (
        ("probe", PROBE),
        ("crash", CRASH),
        ("sleeper", SLEEPER),
        ("fonts", FONTS),
    ):
        (folder / f"{name}.py").write_text(text)
    (folder / "probe.toml").write_text(manifest("probe"))
    (folder / "crash.toml").write_text(manifest("crash"))
    (folder / "sleeper.toml").write_text(manifest("sleeper", time_limit=1))
    (folder / "fonts.toml").write_text(manifest("fonts"))
    (folder / "probe_cold.py").symlink_to(folder / "probe.py")
    (folder / "probe_cold.toml").write_text(
        manifest("probe_cold", extra="cold_start = true\n").replace("probe_cold.py", "probe.py")
    )
    return folder


@pytest.fixture
def zygote(monkeypatch):
    """A warm server for runs supervised in this process (as a worker's horse would)."""
    server = warm.Zygote()
    assert server.start(), server.problem
    monkeypatch.setattr(warm, "CURRENT", server)
    yield server
    server.stop()


class Runs:
    """Runs supervised here by ``app.runner.Runner`` with bubblewrap required."""

    def __init__(self, tmp_path: Path, scripts: Path, redis_url: str) -> None:
        self.sessions = tmp_path / "sessions"
        self.scripts = scripts
        self.db = runs.db_path(self.sessions)
        self.conn = redis.Redis.from_url(redis_url)
        self.base = {
            "SESSIONS": self.sessions, "INSTANCE": tmp_path / "instance", "SCRIPTS": scripts,
            "REDIS_URL": redis_url, "SANDBOX": "bwrap",
        }  # fmt: skip

    def run(self, name: str, *, warm_mode: str = "auto", inp: dict | None = None) -> runs.Run:
        script = catalog.load_script(self.scripts, name)
        run_id = runs.new_run_id()
        inp = inp or {}
        run = runs.create(
            self.db, self.sessions / "s1" / "runs" / run_id, run_id=run_id, session_id="s1",
            script=script, params=catalog.validate_params(script, inp.get("params", {})),
            regions=inp.get("regions"), observations=inp.get("observations"),
        )  # fmt: skip
        config = settings.load({**self.base, "WARM": warm_mode}, environ={})
        Runner(run.id, self.db, self.conn, "here", self.scripts, 10.0, config=config).run()
        return runs.get(self.db, run.id)


@pytest.fixture
def here(tmp_path, warm_scripts, redis_url, needs_bwrap) -> Runs:
    supervised = Runs(tmp_path, warm_scripts, redis_url)
    yield supervised
    supervised.conn.close()


def log_of(run: runs.Run) -> str:
    return (Path(run.run_dir) / "log.txt").read_text()


def seen(run: runs.Run) -> dict[str, Any]:
    return json.loads((Path(run.run_dir) / "output" / "seen.json").read_text())


# ---------------------------------------------------------------------- the script process


def test_a_warm_script_runs_in_its_sandbox_with_nothing_of_the_server(here, zygote):
    run = here.run("probe")
    assert run.phase == "COMPLETED", run.error
    log = log_of(run)
    assert "[regio] start: warm" in log
    s = seen(run)
    assert s["numpy_preloaded"]  # forked from the server, not a new interpreter
    assert s["main"] == "__main__" and s["argv"] == [
        str(here.scripts / "probe.py"),
        str(Path(run.run_dir) / "input.json"),
    ]
    assert s["cwd"] == str(Path(run.run_dir))
    # the sandbox's PID namespace (bubblewrap's init, the holder, then the script)
    assert s["pid"] < 10
    # no capability, none to gain
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(s["status"][key], 16) == 0, key
    assert s["status"]["NoNewPrivs"].strip() == "1"
    # only the log (stdin is /dev/null) and read-only files of the Python installation
    fds = {int(k): v for k, v in s["fds"].items()}
    assert fds[0] == "/dev/null"
    assert fds[1] == fds[2] and fds[1].startswith("pipe:")
    for fd, target in fds.items():
        if fd > 2 and not target.startswith("/proc/"):  # (the listing's own descriptor)
            assert target.startswith(sys_prefixes()), (fd, target)
    # the sandbox's file system: no sessions other than its run folder, no warm server socket
    assert Path(zygote.folder).parent == Path("/tmp")
    assert not [name for name in s["tmp"] if name.startswith("regio-warm-")]  # a private /tmp
    assert s["env"]["REGIO_RUN_ID"] == run.id and s["env"]["HOME"] == "/tmp"
    assert not {k for k in s["env"] if k.startswith("REGIO_")} - {"REGIO_RUN_ID"}
    # and the same script started cold sees a new interpreter
    cold = here.run("probe", warm_mode="off")
    assert cold.phase == "COMPLETED", cold.error
    assert "start: warm" not in log_of(cold) and not seen(cold)["numpy_preloaded"]


def sys_prefixes() -> tuple[str, ...]:
    import sys

    return tuple({sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix)})


def test_a_manifest_asking_for_a_cold_start_gets_one(here, zygote):
    run = here.run("probe_cold")
    assert run.phase == "COMPLETED", run.error
    assert "[regio] start: cold (the manifest says cold_start = true)" in log_of(run)
    assert not seen(run)["numpy_preloaded"]


def test_without_a_warm_server_the_run_starts_cold(here, monkeypatch):
    monkeypatch.setattr(warm, "CURRENT", None)
    run = here.run("probe")
    assert run.phase == "COMPLETED", run.error
    assert "[regio] start: cold (this worker runs no warm server)" in log_of(run)


# ------------------------------------------------------------------------------ failures


def test_a_killed_warm_script_fails_only_its_run(here, zygote):
    pid = zygote.proc.pid
    crashed = here.run("crash")
    assert crashed.phase == "ERROR"
    assert crashed.error == "stage 'crash' failed: about to crash"
    assert crashed.exit_code == 128 + signal.SIGKILL  # as bubblewrap reports a killed script
    assert "[regio] start: warm" in log_of(crashed)

    late = here.run("sleeper")  # killed by the runner at its time limit
    assert late.phase == "ERROR" and late.error == "time limit exceeded (1 s)"
    assert zygote.alive() and zygote.proc.pid == pid

    after = here.run("probe")  # the server is unharmed
    assert after.phase == "COMPLETED", after.error
    assert "[regio] start: warm" in log_of(after)
    # nothing of the failed runs is left: the server's only children are gone
    from app.reaper import descendants

    wait_for(lambda: descendants(pid) == [], "the warm server's children to end", 10)


@pytest.mark.parametrize("warm_mode", ["auto", "off"])
def test_a_stopped_script_gets_its_sigterm_grace_warm_or_cold(here, zygote, warm_mode):
    """Stopping sends SIGTERM, then SIGKILL after ``KILL_GRACE``: a script that handles SIGTERM
    has the time to tidy up, whether it was forked warm or started cold."""
    run = here.run("sleeper", warm_mode=warm_mode)
    log = log_of(run)
    assert ("[regio] start: warm" in log) == (warm_mode == "auto")
    assert run.phase == "ERROR" and run.error == "time limit exceeded (1 s)"
    assert "tidied up after SIGTERM" in log
    assert run.exit_code == 3


def test_a_cold_script_finds_the_font_list_of_the_warm_server(here, zygote):
    """matplotlib's font list, made by the warm server when it started, is shown read-only in
    the sandbox's cache folder: a script started cold loads it instead of building one."""
    run = here.run("fonts", warm_mode="off")
    assert run.phase == "COMPLETED", run.error
    log = log_of(run)
    assert "start: warm" not in log
    assert re.search(r"Using fontManager instance from /tmp/\.cache/matplotlib/fontlist-v", log)
    assert int(re.search(r"fonts: (\d+)", log).group(1)) > 0


def test_a_dead_warm_server_makes_runs_start_cold_until_the_worker_restarts_it(here, zygote):
    os.kill(zygote.proc.pid, signal.SIGKILL)
    zygote.proc.wait()
    run = here.run("probe")
    assert run.phase == "COMPLETED", run.error
    assert "start: cold (this worker runs no warm server)" in log_of(run)
    assert zygote.ensure() and zygote.starts == 2  # what the worker does before each job
    again = here.run("probe")
    assert again.phase == "COMPLETED" and "[regio] start: warm" in log_of(again)


# ------------------------------------------------------------------- on a real rq worker


def warm_servers(worker_pid: int) -> list[int]:
    from app.reaper import descendants

    found = []
    for pid in descendants(worker_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"app/warm.py") for a in argv) and b"serve" in argv:
            found.append(pid)
    return found


def test_the_worker_restarts_its_warm_server_and_escapes_still_fail(
    needs_bwrap, client, env, truth, worker
):
    first = wait_for(lambda: warm_servers(worker.pid), "the worker's warm server")
    os.kill(first[0], signal.SIGKILL)
    # the escape script, started warm by the restarted server: everything it tries fails
    seen_ = run_escape(client, env, truth, "everything")
    run = seen_["run"]
    assert run["phase"] == "COMPLETED", run
    second = warm_servers(worker.pid)
    assert second and second != first
    everything = served(client, run["id"])
    log = everything["log"].decode()
    assert "[regio] start: warm" in log
    wait_for(lambda: not marked_processes(seen_["marker"]), "the grandchild to be gone", 5)
    for name, data in everything.items():
        assert seen_["secret"] not in data, f"the secret key leaked through {name}"
        assert seen_["victim_note"] not in data, f"another session leaked through {name}"
        assert b"SQLite format 3" not in data, f"the run database leaked through {name}"
    assert everything["stolen.txt"] == MARK + b"\n"
    for what in (
        "read the secret key", "read the run database", "read the other sessions",
        "write the instance", "write the scripts folder", "reach Redis",
        "replace its log with a link to the secret key", "write a kernel setting",
    ):  # fmt: skip
        assert f"[escape] {what}: blocked" in log, what
    sessions, instance = Path(env["SESSIONS"]), Path(env["INSTANCE"])
    assert digests(instance) == seen_["before"]["instance"]
    assert digests(sessions / seen_["victim"]["id"]) == seen_["before"]["victim"]
    assert not (seen_["dir"] / "log.txt").is_symlink()


# ----------------------------------------------------------------- the real spectra job


def fits_digest(path: Path) -> list[tuple[str, str, str]]:
    """Per HDU: its name, the sha256 of its data, and its header with what differs from run to
    run blanked (the dates, the checksums, the run id)."""
    out = []
    with fits.open(path) as hdul:
        for hdu in hdul:
            header = hdu.header.copy()
            for key in ("DATE", "CHECKSUM", "DATASUM", "REGIORUN"):
                header.remove(key, ignore_missing=True, remove_all=True)
            text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ?", "<time>", header.tostring())
            data = b"" if hdu.data is None else np.ascontiguousarray(hdu.data).tobytes()
            out.append((hdu.name, hashlib.sha256(data).hexdigest(), text))
    return out


def product_digests(run: runs.Run) -> dict[str, Any]:
    output = Path(run.run_dir) / "output"
    listed = json.loads((output / "products.json").read_text())
    out: dict[str, Any] = {
        "products": [{k: v for k, v in p.items() if k not in ("created", "size")} for p in listed]
    }
    for product in listed:
        path = output / product["file"]
        if path.suffix in (".pha", ".rmf", ".arf", ".rsp"):
            out[product["file"]] = fits_digest(path)
        elif path.suffix == ".png":
            out[product["file"]] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_warm_and_cold_runs_of_the_real_spectra_job_make_the_same_products(here, zygote, real_data):
    paths = sorted(real_data.glob("*/mos*_exp1_clean_evts.fits"))[:2]
    inp = build_input("generate_spectra", paths, SOURCE, BACKGROUND, Path("unused"))
    here.scripts = ROOT / "scripts"
    here.base["SCRIPTS"] = here.scripts
    warm_run = here.run("generate_spectra", inp=inp)
    cold_run = here.run("generate_spectra", warm_mode="off", inp=inp)
    for run in (warm_run, cold_run):
        assert run.phase == "COMPLETED", run.error
    assert "[regio] start: warm" in log_of(warm_run)
    assert "start: warm" not in log_of(cold_run)
    warm_products, cold_products = product_digests(warm_run), product_digests(cold_run)
    assert len(warm_products) > 5  # spectra, previews, provenance
    assert warm_products == cold_products


def test_cold_start_in_a_manifest_must_be_true_or_false(warm_scripts):
    assert catalog.load_script(warm_scripts, "probe_cold").cold_start is True
    assert catalog.load_script(warm_scripts, "probe").cold_start is False
    (warm_scripts / "bad.toml").write_text(
        manifest("bad", extra='cold_start = "yes"\n').replace("bad.py", "probe.py")
    )
    with pytest.raises(catalog.CatalogError, match="cold_start: must be true or false"):
        catalog.load_script(warm_scripts, "bad")
