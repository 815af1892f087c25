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
from tests.science_helpers import build_input, products, run_script

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


@pytest.mark.parametrize("obsid", OBSIDS)
def test_light_curve_counts_equal_the_spectrum_counts_in_the_band(real_products, obsid):
    spec = Table.read(real_products["generate_spectra"] / f"{obsid}_EMOS1_src.pha", hdu="SPECTRUM")
    band = (spec["CHANNEL"] >= 500 // 5) & (spec["CHANNEL"] <= 6999 // 5)
    with fits.open(real_products["generate_lightcurves"] / f"{obsid}_EMOS1_lc.fits") as hdul:
        rate = hdul["RATE"]
        assert int(rate.data["COUNTS"].sum()) == int(spec["COUNTS"][band].sum())
        h = rate.header
        assert (h["CHANMIN"], h["CHANMAX"], h["CHANTYPE"]) == (500, 6999, "PI")
        assert h["TIMEDEL"] == 50.0 and h["TIMEPIXR"] == 0.5 and h["MJDREF"] == 50814.0
        assert h["TIMESYS"] == "TT" and h["HDUCLAS1"] == "LIGHTCURVE" and h["HDUCLAS2"] == "NET"
        for key in ("TSTART", "TSTOP", "TIMEREF", "FEXPMIN", "NLOWEXP"):
            assert key in h
        # exposure of the bins adds up to the spectrum's EXPOSURE (same good time, same CCD)
        spec_h = fits.getheader(
            real_products["generate_spectra"] / f"{obsid}_EMOS1_src.pha", "SPECTRUM"
        )
        assert h["EXPOSURE"] == pytest.approx(spec_h["EXPOSURE"], rel=1e-6)
        d = rate.data
        low = d["FRACEXP"] < h["FEXPMIN"]
        assert np.array_equal(d["QUALITY"] == 1, low) and h["NLOWEXP"] == low.sum()
        gti = hdul["GTI"].data
        assert np.all(
            (d["TIME"] >= gti["START"][0]) & (d["TIME"] <= gti["STOP"][-1] + h["TIMEDEL"])
        )
        # net = gross - background, errors in quadrature
        good = d["FRACEXP"] > 0.9
        gross = d["RATE"][good] + d["BACKV"][good]
        assert np.all(gross >= 0) and np.all(d["ERROR"][good] >= d["BACKE"][good])


def test_light_curves_open_in_stingray_and_multi_epoch_plot(real_products):
    with warnings.catch_warnings():
        # stingray warns at import that the optional numba accelerator is not installed
        warnings.filterwarnings("ignore", "The recommended numba package", UserWarning)
        # stingray reads the first table (our RATE HDU) without naming it; astropy notes that
        warnings.filterwarnings("ignore", "hdu= was not specified", UserWarning)
        # stingray hands every header keyword to Lightcurve, which warns about the ones it
        # does not model (OBJECT, CHANMIN, ...): true of any OGIP light curve, SAS's included
        warnings.filterwarnings("ignore", "Unrecognized keywords", UserWarning)
        from stingray import Lightcurve

        out = real_products["generate_lightcurves"]
        path = out / f"{OBSIDS[0]}_EMOS1_lc.fits"
        lc = Lightcurve.read(str(path), format_="ogip")
    with fits.open(path) as hdul:
        d = hdul["RATE"].data
        assert len(lc.time) > 0 and lc.dt == pytest.approx(50.0)
        assert np.nanmedian(lc.countrate) == pytest.approx(
            np.median(d["RATE"][d["FRACEXP"] >= 0.9]), rel=0.2
        )
    entries = {e["file"]: e for e in products(out)}
    assert "lightcurves_all_epochs.png" in entries
    lc_entry = entries[f"{OBSIDS[0]}_EMOS1_lc.fits"]
    assert lc_entry["kind"] == "lightcurve" and (out / lc_entry["preview"]).is_file()


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
    d = Table.read(tmp_path / "output" / f"{obsid}_EPN_lc.fits", hdu="RATE")
    good = d["QUALITY"] == 0
    frequency = np.linspace(1 / 20000, 1 / 300, 4000)
    t, rate, err = (np.asarray(d[c][good], dtype=float) for c in ("TIME", "RATE", "ERROR"))
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
