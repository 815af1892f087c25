"""Run records (SQLite) and run folders: phases, migrations, logs, products, bundles, the kit."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from app import __version__, catalog, plumbing, runs
from app.runs import ABORTED, COMPLETED, ERROR, EXECUTING, QUEUED
from tests.conftest import ROOT

SCRIPTS = ROOT / "tests" / "scripts"
OBSERVATIONS = [
    {"obsid": "0123456789", "camera": "MOS1", "path": "/archive/m1.fits", "sha256": "ab" * 32},
    {"obsid": "0123456789", "camera": "PN", "path": "/archive/pn.fits"},
]


@pytest.fixture(scope="module")
def stages() -> catalog.Script:
    return catalog.load_script(SCRIPTS, "stages")


@pytest.fixture
def db(tmp_path) -> Path:
    return runs.db_path(tmp_path / "sessions")


def new_run(db: Path, script: catalog.Script, session: str = "s1", **params) -> runs.Run:
    run_id = runs.new_run_id()
    return runs.create(
        db,
        db.parent / session / "runs" / run_id,
        run_id=run_id,
        session_id=session,
        owner="alice",
        script=script,
        params=catalog.validate_params(script, params),
        regions={"source": {"shape": "circle"}, "background": {"shape": "annulus"}},
        observations=OBSERVATIONS,
    )


# ------------------------------------------------------------------------------ records


def test_create_writes_the_folder_and_a_queued_record(db, stages):
    run = new_run(db, stages, steps=5)
    assert len(run.id) == 12 and run.id.isalnum() and run.id.islower()
    folder = Path(run.run_dir)
    assert folder.name == run.id and (folder / "output").is_dir()
    data = json.loads((folder / "input.json").read_text())
    assert data == {
        "run_id": run.id,
        "session_id": "s1",
        "script": {"name": "stages", "version": "1.0"},
        "regio_version": __version__,
        "params": {"sleep": 0.0, "steps": 5, "label": "test", "plot": False, "mode": "fast"},
        "regions": {"source": {"shape": "circle"}, "background": {"shape": "annulus"}},
        "observations": OBSERVATIONS,
        "output_dir": str(folder / "output"),
    }
    got = runs.get(db, run.id)
    assert got == run
    assert got.phase == QUEUED and got.params["steps"] == 5 and got.time_limit == 120
    assert got.created.endswith("Z")
    public = got.to_json()
    assert "run_dir" not in public and "pid" not in public and public["phase"] == QUEUED


def test_get_and_list(db, stages):
    with pytest.raises(runs.RunNotFound):
        runs.get(db, "nosuchrun")
    a, b = new_run(db, stages), new_run(db, stages)
    new_run(db, stages, session="s2")
    assert [r.id for r in runs.list_runs(db, "s1")] == [b.id, a.id]  # newest first
    assert runs.list_runs(db, "nobody") == []
    assert len(runs.list_active(db)) == 3


def test_legal_transitions(db, stages):
    run = new_run(db, stages)
    run = runs.update(db, run.id, phase=EXECUTING, started=plumbing.now(), worker="w1")
    assert run.phase == EXECUTING and run.worker == "w1"
    run = runs.update(db, run.id, stage="extract", stages=[{"name": "extract", "started": "t"}])
    assert runs.get(db, run.id).stages == [{"name": "extract", "started": "t"}]
    run = runs.update(db, run.id, phase=COMPLETED, exit_code=0, ended=plumbing.now())
    assert run.phase == COMPLETED and run.terminal


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], COMPLETED),  # not without EXECUTING
        ([EXECUTING], QUEUED),  # never back
        ([EXECUTING, COMPLETED], ABORTED),  # final phases are final
        ([EXECUTING, COMPLETED], ERROR),
        ([ERROR], EXECUTING),
        ([ABORTED], COMPLETED),
        ([ABORTED], ABORTED),
    ],
)
def test_illegal_transitions_are_refused(db, stages, path, target):
    run = new_run(db, stages)
    for phase in path:
        runs.update(db, run.id, phase=phase)
    before = runs.get(db, run.id)
    with pytest.raises(runs.PhaseError, match="cannot"):
        runs.update(db, run.id, phase=target, error="nope")
    assert runs.get(db, run.id) == before  # nothing changed


def test_update_checks_fields_and_final_phases(db, stages):
    run = new_run(db, stages)
    with pytest.raises(ValueError, match="unknown run field"):
        runs.update(db, run.id, colour="red")
    with pytest.raises(ValueError, match="unknown run field"):
        runs.update(db, run.id, id="other")
    with pytest.raises(ValueError, match="unknown phase"):
        runs.update(db, run.id, phase="DONE")
    with pytest.raises(runs.RunNotFound):
        runs.update(db, "nosuchrun", stage="x")
    with pytest.raises(runs.PhaseError):  # an expectation that does not hold
        runs.update(db, run.id, stage="x", expect={"phase": EXECUTING})
    runs.update(db, run.id, phase=ABORTED)
    with pytest.raises(runs.PhaseError):  # progress of a finished run
        runs.update(db, run.id, progress_done=1)


def test_concurrent_transitions_have_one_winner(db, stages):
    run = new_run(db, stages)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def claim(worker: str) -> None:
        barrier.wait()
        try:
            runs.update(db, run.id, phase=EXECUTING, worker=worker)
            outcomes.append(worker)
        except runs.PhaseError:
            outcomes.append("lost")

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "lost"]
    assert len(outcomes) == 8 and len(winners) == 1
    assert runs.get(db, run.id).worker == winners[0]


def test_migrations_and_journal_mode(db, stages):
    new_run(db, stages)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (
            len(runs.MIGRATIONS),
        )
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this Regio knows"):
        runs.get(db, "x")


# ------------------------------------------------------------------------------- the log


def write_log(folder: Path, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_bytes(data)


def test_read_log_from_offsets(tmp_path):
    assert runs.read_log(tmp_path) == ("", 0)  # no log yet
    write_log(tmp_path, "line 1\nligne 2 é\n".encode())
    text, offset = runs.read_log(tmp_path)
    assert text == "line 1\nligne 2 é\n" and offset == len("line 1\nligne 2 é\n".encode())
    assert runs.read_log(tmp_path, offset) == ("", offset)
    assert runs.read_log(tmp_path, 7) == ("ligne 2 é\n", offset)
    assert runs.read_log(tmp_path, 10_000) == ("", offset)  # beyond the end
    with pytest.raises(ValueError):
        runs.read_log(tmp_path, -1)
    with open(tmp_path / "log.txt", "ab") as f:
        f.write(b"more\n")
    assert runs.read_log(tmp_path, offset) == ("more\n", offset + 5)


def test_read_log_never_splits_a_character(tmp_path):
    text = "a\u00e9\u20ac\U0001f600b"  # 1, 2, 3 and 4 byte characters
    write_log(tmp_path, text.encode())
    for size in range(1, 12):
        pieces, offset = [], 0
        while True:
            piece, new = runs.read_log(tmp_path, offset, max_bytes=max(size, 4))
            if new == offset:
                break
            pieces.append(piece)
            offset = new
        assert "".join(pieces) == text
    # an offset inside a character skips to the next one
    assert runs.read_log(tmp_path, 2) == ("\u20ac\U0001f600b", len(text.encode()))
    # an incomplete character at the end of the file waits for its last bytes
    write_log(tmp_path, b"ab\xe2\x82")
    assert runs.read_log(tmp_path) == ("ab", 2)
    # bytes that are not UTF-8 come out as replacement characters
    write_log(tmp_path, b"caf\xe9 ok\n")
    assert runs.read_log(tmp_path) == ("caf\ufffd ok\n", 8)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.integers(4, 16))
def test_reading_in_chunks_gives_back_the_text(tmp_path_factory, text, chunk):
    folder = tmp_path_factory.mktemp("log")
    write_log(folder, text.encode())
    pieces, offset = [], 0
    while True:
        piece, offset2 = runs.read_log(folder, offset, max_bytes=chunk)
        if offset2 == offset:
            break
        pieces.append(piece)
        offset = offset2
    assert "".join(pieces) == text


def test_log_tail_and_append(tmp_path):
    write_log(tmp_path, "".join(f"line {i}\n" for i in range(100)).encode())
    runs.append_log(tmp_path, "done")
    tail = runs.log_tail(tmp_path).splitlines()
    assert len(tail) == 20 and tail[-1] == "[regio] done" and tail[0] == "line 81"
    assert runs.log_tail(tmp_path / "nowhere") == ""


# -------------------------------------------------------------------------------- products


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "run"
    out = folder / "output"
    (out / "sub").mkdir(parents=True)
    (out / "spec.pha").write_bytes(b"SIMPLE")
    (out / "sub" / "lc.fits").write_bytes(b"SIMPLE LC")
    (out / "stray.txt").write_text("not declared")
    (folder / "input.json").write_text("{}")
    (folder / "log.txt").write_text("[STAGE] a\n")
    (tmp_path / "secret.txt").write_text("secret")
    manifest = [
        {"file": "spec.pha", "kind": "spectrum", "description": "Spectrum", "obsid": "1"},
        {"file": "sub/lc.fits", "kind": "lightcurve", "description": "LC", "camera": "PN"},
        {"file": "../secret.txt", "kind": "other", "description": "hostile"},
        {"file": "gone.fits", "kind": "image", "description": "listed, never written"},
        "garbage",
    ]
    (out / "products.json").write_text(json.dumps(manifest))
    return folder


def test_product_path_accepts_files_in_the_output_folder(run_dir):
    assert runs.product_path(run_dir, "spec.pha") == (run_dir / "output" / "spec.pha").resolve()
    assert runs.product_path(run_dir, "sub/lc.fits").read_bytes() == b"SIMPLE LC"
    os.symlink("spec.pha", run_dir / "output" / "alias.pha")  # even a link inside: not served
    with pytest.raises(ValueError, match="symbolic link"):
        runs.product_path(run_dir, "alias.pha")
    with pytest.raises(FileNotFoundError):
        runs.product_path(run_dir, "nothing.fits")
    with pytest.raises(FileNotFoundError):
        runs.product_path(run_dir, "sub")  # a folder is not a product


@pytest.mark.parametrize(
    "name",
    [
        "../input.json",
        "../../secret.txt",
        "sub/../../input.json",
        "/etc/passwd",
        str(Path("/tmp").resolve()),
        "",
        "a\x00b",
        "..\\input.json",
        "link-out",
        "dir-out/passwd",
    ],
)
def test_product_path_rejects_traversal(run_dir, name):
    os.symlink("../input.json", run_dir / "output" / "link-out")
    os.symlink("/etc", run_dir / "output" / "dir-out")
    with pytest.raises(ValueError, match="invalid product name"):
        runs.product_path(run_dir, name)


def test_list_products_keeps_declared_existing_files_then_strays(run_dir):
    products = runs.list_products(run_dir)
    assert [p["file"] for p in products] == ["spec.pha", "sub/lc.fits", "stray.txt"]
    assert products[0]["kind"] == "spectrum" and products[0]["size"] == 6
    assert products[2] == {
        "file": "stray.txt", "kind": "other", "description": "", "obsid": None, "camera": None,
        "size": 12,
    }  # fmt: skip
    (run_dir / "output" / "products.json").write_text("{not json")
    assert {p["kind"] for p in runs.list_products(run_dir)} == {"other"}


def test_the_kit_and_the_app_know_the_same_product_kinds():
    """Two copies by necessity: ``scripts/regio_kit.py`` runs without the app (and is copied beside
    other scripts folders), so it keeps its own ``KINDS``; the app's list
    (``catalog.PRODUCT_KINDS``, which script manifests are checked against) is the authority."""
    spec = importlib.util.spec_from_file_location(
        "kit_under_test", ROOT / "scripts" / "regio_kit.py"
    )
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    assert kit.KINDS == catalog.PRODUCT_KINDS
    assert "other" in kit.KINDS  # list_products calls files no manifest describes "other"


def test_bundle_holds_products_log_input_provenance_and_extras(run_dir, tmp_path):
    regions = tmp_path / "source.reg"
    regions.write_text("icrs; circle(1,2,3)")
    path = runs.bundle(run_dir, {"regions/source.reg": regions})
    assert path == run_dir / "bundle.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert zf.read("run/regions/source.reg") == b"icrs; circle(1,2,3)"
    assert names == {
        "run/input.json", "run/log.txt", "run/output/spec.pha", "run/output/sub/lc.fits",
        "run/output/stray.txt", "run/output/products.json", "run/regions/source.reg",
    }  # fmt: skip
    with pytest.raises(ValueError, match="invalid name in the bundle"):
        runs.bundle(run_dir, {"../x": regions})


def test_concurrent_bundles_do_not_clash(run_dir):
    errors: list[BaseException] = []

    def make() -> None:
        try:
            runs.bundle(run_dir)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with zipfile.ZipFile(run_dir / "bundle.zip") as zf:
        assert zf.testzip() is None
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "bundle.zip",
        "input.json",
        "log.txt",
        "output",
    ]


# ------------------------------------------------------------- files a script could subvert


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "instance" / "secret_key"
    path.parent.mkdir()
    path.write_text("the-cookie-signing-key")
    return path


def test_run_files_are_opened_without_following_links(run_dir, secret):
    with runs.open_run_file(run_dir, "output/spec.pha") as f:
        assert f.read() == b"SIMPLE"
    os.symlink(secret, run_dir / "output" / "key")
    os.symlink(secret.parent, run_dir / "output" / "instance")
    with pytest.raises(ValueError, match="symbolic link"):
        runs.open_run_file(run_dir, "output/key")
    with pytest.raises(ValueError, match="symbolic link"):
        runs.open_run_file(run_dir, "output/instance/secret_key")
    for name in ("../instance/secret_key", "/etc/passwd", "", "output/../../x"):
        with pytest.raises(ValueError):
            runs.open_run_file(run_dir, name)
    with pytest.raises(FileNotFoundError):
        runs.open_run_file(run_dir, "output/sub")  # a folder
    with pytest.raises(FileNotFoundError):
        runs.open_run_file(run_dir, "output/spec.pha/x")  # a file is no folder
    os.mkfifo(run_dir / "output" / "fifo")
    with pytest.raises(FileNotFoundError, match="not a regular file"):
        runs.open_run_file(run_dir, "output/fifo")  # and it did not block


def test_a_log_replaced_by_a_link_reads_as_no_log(run_dir, secret):
    (run_dir / "log.txt").unlink()
    os.symlink(secret, run_dir / "log.txt")
    assert runs.read_log(run_dir) == ("", 0)
    assert runs.log_tail(run_dir) == ""
    runs.append_log(run_dir, "ERROR: worker lost")  # writes a fresh log, not through the link
    assert secret.read_text() == "the-cookie-signing-key"
    assert not (run_dir / "log.txt").is_symlink()
    assert runs.read_log(run_dir)[0] == "[regio] ERROR: worker lost\n"
    path = runs.bundle(run_dir)
    with zipfile.ZipFile(path) as zf:
        assert all(b"the-cookie-signing-key" not in zf.read(n) for n in zf.namelist())


def test_the_bundle_leaves_links_and_special_files_out(run_dir, secret, tmp_path):
    (run_dir / "input.json").unlink()
    os.symlink(secret, run_dir / "input.json")
    os.symlink(secret.parent, run_dir / "output" / "instance")
    os.symlink(secret, run_dir / "output" / "key.txt")
    os.mkfifo(run_dir / "output" / "fifo")
    manifest = [{"file": "key.txt", "kind": "other"}, {"file": "instance/secret_key"}]
    (run_dir / "output" / "products.json").write_text(json.dumps(manifest))
    regions = tmp_path / "regions.reg"
    os.symlink(secret, regions)  # an extra file that is a link is left out too
    with zipfile.ZipFile(runs.bundle(run_dir, {"regions/source.reg": regions})) as zf:
        names = set(zf.namelist())
        data = b"".join(zf.read(n) for n in names)
    assert names == {
        "run/log.txt", "run/output/spec.pha", "run/output/sub/lc.fits", "run/output/stray.txt",
        "run/output/products.json",
    }  # fmt: skip
    assert b"the-cookie-signing-key" not in data
    # the declared links are no products; the FIFO and the folder link are not listed either
    files = [p["file"] for p in runs.list_products(run_dir)]
    assert files == ["spec.pha", "stray.txt", "sub/lc.fits"]


def test_disarm_clears_set_id_bits_and_follows_no_link(run_dir, tmp_path):
    program = run_dir / "output" / "sub" / "suid"
    program.write_bytes(b"#!/bin/sh\n")
    program.chmod(0o6755)
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    outside.chmod(0o4755)
    os.symlink(outside, run_dir / "output" / "link")
    assert runs.disarm(run_dir) == 1
    assert stat.S_IMODE(program.stat().st_mode) == 0o755
    assert stat.S_IMODE(outside.stat().st_mode) == 0o4755  # not through the link
    assert runs.disarm(run_dir) == 0


def test_the_runner_files_replace_what_a_script_left_under_their_names(db, stages):
    run = new_run(db, stages)
    folder = Path(run.run_dir)
    (folder / "provenance.json").mkdir()
    (folder / "bundle.zip").mkdir()
    (folder / "bundle.zip" / "x").write_text("x")
    runs.update(db, run.id, phase=EXECUTING)
    runs.finish(db, run.id, COMPLETED, bundle_files={})
    assert json.loads((folder / "provenance.json").read_text())["phase"] == COMPLETED
    with zipfile.ZipFile(folder / "bundle.zip") as zf:
        assert f"{run.id}/provenance.json" in zf.namelist()


def test_a_run_closed_without_its_runner_loses_any_bundle_a_script_made(db, stages):
    run = new_run(db, stages)
    folder = Path(run.run_dir)
    runs.update(db, run.id, phase=EXECUTING)
    (folder / "bundle.zip").write_bytes(b"PK fake, made by the script")
    runs.finish(db, run.id, ERROR, error="worker lost")  # the reconciler: no bundle_files
    assert not (folder / "bundle.zip").exists()
    with pytest.raises(FileNotFoundError):
        runs.open_bundle(folder)


def test_finish_makes_the_bundle_before_the_final_phase(db, stages, tmp_path, monkeypatch):
    run = new_run(db, stages)
    runs.update(db, run.id, phase=EXECUTING)
    regions = tmp_path / "source.reg"
    regions.write_text("icrs; circle(1,2,3)")
    seen = []
    real_bundle = runs.bundle

    def bundle(run_dir, extra_files=None, dest=None):
        seen.append(runs.get(db, run.id).phase)  # the record is not final yet
        return real_bundle(run_dir, extra_files, dest)

    monkeypatch.setattr(runs, "bundle", bundle)
    runs.finish(db, run.id, COMPLETED, bundle_files={"regions/source.reg": regions})
    assert seen == [EXECUTING]
    with runs.open_bundle(run.run_dir) as f, zipfile.ZipFile(f) as zf:
        assert zf.read(f"{run.id}/regions/source.reg") == b"icrs; circle(1,2,3)"
        provenance = json.loads(zf.read(f"{run.id}/provenance.json"))
    assert provenance["phase"] == COMPLETED


def test_provenance(db, stages):
    run = new_run(db, stages)
    run = runs.update(db, run.id, phase=EXECUTING, started=plumbing.now(), host="h1", worker="w1")
    path = runs.write_provenance(run, extra_key=1)
    data = json.loads(path.read_text())
    assert data["script"] == {"name": "stages", "version": "1.0"}
    assert data["params"]["steps"] == 3 and data["regio_version"] == __version__
    assert data["inputs"][0] == {
        "obsid": "0123456789", "camera": "MOS1", "path": "/archive/m1.fits", "sha256": "ab" * 32,
    }  # fmt: skip
    assert data["host"] == "h1" and data["extra_key"] == 1


def test_finish_writes_the_provenance_before_the_final_phase(db, stages):
    run = new_run(db, stages)
    provenance = Path(run.run_dir) / "provenance.json"
    with pytest.raises(ValueError, match="not a final phase"):
        runs.finish(db, run.id, EXECUTING)
    runs.update(db, run.id, phase=EXECUTING)
    done = runs.finish(db, run.id, COMPLETED, exit_code=0, ended=plumbing.now())
    assert done.phase == COMPLETED
    assert json.loads(provenance.read_text())["phase"] == COMPLETED
    # a finish that loses the race leaves the winner's provenance in place
    with pytest.raises(runs.PhaseError):
        runs.finish(db, run.id, ERROR, error="worker lost (too late)")
    data = json.loads(provenance.read_text())
    assert data["phase"] == COMPLETED and data["error"] is None


# ------------------------------------------------------------------------- queue position


def test_queue_position_matches_rq(db, stages, redis_url):
    from rq.job import Job

    from app import jobs

    conn = redis.Redis.from_url(redis_url)
    try:
        queued = [new_run(db, stages) for _ in range(3)]
        for run in queued:
            jobs.enqueue(run, stages, conn, db, queue_name="regio-position-test")
        for expected, run in enumerate(queued):
            position = runs.queue_position(run, conn, queue_name="regio-position-test")
            assert position == expected
            assert Job.fetch(run.job_id, connection=conn).get_position() == expected
        done = runs.update(db, queued[0].id, phase=ABORTED)
        assert runs.queue_position(done, conn) is None
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the kit


def test_the_kit_runs_a_script_by_hand_without_redis(db, stages):
    run = new_run(db, stages, steps=2, plot=True, label="by hand")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGIO_", "RQ_"))}
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "stages.py"), str(Path(run.run_dir) / "input.json")],
        capture_output=True, text=True, env=env, cwd=run.run_dir, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("[STAGE]")] == [
        "[STAGE] prepare", "[STAGE] extract", "[STAGE] finish",
    ]  # fmt: skip
    assert "[PROGRESS] 2/2" in lines
    products = runs.list_products(run.run_dir)
    assert [(p["file"], p["kind"]) for p in products] == [
        ("table.txt", "table"), ("sub/counts.json", "other"), ("plot.png", "plot"),
    ]  # fmt: skip
    assert products[0]["obsid"] == "0001" and products[0]["camera"] == "MOS1"
    assert products[1]["n"] == 1 and products[0]["created"].endswith("Z")
    assert "label by hand" in runs.product_path(run.run_dir, "table.txt").read_text()


@pytest.mark.parametrize(
    ("how", "message", "code"),
    [
        ("fail", "[ERROR] no events in the source region", 1),
        ("raise", "[ERROR] ValueError: the background region is empty", 1),
        ("exit", "giving up", 3),
    ],
)
def test_the_kit_reports_failures_clearly(db, how, message, code):
    script = catalog.load_script(SCRIPTS, "fails")
    run = new_run(db, script, how=how)
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "fails.py"), str(Path(run.run_dir) / "input.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == code
    output = (result.stdout + result.stderr).splitlines()
    assert message in output
    if how == "raise":
        assert "Traceback (most recent call last):" in result.stderr
        assert result.stdout.splitlines()[-1] == message  # the clear line comes last


def test_the_kit_explains_its_usage_and_a_bad_input(tmp_path):
    script = str(SCRIPTS / "stages.py")
    usage = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: stages.py INPUT.json" in usage.stderr
    (tmp_path / "bad.json").write_text("[1, 2")
    bad = subprocess.run(
        [sys.executable, script, str(tmp_path / "bad.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "[ERROR] cannot read the input file" in bad.stdout
