"""Building the index: recognition by header, metadata, footprints (dead CCDs), incremental
builds, bad files and bad command lines."""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from mocpy import MOC

from demo import epic_geometry as geometry
from indexer import store
from indexer.build import build_index
from indexer.index import Index
from tests.conftest import ROOT

# From data/xmm-rxcj0958/README.md: events per (obsid, camera) and the pointings.
REAL_EVENTS = {
    ("0201901401", "EMOS1"): 22124,
    ("0201901401", "EMOS2"): 20982,
    ("0201903501", "EMOS1"): 31607,
    ("0201903501", "EMOS2"): 32339,
    ("0404910601", "EMOS1"): 72308,
    ("0404910601", "EMOS2"): 64702,
}
REAL_POINTING = {
    "0201901401": (149.6005, -11.08681, 285.6),
    "0201903501": (149.59475, -11.08764, 299.6),
    "0404910601": (149.591375, -11.08872, 306.7),
}


def ccd_centre(camera: str, ccd: int, ra: float, dec: float, pa: float):
    """Sky position (deg) of the centre of a CCD for a pointing, from the nominal layout."""
    xmin, xmax, ymin, ymax = geometry.CCD_LAYOUT[camera][ccd]
    ra_c, dec_c = geometry.focal_to_sky((xmin + xmax) / 2, (ymin + ymax) / 2, ra, dec, pa)
    return float(ra_c), float(dec_c)


def contains(moc: MOC, ra: float, dec: float) -> bool:
    import astropy.units as u

    return bool(moc.contains_lonlat(ra * u.deg, dec * u.deg)[0])


