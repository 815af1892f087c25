"""chandra_spectra, chandra_lightcurves, chandra_images on a real ACIS list and the demo ACIS lists.

Real data: the M82 cutout stingray ships (ObsID 10027, ACIS-S, chip 7 = S3, 4612 events already
through the level-2 filters, one GTI of 945 s, no status column). Demo data: ``demo.chandra_acis``
(several chips, per-chip GTIs, rejected grades and status bits kept in the list) with its truth.
Every number is checked against an independent computation: astropy reading the event list, its
column WCS through astropy (``keysel=['pixel']``), regions as circles on the sky, the filters
applied by hand, and the generator's own chip layout.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from demo import chandra_acis as acis_demo
from tests.science_helpers import (
    build_input,
    independent_events,
    products,
    run_script,
    sky_wcs,
    standard_events,
)

BACKSCAL_NORM = 8192.0**2
M82_SOURCE = (148.9688, 69.6797)  # a source 30" east of the M82 nucleus, in the cutout
M82_RADIUS = 5.0 / 3600  # deg
M82_BKG = (12.0 / 3600, 25.0 / 3600)  # inside the cutout, a 150-pixel wide strip


def circle(ra: float, dec: float, radius: float) -> str:
    return f"icrs\ncircle({ra},{dec},{radius})"


def annulus(ra: float, dec: float, r_in: float, r_out: float) -> str:
    return f"icrs\nannulus({ra},{dec},{r_in},{r_out})"


def pixel_radius(header: fits.Header, radius_deg: float) -> float:
    return radius_deg / abs(sky_wcs(header).wcs.cdelt[0])


def expected_image(events: Table, header: fits.Header, band: tuple[int, int]) -> np.ndarray:
    """The counts image of ``events`` in PI ``band``, each put in the pixel the image's
    LTM/LTV keywords (physical = event x/y) say; and the image WCS puts its sky position there."""
    shape = (header["NAXIS2"], header["NAXIS1"])
    ix = np.floor(events["x"] * header["LTM1_1"] + header["LTV1"] - 0.5).astype(int)
    iy = np.floor(events["y"] * header["LTM2_2"] + header["LTV2"] - 0.5).astype(int)
    on = (events["pi"] >= band[0]) & (events["pi"] <= band[1])
    on &= (ix >= 0) & (ix < shape[1]) & (iy >= 0) & (iy < shape[0])
    image = np.zeros(shape, dtype=np.int64)
    np.add.at(image, (iy[on], ix[on]), 1)
    px, py = WCS(header).all_world2pix(events["ra"][on], events["dec"][on], 1)
    assert np.all(np.abs(px - (ix[on] + 1)) <= 0.5 + 1e-6)
    assert np.all(np.abs(py - (iy[on] + 1)) <= 0.5 + 1e-6)
    return image


def read_lightcurve(path: Path):
    """The light curve as stingray's OGIP reader sees it."""
    with warnings.catch_warnings():
        # stingray warns at import that the optional numba accelerator is not installed
        warnings.filterwarnings("ignore", "The recommended numba package", UserWarning)
        # stingray's FITS light-curve reader always warns that it is "still under testing"
        warnings.filterwarnings("ignore", "WARNING! FITS light curve handling", UserWarning)
        # our errors are propagated (net of background), so Gaussian; stingray notes that its
        # analysis would assume Poisson errors
        warnings.filterwarnings("ignore", "SIMON says: Stingray only uses poisson", UserWarning)
        from stingray import Lightcurve

        return Lightcurve.read(str(path), fmt="ogip")


def error_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[ERROR]")]


