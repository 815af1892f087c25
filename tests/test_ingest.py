"""Ingest while running: new, changed and removed files reach the index within seconds; a file
being written waits; concurrent builders leave a consistent index."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import pytest

from indexer import store
from indexer.build import DB_NAME, build_index
from indexer.index import Index
from indexer.ingest import watch
from tests.conftest import wait_for

#: How long a test waits for the watcher before failing (a deadline, not a timing assertion).
DEADLINE = 60.0


def obsids(index_dir: Path) -> set[tuple[str, str]]:
    try:
        return {(r["mission"], r["obsid"]) for r in Index.load(index_dir).observations()}
    except Exception:
        return set()


def xmm_folders(sample_archive: Path) -> list[Path]:
    return sorted(p for p in sample_archive.iterdir() if p.is_dir() and p.name.isdigit())


@pytest.fixture
def watcher(tmp_path):
    """Start ``indexer.ingest.watch`` in a thread on tmp_path/archive; yields (archive, index,
    reports) and stops it at the end."""
    archive, index = tmp_path / "archive", tmp_path / "index"
    archive.mkdir()
    reports = []
    stop = threading.Event()
    errors = []

    def target():
        try:
            watch([archive], index, on_change=reports.append, settle=0.5, rescan=30.0,
                  hips=False, stop=stop)  # fmt: skip
        except Exception as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: (index / "manifest.json").exists() or errors, "the first build")
    yield archive, index, reports
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the watcher did not stop"
    assert errors == []


def test_new_and_removed_observations_reach_the_index(watcher, sample_archive):
    archive, index, reports = watcher
    first, second = xmm_folders(sample_archive)[:2]
    shutil.copytree(first, archive / first.name)
    wait_for(lambda: ("XMM", first.name) in obsids(index), "the first observation")
    region = json.loads((sample_archive / "truth.json").read_text())
    obs = next(o for o in region["observations"] if o["obsid"] == second.name)
    query = f'icrs;circle({obs["ra_pnt"]},{obs["dec_pnt"]},60")'
    assert not [r for r in Index.load(index).query(query) if r["obsid"] == second.name]
    shutil.copytree(second, archive / second.name)
    wait_for(
        lambda: [r for r in Index.load(index).query(query) if r["obsid"] == second.name],
        "a region query to find the new observation",
    )
    added = {e for r in reports for e in r.new_exposures}
    assert {f"XMM:{second.name}:{c}" for c in ("EMOS1", "EMOS2", "EPN")} <= added
    # a removed file takes its exposure out of the queries
    victim = next((archive / second.name).glob("*PIEVLI*"))
    victim.unlink()
    wait_for(
        lambda: not [r for r in Index.load(index).query(query) if r["camera"] == "EPN"
                     and r["obsid"] == second.name],
        "the removed exposure to leave the index",
    )  # fmt: skip
    # (a query may miss the row as soon as the build deletes it, before the build reports)
    wait_for(
        lambda: f"XMM:{second.name}:EPN" in {e for r in reports for e in r.removed_exposures},
        "the build to report the removed exposure",
    )


def test_a_file_being_written_is_not_indexed_half_written(watcher, sample_archive):
    archive, index, _ = watcher
    source = next(xmm_folders(sample_archive)[0].glob("*MIEVLI*"))
    data = source.read_bytes()
    target = archive / "incoming" / source.name
    target.parent.mkdir()
    # a slow copy: a piece every 0.2 s, the file always "fresh" while it grows
    pieces = 12
    step = len(data) // pieces + 1
    with open(target, "wb") as out:
        for k in range(pieces):
            out.write(data[k * step : (k + 1) * step])
            out.flush()
            time.sleep(0.2)
            db = store.connect(index / DB_NAME, readonly=True)
            try:
                states = store.file_states(db)
            finally:
                db.conn.close()
            assert str(target) not in states or k == pieces - 1, "read while being written"
    wait_for(lambda: ("XMM", source.parent.name) in obsids(index), "the completed file")
    row = next(r for r in Index.load(index).observations() if r["path"] == str(target))
    assert row["n_events"] > 0


def test_build_waits_for_young_files_and_refuses_truncated_ones(sample_archive, tmp_path):
    archive, index = tmp_path / "archive", tmp_path / "index"
    archive.mkdir()
    source = next(xmm_folders(sample_archive)[0].glob("*MIEVLI*"))
    whole = source.read_bytes()
    partial = archive / source.name
    partial.write_bytes(whole[: len(whole) // 2])
    report = build_index([archive], index, min_age=60.0)
    assert report.pending == 1 and report.exposures == 0
    old = time.time() - 3600
    os.utime(partial, (old, old))  # an abandoned half copy: read, and refused as truncated
    report = build_index([archive], index, min_age=60.0)
    assert report.skipped == 1 and "truncated" in report.problems[0][1]
    partial.write_bytes(whole)  # the copy completes
    os.utime(partial, (old + 1, old + 1))
    report = build_index([archive], index, min_age=60.0)
    assert report.updated == 1 and report.exposures == 1
    assert gzip.decompress(whole)  # the test's own input was a whole gzip file


def _build(archive: str, index: str) -> int:
    return build_index([Path(archive)], Path(index)).exposures


def test_simultaneous_builds_leave_a_consistent_index(sample_archive, tmp_path):
    archive, index = tmp_path / "archive", tmp_path / "index"
    archive.mkdir()
    for folder in xmm_folders(sample_archive)[:3]:
        shutil.copytree(folder, archive / folder.name)
    with get_context("spawn").Pool(2) as pool:
        counts = pool.starmap(_build, [(str(archive), str(index))] * 2)
    assert counts == [9, 9]
    loaded = Index.load(index)
    assert len(loaded.observations()) == 9 and len(loaded.mocset) == 9
    manifest = json.loads((index / "manifest.json").read_text())
    assert (index / manifest["mocset"]).is_dir()
    assert sorted(p.name for p in index.glob("mocset-*")) == [manifest["mocset"]]
    assert len(list((index / "mocs").glob("*.fits"))) == 9
