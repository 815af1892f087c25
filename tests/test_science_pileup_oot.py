"""pn out-of-time subtraction, the epatplot-like pile-up check and core excision, against numpy.

- OoT: a demo pn list with an out-of-time twin next to it (here a copy of the list itself, so
  the expected result is known channel by channel: N - 0.063 N, error sqrt(N + 0.063^2 N)).
- Pile-up: the same list with most single events of one bright source's core turned into
  doubles, as pile-up does, is flagged; the untouched list is not; the fractions in the header
  equal a numpy count about the brightest spot.
- Excision: the counts of the 1' cluster circle with a 15" core excised equal a numpy count in
  the annulus, and BACKSCAL its area.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits

from indexer.instruments import column_wcs
from tests.science_helpers import build_input, products, run_script

CLUSTER = (149.59, -11.06)


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("SAS_", "REGIO_"))}


def demo_pn(sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    obs = truth["observations"][0]
    source = next(s for s in truth["sources"] if s["id"] == "CL0958-02")
    return obs["obsid"], sample_archive / obs["cameras"]["EPN"]["file"], source


def plain_pn_histogram(path, ra, dec, radius_deg):
    """Source counts per 5 eV channel: FLAG==0, PATTERN<=4, in the circle, inside STDGTI."""
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        wcs = column_wcs(hdul["EVENTS"].header)
        gtis = {int(h.name[6:]): h.data for h in hdul if h.name.startswith("STDGTI")}
    x0, y0 = wcs.all_world2pix([[ra, dec]], 1)[0]
    r = radius_deg / abs(wcs.wcs.cdelt[0])
    sel = ((d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2 <= r * r) & (d["FLAG"] == 0)
    sel &= (d["PATTERN"] <= 4) & (d["PI"] >= 0) & (d["PI"] <= 20479)
    in_gti = np.zeros(len(d), dtype=bool)
    for ccd, g in gtis.items():
        for a, b in zip(g["START"], g["STOP"], strict=True):
            in_gti |= (d["CCDNR"] == ccd) & (d["TIME"] >= a) & (d["TIME"] < b)
    return np.bincount(d["PI"][sel & in_gti] // 5, minlength=4096)


def test_pn_out_of_time_spectrum_is_subtracted(sample_archive, tmp_path):
    obsid, path, source = demo_pn(sample_archive)
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copyfile(path, folder / path.name)
    shutil.copyfile(path, folder / f"P{obsid}PNS003OOEVLI0000.FIT")
    radius = 0.01
    text = f"icrs\ncircle({source['ra']},{source['dec']},{radius})"
    inp = build_input("generate_spectra", [folder / path.name], text, None, tmp_path / "output",
                      {"screen_flares": False})  # fmt: skip
    proc = run_script("generate_spectra", inp, tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "out-of-time counts" in proc.stdout
        and f"P{obsid}PNS003OOEVLI0000.FIT x 0.063" in proc.stdout
    )
    n = plain_pn_histogram(folder / path.name, source["ra"], source["dec"], radius)
    with fits.open(tmp_path / "output" / f"{obsid}_EPN_src.pha") as hdul:
        d, h = hdul["SPECTRUM"].data, hdul["SPECTRUM"].header
    assert h["POISSERR"] is False and h["OOTFRAC"] == 0.063
    assert np.allclose(d["COUNTS"], n * (1 - 0.063), rtol=1e-6, atol=1e-4)
    assert np.allclose(d["STAT_ERR"], np.sqrt(n + 0.063**2 * n), rtol=1e-6, atol=1e-4)
    # without the twin, the usual Poisson spectrum and a log line saying why
    proc = run_script("generate_spectra", build_input(
        "generate_spectra", [path], text, None, tmp_path / "plain" / "output",
        {"screen_flares": False}), tmp_path / "plain", env=clean_env())  # fmt: skip
    assert "out-of-time events not subtracted: no out-of-time list" in proc.stdout
    d = fits.getdata(tmp_path / "plain" / "output" / f"{obsid}_EPN_src.pha", "SPECTRUM")
    assert np.array_equal(d["COUNTS"], n)


def brightest(x, y, cell=80.0):
    ix, iy = np.floor(x / cell).astype(int), np.floor(y / cell).astype(int)
    grid = {}
    for a, b in zip(ix, iy, strict=True):
        grid[(a, b)] = grid.get((a, b), 0) + 1
    (a, b), _ = max(grid.items(), key=lambda kv: (kv[1], kv[0][0] * 1_000_003 + kv[0][1]))
    return (a + 0.5) * cell, (b + 0.5) * cell


def test_pattern_check_flags_a_piled_core_and_not_the_plain_list(sample_archive, tmp_path):
    obsid, path, source = demo_pn(sample_archive)
    radius = 60 / 3600
    text = f"icrs\ncircle({source['ra']},{source['dec']},{radius})"
    piled = tmp_path / "archive" / path.name
    piled.parent.mkdir()
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        wcs = column_wcs(hdul["EVENTS"].header)
        x0, y0 = wcs.all_world2pix([[source["ra"], source["dec"]]], 1)[0]
        r = radius / abs(wcs.wcs.cdelt[0])
        good = (d["FLAG"] == 0) & (d["PATTERN"] <= 4)
        region = good & ((d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2 <= r * r)
        cx, cy = brightest(d["X"][region].astype(float), d["Y"][region].astype(float))
        core = region & (np.hypot(d["X"] - cx, d["Y"] - cy) * 0.05 <= 5.0)
        singles = np.flatnonzero(core & (d["PATTERN"] == 0))
        rng = np.random.default_rng(3)
        d["PATTERN"][rng.choice(singles, size=int(0.7 * len(singles)), replace=False)] = 2
        hdul.writeto(piled)
    runs = {}
    for name, p in (("plain", path), ("piled", piled)):
        inp = build_input("generate_spectra", [p], text, None, tmp_path / name / "output",
                          {"screen_flares": False})  # fmt: skip
        proc = run_script("generate_spectra", inp, tmp_path / name, env=clean_env())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        h = fits.getheader(tmp_path / name / "output" / f"{obsid}_EPN_src.pha", "SPECTRUM")
        runs[name] = (proc.stdout, h)
    stdout, h = runs["piled"]
    assert h["PILEUP"] is True and "pile-up seen in the pattern fractions" in stdout
    # the header's fractions, counted here about the same brightest spot
    with fits.open(piled) as hdul:
        d = hdul["EVENTS"].data
        sel = region & (d["PI"] >= 500) & (d["PI"] <= 10000)
        dist = np.hypot(d["X"] - cx, d["Y"] - cy) * 0.05
        for key, part in (("PATDCORE", dist <= 5.0), ("PATDWING", (dist > 10) & (dist <= 40))):
            s = np.count_nonzero(sel & part & (d["PATTERN"] == 0))
            dbl = np.count_nonzero(sel & part & (d["PATTERN"] >= 1) & (d["PATTERN"] <= 4))
            assert h[key] == pytest.approx(dbl / (s + dbl), abs=1e-4), key
    stdout, h = runs["plain"]
    assert h["PILEUP"] is False and "pile-up seen" not in stdout
    assert abs(h["PATDSIG"]) < 3.0
    entries = {e["file"]: e for e in products(tmp_path / "plain" / "output")}
    assert entries[f"{obsid}_EPN_patterns.png"]["kind"] == "plot"


def test_core_excision_makes_an_annulus(real_data, tmp_path):
    path = real_data / "0201901401" / "mos1_exp1_clean_evts.fits"
    text = f"icrs\ncircle({CLUSTER[0]},{CLUSTER[1]},{1 / 60})"
    inp = build_input("generate_spectra", [path], text, None, tmp_path / "output",
                      {"screen_flares": False, "excise_core_arcsec": 15.0})  # fmt: skip
    proc = run_script("generate_spectra", inp, tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        wcs = column_wcs(hdul["EVENTS"].header)
    x0, y0 = wcs.all_world2pix([CLUSTER], 1)[0]
    r_out = (1 / 60) / abs(wcs.wcs.cdelt[0])
    r_in = 15.0 / 0.05
    d2 = (d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2
    sel = (d2 <= r_out**2) & (d2 > r_in**2) & ((d["FLAG"] & 0x766BA000) == 0)
    sel &= (d["PATTERN"] <= 12) & (d["PI"] >= 0) & (d["PI"] <= 11999)
    with fits.open(tmp_path / "output" / "0201901401_EMOS1_src.pha") as hdul:
        h = hdul["SPECTRUM"].header
        assert int(hdul["SPECTRUM"].data["COUNTS"].sum()) == int(sel.sum())
        assert h["BACKSCAL"] == pytest.approx(math.pi * (r_out**2 - r_in**2), rel=0.01)
        reg = hdul[h["DSREF6"].lstrip(":")].data
        assert list(reg["SHAPE"]) == ["CIRCLE", "!CIRCLE"]
