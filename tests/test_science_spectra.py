"""generate_spectra on real XMM data and on the synthetic archive, checked independently."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from indexer.instruments import column_wcs
from tests.science_helpers import (
    build_input,
    ccd_good_time,
    overlap,
    plain_count,
    products,
    read_response,
    run_script,
    sas_flare_gti,
    write_rmf,
)

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sas-reference"
CLUSTER = (149.59, -11.06)
R_SRC = 1.0 / 60  # deg
R_BKG = (3.0 / 60, 4.0 / 60)
SOURCE = f"icrs\ncircle({CLUSTER[0]},{CLUSTER[1]},{R_SRC})"
BACKGROUND = f"icrs\nannulus({CLUSTER[0]},{CLUSTER[1]},{R_BKG[0]},{R_BKG[1]})"
OBSIDS = ("0201901401", "0201903501", "0404910601")
#: Keywords the guide requires in every PHA SPECTRUM header.
GUIDE_KEYWORDS = (
    "TELESCOP", "INSTRUME", "FILTER", "OBS_ID", "OBJECT", "DATE-OBS", "EXPOSURE", "AREASCAL",
    "BACKSCAL", "CORRSCAL", "BACKFILE", "RESPFILE", "ANCRFILE", "CORRFILE", "HDUCLASS", "HDUCLAS1",
    "HDUCLAS2", "HDUCLAS3", "HDUVERS", "POISSERR", "CHANTYPE", "DETCHANS", "TLMIN1", "TLMAX1",
    "SPECDELT", "SPECPIX", "SPECVAL",
)  # fmt: skip


def pixel_circle(path: Path, ra: float, dec: float, radius_deg: float):
    """Centre and radius of a sky circle in the list's X/Y (1-based column values)."""
    with fits.open(path) as hdul:
        wcs = column_wcs(hdul["EVENTS"].header)
    x0, y0 = wcs.all_world2pix([[ra, dec]], 1)[0]
    return x0, y0, radius_deg / abs(wcs.wcs.cdelt[0])