def rows_by_key(index_dir) -> dict:
    return {(r["obsid"], r["camera"]): r for r in Index.load(index_dir).observations()}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "indexer", *args], cwd=ROOT, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def real_index(real_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-index")
    report = build_index([real_data], folder)
    return folder, report


def test_real_data_rows(real_index, real_data):
    folder, report = real_index
    # 6 MOS event lists + 9 exposure maps; the .reg files are not FITS and are not looked at
    assert (report.added, report.updated, report.removed, report.skipped) == (15, 0, 0, 0)
    assert report.exposures == 9
    rows = rows_by_key(folder)
    assert rows.keys() == {(o, c) for o in REAL_POINTING for c in ("EMOS1", "EMOS2", "EPN")}
    for (obsid, camera), row in rows.items():
        ra, dec, pa = REAL_POINTING[obsid]
        assert row["mission"] == "XMM" and row["instrument"] == "EPIC"
        assert row["object"].startswith("RXCJ0958") and row["filter"] == "Thin1"
        assert row["observer"] and row["date_obs"].startswith(row["date_obs"][:4])
        assert row["date_obs"] < row["date_end"]
        assert row["ra_pnt"] == pytest.approx(ra, abs=1e-4)
        assert row["dec_pnt"] == pytest.approx(dec, abs=1e-4)
        assert row["pa_pnt"] == pytest.approx(pa, abs=0.1)
        assert row["exposure"] > 1000
        content = (real_data / obsid / row["path"].rsplit("/", 1)[1]).read_bytes()
        assert row["checksum"] == hashlib.sha256(content).hexdigest()
        assert row["size"] == len(content)
        if camera == "EPN":
            assert row["source"] == "expmap" and row["n_events"] is None
            assert row["path"].endswith(f"{obsid}_pn_exp1-0.50-2.00keVexpmap.fits")
            assert row["submode"] == "PrimeFullWindowExtended"
        else:
            assert row["source"] == "events"
            assert row["n_events"] == REAL_EVENTS[(obsid, camera)]
            assert row["submode"] == "PrimeFullWindow"
        assert MOC.from_fits(folder / row["moc_file"]).max_order == 13


def test_real_footprints_show_the_dead_mos1_ccd(real_index):
    """MOS1 CCD6 died in 2005: the 2006 MOS1 footprint has a hole where it was, 2004 has not."""
    folder, _ = real_index
    rows = rows_by_key(folder)
    for obsid, (ra, dec, pa) in REAL_POINTING.items():
        mos1 = MOC.from_fits(folder / rows[(obsid, "EMOS1")]["moc_file"])
        mos2 = MOC.from_fits(folder / rows[(obsid, "EMOS2")]["moc_file"])
        dead = geometry.dead_ccds("EMOS1", rows[(obsid, "EMOS1")]["date_obs"])
        assert dead == ({6} if obsid == "0404910601" else set())
        for ccd in geometry.ccd_numbers("EMOS1"):
            position = ccd_centre("EMOS1", ccd, ra, dec, pa)
            assert contains(mos1, *position) == (ccd not in dead), (obsid, ccd)
            if ccd in dead:
                assert contains(mos2, *position)  # the hole is MOS1's only


def copy_observations(real_data, target, obsids):
    target.mkdir()
    for obsid in obsids:
        shutil.copytree(real_data / obsid, target / obsid)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def test_incremental_build(real_data, tmp_path):
    archive = copy_observations(real_data, tmp_path / "archive", ["0201901401", "0201903501"])
    index_dir = tmp_path / "index"
    first = build_index([archive], index_dir)
    assert (first.added, first.exposures, first.skipped) == (10, 6, 0)
    before = rows_by_key(index_dir)

    # unchanged content with a new modification time: nothing is read again
    touched = archive / "0201901401" / "mos2_exp1_clean_evts.fits"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    again = build_index([archive], index_dir)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 10)
    assert rows_by_key(index_dir) == before

    # changed content: one file updated, the other rows stay as they were
    changed = archive / "0201903501" / "mos2_exp1_clean_evts.fits"
    with fits.open(changed, mode="update") as hdul:
        hdul[0].header["OBJECT"] = "RENAMED"
        hdul["EVENTS"].header["OBJECT"] = "RENAMED"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 2 * 10**9))
    updated = build_index([archive], index_dir)
    assert (updated.added, updated.updated, updated.removed, updated.unchanged) == (0, 1, 0, 9)
    after = rows_by_key(index_dir)
    assert after[("0201903501", "EMOS2")]["object"] == "RENAMED"
    assert after[("0201903501", "EMOS2")]["checksum"] != before[("0201903501", "EMOS2")]["checksum"]
    for key in before.keys() - {("0201903501", "EMOS2")}:
        assert after[key] == before[key], key

    # bad files are reported and skipped; the build goes on
    (archive / "garbage.fits").write_bytes(os.urandom(5000))
    truncated = (archive / "0201901401" / "mos1_exp1_clean_evts.fits").read_bytes()[:200_000]
    (archive / "0201901401" / "truncated_evts.fits").write_bytes(truncated)
    fits.PrimaryHDU(
        np.zeros((8, 8), dtype=np.float32),
        header=fits.Header({"TELESCOP": "SWIFT", "INSTRUME": "XRT"}),
    ).writeto(archive / "swift.fits")
    (archive / "notes.txt").write_text("not FITS: ignored")
    with_bad = build_index([archive], index_dir)
    assert (with_bad.added, with_bad.updated, with_bad.skipped, with_bad.unchanged) == (0, 0, 3, 10)
    reasons = dict(with_bad.problems)
    assert (
        "no registered instrument recognises this file (TELESCOP=SWIFT, INSTRUME=XRT"
        in (reasons[str(archive / "swift.fits")])
    )
    assert "FITS" in reasons[str(archive / "garbage.fits")]
    assert str(archive / "0201901401" / "truncated_evts.fits") in reasons
    assert rows_by_key(index_dir) == after

    # removing an event list: the MOS1 row falls back to that observation's exposure map
    (archive / "0201901401" / "mos1_exp1_clean_evts.fits").unlink()
    (archive / "garbage.fits").unlink()
    removed = build_index([archive], index_dir)
    assert (removed.added, removed.removed, removed.skipped) == (0, 1, 2)
    final = rows_by_key(index_dir)
    fallback = final[("0201901401", "EMOS1")]
    assert fallback["source"] == "expmap" and fallback["n_events"] is None
    assert fallback["id"] == before[("0201901401", "EMOS1")]["id"]  # stable MOC id
    assert MOC.from_fits(index_dir / fallback["moc_file"]).sky_fraction > 0
    for key in final.keys() - {("0201901401", "EMOS1")}:
        assert final[key] == after[key], key

    # a whole observation removed: its three rows and MOC files leave the index
    shutil.rmtree(archive / "0201903501")
    gone = build_index([archive], index_dir)
    assert gone.removed == 5 and gone.exposures == 3
    assert {obsid for obsid, _ in rows_by_key(index_dir)} == {"0201901401"}
    assert len(list((index_dir / "mocs").glob("*.fits"))) == 3
    assert Index.load(index_dir).query("icrs;circle(149.59,-11.06,1')")