# --- the real M82 list --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def m82(tmp_path_factory) -> Path:
    """A private copy of stingray's Chandra test list (M82, ObsID 10027)."""
    # found without importing stingray (its import warns that numba is missing)
    source = Path(find_spec("stingray").origin).parent / "tests" / "data" / "chandra_test.fits"
    path = tmp_path_factory.mktemp("m82") / "acisf10027_cutout_evt2.fits"
    shutil.copyfile(source, path)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def m82_runs(m82, tmp_path_factory) -> dict[str, Path]:
    """The three scripts on the M82 list: a 5" source circle, a 12-25" background annulus."""
    base = tmp_path_factory.mktemp("m82-runs")
    out = {}
    for script, params in (
        ("chandra_spectra", {}),
        ("chandra_lightcurves", {"bin_size": 50.0, "emin": 0.5, "emax": 7.0}),
        ("chandra_images", {"binning": 2, "emin": 0.5, "emax": 7.0}),
    ):
        inp = build_input(
            script,
            [m82],
            circle(*M82_SOURCE, M82_RADIUS),
            annulus(*M82_SOURCE, *M82_BKG),
            base / script / "output",
            params,
        )
        proc = run_script(script, inp, base / script)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[script] = base / script / "output"
    return out


def test_m82_spectra_count_what_an_independent_selection_counts(m82, m82_runs):
    out = m82_runs["chandra_spectra"]
    src = Table.read(out / "10027_ACIS-S_src.pha", hdu="SPECTRUM")
    bkg = Table.read(out / "10027_ACIS-S_bkg.pha", hdu="SPECTRUM")
    expected_src = independent_events(m82, *M82_SOURCE, 0.0, M82_RADIUS)
    expected_bkg = independent_events(m82, *M82_SOURCE, *M82_BKG)
    assert len(expected_src) > 50 and len(expected_bkg) > 500
    assert list(src["CHANNEL"]) == list(range(1, 1025))
    # channel by channel, not only in total
    assert np.array_equal(src["COUNTS"], np.bincount(expected_src["pi"], minlength=1025)[1:])
    assert np.array_equal(bkg["COUNTS"], np.bincount(expected_bkg["pi"], minlength=1025)[1:])


def test_m82_exposure_is_the_gti_times_dtcor_and_backscal_the_area_over_8192_squared(m82, m82_runs):
    out = m82_runs["chandra_spectra"]
    with fits.open(m82) as hdul:
        events = hdul["EVENTS"].header
        gti = hdul["GTI"].data
        ontime = float(np.sum(gti["STOP"] - gti["START"]))
        dtcor = events["DTCOR"]
    h = fits.getheader(out / "10027_ACIS-S_src.pha", "SPECTRUM")
    assert h["EXPOSURE"] == pytest.approx(ontime * dtcor, rel=1e-12)
    # the list's own EXPOSURE (18.3 ks) is for the full observation; the cutout's GTI is 945 s
    assert h["EXPOSURE"] < 0.1 * events["EXPOSURE"]
    r = pixel_radius(events, M82_RADIUS)
    assert h["BACKSCAL"] == pytest.approx(math.pi * r * r / BACKSCAL_NORM, rel=2e-3)
    r_in, r_out = (pixel_radius(events, a) for a in M82_BKG)
    b = fits.getheader(out / "10027_ACIS-S_bkg.pha", "SPECTRUM")
    assert b["BACKSCAL"] == pytest.approx(math.pi * (r_out**2 - r_in**2) / BACKSCAL_NORM, rel=2e-3)
    assert b["EXPOSURE"] == pytest.approx(ontime * dtcor, rel=1e-12)


