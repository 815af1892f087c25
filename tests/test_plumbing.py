"""app.plumbing: times, atomic files and the parent-death signal shared by the app's modules."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app import plumbing
from tests.conftest import ROOT


def test_times_are_iso_utc_with_z():
    stamp = plumbing.now()
    assert stamp.endswith("Z") and len(stamp) == len("2025-01-31T12:00:00.000Z")
    assert len(plumbing.now("seconds")) == len("2025-01-31T12:00:00Z")
    when = plumbing.parse_time(stamp)
    assert when.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 5
    assert plumbing.iso(when) == stamp
    assert plumbing.parse_time("2025-01-31T12:00:00") == dt.datetime(2025, 1, 31, 12, tzinfo=dt.UTC)
    paris = dt.timezone(dt.timedelta(hours=1))
    assert plumbing.iso(dt.datetime(2025, 1, 31, 13, tzinfo=paris)) == "2025-01-31T12:00:00.000Z"


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "data.json"
    plumbing.write_json(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        plumbing.write_json(target, {"when": dt.date(2025, 1, 31)})
    assert json.loads(target.read_text()) == {"a": [1, 2]}, "a failed write keeps the old file"
    plumbing.write_json(target, {"when": dt.date(2025, 1, 31)}, default=str)
    assert json.loads(target.read_text()) == {"when": "2025-01-31"}
    with pytest.raises(RuntimeError), plumbing.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"when": "2025-01-31"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.json"]


def test_a_child_dies_with_the_process_that_started_it(tmp_path):
    """A middle process starts a sleeper with ``die_with_parent``, then is killed: so is the
    sleeper."""
    pid_file = tmp_path / "sleeper.pid"
    middle = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys, time\n"
         "from app.plumbing import die_with_parent\n"
         "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent(os.getpid()))\n"
         f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
         "time.sleep(60)\n"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    sleeper = int(pid_file.read_text())
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    deadline = time.monotonic() + 10
    while _running(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(sleeper):
        os.kill(sleeper, signal.SIGKILL)
        pytest.fail("the child outlived the process that started it")


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
