"""generate_lightcurves and generate_images: counts agree with the spectra, periods show, WCS right."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.timeseries import LombScargle
from astropy.wcs import WCS

from indexer.instruments import column_wcs
from tests.science_helpers import build_input, ccd_good_time, products, run_script

CLUSTER = (149.59, -11.06)
SOURCE = f"icrs\ncircle({CLUSTER[0]},{CLUSTER[1]},{1 / 60})"
BACKGROUND = (
    f"icrs\nannulus({CLUSTER[0]},{CLUSTER[1]},{3 / 60},{4 / 60})\n-circle(149.55,-11.05,0.005)"
)
OBSIDS = ("0201901401", "0404910601")


@pytest.fixture(scope="module")
def real_products(real_data, tmp_path_factory):
    """Spectra and light curves (0.5-7 keV, 50 s bins) of the same input, flares screened."""
    base = tmp_path_factory.mktemp("lc-real")
    paths = [real_data / o / "mos1_exp1_clean_evts.fits" for o in OBSIDS]
    out = {}
    for script, params in (
        ("generate_spectra", {}),
        ("generate_lightcurves", {"emin": 0.5, "emax": 7.0, "bin_size": 50.0}),
    ):
        inp = build_input(script, paths, SOURCE, BACKGROUND, base / script / "output", params)
        proc = run_script(script, inp, base / script)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[script] = base / script / "output"
    return out


def read_stingray(path):
    """The light curve as stingray's OGIP reader sees it."""
    with warnings.catch_warnings():
        # stingray warns at import that the optional numba accelerator is not installed
        warnings.filterwarnings("ignore", "The recommended numba package", UserWarning)
        # stingray's FITS light-curve reader always warns that it is "still under testing"
        warnings.filterwarnings("ignore", "WARNING! FITS light curve handling", UserWarning)
        # stingray hands every header keyword to Lightcurve, which warns about the ones it
        # does not model (OBJECT, CHANMIN, ...): true of any OGIP light curve, SAS's included
        warnings.filterwarnings("ignore", "Unrecognized keywords", UserWarning)
        from stingray import Lightcurve

        # RATE is COUNTS/TIMEDEL (evselect), so the errors are Poisson
        return Lightcurve.read(str(path), fmt="ogip", err_dist="poisson")