@pytest.fixture(scope="module")
def real_run(real_data, tmp_path_factory):
    """One run on the three MOS1 epochs and MOS2 of the first, flares not screened."""
    run_dir = tmp_path_factory.mktemp("spectra-real")
    paths = [real_data / o / "mos1_exp1_clean_evts.fits" for o in OBSIDS]
    paths.append(real_data / OBSIDS[0] / "mos2_exp1_clean_evts.fits")
    expmap_only = {
        "mission": "XMM", "obsid": OBSIDS[0], "camera": "EPN", "instrument": "EPN",
        "source": "expmap", "path": str(real_data / OBSIDS[0] / f"{OBSIDS[0]}_pn_exp1-0.50-2.00keVexpmap.fits"),
    }  # fmt: skip
    inp = build_input(
        "generate_spectra",
        paths,
        SOURCE,
        BACKGROUND,
        run_dir / "output",
        {"screen_flares": False},
        extra_observations=[expmap_only],
    )
    proc = run_script("generate_spectra", inp, run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir / "output", paths, proc


@pytest.mark.parametrize("index", range(4))
def test_counts_equal_an_independent_numpy_count(real_run, index):
    out, paths, _ = real_run
    path = paths[index]
    with fits.open(path) as hdul:
        camera, obsid = hdul[0].header["INSTRUME"], hdul[0].header["OBS_ID"]
    x0, y0, r = pixel_circle(path, *CLUSTER, R_SRC)
    _, _, r_in = pixel_circle(path, *CLUSTER, R_BKG[0])
    _, _, r_out = pixel_circle(path, *CLUSTER, R_BKG[1])

    def in_circle(x, y):
        return (x - x0) ** 2 + (y - y0) ** 2 <= r * r

    def in_annulus(x, y):
        d2 = (x - x0) ** 2 + (y - y0) ** 2
        return (d2 > r_in**2) & (d2 <= r_out**2)

    src = Table.read(out / f"{obsid}_{camera}_src.pha", hdu="SPECTRUM")
    bkg = Table.read(out / f"{obsid}_{camera}_bkg.pha", hdu="SPECTRUM")
    assert int(src["COUNTS"].sum()) == plain_count(path, in_circle, camera, 11999)
    assert int(bkg["COUNTS"].sum()) == plain_count(path, in_annulus, camera, 11999)
    assert len(src) == 2400 and list(src["CHANNEL"][:3]) == [0, 1, 2]


@pytest.mark.parametrize("obsid", OBSIDS)
def test_backscal_and_exposure_match_the_true_area_and_ccd_live_time(real_run, obsid):
    out, paths, _ = real_run
    path = paths[OBSIDS.index(obsid)]
    x0, y0, r = pixel_circle(path, *CLUSTER, R_SRC)
    with fits.open(path) as hdul:
        ev = hdul["EVENTS"]
        d = ev.data
        inside = (d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2 <= r * r
        ccds = np.unique(d["CCDNR"][inside])
        livetime = ev.header[f"LIVETI{int(ccds[0]):02d}"]
    assert list(ccds) == [1], "the 1' circle lies on the central CCD of MOS1"
    header = fits.getheader(out / f"{obsid}_EMOS1_src.pha", "SPECTRUM")
    # no chip gap and no bad pixel under this circle in MOS1: the true area is pi r^2
    assert header["BACKSCAL"] == pytest.approx(math.pi * r * r, rel=0.01)
    assert header["EXPOSURE"] == pytest.approx(livetime, rel=0.005)
    bkg = fits.getheader(out / f"{obsid}_EMOS1_bkg.pha", "SPECTRUM")
    _, _, r_in = pixel_circle(path, *CLUSTER, R_BKG[0])
    _, _, r_out = pixel_circle(path, *CLUSTER, R_BKG[1])
    annulus = math.pi * (r_out**2 - r_in**2)
    # bad columns cross the annulus: its live area is smaller, but by a few per cent at most
    assert 0.9 * annulus < bkg["BACKSCAL"] <= annulus * 1.001


def test_headers_carry_the_ogip_and_sas_keywords(real_run):
    out, _, _ = real_run
    with fits.open(out / "0201901401_EMOS1_src.pha") as hdul:
        h = hdul["SPECTRUM"].header
        for key in GUIDE_KEYWORDS:
            assert key in h, key
        assert (h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"], h["HDUCLAS3"]) == (
            "OGIP", "SPECTRUM", "TOTAL", "COUNT",
        )  # fmt: skip
        assert h["HDUVERS"] == "1.2.1" and h["CHANTYPE"] == "PI" and h["POISSERR"] is True
        assert (h["DETCHANS"], h["TLMIN1"], h["TLMAX1"]) == (2400, 0, 2399)
        assert (h["SPECDELT"], h["SPECPIX"], h["SPECVAL"]) == (5, 0, 2.0)
        assert h["AREASCAL"] == 1.0 and h["CORRSCAL"] == 1.0
        assert h["BACKFILE"] == "0201901401_EMOS1_bkg.pha"
        assert h["RESPFILE"] == "NONE" and h["ANCRFILE"] == "NONE" and h["CORRFILE"] == "NONE"
        # the data subspace, as SAS writes it
        assert [h[f"DSTYP{i}"] for i in range(1, 7)] == [
            "CCDNR", "FLAG", "PI", "PATTERN", "TIME", "POS(X,Y)",
        ]  # fmt: skip
        assert h["DSVAL2"] == "b000x00xx00x0x000x0xxxxxxxxxxxxx"  # = the SAS reference's
        assert h["DSVAL4"] == ":12" and h["DSVAL3"] == "0:11999"
        refs = [h["DSREF5"]] + [h[f"{k}DSREF5"] for k in range(2, 8)]
        names = {hdu.name for hdu in hdul}
        assert all(ref.lstrip(":") in names for ref in refs)
        assert hdul[h["DSREF6"].lstrip(":")].header["HDUCLAS1"] == "REGION"
        reg = hdul[h["DSREF6"].lstrip(":")].data
        assert reg["SHAPE"][0] == "CIRCLE"
        assert set(reg.columns.names) == {"SHAPE", "X", "Y", "R", "ROTANG", "COMPONENT"}
        gti = hdul[refs[0].lstrip(":")].data
        assert np.sum(gti["STOP"] - gti["START"]) > 0
        # the sky WCS SAS tools need to read the region
        assert hdul[0].header["REFXCTYP"] == "RA---TAN"
        assert hdul[0].header["REGIOSCR"] == "generate_spectra"
        assert any("sha256" in str(v) for v in h["HISTORY"])
    bkg = fits.getheader(out / "0201901401_EMOS1_bkg.pha", "SPECTRUM")
    assert bkg["HDUCLAS2"] == "BKG"


#: Reference keywords we do not write, with the reason: SAS's own task history (XPROCn, XDALn:
#: ours is in HISTORY cards) and the column layout keywords (our tables have their own columns).
NOT_COPIED = {"XPROC0", "XPROC1", "XDAL0"}


def _structural(keys: set[str]) -> set[str]:
    return {k for k in keys if k.startswith(("TTYPE", "TFORM", "TUNIT", "NAXIS"))} | {
        "QUALITY", "GROUPING",  # keywords when the whole spectrum is ungrouped
    }  # fmt: skip


def test_keyword_set_covers_the_sas_reference_spectra(real_run):
    """Every header of our spectra (primary, SPECTRUM, the GTI tables, the REGION table) holds
    every keyword the SAS reference spectra have in the same header, keyword by keyword."""
    out, _, _ = real_run
    for kind, ours_name in (("TOTAL", "src"), ("BKG", "bkg")):
        ours = fits.open(out / f"0201901401_EMOS1_{ours_name}.pha")
        ref_name = (
            "MNLup_2138_0670580101_EMOS1_S001_spec.15grp"
            if kind == "TOTAL"
            else "MNLup_2138_0670580101_EMOS1_S001_specbg.fits"
        )
        ref = fits.open(REFERENCE / ref_name)
        try:
            h_ours, h_ref = ours["SPECTRUM"].header, ref["SPECTRUM"].header
            # (evselect writes TOTAL into background spectra too; OGIP says BKG, as ours)
            assert h_ours["HDUCLAS2"] == kind
            pairs = [(ref[0].header, ours[0].header, "PRIMARY"), (h_ref, h_ours, "SPECTRUM")]
            # the first GTI table and the REGION table, found through the DSS references
            pairs.append(
                (
                    ref[h_ref["DSREF5"].lstrip(":")].header,
                    ours[h_ours["DSREF5"].lstrip(":")].header,
                    "GTI",
                )
            )
            pairs.append(
                (
                    ref[h_ref["DSREF6"].lstrip(":")].header,
                    ours[h_ours["DSREF6"].lstrip(":")].header,
                    "REGION",
                )
            )
            for ref_h, ours_h, what in pairs:
                keys = set(ref_h) - {"", "COMMENT", "HISTORY"}
                # the reference has 6 CCD blocks (CCD6 dead), ours 7: DSS block keywords match
                missing = keys - _structural(keys) - NOT_COPIED - set(ours_h)
                assert missing == set(), (ref_name, what, sorted(missing))
            # every extension kind of the reference is there (GTI per CCD, region)
            ref_kinds = {h.header.get("HDUCLAS1") for h in ref[1:]}
            ours_kinds = {h.header.get("HDUCLAS1") for h in ours[1:]}
            assert ref_kinds <= ours_kinds
            n_gti = sum(1 for h in ours[1:] if h.header.get("HDUCLAS1") == "GTI")
            assert n_gti == 7  # one per live MOS1 CCD in 2004
        finally:
            ours.close()
            ref.close()


def test_products_manifest_provenance_and_skipped_expmap(real_run):
    out, paths, proc = real_run
    assert "skipping 0201901401 EPN: only an exposure map" in proc.stdout
    entries = {e["file"]: e for e in products(out)}
    src = entries["0201901401_EMOS1_src.pha"]
    assert src["kind"] == "spectrum" and src["obsid"] == "0201901401" and src["camera"] == "EMOS1"
    assert src["date_obs"] == "2004-05-09T16:07:05" and src["exposure"] > 4000
    assert (out / src["preview"]).is_file() and src["preview"].endswith(".png")
    assert "combined_EMOS1_src.pha" in entries
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["script"]["name"] == "generate_spectra"
    assert {i["path"] for i in prov["inputs"]} == {str(p) for p in paths}
    assert all(
        len(i["sha256"]) == 64 and i["sha256"] == i["catalog_checksum"] for i in prov["inputs"]
    )
    assert "physical" in prov["inputs"][0]["regions_pixel"]["source"]


def test_combined_spectrum_sums_counts_and_exposures(real_run):
    out, paths, proc = real_run
    parts = [fits.open(out / f"{o}_EMOS1_src.pha") for o in OBSIDS]
    try:
        check_combined(out, paths, proc, parts)
    finally:
        for p in parts:
            p.close()


def check_combined(out, paths, proc, parts):
    bkgs = [fits.getheader(out / f"{o}_EMOS1_bkg.pha", "SPECTRUM") for o in OBSIDS]
    bkg_counts = [
        int(fits.getdata(out / f"{o}_EMOS1_bkg.pha", "SPECTRUM")["COUNTS"].sum()) for o in OBSIDS
    ]
    with fits.open(out / "combined_EMOS1_src.pha") as comb:
        h = comb["SPECTRUM"].header
        assert int(comb["SPECTRUM"].data["COUNTS"].sum()) == sum(
            int(p["SPECTRUM"].data["COUNTS"].sum()) for p in parts
        )
        exposures = [p["SPECTRUM"].header["EXPOSURE"] for p in parts]
        assert h["EXPOSURE"] == pytest.approx(sum(exposures))
        assert h["ONTIME"] == pytest.approx(sum(p["SPECTRUM"].header["ONTIME"] for p in parts))
        assert h["LIVETIME"] == pytest.approx(sum(exposures))
        # each part's ONTIME is its CCD's good time (one CCD under the circle), not EXPOSURE
        with fits.open(paths[0]) as ev:
            assert parts[0]["SPECTRUM"].header["ONTIME"] == pytest.approx(
                ev["EVENTS"].header["ONTIME01"], rel=1e-6
            )
        weighted = sum(
            p["SPECTRUM"].header["BACKSCAL"] * e for p, e in zip(parts, exposures, strict=True)
        )
        assert h["BACKSCAL"] == pytest.approx(weighted / sum(exposures))
        history = "".join(str(v) for v in h["HISTORY"])  # long lines go on several cards
        assert "mos2_exp1_clean_evts" not in history and "mos1_exp1_clean_evts" in history
        assert all(f"{o} EMOS1" in history for o in OBSIDS)
    # the combined background predicts the sum of the backgrounds each part predicts
    predicted = sum(
        n * p["SPECTRUM"].header["BACKSCAL"] / b["BACKSCAL"] * p["SPECTRUM"].header["EXPOSURE"]
        / b["EXPOSURE"]
        for n, p, b in zip(bkg_counts, parts, bkgs, strict=True)
    )  # fmt: skip
    cb = fits.getheader(out / "combined_EMOS1_bkg.pha", "SPECTRUM")
    assert sum(bkg_counts) * h["BACKSCAL"] / cb["BACKSCAL"] * h["EXPOSURE"] / cb[
        "EXPOSURE"
    ] == pytest.approx(predicted, rel=1e-9)
    assert "EMOS1: combined 3 observations" in proc.stdout
    assert "no response (none of the inputs has one)" in proc.stdout


def test_combined_spectra_with_responses_are_grouped_and_weighted(real_data, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    write_rmf(library / "m1_e13_im_pall_c.rmf", 800, 15.0, "EMOS1", sigma=0.04)
    write_rmf(library / "m1_e14_im_pall_c.rmf", 800, 15.0, "EMOS1", sigma=0.08)
    epochs = '[EMOS1]\n13 = ["2004-01-01", "2004-12-31"]\n14 = ["2005-01-01", "2007-12-31"]\n'
    (library / "epochs.toml").write_text(epochs)
    paths = [real_data / o / "mos1_exp1_clean_evts.fits" for o in OBSIDS]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAS_", "REGIO_"))}
    params = {"screen_flares": False, "mos_bin": 15, "min_counts": 20}
    inp = build_input("generate_spectra", paths, SOURCE, BACKGROUND, tmp_path / "output", params)
    proc = run_script(
        "generate_spectra", inp, tmp_path, env={**env, "REGIO_RESPONSES": str(library)}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "output"
    with fits.open(out / "combined_EMOS1_src.pha") as comb:
        d, h = comb["SPECTRUM"].data, comb["SPECTRUM"].header
        assert h["RESPFILE"] == "combined_EMOS1.rmf" and h["ANCRFILE"] == "NONE"
        starts = np.flatnonzero(d["GROUPING"] == 1)
        sums = np.add.reduceat(d["COUNTS"], starts)
        assert np.all(sums[d["QUALITY"][starts] == 0] >= 20)
    exposures, matrices = [], []
    for o in OBSIDS:
        ph = fits.getheader(out / f"{o}_EMOS1_src.pha", "SPECTRUM")
        exposures.append(ph["EXPOSURE"])
        matrices.append(read_response(library / ph["RESPFILE"])[2])
    assert fits.getheader(out / f"{OBSIDS[2]}_EMOS1_src.pha", "SPECTRUM")["RESPFILE"] == (
        "m1_e14_im_pall_c.rmf"
    )
    expected = sum(t * m for t, m in zip(exposures, matrices, strict=True)) / sum(exposures)
    combined = read_response(out / "combined_EMOS1.rmf")[2]
    assert np.allclose(combined, expected, rtol=1e-5, atol=1e-7)
    # a library covering 2004 only: the 2006 spectrum has no response, so no combination
    (library / "m1_e14_im_pall_c.rmf").unlink()
    run2 = tmp_path / "partial"
    inp = build_input("generate_spectra", paths, SOURCE, BACKGROUND, run2 / "output", params)
    proc = run_script("generate_spectra", inp, run2, env={**env, "REGIO_RESPONSES": str(library)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EMOS1: no combined spectrum: only some of the spectra have a response" in proc.stdout
    assert not (run2 / "output" / "combined_EMOS1_src.pha").exists()


@pytest.fixture(scope="module")
def rescreened(real_data, tmp_path_factory):
    """All six real lists re-screened with the SAS rule (they were screened before archiving)."""
    run_dir = tmp_path_factory.mktemp("rescreened")
    paths = [
        real_data / o / f"{cam}_exp1_clean_evts.fits" for o in OBSIDS for cam in ("mos1", "mos2")
    ]
    inp = build_input(
        "generate_spectra", paths, SOURCE, None, run_dir / "output", {"rescreen": True}
    )
    proc = run_script("generate_spectra", inp, run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir / "output", paths


@pytest.mark.parametrize("index", range(6))
def test_screened_exposure_equals_the_sas_rule_within_one_bin(rescreened, index):
    out, paths = rescreened
    path = paths[index]
    with fits.open(path) as ev:
        h_ev = ev["EVENTS"].header
        camera, obsid = h_ev["INSTRUME"], h_ev["OBS_ID"]
        x0, y0, r = pixel_circle(path, *CLUSTER, R_SRC)
        d = ev["EVENTS"].data
        inside = (d["X"] - x0) ** 2 + (d["Y"] - y0) ** 2 <= r * r
        (ccd,) = np.unique(d["CCDNR"][inside])
        good = ccd_good_time(ev, int(ccd))
        live_fraction = h_ev[f"LIVETI{ccd:02d}"] / h_ev[f"ONTIME{ccd:02d}"]
    flare_good, _ = sas_flare_gti(path)
    expected = overlap(good, flare_good) * live_fraction
    h = fits.getheader(out / f"{obsid}_{camera}_src.pha", "SPECTRUM")
    assert abs(h["EXPOSURE"] - expected) <= 100.0 * live_fraction, (h["EXPOSURE"], expected)
    assert h["FLSCREEN"] == "screened"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("icrs\ncircle(150.5,-11.06,0.0166667)", "outside every CCD"),
        ("icrs\ncircle(149.59,-11.06,0.0001)", "no events in the source region"),
    ],
)
def test_unusable_source_region_fails_with_a_clear_error(real_data, tmp_path, text, message):
    path = real_data / OBSIDS[0] / "mos1_exp1_clean_evts.fits"
    inp = build_input("generate_spectra", [path], text, None, tmp_path / "output")
    proc = run_script("generate_spectra", inp, tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stdout.splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 1 and message in errors[0], proc.stdout


# --- the synthetic archive -------------------------------------------------------------------

TRUTH_SOURCES = ("CL0958-02", "PKS0000-01", "NCP0412-01")


@pytest.mark.parametrize("source_id", TRUTH_SOURCES)
def test_recovers_injected_counts_within_poisson_error(sample_archive, tmp_path, source_id):
    truth = json.loads((sample_archive / "truth.json").read_text())
    source = next(s for s in truth["sources"] if s["id"] == source_id)
    obsid, cameras = next(iter(source["expected"].items()))
    files = {c: sample_archive / truth_obs["cameras"][c]["file"] for truth_obs in truth["observations"] if truth_obs["obsid"] == obsid for c in cameras}  # fmt: skip
    text = f"icrs\ncircle({source['ra']},{source['dec']},{truth['radius_arcsec'] / 3600})"
    inp = build_input(
        "generate_spectra",
        list(files.values()),
        text,
        None,
        tmp_path / "output",
        {"screen_flares": False},
    )
    proc = run_script("generate_spectra", inp, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for camera, exp in cameras.items():
        expected = (
            exp["counts_r30"] + exp["other_sources_counts_r30"] + exp["background_counts_r30"]
        )
        counts = Table.read(tmp_path / "output" / f"{obsid}_{camera}_src.pha", hdu="SPECTRUM")[
            "COUNTS"
        ].sum()
        assert abs(counts - expected) <= 3 * math.sqrt(expected) + 0.01 * expected, (
            camera,
            counts,
            expected,
        )
