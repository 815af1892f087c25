"""The synthetic Chandra ACIS archive (``demo.chandra_acis``): reproducible bytes, files that
agree with the truth and with CIAO's conventions, a region that finds both missions of the demo
archive, and a HiPS built from ACIS lists.

Expected values are computed here from the files (astropy, numpy) or from the declared
observations; the truth is checked against them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy_healpix import HEALPix

from demo import chandra_acis
from demo.archive import generate_archive
from indexer.build import build_index
from indexer.hips import BAND_EV, build_hips
from indexer.index import Index
from tests.conftest import SAMPLE_SEED
from tests.science_helpers import sky_wcs

GOOD_GRADES = [0, 2, 3, 4, 6]
AIMPOINT_CHIP = {"ACIS-I": 3, "ACIS-S": 7}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("acis")
    return out, chandra_acis.generate(out, observations=3, seed=SAMPLE_SEED)


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- reproducibility ------------------------------------------------------------------------


def test_same_seed_same_bytes(demo, tmp_path):
    out, truth = demo
    again = chandra_acis.generate(tmp_path / "again", observations=3, seed=SAMPLE_SEED)
    assert digests(tmp_path / "again") == digests(out)
    assert json.dumps(again) == json.dumps(truth)
    other = chandra_acis.generate(tmp_path / "other", observations=1, seed=SAMPLE_SEED + 1)
    name = other["observations"][0]["path"]
    assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()


def test_declared_observations_and_names(demo):
    out, truth = demo
    assert (truth["format"], truth["version"], truth["seed"]) == (
        "regio-chandra-truth",
        1,
        SAMPLE_SEED,
    )
    declared = chandra_acis.OBSERVATIONS
    assert [o["obsid"] for o in truth["observations"]] == [s.obsid for s in declared]
    assert {o["camera"] for o in truth["observations"]} == {"ACIS-I", "ACIS-S"}
    assert {o["field"] for o in truth["observations"]} >= {"CL0958", "PKS0000"}
    for obs in truth["observations"]:
        assert obs["path"] == f"{obs['obsid']}/acisf{int(obs['obsid']):05d}N001_evt2.fits.gz"
        assert (out / obs["path"]).read_bytes()[:2] == b"\x1f\x8b"
    more = chandra_acis.observation_specs(5, SAMPLE_SEED)
    assert [s.obsid for s in more[:3]] == [s.obsid for s in declared]
    assert len({s.obsid for s in more}) == 5
    with pytest.raises(ValueError):
        chandra_acis.generate(out / "bad", observations=1, seed=1, events_scale=0)


# --- the files against the truth and CIAO's conventions -------------------------------------


def test_files_agree_with_the_truth(demo):
    out, truth = demo
    for obs in truth["observations"]:
        with fits.open(out / obs["path"]) as hdul:
            primary, events = hdul[0].header, hdul["EVENTS"]
            h, data = events.header, events.data
            gtis = {g.header["CCD_ID"]: g for g in hdul[2:]}
            assert all(g.name == "GTI" for g in gtis.values())
            assert all(g.header["HDUNAME"] == f"GTI{c}" for c, g in gtis.items())
            for header in (primary, h):
                assert (header["TELESCOP"], header["INSTRUME"]) == ("CHANDRA", "ACIS")
                assert header["OBS_ID"] == obs["obsid"]
            # chips: DETNAM, the GTI extensions and the events name the same ones
            chips = sorted(int(c) for c in h["DETNAM"].removeprefix("ACIS-"))
            assert chips == sorted(gtis) == sorted(np.unique(data["ccd_id"])) == obs["chips"]
            # events only in their chip's GTIs; per-chip on/live times from the GTIs
            for ccd, gti in gtis.items():
                rows = gti.data
                assert [[a, b] for a, b in zip(rows["START"], rows["STOP"], strict=True)] == (
                    obs["gti"][str(ccd)]
                )
                t = data["time"][data["ccd_id"] == ccd]
                inside = np.zeros(len(t), dtype=bool)
                for a, b in zip(rows["START"], rows["STOP"], strict=True):
                    inside |= (t >= a) & (t < b)
                assert inside.all()
                ontime = float(np.sum(rows["STOP"] - rows["START"]))
                assert h[f"ONTIME{ccd}"] == pytest.approx(ontime)
                assert h[f"LIVTIME{ccd}"] == pytest.approx(ontime * h["DTCOR"])
                assert h[f"EXPOSUR{ccd}"] == pytest.approx(ontime * h["DTCOR"])
            aim = AIMPOINT_CHIP[obs["camera"]]
            assert h["EXPOSURE"] == h["LIVETIME"] == pytest.approx(h[f"LIVTIME{aim}"])
            assert h["EXPOSURE"] == pytest.approx(obs["exposure"])
            assert np.all(np.diff(data["time"]) >= 0)
            # the SIM position puts the aimpoint on the truth's array
            assert (h["SIM_Z"] < -210) == (obs["camera"] == "ACIS-I")
            # counts and the standard filter
            status = np.asarray(data["status"])
            good = np.isin(data["grade"], GOOD_GRADES) & ~status.any(axis=1)
            assert (len(data), int(good.sum())) == (obs["events"], obs["standard_events"])
            assert set(np.unique(data["grade"])) == {0, 1, 2, 3, 4, 5, 6, 7}
            assert 0 < status.any(axis=1).sum() < 0.05 * len(data)
            # columns as CIAO writes them
            names = [h[f"TTYPE{i}"] for i in range(1, h["TFIELDS"] + 1)]
            number = {name: i for i, name in enumerate(names, start=1)}
            assert h[f"TFORM{number['status']}"] == "32X"
            for axis, sign in (("x", -1), ("y", 1)):
                i = number[axis]
                assert (h[f"TCRPX{i}"], h[f"TLMIN{i}"], h[f"TLMAX{i}"]) == (4096.5, 0.5, 8192.5)
                assert h[f"TCDLT{i}"] == pytest.approx(sign * 0.492 / 3600, rel=1e-12)
            assert (h[f"TLMIN{number['pi']}"], h[f"TLMAX{number['pi']}"]) == (1, 1024)
            assert ((data["chipx"] >= 1) & (data["chipx"] <= 1024)).all()
            assert ((data["chipy"] >= 1) & (data["chipy"] <= 1024)).all()
            assert np.array_equal(data["node_id"], (data["chipx"] - 1) // 256)
            energy = np.asarray(data["energy"], dtype=np.float64)
            expected_pi = np.clip(np.floor(energy / 14.6) + 1, 1, 1024)
            assert np.array_equal(data["pi"], expected_pi)
            # dates: DATE-OBS/DATE-END are TSTART/TSTOP in TT from MJDREF
            for key, met in (("DATE-OBS", h["TSTART"]), ("DATE-END", h["TSTOP"])):
                when = Time(h["MJDREF"] + met / 86400.0, format="mjd", scale="tt")
                assert abs((Time(h[key], scale="tt") - when).sec) <= 0.5
            assert (h["TIMESYS"], h["MJDREF"]) == ("TT", 50814.0)


def test_bright_sources_are_where_the_truth_says(demo):
    out, truth = demo
    for obs in truth["observations"]:
        with fits.open(out / obs["path"]) as hdul:
            data, header = hdul["EVENTS"].data, hdul["EVENTS"].header
            ra, dec = sky_wcs(header).wcs_pix2world(data["x"], data["y"], 1)
        events = SkyCoord(ra * u.deg, dec * u.deg)
        points = [s for s in obs["sources"] if s["kind"] != "extended" and s["counts"] > 500]
        assert points, obs["obsid"]
        pointing = SkyCoord(obs["ra_pnt"] * u.deg, obs["dec_pnt"] * u.deg)
        for source in points:
            position = SkyCoord(source["ra"] * u.deg, source["dec"] * u.deg)
            # the declared PSF (Gaussian, sigma growing off axis): 5 sigma holds all the events
            sigma = chandra_acis.psf_sigma_arcsec(position.separation(pointing).arcmin)
            n = int((events.separation(position) < (2.0 + 5 * sigma) * u.arcsec).sum())
            # plus a few others: background (~0.002 counts/s/arcmin^2, < 1 in such a circle)
            # and, near the cluster, its wings
            assert source["counts"] <= n <= source["counts"] + 15, (obs["obsid"], source, n)


def test_field_across_ra_zero_has_events_on_both_sides(demo):
    out, truth = demo
    obs = next(o for o in truth["observations"] if o["field"] == "PKS0000")
    with fits.open(out / obs["path"]) as hdul:
        data, header = hdul["EVENTS"].data, hdul["EVENTS"].header
        ra, _ = sky_wcs(header).wcs_pix2world(data["x"], data["y"], 1)
    ra = np.mod(ra, 360.0)
    assert (ra > 359.8).sum() > 1000 and (ra < 0.2).sum() > 1000


# --- in the demo archive --------------------------------------------------------------------


def test_a_region_finds_both_missions(tmp_path):
    archive = tmp_path / "archive"
    truth = generate_archive(archive, observations=1, seed=SAMPLE_SEED, chandra=3)
    assert truth["chandra"]["format"] == "regio-chandra-truth"
    assert json.loads((archive / "truth.json").read_text())["chandra"] == truth["chandra"]
    report = build_index([archive], tmp_path / "index")
    assert report.skipped == 0, report.problems
    index = Index.load(tmp_path / "index")
    cluster = next(o for o in truth["chandra"]["observations"] if o["field"] == "CL0958")
    field = next(f for f in truth["fields"] if f["name"] == "CL0958")
    found = index.query(f'icrs;circle({field["ra"]},{field["dec"]},60")')
    missions = {(r["mission"], r["camera"]) for r in found}
    assert ("CHANDRA", "ACIS-I") in missions
    assert {("XMM", "EMOS1"), ("XMM", "EMOS2"), ("XMM", "EPN")} <= missions
    chandra_rows = [r for r in found if r["mission"] == "CHANDRA"]
    assert [r["obsid"] for r in chandra_rows] == [cluster["obsid"]]
    assert chandra_rows[0]["coverage"] == pytest.approx(1.0)


def test_hips_from_acis_lists(demo, tmp_path):
    out, truth = demo
    index = tmp_path / "index"
    assert build_index([out], index).exposures == 3
    report = build_hips(index, max_order=3)
    assert report["rebuilt"] and report["problems"] == [], report["problems"]
    # the events binned: at most those passing the filters in the band, at least those of them
    # within 8' of a pointing (inside every image)
    band_all, band_near = 0, 0
    for obs in truth["observations"]:
        with fits.open(out / obs["path"]) as hdul:
            data, header = hdul["EVENTS"].data, hdul["EVENTS"].header
            keep = np.isin(data["grade"], GOOD_GRADES) & ~np.asarray(data["status"]).any(axis=1)
            keep &= (data["energy"] >= BAND_EV[0]) & (data["energy"] <= BAND_EV[1])
            ra, dec = sky_wcs(header).wcs_pix2world(data["x"][keep], data["y"][keep], 1)
        pointing = SkyCoord(obs["ra_pnt"] * u.deg, obs["dec_pnt"] * u.deg)
        band_all += int(keep.sum())
        band_near += int(
            (SkyCoord(ra * u.deg, dec * u.deg).separation(pointing) < 8 * u.arcmin).sum()
        )
    assert 0 < band_near <= report["events"] <= band_all
    # an order-3 tile at each pointing
    hp = HEALPix(nside=2**3, order="nested")
    for obs in truth["observations"]:
        npix = int(hp.lonlat_to_healpix(obs["ra_pnt"] * u.deg, obs["dec_pnt"] * u.deg))
        assert (index / "hips" / "Norder3" / "Dir0" / f"Npix{npix}.png").is_file(), obs["obsid"]