def test_m82_spectrum_headers_are_ogip_and_ciao(m82, m82_runs):
    out = m82_runs["chandra_spectra"]
    with fits.open(out / "10027_ACIS-S_src.pha") as hdul:
        h = hdul["SPECTRUM"].header
        assert (h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"], h["HDUCLAS3"]) == (
            "OGIP", "SPECTRUM", "TOTAL", "COUNT",
        )  # fmt: skip
        assert (h["TLMIN1"], h["TLMAX1"], h["DETCHANS"], h["CHANTYPE"]) == (1, 1024, 1024, "PI")
        assert h["POISSERR"] is True and h["AREASCAL"] == 1.0 and h["CORRSCAL"] == 1.0
        assert h["BACKFILE"] == "10027_ACIS-S_bkg.pha"
        assert (h["RESPFILE"], h["ANCRFILE"], h["CORRFILE"]) == ("NONE", "NONE", "NONE")
        assert (h["TELESCOP"], h["INSTRUME"], h["OBS_ID"], h["OBJECT"]) == (
            "CHANDRA", "ACIS", "10027", "M82",
        )  # fmt: skip
        assert h["DATE-OBS"] == "2008-10-04T00:44:07"
        # the CIAO data subspace: time -> the chip's GTI table, ccd_id, grade, sky -> REGION
        assert [h[f"DSTYP{i}"] for i in range(1, 5)] == ["time", "ccd_id", "grade", "sky"]
        assert h["DSVAL2"] == "7:7" and h["DSVAL3"] == "0:0,2:2,3:3,4:4,6:6"
        assert h["DSREF1"] == ":GTI7" and h["DSREF4"] == ":REGION"
        gti = hdul["GTI", 7]
        assert gti.header["CCD_ID"] == 7 and gti.header["HDUNAME"] == "GTI7"
        with fits.open(m82) as ev:
            assert np.array_equal(gti.data["START"], ev["GTI"].data["START"])
            assert np.array_equal(gti.data["STOP"], ev["GTI"].data["STOP"])
            r = pixel_radius(ev["EVENTS"].header, M82_RADIUS)
        region = hdul["REGION"]
        assert region.data["SHAPE"][0] == "CIRCLE"
        assert region.data["R"][0][0] == pytest.approx(r, rel=1e-6)
        assert region.header["TCTYP2"] == "RA---TAN"
        assert hdul[0].header["REGIOSCR"] == "chandra_spectra"
        assert "sha256" in "".join(str(v) for v in h["HISTORY"])
    assert fits.getheader(out / "10027_ACIS-S_bkg.pha", "SPECTRUM")["HDUCLAS2"] == "BKG"


def test_m82_products_and_provenance(m82, m82_runs):
    out = m82_runs["chandra_spectra"]
    entries = {e["file"]: e for e in products(out)}
    src = entries["10027_ACIS-S_src.pha"]
    assert (src["kind"], src["obsid"], src["camera"]) == ("spectrum", "10027", "ACIS-S")
    assert src["date_obs"] == "2008-10-04T00:44:07" and (out / src["preview"]).is_file()
    assert entries["10027_ACIS-S_bkg.pha"]["kind"] == "spectrum"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["script"]["name"] == "chandra_spectra"
    (item,) = prov["inputs"]
    assert item["path"] == str(m82) and item["sha256"] == item["catalog_checksum"]
    assert item["filters"] == "grade=0,2,3,4,6 (no status column)"


def test_m82_light_curve_reads_in_stingray_and_adds_up_to_the_spectrum(m82, m82_runs):
    path = m82_runs["chandra_lightcurves"] / "10027_ACIS-S_lc.fits"
    lc = read_lightcurve(path)
    spec = fits.open(m82_runs["chandra_spectra"] / "10027_ACIS-S_src.pha")
    with fits.open(path) as hdul, spec:
        h, d = hdul["RATE"].header, hdul["RATE"].data
        frame = fits.getheader(m82, "EVENTS")["TIMEDEL"]
        # 50 s rounded to a whole number of 0.44104 s frames
        assert h["TIMEDEL"] == pytest.approx(round(50.0 / frame) * frame)
        assert lc.dt == pytest.approx(h["TIMEDEL"]) and len(lc.time) == len(d)
        # the band 0.5-7 keV as whole PI channels: 35 (496.4-511 eV) .. 480 (6993.4-7008 eV)
        assert (h["CHANMIN"], h["CHANMAX"], h["CHANTYPE"]) == (35, 480, "PI")
        counts = spec["SPECTRUM"].data["COUNTS"][34:480]
        assert int(d["COUNTS"].sum()) == int(counts.sum())
        assert h["EXPOSURE"] == pytest.approx(spec["SPECTRUM"].header["EXPOSURE"], rel=1e-9)
        gti = hdul["GTI"].data
        assert d["TIME"][0] - h["TIMEDEL"] / 2 == pytest.approx(gti["START"][0])
        # RATE as evselect writes it (gross COUNTS/TIMEDEL); NETRATE the exposure-corrected net
        assert h["HDUCLAS2"] == "TOTAL" and np.all(d["BACKV"] > 0)
        assert np.allclose(d["RATE"], d["COUNTS"] / h["TIMEDEL"], rtol=1e-6)
        assert hdul["NETRATE"].header["HDUCLAS2"] == "NET"
        # stingray reads RATE as the rate over the whole bin and divides it by FRACEXP: on the
        # fully exposed bins it reads our RATE as it is
        full = d["FRACEXP"] == 1.0
        assert full.sum() >= 15
        assert np.allclose(lc.countrate[full], d["RATE"][full], rtol=1e-6)
    entries = {e["file"]: e for e in products(m82_runs["chandra_lightcurves"])}
    assert entries["10027_ACIS-S_lc.fits"]["kind"] == "lightcurve"


