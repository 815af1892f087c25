"""fit_spectrum and the spectra as sherpa reads them: checked against numpy, not against sherpa.

- A spectrum folded here with numpy through the real SAS pn RMF and ARF (``sas-reference``) from a
  known absorbed power law, Poisson-sampled, is fitted: the known parameters come back within
  the errors, and the fluxes equal numpy integrals of the fitted model.
- The real SAS pn spectrum (``pn_pi_src_bin10.ds``) is fitted with its ARF and the pn RMF of the
  reference set.
- The script on the demo archive: fitted where SAS made responses, "not fitted" with the reason
  where there is an RMF but no ARF, and a clean stop when nothing has a response.
- sherpa's ``load_pha`` reads our real-data spectra with their background and grouping.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from tests.science_helpers import (
    SCRIPTS,
    build_input,
    products,
    read_response,
    run_script,
    write_rmf,
)

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sas-reference"
KEV_TO_ERG = 1.602176634e-9
TRUE = {"nH": 0.3, "gamma": 1.7, "ampl": 2e-3}

sherpa = pytest.importorskip("sherpa", reason="sherpa is not installed (make test installs it)")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if not (REFERENCE / "epn_ff20_dY9.rmf").is_file():
        if os.environ.get("CI"):
            raise RuntimeError(f"the SAS reference files are missing: {REFERENCE}")
        pytest.skip(f"SAS reference files not found at {REFERENCE} (../shared/data)")
    out = tmp_path_factory.mktemp("sas-reference")
    for name in ("epn_ff20_dY9.rmf", "pn_pi_src.arf", "pn_pi_src_bin10.ds"):
        shutil.copyfile(REFERENCE / name, out / name)
        (out / name).chmod(0o644)
    return out


@pytest.fixture(scope="module")
def fitting():
    """The script's fitting module (scripts/ on the path, as when a script runs)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from xmm import fitting

        yield fitting
    finally:
        sys.path.remove(str(SCRIPTS))
        logging.getLogger("sherpa").setLevel(logging.WARNING)


def mm83(e):
    """Morrison & McCammon (1983) cross-section [cm^2], typed in again from the paper's table."""
    table = [(0.1, 17.3, 608.1, -2150), (0.284, 34.6, 267.9, -476.1), (0.4, 78.1, 18.8, 4.3),
             (0.532, 71.4, 66.8, -51.4), (0.707, 95.5, 145.8, -61.1), (0.867, 308.9, -380.6, 294),
             (1.303, 120.6, 169.3, -47.7), (1.84, 141.3, 146.8, -31.5), (2.471, 202.7, 104.7, -17),
             (3.21, 342.7, 18.7, 0), (4.038, 352.2, 18.7, 0), (7.111, 433.9, -2.4, 0.75),
             (8.331, 629.0, 30.9, 0), (10.0, 701.2, 25.2, 0)]  # fmt: skip
    out = np.empty_like(e)
    for i, x in enumerate(e):
        c = next((row for row in table if x <= row[0]), table[-1])
        out[i] = (c[1] + c[2] * x + c[3] * x * x) / x**3 * 1e-24
    return out


def powerlaw_photons(lo, hi, gamma, ampl):
    """Photons/cm^2/s in each bin of ampl E^-gamma (exact integral; none below 10 eV)."""
    lo, hi = np.maximum(lo, 0.01), np.maximum(hi, 0.01)
    return ampl * (hi ** (1 - gamma) - lo ** (1 - gamma)) / (1 - gamma)


