"""Tests of the synthetic EPIC archive (``demo.xmm_epic``) and the camera geometry.

The checks are independent of the generator's code paths where it matters: sky positions come
from the X/Y column WCS through ``astropy.wcs``, counts are plain numpy counts in a circle, and the
expected values come from ``truth.json`` (analytic integrals, not the generator's samples).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from demo import epic_geometry as geo
from demo.xmm_epic import generate_archive

ROOT = Path(__file__).resolve().parent.parent
CAMERAS = ("EMOS1", "EMOS2", "EPN")
STANDARD = {
    "EMOS1": lambda d: ((d["FLAG"] & 0x766BA000) == 0) & (d["PATTERN"] <= 12),
    "EMOS2": lambda d: ((d["FLAG"] & 0x766BA000) == 0) & (d["PATTERN"] <= 12),
    "EPN": lambda d: (d["FLAG"] == 0) & (d["PATTERN"] <= 4),
}


@pytest.fixture(scope="module")
def truth(sample_archive: Path) -> dict:
    return json.loads((sample_archive / "truth.json").read_text())


def _events(archive: Path, obs: dict, camera: str):
    with fits.open(archive / obs["cameras"][camera]["file"]) as hdul:
        data = hdul["EVENTS"].data
        events = {name: np.array(data[name]) for name in data.columns.names}
        header = hdul["EVENTS"].header.copy()
        gtis = {
            int(h.name[6:]): np.array([h.data["START"], h.data["STOP"]]).T
            for h in hdul
            if h.name.startswith("STDGTI")
        }
    return events, header, gtis


def _column_wcs(header: fits.Header) -> WCS:
    """Sky WCS from the X/Y column keywords (TCTYPn/TCRVLn/TCRPXn/TCDLTn), found by name."""
    names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
    ix, iy = names.index("X") + 1, names.index("Y") + 1
    w = WCS(naxis=2)
    w.wcs.ctype = [header[f"TCTYP{ix}"], header[f"TCTYP{iy}"]]
    w.wcs.crval = [header[f"TCRVL{ix}"], header[f"TCRVL{iy}"]]
    w.wcs.crpix = [header[f"TCRPX{ix}"], header[f"TCRPX{iy}"]]
    w.wcs.cdelt = [header[f"TCDLT{ix}"], header[f"TCDLT{iy}"]]
    return w


def _sky(header: fits.Header, ev: dict) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = _column_wcs(header).all_pix2world(ev["X"].astype(float), ev["Y"].astype(float), 1)
    return ra, dec


# --- archive layout and headers -------------------------------------------------------------


def test_archive_layout_and_headers(sample_archive: Path, truth: dict) -> None:
    assert len(truth["observations"]) == 6
    fields = [o["field"] for o in truth["observations"]]
    assert len(set(fields)) < len(fields), "some field must be observed more than once"
    for obs in truth["observations"]:
        assert len(obs["obsid"]) == 10 and obs["obsid"].isdigit()
        names = sorted(p.name for p in (sample_archive / obs["obsid"]).iterdir())
        assert names == sorted(
            [
                f"P{obs['obsid']}M1S001MIEVLI0000.FTZ",
                f"P{obs['obsid']}M2S002MIEVLI0000.FTZ",
                f"P{obs['obsid']}PNS003PIEVLI0000.FTZ",
            ]
        )
        for camera in CAMERAS:
            path = sample_archive / obs["cameras"][camera]["file"]
            assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip
            with fits.open(path) as hdul:
                h0, h1 = hdul[0].header, hdul["EVENTS"].header
                assert h0["TELESCOP"] == "XMM" and h0["INSTRUME"] == camera
                assert h0["OBS_ID"] == obs["obsid"] and h1["OBS_ID"] == obs["obsid"]
                assert h0["SUBMODE"] == "PrimeFullWindow"
                assert h0["DATE"][:4] <= "2022"  # derived from the observation, never "now"
                assert h1["MJDREF"] == 50814.0 and h1["TIMESYS"] == "TT"
                assert h1["RA_PNT"] == obs["ra_pnt"] and h1["PA_PNT"] == obs["pa_pnt"]
                assert h1["REFXCRVL"] == obs["ra_pnt"] and h1["REFYCRVL"] == obs["dec_pnt"]
                cols = hdul["EVENTS"].columns
                formats = {c.name: c.format for c in cols}
                assert formats["TIME"] == "D" and formats["X"] == "J" and formats["PI"] == "I"
                assert (
                    formats["FLAG"] == "J" and formats["PATTERN"] == "B" and formats["CCDNR"] == "B"
                )
                x = cols["X"]
                assert x.coord_type == "RA---TAN" and x.coord_ref_point == 25921
                assert x.coord_inc == pytest.approx(-1.38888888888889e-05) and x.null == -99999999
                live = obs["cameras"][camera]["live_ccds"]
                assert sorted(int(h.name[6:]) for h in hdul if h.name.startswith("STDGTI")) == live
                assert sorted(int(h.name[6:]) for h in hdul if h.name.startswith("BADPIX")) == live
                for ccd in live:
                    assert h1[f"ONTIME{ccd:02d}"] == pytest.approx(
                        obs["cameras"][camera]["ontime"][str(ccd)]
                    )
                    assert h1[f"LIVETI{ccd:02d}"] < h1[f"ONTIME{ccd:02d}"]
                assert 8000 < h1["LIVETIME"] <= h1["ONTIME"] < 41000
                assert len(hdul["EVENTS"].data) == obs["cameras"][camera]["events"]


def test_special_fields_are_present(truth: dict) -> None:
    decs = [o["dec_pnt"] for o in truth["observations"]]
    ras = [o["ra_pnt"] for o in truth["observations"]]
    assert any(abs(d) > 85 for d in decs), "a field near a pole"
    assert any(r < 0.25 or r > 359.75 for r in ras), "a field straddling RA = 0/360"
    after_2005 = [o for o in truth["observations"] if o["date_obs"] >= "2005-03-09"]
    assert any(6 in o["cameras"]["EMOS1"]["dead_ccds"] for o in after_2005)
    kinds = {s["kind"] for s in truth["sources"]}
    assert kinds == {"point", "extended", "variable"}


# --- sky coordinates ------------------------------------------------------------------------


def test_column_wcs_puts_events_in_the_field_of_view(sample_archive: Path, truth: dict) -> None:
    for obs in truth["observations"]:
        centre = SkyCoord(obs["ra_pnt"], obs["dec_pnt"], unit="deg")
        for camera in CAMERAS:
            ev, header, _ = _events(sample_archive, obs, camera)
            good = STANDARD[camera](ev)
            ra, dec = _sky(header, ev)
            sep = centre.separation(SkyCoord(ra[good], dec[good], unit="deg")).arcmin
            limit = 14.5 if camera != "EPN" else 15.1
            assert sep.max() < limit, (obs["obsid"], camera, sep.max())
            assert np.percentile(sep, 90) > 8.0  # the field is filled, not a point
            # the geometry module agrees with the column WCS: MOS1 DETX/DETY is the focal plane
            if camera == "EMOS1":
                fx, fy = geo.sky_to_focal(ra, dec, obs["ra_pnt"], obs["dec_pnt"], obs["pa_pnt"])
                assert np.abs(fx * 1200 - ev["DETX"]).max() < 2.0
                assert np.abs(fy * 1200 - ev["DETY"]).max() < 2.0
            if abs(obs["dec_pnt"]) > 85:
                assert dec.min() > 84.5 if obs["dec_pnt"] > 0 else dec.max() < -84.5
                assert np.ptp(ra) > 5  # 2.8 deg from the pole a 15' field spans ~10 deg of RA
            if obs["ra_pnt"] < 0.25 or obs["ra_pnt"] > 359.75:
                assert (ra < 0.1).any() and (ra > 359.9).any()
                assert ((ra >= 0) & (ra < 360)).all()


# --- event filters ----------------------------------------------------------------------------


def test_standard_filters_keep_the_injected_fraction(sample_archive: Path, truth: dict) -> None:
    positional = truth["positional_flag_bits"]
    removed = []
    for obs in truth["observations"]:
        for camera in CAMERAS:
            ev, _, _ = _events(sample_archive, obs, camera)
            good = STANDARD[camera](ev)
            clean = (ev["FLAG"] & positional) == 0
            p = truth["random_pass_probability"][camera]
            n = int(clean.sum())
            k = int((good & clean).sum())
            assert abs(k - n * p) < 4 * np.sqrt(n * p * (1 - p)), (obs["obsid"], camera, k / n, p)
            # events flagged out of the field of view or on bad pixels never pass
            assert not good[(ev["FLAG"] & (0x10000 | 0x200000 | 0x8000)) != 0].any()
            assert obs["cameras"][camera]["events_passing_standard_filters"] == int(good.sum())
            removed.append(1 - good.mean())
    assert 0.05 < np.mean(removed) < 0.3


# --- sources ---------------------------------------------------------------------------------


def test_counts_in_30_arcsec_match_truth(sample_archive: Path, truth: dict) -> None:
    by_obsid = {o["obsid"]: o for o in truth["observations"]}
    checked = 0
    cache: dict = {}
    for src in truth["sources"]:
        for obsid, per_camera in src["expected"].items():
            if obsid not in by_obsid:
                continue
            for camera, exp in per_camera.items():
                if exp["counts_r30"] < 200:
                    continue
                key = (obsid, camera)
                if key not in cache:
                    ev, header, _ = _events(sample_archive, by_obsid[obsid], camera)
                    good = STANDARD[camera](ev)
                    ra, dec = _sky(header, {"X": ev["X"][good], "Y": ev["Y"][good]})
                    cache[key] = SkyCoord(ra, dec, unit="deg")
                sep = cache[key].separation(SkyCoord(src["ra"], src["dec"], unit="deg")).arcsec
                n = int(np.count_nonzero(sep <= truth["radius_arcsec"]))
                expected = (
                    exp["counts_r30"]
                    + exp["other_sources_counts_r30"]
                    + exp["background_counts_r30"]
                )
                assert abs(n - expected) < 4 * np.sqrt(expected), (
                    src["id"],
                    obsid,
                    camera,
                    n,
                    expected,
                )
                # the background density times the circle area is consistent when no gap is near
                area = np.pi * truth["radius_arcsec"] ** 2
                if exp["ccd"]:
                    assert (
                        exp["background_counts_r30"] <= exp["background_per_arcsec2"] * area * 1.02
                    )
                checked += 1
    assert checked >= 10


def test_variable_sources_vary(sample_archive: Path, truth: dict) -> None:
    by_obsid = {o["obsid"]: o for o in truth["observations"]}
    seen = set()
    for src in truth["sources"]:
        if src["kind"] != "variable":
            continue
        var = src["variability"]
        for obsid in src["expected"]:
            if obsid not in by_obsid or src["expected"][obsid]["EPN"]["counts_r30"] < 300:
                continue
            ev, header, _ = _events(sample_archive, by_obsid[obsid], "EPN")
            good = STANDARD["EPN"](ev)
            ra, dec = _sky(header, ev)
            sep = SkyCoord(ra, dec, unit="deg").separation(
                SkyCoord(src["ra"], src["dec"], unit="deg")
            )
            t = ev["TIME"][good & (sep.arcsec < 20)]
            if var["model"] == "periodic":
                # Rayleigh test: Z^2 = (2/N) |sum exp(2 pi i t / P)|^2, ~2 for noise
                trial = var["period"] * np.linspace(0.8, 1.2, 401)
                phase = 2 * np.pi * t[None, :] / trial[:, None]
                z2 = 2.0 / len(t) * (np.cos(phase).sum(1) ** 2 + np.sin(phase).sum(1) ** 2)
                assert z2.max() > 50
                assert abs(trial[np.argmax(z2)] / var["period"] - 1) < 0.02
            else:
                t_peak = var["t_peak"][obsid]
                gti = np.array(by_obsid[obsid]["cameras"]["EPN"]["gti"])
                exposure = np.sum(gti[:, 1] - gti[:, 0])
                in_flare = np.count_nonzero(np.abs(t - t_peak - 500) < 1000) / 2000.0
                assert in_flare > 3 * len(t) / exposure
            seen.add(var["model"])
    assert seen == {"periodic", "flare"}


def test_soft_proton_flares_trip_the_screening(sample_archive: Path, truth: dict) -> None:
    flaring = [o for o in truth["observations"] if o["soft_proton_flares"]]
    assert flaring
    obs = flaring[0]
    for camera, (lo, hi, threshold) in {
        "EMOS1": (10000, 99999, 0.35),
        "EPN": (10000, 12000, 0.4),
    }.items():
        ev, _, _ = _events(sample_archive, obs, camera)
        sel = (ev["PATTERN"] == 0) & (ev["PI"] >= lo) & (ev["PI"] <= hi)
        cam = obs["cameras"][camera]
        edges = np.arange(cam["tstart"], cam["tstop"], 100.0)
        rate = np.histogram(ev["TIME"][sel], edges)[0] / 100.0
        t_peak = obs["soft_proton_flares"][0]["t_peak"]
        peak_bin = np.searchsorted(edges, t_peak) - 1
        assert rate[peak_bin - 1 : peak_bin + 2].max() > threshold
        assert np.median(rate) < threshold


# --- geometry of the events ------------------------------------------------------------------


def test_no_events_in_chip_gaps_or_on_dead_ccds(sample_archive: Path, truth: dict) -> None:
    tol = 0.1 / 60.0  # arcmin: the X/Y columns are rounded to 0.05" pixels
    for obs in truth["observations"]:
        for camera in CAMERAS:
            ev, header, _ = _events(sample_archive, obs, camera)
            ra, dec = _sky(header, ev)
            x, y = geo.sky_to_focal(ra, dec, obs["ra_pnt"], obs["dec_pnt"], obs["pa_pnt"])
            rects = np.array([geo.CCD_LAYOUT[camera][int(c)] for c in ev["CCDNR"]])
            inside = (
                (x >= rects[:, 0] - tol)
                & (x <= rects[:, 1] + tol)
                & (y >= rects[:, 2] - tol)
                & (y <= rects[:, 3] + tol)
            )
            assert inside.all(), (obs["obsid"], camera, int((~inside).sum()))
            dead = set(obs["cameras"][camera]["dead_ccds"])
            assert dead == geo.dead_ccds(camera, obs["date_obs"])
            assert not np.isin(ev["CCDNR"], list(dead)).any()
            assert set(np.unique(ev["CCDNR"]).tolist()) == set(obs["cameras"][camera]["live_ccds"])
    mos1_dead = [o for o in truth["observations"] if o["cameras"]["EMOS1"]["dead_ccds"]]
    assert mos1_dead, "the sample must include MOS1 data taken after 2005-03-09"


def test_event_times_respect_ccd_gtis_and_frames(sample_archive: Path, truth: dict) -> None:
    ccd_specific = []
    for obs in truth["observations"]:
        for camera in CAMERAS:
            ev, header, gtis = _events(sample_archive, obs, camera)
            frame = obs["cameras"][camera]["frame_time"]
            for ccd, gti in gtis.items():
                t = ev["TIME"][ev["CCDNR"] == ccd]
                k = np.searchsorted(gti[:, 0], t, side="right") - 1
                assert (k >= 0).all()
                assert (t < gti[k, 1]).all() and (t >= gti[k, 0]).all(), (obs["obsid"], camera, ccd)
                phase = (t - header["TSTART"]) / frame - 0.5
                assert np.abs(phase - np.rint(phase)).max() < 1e-3
            # CCD-specific gaps: some CCD's GTIs differ from the camera's
            ccd_specific.append(
                any(len(g) != len(obs["cameras"][camera]["gti"]) for g in gtis.values())
            )
            assert np.all(np.diff(ev["TIME"]) >= 0)
    assert sum(ccd_specific) > len(ccd_specific) // 2


# --- reproducibility and command line ------------------------------------------------------------


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate_archive(tmp_path / "a", observations=2, seed=7, events_scale=0.2)
    b = generate_archive(tmp_path / "b", observations=2, seed=7, events_scale=0.2)
    c = generate_archive(tmp_path / "c", observations=2, seed=8, events_scale=0.2)
    assert a == b
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 7
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for rel in files:
        if rel.suffix == ".FTZ":
            raw = (tmp_path / "a" / rel).read_bytes()
            assert raw[4:8] == b"\0\0\0\0"  # gzip mtime
            assert gzip.decompress(raw) != gzip.decompress((tmp_path / "c" / rel).read_bytes())
    assert a != c


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "indexer", "sample", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_builds_an_archive_and_can_replace_it(tmp_path: Path) -> None:
    out = tmp_path / "archive"
    for _ in range(2):  # the second run replaces the previous sample archive
        proc = _cli(str(out), "--observations", "1", "--seed", "3", "--events-scale", "0.05")
        assert proc.returncode == 0, proc.stderr
        assert "0112230101" in proc.stderr
    truth = json.loads((out / "truth.json").read_text())
    assert [o["obsid"] for o in truth["observations"]] == ["0112230101"]
    assert len(list((out / "0112230101").iterdir())) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--observations", "0"], "--observations"),
        (["--observations", "-3"], "--observations"),
        (["--events-scale", "0"], "--events-scale"),
        (["--events-scale", "-2"], "--events-scale"),
        (["--events-scale", "nan"], "--events-scale"),
        (["--events-scale", "inf"], "--events-scale"),
    ],
)
def test_cli_rejects_bad_numbers(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _cli(str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_rejects_foreign_folders(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    proc = _cli(str(busy))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (busy / "thesis.tex").read_text() == "precious"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    proc = _cli(str(a_file))
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    proc = _cli(str(tmp_path / "out"), "--observations", "many")
    assert proc.returncode == 2  # argparse's own error


# --- geometry module -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ra0", "dec0", "pa"),
    [
        (149.6, -11.09, 306.7),
        (359.95, 2.2, 75.0),
        (0.02, -1.0, 250.0),
        (63.0, 87.2, 200.0),
        (10.0, -89.5, 10.0),
    ],
)
def test_ccd_polygons_match_astropy_wcs(ra0: float, dec0: float, pa: float) -> None:
    for camera in CAMERAS:
        polys = geo.ccd_polygons(camera, ra0, dec0, pa)
        assert sorted(polys) == list(range(1, 8 if camera != "EPN" else 13))
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [ra0, dec0]
        w.wcs.crpix = [1.0, 1.0]  # FITS pixel 1 = 0-based pixel 0 = the tangent point
        w.wcs.cdelt = [1.0 / 60.0, 1.0 / 60.0]  # intermediate coordinates in arcmin (xi East)
        for ccd, corners in polys.items():
            assert corners.shape == (4, 2)
            assert ((corners[:, 0] >= 0) & (corners[:, 0] < 360)).all()
            focal = geo.ccd_corners_focal(camera, ccd)
            c, s = np.cos(np.radians(pa)), np.sin(np.radians(pa))
            xi = focal[:, 0] * c + focal[:, 1] * s
            eta = -focal[:, 0] * s + focal[:, 1] * c
            ra, dec = w.all_pix2world(xi, eta, 0)
            a = SkyCoord(corners[:, 0], corners[:, 1], unit="deg")
            assert a.separation(SkyCoord(ra, dec, unit="deg")).arcsec.max() < 1e-6
            # sizes: MOS 10.9' squares, pn 13.6' x 4.4'
            sides = sorted(a[[0, 1, 2]].separation(a[[1, 2, 3]]).arcmin)
            expected = [10.9, 10.9, 10.9] if camera != "EPN" else [4.4, 13.6, 13.6]
            assert np.allclose(sorted(sides)[:3], sorted(expected)[:3], atol=0.01)


def test_ccd_of_gaps_and_dead_ccds() -> None:
    assert geo.ccd_of("EMOS1", 0.0, 0.0) == 1
    assert geo.ccd_of("EPN", 0.0, 0.0) == 4
    # just across CCD1's +x edge is a gap, then CCD3
    edge = geo.CCD_LAYOUT["EMOS1"][1][1]
    assert geo.ccd_of("EMOS1", edge + 0.05, 0.0) == 0
    assert geo.ccd_of("EMOS1", edge + 0.5, 0.0) == 3
    assert geo.ccd_of("EMOS1", 0.0, 20.0) == 0  # outside the field of view
    assert set(np.unique(geo.ccd_of("EPN", *np.mgrid[-14:14:200j, -14:14:200j]))) == set(range(13))
    assert geo.dead_ccds("EMOS1", "2005-03-08T23:00:00") == set()
    assert geo.dead_ccds("EMOS1", "2005-03-09") == {6}
    assert geo.dead_ccds("EMOS1", "2013-01-01T00:00:00") == {3, 6}
    assert geo.dead_ccds("EMOS2", "2020-01-01") == set() == geo.dead_ccds("EPN", "2020-01-01")
    with pytest.raises(ValueError):
        geo.dead_ccds("EMOS3", "2020-01-01")