def test_m82_image_has_a_sky_wcs_and_the_band_events(m82, m82_runs):
    out = m82_runs["chandra_images"]
    with fits.open(out / "10027_ACIS-S_image.fits") as hdul:
        image, h = hdul[0].data, hdul[0].header
    # 0.5-7 keV = PI 35..480; every band event counted once, in the pixel of its sky position
    assert (h["CHANMIN"], h["CHANMAX"]) == (35, 480)
    assert np.array_equal(image, expected_image(standard_events(m82), h, (35, 480)))
    assert image.sum() > 1000 and h["PIXSCALE"] == pytest.approx(2 * 0.492)
    entries = {e["file"]: e for e in products(out)}
    assert entries["10027_ACIS-S_image.fits"]["kind"] == "image"


def test_m82_grouped_spectrum(m82, tmp_path):
    inp = build_input(
        "chandra_spectra", [m82], circle(*M82_SOURCE, M82_RADIUS), None, tmp_path / "output",
        {"min_counts": 10},
    )  # fmt: skip
    proc = run_script("chandra_spectra", inp, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = Table.read(tmp_path / "output" / "10027_ACIS-S_src.pha", hdu="SPECTRUM")
    starts = np.flatnonzero(d["GROUPING"] == 1)
    sums = np.add.reduceat(np.asarray(d["COUNTS"]), starts)
    good = d["QUALITY"][starts] == 0
    assert starts[0] == 0 and np.all(sums[good] >= 10) and np.all(sums[~good] < 10)
    assert int(sums.sum()) == len(independent_events(m82, *M82_SOURCE, 0.0, M82_RADIUS))


def test_region_off_every_chip_fails_with_a_clear_error(m82, tmp_path):
    inp = build_input(
        "chandra_spectra", [m82], circle(149.5, 69.68, 5 / 3600), None, tmp_path / "o"
    )
    proc = run_script("chandra_spectra", inp, tmp_path)
    assert proc.returncode == 1
    (error,) = error_lines(proc.stdout)
    assert "nothing to process" in error and "10027 ACIS-S" in error
    assert "outside every CCD" in error


def test_empty_energy_band_fails_with_a_clear_error(m82, tmp_path):
    inp = build_input(
        "chandra_lightcurves", [m82], circle(*M82_SOURCE, M82_RADIUS), None, tmp_path / "o",
        {"emin": 3.0, "emax": 2.0},
    )  # fmt: skip
    proc = run_script("chandra_lightcurves", inp, tmp_path)
    assert proc.returncode == 1
    (error,) = error_lines(proc.stdout)
    assert "holds no ACIS PI channel" in error


# --- the demo ACIS lists --------------------------------------------------------------------------

DEMO_SEED = 11


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    """Three demo ACIS observations (ACIS-I cluster field, ACIS-S across RA 0, ACIS-I near the
    pole) and their truth."""
    out = tmp_path_factory.mktemp("acis-demo")
    truth = acis_demo.generate(out, observations=3, seed=DEMO_SEED)
    return out, truth


def brightest_point_source(obs: dict) -> dict:
    return max((s for s in obs["sources"] if s["kind"] == "point"), key=lambda s: s["counts"])


def run_demo(script, path, source, background, run_dir, params=None) -> Path:
    inp = build_input(script, [path], source, background, run_dir / "output", params)
    proc = run_script(script, inp, run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir / "output"


@pytest.mark.parametrize("index", range(3))
def test_demo_spectrum_counts_the_injected_source(demo, tmp_path, index):
    base, truth = demo
    obs = truth["observations"][index]
    path = base / obs["path"]
    src = brightest_point_source(obs)
    out = run_demo("chandra_spectra", path, circle(src["ra"], src["dec"], 5 / 3600), None, tmp_path)
    stem = f"{obs['obsid']}_{obs['camera']}"
    spectrum = Table.read(out / f"{stem}_src.pha", hdu="SPECTRUM")
    selected = independent_events(path, src["ra"], src["dec"], 0.0, 5 / 3600)
    assert np.array_equal(spectrum["COUNTS"], np.bincount(selected["pi"], minlength=1025)[1:])
    # the injected counts: 95 % good grades x 99 % clean status, plus < 2 background events
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        sep = SkyCoord(*sky_wcs(hdul["EVENTS"].header).all_pix2world(d["x"], d["y"], 1), unit="deg")
        everything = int(
            (sep.separation(SkyCoord(src["ra"], src["dec"], unit="deg")) <= 5 * u.arcsec).sum()
        )
    expected = src["counts"] * 0.95 * 0.99
    assert abs(len(selected) - expected) <= 4 * math.sqrt(expected) + 2
    assert everything > len(selected), "rejected grades and status bits in the circle"
    (chip,) = set(selected["ccd_id"])
    h = fits.getheader(out / f"{stem}_src.pha", "SPECTRUM")
    assert h["EXPOSURE"] == pytest.approx(obs["ontime"][str(chip)] * acis_demo.DTCOR, rel=1e-9)
    assert h["DSVAL2"] == f"{chip}:{chip}" and h["OBS_ID"] == obs["obsid"]


def chip_areas(obs: dict, x0: float, y0: float, r: float, step: float = 0.25) -> dict[int, float]:
    """Area [sky pixels^2] of a pixel circle on each active chip, by the generator's own chip
    layout (no dither)."""
    grid = np.arange(-r, r, step) + step / 2
    dx, dy = np.meshgrid(grid, grid)
    inside = dx * dx + dy * dy <= r * r
    fu, fv = acis_demo.sky_pixels_to_focal(
        x0 + dx[inside], y0 + dy[inside], obs["camera"], obs["roll"]
    )
    chips = acis_demo.chip_of(fu, fv)
    return {
        int(c): float(np.count_nonzero(chips == c)) * step * step
        for c in np.unique(chips)
        if c in obs["chips"]
    }


def test_demo_region_across_two_chips_weights_the_exposure_by_area(demo, tmp_path):
    """A circle across the gap between the chip with an extra GTI gap and its neighbour."""
    base, truth = demo
    obs, odd, other = next(
        (o, int(c), int(n))
        for o in truth["observations"]
        for c, t in o["ontime"].items()
        if t < max(o["ontime"].values())
        for n in o["chips"]
        if n != int(c)
        and abs(np.subtract(acis_demo.CHIP_ORIGIN[n], acis_demo.CHIP_ORIGIN[int(c)])).sum()
        == acis_demo.CHIP_PIXELS + acis_demo.CHIP_GAP_PIX
    )
    # focal-plane centre: the middle of the gap, 60 pixels towards the odd chip
    (u_odd, v_odd), (u_other, v_other) = acis_demo.CHIP_ORIGIN[odd], acis_demo.CHIP_ORIGIN[other]
    direction = np.sign([u_odd - u_other, v_odd - v_other])
    middle = (
        np.add(acis_demo.CHIP_ORIGIN[odd], acis_demo.CHIP_ORIGIN[other]) + acis_demo.CHIP_PIXELS
    ) / 2
    fu, fv = middle + 60.0 * direction
    x0, y0 = acis_demo.focal_to_sky_pixels(fu, fv, obs["camera"], obs["roll"])
    ra, dec = acis_demo.sky_pixels_to_radec(x0, y0, obs["ra_pnt"], obs["dec_pnt"])
    r_pix = 150.0
    out = run_demo(
        "chandra_spectra", base / obs["path"],
        circle(float(ra), float(dec), r_pix * acis_demo.SKY_PIXEL_DEG), None, tmp_path,
    )  # fmt: skip
    h = fits.getheader(out / f"{obs['obsid']}_{obs['camera']}_src.pha", "SPECTRUM")
    areas = chip_areas(obs, float(x0), float(y0), r_pix)
    assert set(areas) == {odd, other} and areas[odd] > areas[other]
    total = sum(areas.values())
    expected = sum(a / total * obs["ontime"][str(c)] * acis_demo.DTCOR for c, a in areas.items())
    assert h["EXPOSURE"] == pytest.approx(expected, rel=2e-4)
    assert h["EXPOSURE"] != pytest.approx(obs["ontime"][str(odd)] * acis_demo.DTCOR, rel=2e-4)
    # BACKSCAL: the area on the chips, not the circle's: the 37-pixel gap is left out
    geometric = math.pi * r_pix**2
    chord = 2 * math.sqrt(r_pix**2 - 60.0**2)
    area = h["BACKSCAL"] * BACKSCAL_NORM
    assert area == pytest.approx(total, rel=2e-3) and area < geometric - chord * 30
    # one data-subspace component per chip, each with its own GTI table
    with fits.open(out / f"{obs['obsid']}_{obs['camera']}_src.pha") as hdul:
        chips = sorted(areas)
        assert (hdul["SPECTRUM"].header["DSVAL2"], hdul["SPECTRUM"].header["2DSVAL2"]) == tuple(
            f"{c}:{c}" for c in chips
        )
        for c in chips:
            gti = hdul["GTI", c].data
            assert np.sum(gti["STOP"] - gti["START"]) == pytest.approx(obs["ontime"][str(c)])


def test_demo_light_curve_follows_the_chip_gti_and_reads_in_stingray(demo, tmp_path):
    base, truth = demo
    obs = truth["observations"][0]
    src = brightest_point_source(obs)
    out = run_demo(
        "chandra_lightcurves", base / obs["path"],
        circle(src["ra"], src["dec"], 5 / 3600), annulus(src["ra"], src["dec"], 20 / 3600, 60 / 3600),
        tmp_path, {"bin_size": 500.0, "emin": 0.3, "emax": 8.0},
    )  # fmt: skip
    path = out / f"{obs['obsid']}_{obs['camera']}_lc.fits"
    lc = read_lightcurve(path)
    selected = independent_events(base / obs["path"], src["ra"], src["dec"], 0.0, 5 / 3600)
    (chip,) = set(selected["ccd_id"])
    with fits.open(path) as hdul:
        h, d, net = hdul["RATE"].header, hdul["RATE"].data, hdul["NETRATE"].data
        gti = np.column_stack([hdul["GTI"].data["START"], hdul["GTI"].data["STOP"]])
    assert h["TIMEDEL"] == pytest.approx(154 * acis_demo.FRAME_TIME)  # 500 s in whole frames
    assert lc.dt == pytest.approx(h["TIMEDEL"])
    assert np.allclose(gti, obs["gti"][str(chip)])
    in_band = (selected["pi"] >= h["CHANMIN"]) & (selected["pi"] <= h["CHANMAX"])
    assert int(d["COUNTS"].sum()) == int(in_band.sum())
    # the exposure of the bins is the chip's good time x DTCOR
    assert h["EXPOSURE"] == pytest.approx(obs["ontime"][str(chip)] * acis_demo.DTCOR, rel=1e-9)
    # no bin lies inside the telemetry gap common to all chips (the aimpoint chip's only gap)
    aimpoint = obs["gti"][str(acis_demo.AIMPOINT_CHIP[obs["camera"]])]
    gap_start, gap_stop = aimpoint[0][1], aimpoint[1][0]
    assert not np.any(
        (d["TIME"] - h["TIMEDEL"] / 2 >= gap_start) & (d["TIME"] + h["TIMEDEL"] / 2 <= gap_stop)
    )
    # a constant source: the net rate scatters around its mean as Poisson noise does
    good = net["QUALITY"] == 0
    mean = np.average(net["NET_RATE"][good], weights=1 / net["NET_ERROR"][good] ** 2)
    chi2 = np.sum(((net["NET_RATE"][good] - mean) / net["NET_ERROR"][good]) ** 2)
    assert chi2 < good.sum() + 5 * math.sqrt(2 * good.sum())
    full = d["FRACEXP"] == 1.0
    assert np.allclose(lc.countrate[full], d["RATE"][full], rtol=1e-6)


def test_demo_image_across_ra_zero_has_the_right_wcs(demo, tmp_path):
    base, truth = demo
    obs = next(o for o in truth["observations"] if o["camera"] == "ACIS-S")
    src = brightest_point_source(obs)
    out = run_demo(
        "chandra_images", base / obs["path"], circle(src["ra"], src["dec"], 5 / 3600),
        annulus(src["ra"], src["dec"], 20 / 3600, 60 / 3600), tmp_path,
        {"binning": 4, "emin": 0.3, "emax": 8.0},
    )  # fmt: skip
    with fits.open(out / f"{obs['obsid']}_{obs['camera']}_image.fits") as hdul:
        image, h = hdul[0].data, hdul[0].header
    band = (h["CHANMIN"], h["CHANMAX"])
    assert band == (21, 548)  # 0.3-8 keV in whole 14.6 eV channels
    assert np.array_equal(image, expected_image(standard_events(base / obs["path"]), h, band))
    # the brightest pixel (4 x 0.492") holds the source
    iy, ix = np.unravel_index(np.argmax(image), image.shape)
    ra, dec = WCS(h).all_pix2world([[ix + 1, iy + 1]], 1)[0]
    offset = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(src["ra"], src["dec"], unit="deg"))
    assert offset < 2.0 * u.arcsec


FAKE_SPECEXTRACT = """#!/bin/sh
# a stand-in for CIAO's specextract: records its arguments, writes outroot.rmf/.corr.arf
echo "specextract $*" >> "{log}"
for arg in "$@"; do
  case "$arg" in outroot=*) root="${{arg#outroot=}}" ;; esac
done
echo rmf > "$root.rmf"
echo arf > "$root.corr.arf"
"""


def test_m82_responses_come_from_specextract_when_ciao_is_installed(m82, tmp_path):
    import os
    import stat

    bin_dir = tmp_path / "ciao" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "ciao" / "calls.log"
    tool = bin_dir / "specextract"
    tool.write_text(FAKE_SPECEXTRACT.format(log=log))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    inp = build_input(
        "chandra_spectra", [m82], circle(*M82_SOURCE, M82_RADIUS), None, tmp_path / "output"
    )
    env = {**os.environ, "ASCDS_INSTALL": str(tmp_path / "ciao")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc = run_script("chandra_spectra", inp, tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stem = "10027_ACIS-S_src"
    h = fits.getheader(tmp_path / "output" / f"{stem}.pha", "SPECTRUM")
    assert (h["RESPFILE"], h["ANCRFILE"]) == (f"{stem}_ciao.rmf", f"{stem}_ciao.corr.arf")
    (call,) = log.read_text().splitlines()
    assert f"infile={m82}[sky=region({stem}.reg)] outroot={stem}_ciao weight=no" in call
    region = (tmp_path / "output" / f"{stem}.reg").read_text()
    assert "physical" in region and "circle(" in region
    # without CIAO: NONE, and the log says why
    proc = run_script("chandra_spectra", inp, tmp_path / "again")
    assert "RESPFILE NONE, ANCRFILE NONE: CIAO is not initialised" in proc.stdout