def write_pha(path: Path, counts: np.ndarray, exposure: float, rmf: str, arf: str, min_counts=20):
    grouping = np.full(len(counts), -1, np.int16)
    quality = np.zeros(len(counts), np.int16)
    running, start = 0, 0
    for k, c in enumerate(counts):
        if k == start:
            grouping[k] = 1
        running += c
        if running >= min_counts:
            running, start = 0, k + 1
    quality[start:] = 2
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="CHANNEL", format="J", array=np.arange(len(counts))),
            fits.Column(name="COUNTS", format="J", array=counts),
            fits.Column(name="GROUPING", format="I", array=grouping),
            fits.Column(name="QUALITY", format="I", array=quality),
        ],
        name="SPECTRUM",
    )
    hdu.header.update(
        TELESCOP="XMM", INSTRUME="EPN", HDUCLASS="OGIP", HDUCLAS1="SPECTRUM", HDUCLAS2="TOTAL",
        HDUCLAS3="COUNT", HDUVERS="1.2.1", EXPOSURE=exposure, BACKSCAL=1.0, AREASCAL=1.0,
        CORRSCAL=1.0, BACKFILE="NONE", CORRFILE="NONE", RESPFILE=rmf, ANCRFILE=arf,
        CHANTYPE="PI", DETCHANS=len(counts), POISSERR=True, TLMIN1=0, TLMAX1=len(counts) - 1,
    )  # fmt: skip
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def test_fit_recovers_a_known_absorbed_power_law(reference, fitting, tmp_path):
    e_lo, e_hi, response = read_response(
        reference / "epn_ff20_dY9.rmf", reference / "pn_pi_src.arf"
    )
    mid = 0.5 * (e_lo + e_hi)
    photons = powerlaw_photons(e_lo, e_hi, TRUE["gamma"], TRUE["ampl"])
    photons *= np.exp(-TRUE["nH"] * 1e22 * mm83(mid))
    exposure = 40_000.0
    expected = photons @ response * exposure
    # (the real RMF holds a few tiny negative elements: no channel expects fewer than 0)
    counts = np.random.default_rng(7).poisson(np.clip(expected, 0, None))
    shutil.copyfile(reference / "epn_ff20_dY9.rmf", tmp_path / "pn.rmf")
    shutil.copyfile(reference / "pn_pi_src.arf", tmp_path / "pn.arf")
    write_pha(tmp_path / "known.pha", counts, exposure, "pn.rmf", "pn.arf")

    result, plot = fitting.fit_spectrum(tmp_path / "known.pha", extended=False, band=(0.3, 10.0))
    assert result.fitted and plot is not None, result.status
    for name, truth in TRUE.items():
        value, lo, hi = result.params[name]
        assert lo < 0 < hi
        # within 2.5 x the 90 % interval of the truth (one sample of a Poisson spectrum)
        assert value + 2.5 * lo <= truth <= value + 2.5 * hi, (name, value, lo, hi, truth)
    assert result.reduced < 1.5
    # fluxes: numpy integrals of the fitted model, E F(E) over the band
    nh, gamma, ampl = (result.params[k][0] for k in ("nH", "gamma", "ampl"))
    for lo, hi in ((0.5, 2.0), (2.0, 10.0)):
        e = np.linspace(lo, hi, 20001)
        f = ampl * e ** (1 - gamma)
        unabsorbed = np.trapezoid(f, e) * KEV_TO_ERG
        absorbed = np.trapezoid(f * np.exp(-nh * 1e22 * mm83(e)), e) * KEV_TO_ERG
        key = f"{lo:g}-{hi:g}keV"
        assert result.fluxes[f"unabsorbed_flux_{key}"] == pytest.approx(unabsorbed, rel=2e-3)
        assert result.fluxes[f"flux_{key}"] == pytest.approx(absorbed, rel=2e-2)


def test_fit_of_the_sas_pn_spectrum_with_its_arf(reference, fitting, tmp_path):
    # its RESPFILE (epn_ff20_sdY9.rmf) is not in the reference set: the pn RMF that is (doubles
    # only) and its ARF are given explicitly; its BACKFILE is absent too (gross spectrum)
    result, plot = fitting.fit_spectrum(
        reference / "pn_pi_src_bin10.ds",
        extended=False,
        rmf=reference / "epn_ff20_dY9.rmf",
        arf=reference / "pn_pi_src.arf",
    )
    assert (
        result.fitted
        and result.dof > 100
        and result.counts
        == int(fits.getdata(reference / "pn_pi_src_bin10.ds", "SPECTRUM")["COUNTS"].sum())
    )
    assert set(result.params) == {"nH", "gamma", "ampl"}
    assert "no background spectrum" in " ".join(result.notes)
    png = tmp_path / "fit.png"
    fitting.plot_fit(png, plot, result)
    assert png.stat().st_size > 10_000


