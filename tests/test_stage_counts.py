"""Stage counts announced up front: a ``[STAGES] n`` line of the script or ``stages = [...]`` /
``stage_count`` in its manifest reach the run record and the API (``stage_count``, so the page
reads "stage k of n"); a run without either has no count. Runs go through the API to a real rq
worker; the scripts live in a scripts folder made here (with the real ``regio_kit``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import catalog
from tests.conftest import ROOT, app_settings, wait_for
from tests.test_api import new_session, wait_run

GATED = """
import time
from pathlib import Path

from regio_kit import main, stage, stages


def run(inp):
    params = inp["params"]
    if params["announce"] > 0:
        stages(params["announce"])
    elif params["announce"] < 0:  # markers the runner must ignore
        print("[STAGES] 0", flush=True)
        print("[STAGES] three", flush=True)
    for name in ("select", "extract", "write"):
        with stage(name):
            if name == "extract":  # wait for the test to look at the record mid-run
                gate = Path("gate")  # in the run folder (the current directory)
                end = time.monotonic() + 60
                while not gate.exists() and time.monotonic() < end:
                    time.sleep(0.05)


if __name__ == "__main__":
    main(run)
"""

MANIFEST = """title = "{title}"
version = "1.0"
executable = "gated.py"
documentation = "Three stages; waits in the second for a gate file. For the tests."
time_limit = 120
{declare}

[[parameters]]
name = "announce"
type = "int"
default = 0
"""


@pytest.fixture
def scripts(tmp_path) -> Path:
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "regio_kit.py").symlink_to(ROOT / "scripts" / "regio_kit.py")
    (folder / "gated.py").write_text(GATED)
    manifests = {
        "announced": ("Announces [STAGES] 3", ""),
        "declared": ("Declares its stages", 'stages = ["select", "extract", "write"]'),
        "counted": ("Declares a count", "stage_count = 3"),
        "silent": ("Says nothing", ""),
    }
    for name, (title, declare) in manifests.items():
        (folder / f"{name}.toml").write_text(MANIFEST.format(title=title, declare=declare))
    return folder


@pytest.fixture
def env(tmp_path, sample_index, redis_url, scripts):
    return app_settings(tmp_path, sample_index, redis_url, scripts)


@pytest.mark.parametrize(
    ("script", "announce", "count"),
    [
        ("announced", 3, 3),
        ("declared", 0, 3),
        ("declared", 4, 4),  # [STAGES] n wins over the manifest
        ("counted", 0, 3),
        ("silent", 0, None),
        ("silent", -1, None),  # [STAGES] 0 and [STAGES] three are ignored
    ],
)
def test_the_record_says_stage_k_of_n(client, env, truth, worker, script, announce, count):
    session, _, _ = new_session(client, truth)
    response = client.post(
        f"{session['url']}/runs", json={"script": script, "params": {"announce": announce}}
    )
    assert response.status_code == 202, response.get_json()
    run_id = response.get_json()["id"]

    def in_extract():
        run = client.get(f"/api/runs/{run_id}").get_json()
        return run if run["stage"] == "extract" else None

    run = wait_for(in_extract, f"run {run_id} to enter its second stage", timeout=60)
    assert (len(run["stages"]), run["stage_count"]) == (2, count)  # "stage 2 of 3"
    (env["SESSIONS"] / session["id"] / "runs" / run_id / "gate").write_text("go")
    run = wait_run(client, run_id)
    assert run["phase"] == "COMPLETED", run
    assert [s["name"] for s in run["stages"]] == ["select", "extract", "write"]
    assert run["stage_count"] == count
    listed = client.get(f"/api/runs?session={session['id']}").get_json()
    rows = listed["runs"] if isinstance(listed, dict) else listed
    assert [r.get("stage_count") for r in rows if r["id"] == run_id] == [count]


def test_a_manifest_count_that_contradicts_its_stage_names_is_refused(scripts):
    (scripts / "declared.toml").write_text(
        MANIFEST.format(title="Bad", declare='stages = ["a", "b"]\nstage_count = 3')
    )
    (scripts / "counted.toml").write_text(MANIFEST.format(title="Bad", declare="stage_count = 0"))
    good, broken = catalog.scan_catalog(scripts)
    assert "stage_count: is 3 but stages lists 2 names" in broken["declared"]
    assert "between 1 and 500" in broken["counted"]
    assert good["announced"].stage_count is None


def test_the_shipped_scripts_declare_the_stages_they_enter():
    """Every manifest of scripts/ declares its stage names, and each name is a stage the script
    (or a pipeline module it uses) enters."""
    shipped = catalog.load_catalog(ROOT / "scripts")
    everything = "\n".join(p.read_text() for p in (ROOT / "scripts").rglob("*.py"))
    for name, script in shipped.items():
        assert script.stage_count == len(script.stages) > 0, name
        for stage in script.stages:
            assert f'stage("{stage}")' in everything, (name, stage)


def test_the_kit_announces_a_count_and_refuses_nonsense(tmp_path):
    code = "import regio_kit; regio_kit.stages(4); regio_kit.stages(0)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "scripts",
        env={**os.environ, "PYTHONPATH": str(ROOT / "scripts")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.splitlines() == ["[STAGES] 4"]
    assert result.returncode != 0 and "1 to 500 stages" in result.stderr