def independent_counts(path, edges, band):
    """Source events per bin, counted with astropy and numpy: MOS standard filter, the 1'
    circle, PI in the band, inside the good time of CCD 1 (STDGTI01 and its GTI selection)."""
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        wcs = column_wcs(hdul["EVENTS"].header)
        good = ccd_good_time(hdul, 1)
    x0, y0 = wcs.all_world2pix([CLUSTER], 1)[0]
    r = (1 / 60) / abs(wcs.wcs.cdelt[0])
    sel = (d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2 <= r * r
    sel &= ((d["FLAG"].astype(np.int64) & 0x766BA000) == 0) & (d["PATTERN"] <= 12)
    sel &= (d["PI"] >= band[0]) & (d["PI"] <= band[1]) & (d["CCDNR"] == 1)
    t = d["TIME"][sel]
    in_gti = np.zeros(len(t), dtype=bool)
    for a, b in good:
        in_gti |= (t >= a) & (t < b)
    return np.histogram(t[in_gti], edges)[0], good


@pytest.mark.parametrize("obsid", OBSIDS)
def test_light_curve_counts_equal_the_spectrum_counts_in_the_band(real_products, real_data, obsid):
    spec = Table.read(real_products["generate_spectra"] / f"{obsid}_EMOS1_src.pha", hdu="SPECTRUM")
    band = (spec["CHANNEL"] >= 500 // 5) & (spec["CHANNEL"] <= 6999 // 5)
    with fits.open(real_products["generate_lightcurves"] / f"{obsid}_EMOS1_lc.fits") as hdul:
        rate, net = hdul["RATE"], hdul["NETRATE"]
        assert int(rate.data["COUNTS"].sum()) == int(spec["COUNTS"][band].sum())
        h = rate.header
        assert (h["CHANMIN"], h["CHANMAX"], h["CHANTYPE"]) == (500, 6999, "PI")
        assert h["TIMEDEL"] == 50.0 and h["TIMEPIXR"] == 0.5 and h["MJDREF"] == 50814.0
        assert (h["TIMESYS"], h["TIMEREF"]) == ("TT", "LOCAL")
        assert h["HDUCLAS1"] == "LIGHTCURVE" and h["HDUCLAS2"] == "TOTAL"
        assert net.header["HDUCLAS2"] == "NET"
        for key in ("TSTART", "TSTOP"):
            assert key in h
        d, n = rate.data, net.data
        # the evselect convention: RATE = COUNTS / TIMEDEL, ERROR = sqrt(COUNTS) / TIMEDEL
        assert np.allclose(d["RATE"], d["COUNTS"] / 50.0, rtol=1e-6)
        assert np.allclose(d["ERROR"], np.sqrt(d["COUNTS"]) / 50.0, rtol=1e-6)
        # counts per bin: an independent histogram on the bin edges TIME -+ TIMEDEL/2
        edges = np.r_[d["TIME"] - 25.0, d["TIME"][-1] + 25.0]
        path = real_data / obsid / "mos1_exp1_clean_evts.fits"
        expected, good = independent_counts(path, edges, (500, 6999))
        contiguous = np.isclose(d["TIME"][1:] - d["TIME"][:-1], 50.0)
        assert np.array_equal(d["COUNTS"][:-1][contiguous], expected[:-1][contiguous])
        # FRACEXP: the part of each bin in the CCD's good time
        lo, hi = d["TIME"] - 25.0, d["TIME"] + 25.0
        covered = np.array(
            [
                sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in good)
                for t0, t1 in zip(lo, hi, strict=True)
            ]
        )
        assert np.allclose(d["FRACEXP"], covered / 50.0, atol=1e-6)
        # the net curve: exposures add up to the spectrum's EXPOSURE (same good time, same CCD)
        spec_h = fits.getheader(
            real_products["generate_spectra"] / f"{obsid}_EMOS1_src.pha", "SPECTRUM"
        )
        assert net.header["EXPOSURE"] == pytest.approx(spec_h["EXPOSURE"], rel=1e-6)
        assert np.sum(n["EXPOSURE"]) == pytest.approx(spec_h["EXPOSURE"], rel=1e-5)
        low = n["FRACEXP"] < net.header["FEXPMIN"]
        assert np.array_equal(n["QUALITY"] == 1, low) and net.header["NLOWEXP"] == low.sum()
        ok = n["EXPOSURE"] > 0
        assert np.allclose(
            n["NET_RATE"][ok], d["COUNTS"][ok] / n["EXPOSURE"][ok] - n["BKG_RATE"][ok],
            rtol=1e-4, atol=1e-6,
        )  # fmt: skip
        # BACKV: the background expected in the source region over the bin, per TIMEDEL
        assert np.allclose(d["BACKV"] * 50.0, n["BKG_RATE"] * n["EXPOSURE"], rtol=1e-4, atol=1e-7)
        gti = hdul["GTI"].data
        assert np.all((d["TIME"] >= gti["START"][0] - 25) & (d["TIME"] <= gti["STOP"][-1] + 25))


@pytest.mark.parametrize("obsid", OBSIDS)
def test_light_curves_open_in_stingray_with_our_counts(real_products, obsid):
    out = real_products["generate_lightcurves"]
    path = out / f"{obsid}_EMOS1_lc.fits"
    lc = read_stingray(path)
    with fits.open(path) as hdul:
        d, gti = hdul["RATE"].data, hdul["GTI"].data
    assert lc.dt == pytest.approx(50.0) and len(lc.time) == len(d)
    assert np.allclose(np.asarray(lc.time, float), d["TIME"])
    # stingray keeps bins with FRACEXP >= 0.9 as COUNTS/FRACEXP and zeroes the others; a bin
    # wholly inside a good-time interval has FRACEXP 1, so it keeps exactly our counts
    inside = np.zeros(len(d), dtype=bool)
    for a, b in zip(gti["START"], gti["STOP"], strict=True):
        inside |= (d["TIME"] - 25.0 >= a - 1e-6) & (d["TIME"] + 25.0 <= b + 1e-6)
    assert inside.sum() > 0.8 * len(d)
    counts = np.asarray(lc.counts, float)
    assert np.allclose(counts[inside], d["COUNTS"][inside], rtol=1e-5)
    kept = d["FRACEXP"] >= 0.9
    assert np.allclose(counts[kept] * d["FRACEXP"][kept], d["COUNTS"][kept], rtol=1e-5)
    zeroed = (counts == 0) & (d["COUNTS"] > 0)
    assert not (zeroed & inside).any(), "no bin inside the good time is zeroed"


def test_multi_epoch_plot(real_products):
    out = real_products["generate_lightcurves"]
    entries = {e["file"]: e for e in products(out)}
    assert "lightcurves_all_epochs.png" in entries
    lc_entry = entries[f"{OBSIDS[0]}_EMOS1_lc.fits"]
    assert lc_entry["kind"] == "lightcurve" and (out / lc_entry["preview"]).is_file()


def test_mos1_and_mos2_share_bin_edges_and_barycentre_option(real_data, tmp_path):
    from astropy import constants
    from astropy.coordinates import SkyCoord, get_body_barycentric
    from astropy.time import Time

    obsid = OBSIDS[0]
    paths = [real_data / obsid / f"{c}_exp1_clean_evts.fits" for c in ("mos1", "mos2")]
    curves = {}
    for bary in (False, True):
        run_dir = tmp_path / f"bary-{bary}"
        inp = build_input(
            "generate_lightcurves", paths, SOURCE, None, run_dir / "output",
            {"bin_size": 100.0, "barycentre": bary},
        )  # fmt: skip
        proc = run_script("generate_lightcurves", inp, run_dir)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        curves[bary] = {
            cam: fits.open(run_dir / "output" / f"{obsid}_{cam}_lc.fits")
            for cam in ("EMOS1", "EMOS2")
        }
    try:
        t1 = curves[False]["EMOS1"]["RATE"].data["TIME"]
        t2 = curves[False]["EMOS2"]["RATE"].data["TIME"]
        steps = (t2[:, None] - t1[None, :]) / 100.0
        assert np.allclose(steps, np.round(steps), atol=1e-6), "one grid for both cameras"
        # bins present in both can be summed: same centres
        common = np.intersect1d(np.round(t1, 3), np.round(t2, 3))
        assert len(common) > 0.9 * min(len(t1), len(t2))
        # barycentred: TDB at the barycentre, counts unchanged; the GTI start checked against
        # the Roemer delay from astropy's Earth position (another route than the script's)
        for cam in ("EMOS1", "EMOS2"):
            local, bary = curves[False][cam], curves[True][cam]
            h = bary["RATE"].header
            assert (h["TIMESYS"], h["TIMEREF"]) == ("TDB", "SOLARSYSTEM")
            assert bary["RATE"].data["COUNTS"].sum() == local["RATE"].data["COUNTS"].sum()
            t0 = local["GTI"].data["START"][0]
            tt = Time(50814.0, t0 / 86400.0, format="mjd", scale="tt")
            earth = get_body_barycentric("earth", tt, ephemeris="builtin").xyz.to_value("m")
            n = SkyCoord(h["RA_BARY"], h["DEC_BARY"], unit="deg").cartesian.xyz.value
            roemer = float(np.dot(earth, n)) / constants.c.value
            expected = (tt.tdb - Time(50814.0, format="mjd", scale="tdb")).to_value("s") + roemer
            assert bary["GTI"].data["START"][0] == pytest.approx(expected, abs=2e-3)
            assert 100 < abs(bary["GTI"].data["START"][0] - t0) < 600
    finally:
        for pair in curves.values():
            for hdul in pair.values():
                hdul.close()


def test_periodic_source_period_shows_in_its_light_curve(sample_archive, tmp_path):
    truth = json.loads((sample_archive / "truth.json").read_text())
    source = next(
        s for s in truth["sources"] if (s.get("variability") or {}).get("model") == "periodic"
    )
    obsid = next(iter(source["expected"]))
    obs = next(o for o in truth["observations"] if o["obsid"] == obsid)
    paths = [sample_archive / obs["cameras"][c]["file"] for c in ("EPN", "EMOS1")]
    text = f"icrs\ncircle({source['ra']},{source['dec']},{30 / 3600})"
    bkg = f"icrs\nannulus({source['ra']},{source['dec']},{60 / 3600},{120 / 3600})"
    inp = build_input(
        "generate_lightcurves", paths, text, bkg, tmp_path / "output", {"bin_size": 100.0}
    )
    proc = run_script("generate_lightcurves", inp, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = Table.read(tmp_path / "output" / f"{obsid}_EPN_lc.fits", hdu="NETRATE")
    good = d["QUALITY"] == 0
    frequency = np.linspace(1 / 20000, 1 / 300, 4000)
    t, rate, err = (np.asarray(d[c][good], dtype=float) for c in ("TIME", "NET_RATE", "NET_ERROR"))
    power = LombScargle(t, rate, err).power(frequency)
    period = 1 / frequency[np.argmax(power)]
    assert period == pytest.approx(source["variability"]["period"], rel=0.05)


def test_images_have_a_sky_wcs_and_all_band_events(real_data, tmp_path):
    path = real_data / OBSIDS[0] / "mos1_exp1_clean_evts.fits"
    inp = build_input(
        "generate_images", [path], SOURCE, BACKGROUND, tmp_path / "output",
        {"screen_flares": False, "pixel_arcsec": 2.0, "emin": 0.5, "emax": 2.0},
    )  # fmt: skip
    proc = run_script("generate_images", inp, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "output"
    with fits.open(out / f"{OBSIDS[0]}_EMOS1_image.fits") as hdul:
        image, h = hdul[0].data, hdul[0].header
        wcs = WCS(h)
        with fits.open(path) as ev:
            evh, d = ev["EVENTS"].header, ev["EVENTS"].data
    # the brightest pixel's events, counted independently from X/Y and the LTM/LTV keywords
    iy, ix = np.unravel_index(np.argmax(image), image.shape)
    x_img = (d["X"] * h["LTM1_1"] + h["LTV1"]).astype(float)
    y_img = (d["Y"] * h["LTM2_2"] + h["LTV2"]).astype(float)
    band = (d["PI"] >= 500) & (d["PI"] <= 1999)
    in_pixel = (np.abs(x_img - (ix + 1)) < 0.5) & (np.abs(y_img - (iy + 1)) < 0.5) & band
    assert image[iy, ix] == in_pixel.sum()
    # the WCS puts an event's sky position in its image pixel
    k = np.flatnonzero(in_pixel)[0]
    ra, dec = column_wcs(evh).all_pix2world([[d["X"][k], d["Y"][k]]], 1)[0]
    px, py = wcs.all_world2pix([[ra, dec]], 1)[0]
    assert math.hypot(px - (ix + 1), py - (iy + 1)) < 0.75
    entries = {e["file"]: e for e in products(out)}
    entry = entries[f"{OBSIDS[0]}_EMOS1_image.fits"]
    assert entry["kind"] == "image" and (out / entry["preview"]).is_file()


def test_lightcurve_region_outside_every_ccd_fails_clearly(real_data, tmp_path):
    path = real_data / OBSIDS[0] / "mos1_exp1_clean_evts.fits"
    inp = build_input(
        "generate_lightcurves", [path], "icrs\ncircle(151.0,-11.06,0.02)", None, tmp_path / "o"
    )
    proc = run_script("generate_lightcurves", inp, tmp_path)
    assert proc.returncode == 1 and "[ERROR] nothing to process" in proc.stdout
    assert "outside every CCD" in proc.stdout