def test_recognition_by_header_not_name(real_data, tmp_path):
    """A gzip event list named like PPS (.FTZ) and one with a meaningless name are indexed."""
    archive = tmp_path / "archive"
    (archive / "deep" / "er").mkdir(parents=True)
    source = real_data / "0201901401" / "mos2_exp1_clean_evts.fits"
    pps = archive / "deep" / "P0201901401M2S002MIEVLI0000.FTZ"
    pps.write_bytes(gzip.compress(source.read_bytes()))
    (archive / "deep" / "er" / "blob.bin").write_bytes(
        gzip.compress((real_data / "0404910601" / "mos1_exp1_clean_evts.fits").read_bytes())
    )
    index_dir = tmp_path / "index"
    report = build_index([archive], index_dir)
    assert (report.added, report.skipped) == (2, 0)
    rows = rows_by_key(index_dir)
    assert rows[("0201901401", "EMOS2")]["n_events"] == REAL_EVENTS[("0201901401", "EMOS2")]
    assert rows[("0201901401", "EMOS2")]["path"] == str(pps)
    assert rows[("0404910601", "EMOS1")]["n_events"] == REAL_EVENTS[("0404910601", "EMOS1")]


def test_sample_archive(sample_archive, tmp_path):
    """Every observation x camera of the generated archive is indexed from its event list, with
    the truth's metadata; dead MOS1 CCDs leave holes, live CCDs are covered. The Chandra part
    of the demo archive is indexed beside it, each exposure once."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    index_dir = tmp_path / "index"
    report = build_index([sample_archive], index_dir)
    assert report.skipped == 0
    all_rows = Index.load(index_dir).observations()
    chandra = {(r["obsid"], r["camera"]) for r in all_rows if r["mission"] == "CHANDRA"}
    assert chandra == {(o["obsid"], o["camera"]) for o in truth["chandra"]["observations"]}
    rows = {(r["obsid"], r["camera"]): r for r in all_rows if r["mission"] == "XMM"}
    expected = {(o["obsid"], c) for o in truth["observations"] for c in o["cameras"]}
    assert rows.keys() == expected and len(expected) == 3 * len(truth["observations"])
    holes = 0
    for obs in truth["observations"]:
        for camera, cam in obs["cameras"].items():
            row = rows[(obs["obsid"], camera)]
            assert row["source"] == "events"
            assert row["n_events"] == cam["events"]
            assert row["exposure"] == pytest.approx(cam["exposure"], rel=1e-6)
            assert row["ra_pnt"] == pytest.approx(obs["ra_pnt"])
            assert row["path"] == str(sample_archive / cam["file"])
            moc = MOC.from_fits(index_dir / row["moc_file"])
            for ccd in geometry.ccd_numbers(camera):
                position = ccd_centre(camera, ccd, obs["ra_pnt"], obs["dec_pnt"], obs["pa_pnt"])
                assert contains(moc, *position) == (ccd in cam["live_ccds"]), (row, ccd)
                holes += ccd in cam["dead_ccds"]
    assert holes > 0  # the declared observations include MOS1 after 2005


def test_build_cli_summary_and_progress(real_data, tmp_path):
    archive = copy_observations(real_data, tmp_path / "archive", ["0201901401"])
    (archive / "bad.fits").write_bytes(b"SIMPLE  =  nonsense")
    done = run_cli("build", str(archive), "--index", str(tmp_path / "index"))
    assert done.returncode == 0, done.stderr
    assert "added=5 updated=0 removed=0 skipped=1" in done.stdout
    assert "[build] 6/6 files" in done.stderr
    assert f"skipped {archive / 'bad.fits'}:" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "case", ["missing-archive", "archive-is-file", "index-is-file", "no-write"]
)
def test_build_cli_bad_inputs_exit_2(real_data, tmp_path, case):
    archive = tmp_path / "archive"
    archive.mkdir()
    index_dir = tmp_path / "index"
    if case == "missing-archive":
        archive, fragment = tmp_path / "nowhere", "archive folder not found"
    elif case == "archive-is-file":
        archive = tmp_path / "file.fits"
        archive.write_text("x")
        fragment = "archive path is not a folder"
    elif case == "index-is-file":
        index_dir.write_text("x")
        fragment = "index path is not a folder"
    else:
        index_dir, fragment = "/proc/regio-index", "index folder not writable"
    done = run_cli("build", str(archive), "--index", str(index_dir))
    assert done.returncode == 2
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_schema_migrations_are_recorded(real_index):
    folder, _ = real_index
    db = store.connect(folder / "index.db")
    assert store.schema_version(db) == len(store.MIGRATIONS)
    assert store.migrate(db) == len(store.MIGRATIONS)  # idempotent