FAKE_SAS = """#!/bin/sh
# a stand-in for rmfgen/arfgen: pn spectra get the reference pn RMF and ARF, MOS spectra a
# synthetic 800-channel RMF on the reference MOS1 ARF's energy grid and that ARF
case "$*" in *EMOS*) rmf="{mos_rmf}"; arf="{mos_arf}" ;; *) rmf="{rmf}"; arf="{arf}" ;; esac
for arg in "$@"; do
  case "$arg" in
    rmfset=*) [ "$(basename "$0")" = rmfgen ] && cp "$rmf" "${{arg#rmfset=}}" ;;
    arfset=*) cp "$arf" "${{arg#arfset=}}" ;;
  esac
done
"""
MOS_ARF = REFERENCE / "MNLup_2138_0670580101_EMOS1_S001_spec.arf"


def demo_inputs(sample_archive, tmp_path, params=None):
    truth = json.loads((sample_archive / "truth.json").read_text())
    obs = truth["observations"][0]
    source = next(s for s in truth["sources"] if s["id"] == "CL0958-02")
    paths = [sample_archive / obs["cameras"][c]["file"] for c in ("EPN", "EMOS1")]
    text = f"icrs\ncircle({source['ra']},{source['dec']},0.01)"
    bkg = f"icrs\nannulus({source['ra']},{source['dec']},0.03,0.05)"
    inp = build_input("fit_spectrum", paths, text, bkg, tmp_path / "output", params)
    return obs["obsid"], inp


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAS_", "REGIO_"))}
    env.update(extra)
    return env


def test_script_fits_what_has_responses_and_says_why_not_for_the_rest(
    sample_archive, reference, tmp_path
):
    # SAS (stand-in) on the worker makes pn responses; MOS1 gets a canned RMF from the library
    # (SAS is asked first, so the stand-in here only answers for pn: MOS runs see no SAS)
    bin_dir = tmp_path / "sas" / "bin"
    bin_dir.mkdir(parents=True)
    with fits.open(MOS_ARF) as arf:
        grid = (arf["SPECRESP"].data["ENERG_LO"], arf["SPECRESP"].data["ENERG_HI"])
        mos_rmf = write_rmf(tmp_path / "sas" / "mos.rmf", 800, 15.0, "EMOS1", energies=grid)
    for tool in ("rmfgen", "arfgen"):
        script = bin_dir / tool
        script.write_text(
            FAKE_SAS.format(rmf=reference / "epn_ff20_dY9.rmf", arf=reference / "pn_pi_src.arf",
                            mos_rmf=mos_rmf, mos_arf=MOS_ARF)
        )  # fmt: skip
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    obsid, inp = demo_inputs(sample_archive, tmp_path, {"screen_flares": False})
    env = clean_env(
        SAS_DIR=str(tmp_path / "sas"),
        SAS_CCF="ccf.cif",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    proc = run_script("fit_spectrum", inp, tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "output"
    table = Table.read(out / "fit_results.ecsv")
    rows = {r["camera"]: r for r in table}
    assert rows["EPN"]["status"] == "fitted", proc.stdout
    assert rows["EPN"]["model"].endswith("powerlaw") and rows["EPN"]["dof"] > 0
    assert np.isfinite(rows["EPN"]["gamma"]) and rows["EPN"]["flux_0.5-2keV"] > 0
    # the MOS spectrum, with its MOS responses, is fitted too
    assert rows["EMOS1"]["status"] == "fitted", proc.stdout
    assert np.isfinite(rows["EMOS1"]["nH"]) and rows["EMOS1"]["dof"] > 0
    entries = {e["file"]: e for e in products(out)}
    assert entries["fit_results.ecsv"]["kind"] == "table"
    assert entries[f"{obsid}_EPN_src_fit.png"]["kind"] == "plot"
    h = fits.getheader(out / f"{obsid}_EPN_src.pha", "SPECTRUM")
    assert h["ANCRFILE"] == f"{obsid}_EPN_src.arf"
    assert "GROUPING" in fits.getdata(out / f"{obsid}_EPN_src.pha", "SPECTRUM").columns.names
    # sherpa reads every spectrum of the run with its background, grouping and responses
    import sherpa.astro.ui as ui

    logging.getLogger("sherpa").setLevel(logging.WARNING)
    for pha in sorted(out.glob("*_src.pha")):
        ui.clean()
        with warnings.catch_warnings():
            # the real MOS ARF starts at ENERG_LO 0, which sherpa notes and replaces by 1e-10
            warnings.filterwarnings("ignore", "The minimum ENERG_LO")
            ui.load_pha(1, str(pha))
        h = fits.getheader(pha, "SPECTRUM")
        data = ui.get_data(1)
        assert data.grouped and ui.get_bkg(1) is not None, pha.name
        assert np.array_equal(data.counts, fits.getdata(pha, "SPECTRUM")["COUNTS"])
        if h["RESPFILE"] != "NONE":
            assert ui.get_rmf(1).name.endswith(h["RESPFILE"]), pha.name
        if h["ANCRFILE"] != "NONE":
            assert ui.get_arf(1).name.endswith(h["ANCRFILE"]), pha.name
    ui.clean()


def test_script_refuses_an_rmf_without_arf_and_stops_cleanly_without_responses(
    sample_archive, tmp_path
):
    library = tmp_path / "library"
    library.mkdir()
    write_rmf(library / "m1_e1_im_pall_c.rmf", 800, 15.0, "EMOS1")
    (library / "epochs.toml").write_text('[EMOS1]\n1 = ["1999-12-10", "2040-12-31"]\n')
    obsid, inp = demo_inputs(sample_archive, tmp_path / "a", {"screen_flares": False})
    proc = run_script(
        "fit_spectrum", inp, tmp_path / "a", env=clean_env(REGIO_RESPONSES=str(library))
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["camera"]: r for r in Table.read(tmp_path / "a" / "output" / "fit_results.ecsv")}
    assert rows["EMOS1"]["status"].startswith("not fitted: an RMF without ARF")
    assert rows["EPN"]["status"].startswith("not fitted: no response")
    assert "nothing was fitted" in proc.stdout
    # no library, no SAS: the same clean stop
    obsid, inp = demo_inputs(sample_archive, tmp_path / "b", {"screen_flares": False})
    proc = run_script("fit_spectrum", inp, tmp_path / "b", env=clean_env())
    assert proc.returncode == 0 and "nothing was fitted" in proc.stdout
    assert not any(line.startswith("[ERROR]") for line in proc.stdout.splitlines())


def test_sherpa_reads_our_spectra_with_background_grouping_and_counts(real_data, tmp_path):
    import sherpa.astro.ui as ui

    path = real_data / "0201903501" / "mos1_exp1_clean_evts.fits"
    src = "icrs\ncircle(149.59,-11.06,0.0166667)"
    bkg = "icrs\nannulus(149.59,-11.06,0.05,0.0666667)"
    inp = build_input("generate_spectra", [path], src, bkg, tmp_path / "output",
                      {"screen_flares": False, "min_counts": 25, "mos_bin": 15})  # fmt: skip
    proc = run_script("generate_spectra", inp, tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pha = tmp_path / "output" / "0201903501_EMOS1_src.pha"
    logging.getLogger("sherpa").setLevel(logging.WARNING)
    ui.clean()
    ui.load_pha(1, str(pha))
    data, back = ui.get_data(1), ui.get_bkg(1)
    ours = fits.getdata(pha, "SPECTRUM")
    ours_bkg = fits.getdata(tmp_path / "output" / "0201903501_EMOS1_bkg.pha", "SPECTRUM")
    h = fits.getheader(pha, "SPECTRUM")
    assert np.array_equal(data.counts, ours["COUNTS"])
    assert np.array_equal(back.counts, ours_bkg["COUNTS"])
    assert data.grouped and np.array_equal(data.grouping, ours["GROUPING"])
    assert data.exposure == pytest.approx(h["EXPOSURE"])
    assert data.backscal == pytest.approx(h["BACKSCAL"])
    # sherpa's background scaling = the OGIP ratio of BACKSCAL x EXPOSURE
    bh = fits.getheader(tmp_path / "output" / "0201903501_EMOS1_bkg.pha", "SPECTRUM")
    expected = h["BACKSCAL"] * h["EXPOSURE"] / (bh["BACKSCAL"] * bh["EXPOSURE"])
    assert data.get_background_scale() == pytest.approx(expected, rel=1e-9)
    # grouped counts: sums of the channels from each GROUPING start
    starts = np.flatnonzero(ours["GROUPING"] == 1)
    assert np.array_equal(data.apply_grouping(data.counts), np.add.reduceat(ours["COUNTS"], starts))
    assert math.isclose(sum(data.counts), int(ours["COUNTS"].sum()))
    ui.clean()
