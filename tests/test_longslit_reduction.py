"""``reduce_longslit`` run by hand (``python scripts/reduce_longslit.py input.json``) on the
real Kast and SPRAT nights: master bias, trace, wavelength and flux calibration, products as
specutils reads them, provenance, reproducibility, and clear failures.

Expected values are computed here with numpy from the raw frames and the reference tables (the
standard's CALSPEC table, the line lists), or taken from the data set's README.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app import plots
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from indexer.instruments import longslit as profiles  # noqa: E402
from longslit import ccd  # noqa: E402

pytestmark = pytest.mark.slow

KAST = "kast_blue_2015-05-20"
SPRAT = "lt_sprat_2018-08-10"
SCRIPT = ROOT / "scripts" / "reduce_longslit.py"


def run_script(paths: list[Path], run_dir: Path, **params) -> subprocess.CompletedProcess:
    run_dir.mkdir(parents=True, exist_ok=True)
    inp = {
        "run_id": "longslit-test",
        "session_id": "s",
        "script": {"name": "reduce_longslit", "version": "1.0"},
        "regio_version": "0.1.0",
        "params": params,
        "regions": {},
        "observations": [{"obsid": p.name, "path": str(p)} for p in paths],
        "output_dir": str(run_dir / "output"),
    }
    (run_dir / "input.json").write_text(json.dumps(inp))
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir / "input.json")],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def kast_runs(longslit_data, tmp_path_factory) -> list[tuple[Path, str]]:
    """Two runs on the standard b24 and the science b27 (the second lists them the other way)."""
    folder = longslit_data / KAST
    frames = [folder / "b27.fits.gz", folder / "b24.fits.gz"]
    runs = []
    for k, order in enumerate((frames, frames[::-1])):
        run_dir = tmp_path_factory.mktemp(f"kast-run{k}")
        proc = run_script(order, run_dir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        runs.append((run_dir / "output", proc.stdout))
    return runs


def spec1d(output: Path, frame: str):
    with fits.open(output / f"blue_{frame}_spec1d.fits") as hdul:
        return hdul[0].header.copy(), hdul["SPEC1D"].data.copy(), hdul["ARCLINES"].data.copy()


def test_master_bias_is_near_zero_per_amplifier_after_the_overscan(longslit_data, kast_runs):
    folder = longslit_data / KAST
    biases = [folder / f"b2{i}.fits.gz" for i in (1, 2, 3)]
    infos = [profiles.frame_info(p, fits.getheader(p)) for p in biases]
    master = ccd.master_bias(infos)
    # independent: each raw bias minus its overscan's median per row, median of the three
    sections = ((slice(0, 1024), slice(2049, 2080)), (slice(1024, 2048), slice(2080, 2111)))
    for k, (data_cols, over_cols) in enumerate(sections):
        stack = []
        for path in biases:
            raw = fits.getdata(path).astype(float)
            stack.append(raw[:, data_cols] - np.median(raw[:, over_cols], axis=1)[:, None])
        plain = float(np.mean(np.median(stack, axis=0)))
        assert abs(master.amp_means[k]) <= 2.0
        assert master.amp_means[k] == pytest.approx(plain, abs=0.3)
    # the run said so too
    log = kast_runs[0][1]
    line = next(x for x in log.splitlines() if x.startswith("master bias of 3 frames"))
    values = [float(v) for v in line.split("overscan")[1].replace("ADU", "").split(",")]
    assert len(values) == 2 and all(abs(v) <= 2.0 for v in values)


def test_trace_of_the_science_frame(longslit_data, kast_runs):
    header, _, _ = spec1d(kast_runs[0][0], "b27")
    assert header["TRACEROW"] == pytest.approx(175, abs=2)
    # independent: the brightest row of the raw frame's median over the middle columns
    raw = fits.getdata(longslit_data / KAST / "b27.fits.gz").astype(float)[:, 900:1100]
    profile = np.median(raw - np.median(raw, axis=0), axis=1)
    assert header["TRACEROW"] == pytest.approx(np.argmax(profile), abs=1.5)


def test_wavelength_solution_of_the_science_frame(kast_runs):
    header, table, lines = spec1d(kast_runs[0][0], "b27")
    used = lines["WAVE"][lines["USED"]]
    assert header["NLINES"] == len(used) >= 12
    assert used.min() <= 3470 and used.max() >= 5460
    assert header["WAVE_RMS"] <= 0.15
    rms = np.sqrt(np.mean((lines["WAVE"] - lines["FIT"])[lines["USED"]] ** 2))
    assert header["WAVE_RMS"] == pytest.approx(rms, abs=1e-4)
    assert header["AIRORVAC"] == "vac" and header["ARCTEMPL"] == "template_shane_kast_blue_600.fits"
    assert np.all(np.diff(table["WAVE"]) > 0)


def test_flux_calibrated_standard_matches_its_table(longslit_data, kast_runs):
    header, table, _ = spec1d(kast_runs[0][0], "b24")
    assert header["FLUXCAL"] == "standard" and header["BUNIT"] == "erg / (s cm2 Angstrom)"
    with fits.open(longslit_data / KAST / "feige66_002.fits.gz") as hdul:
        wave, flux = hdul[1].data["WAVELENGTH"], hdul[1].data["FLUX"]  # vacuum, like ours
    band = (table["WAVE"] >= 3700) & (table["WAVE"] <= 5400)
    ratio = table["FLUX"][band] / np.interp(table["WAVE"][band], wave, flux)
    assert np.median(np.abs(ratio - 1)) < 0.05
    assert abs(np.median(ratio) - 1) < 0.05
    # the science frame is calibrated too, and its flux is positive where the flat is trusted
    header, table, _ = spec1d(kast_runs[0][0], "b27")
    assert header["FLUXCAL"] == "standard" and header["SENSSTD"] == "b24.fits.gz"
    assert np.nanmedian(table["FLUX"][table["MASK"] == 0]) > 0


def test_products_headers_and_readers(longslit_data, kast_runs):
    output = kast_runs[0][0]
    header, table, _ = spec1d(output, "b27")
    assert [c.upper() for c in table.columns.names] == ["WAVE", "FLUX", "ERR", "MASK"]
    assert table.columns["WAVE"].unit == "Angstrom"
    roles = {}
    k = 1
    while f"INFILE{k:02d}" in header:
        roles.setdefault(header[f"INROLE{k:02d}"], []).append(
            (header[f"INFILE{k:02d}"], header[f"INDATE{k:02d}"])
        )
        k += 1
    assert [n for n, _ in roles["science"]] == ["b27.fits.gz"]
    assert sorted(n for n, _ in roles["bias"]) == ["b21.fits.gz", "b22.fits.gz", "b23.fits.gz"]
    assert sorted(n for n, _ in roles["flat"]) == ["b11.fits.gz", "b12.fits.gz", "b13.fits.gz"]
    assert [n for n, _ in roles["arc"]] == ["b1.fits.gz"]
    assert [n for n, _ in roles["standard"]] == ["b24.fits.gz"]
    for name, date in roles["bias"] + roles["arc"] + roles["science"]:
        raw = fits.getheader(longslit_data / KAST / name)["DATE-OBS"]
        assert date == raw[:19]
    assert {n for n, _ in roles["linelist"]} == {
        "CdI_lines_vacuum.dat",
        "HgI_lines_vacuum.dat",
        "HeI_lines_vacuum.dat",
    }
    assert roles["extinction"] == [("mthamextinct.dat", "")]
    for key, package in (("V_CCDPRO", "ccdproc"), ("V_SPECRE", "specreduce")):
        assert header[key] == importlib.metadata.version(package)
    assert header["V_ASCRAP"] == importlib.metadata.version("astroscrappy")
    # the clients astronomers use read both products
    from specutils import Spectrum

    table_spectrum = Spectrum.read(output / "blue_b27_spec1d.fits", format="tabular-fits")
    assert table_spectrum.spectral_axis.unit == "Angstrom"
    np.testing.assert_allclose(table_spectrum.spectral_axis.value, table["WAVE"])
    with fits.open(output / "blue_b27_linear.fits") as hdul:
        head = hdul[0].header
        assert head["CTYPE1"] == "WAVE" and head["CUNIT1"] == "Angstrom"
        n = head["NAXIS1"]
        grid = head["CRVAL1"] + head["CDELT1"] * (np.arange(n) + 1 - head["CRPIX1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # specutils: "no mask" style notes
        linear = Spectrum.read(output / "blue_b27_linear.fits", format="wcs1d-fits")
    np.testing.assert_allclose(linear.spectral_axis.to_value("Angstrom"), grid, rtol=1e-9)
    assert grid[0] >= table["WAVE"][0] and grid[-1] <= table["WAVE"][-1]
    # flux is conserved by the resampling: the integrals agree where both are defined
    good = np.isfinite(linear.flux.value)
    inside = (table["WAVE"] >= grid[good][0]) & (table["WAVE"] <= grid[good][-1])
    integral_table = np.trapezoid(table["FLUX"][inside], table["WAVE"][inside])
    integral_linear = np.trapezoid(linear.flux.value[good], grid[good])
    assert integral_linear == pytest.approx(integral_table, rel=0.01)
    # QA plots and the page's plot arrays
    names = {p["file"] for p in json.loads((output / "products.json").read_text())}
    for stem in ("blue_b27", "blue_b24"):
        assert {f"{stem}_trace.png", f"{stem}_arc.png", f"{stem}_spectrum.png"} <= names
    with open(output / "blue_b27_spec1d.fits", "rb") as stream:
        arrays = plots.from_fits(stream)  # what the page's Plot button gets
    assert arrays["kind"] == "optical-spectrum" and len(arrays["x"]) == len(table)
    assert sum(v is not None for v in arrays["series"]["flux"]) > 0.8 * len(table)


def test_provenance_says_why_each_frame_was_used(kast_runs):
    record = json.loads((kast_runs[0][0] / "provenance.json").read_text())
    science = next(r for r in record["reductions"] if r["target"].endswith("b27.fits.gz"))
    decisions = {d["file"]: d for d in science["association"]}
    assert decisions["b1.fits.gz"]["used_as"] == "arc"
    assert decisions["feige66_002.fits.gz"]["type"] is None
    roles = {(i["role"], Path(i["file"]).name) for i in science["inputs"]}
    assert ("arc", "b1.fits.gz") in roles and ("standard", "b24.fits.gz") in roles
    assert all(len(i["sha256"]) == 64 for i in science["inputs"] + science["references"])
    assert record["software"]["ccdproc"] == importlib.metadata.version("ccdproc")


def test_two_runs_give_identical_arrays(kast_runs):
    (first, _), (second, _) = kast_runs
    for frame in ("b24", "b27"):
        _, a, lines_a = spec1d(first, frame)
        _, b, lines_b = spec1d(second, frame)
        for column in ("WAVE", "FLUX", "ERR", "MASK"):
            np.testing.assert_array_equal(a[column], b[column])
        np.testing.assert_array_equal(lines_a["PIXEL"], lines_b["PIXEL"])
        np.testing.assert_array_equal(
            fits.getdata(first / f"blue_{frame}_linear.fits"),
            fits.getdata(second / f"blue_{frame}_linear.fits"),
        )


def test_sprat_night(longslit_data, tmp_path):
    folder = longslit_data / SPRAT
    science = [folder / "v_e_20180810_12_1_0_0.fits.gz", folder / "v_e_20180810_12_2_0_0.fits.gz"]
    # no Xe template or line list ships with the data set: the header's nominal dispersion
    proc = run_script(science, tmp_path / "sprat", wavelength_solution="nominal")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = tmp_path / "sprat" / "output"
    record = json.loads((output / "provenance.json").read_text())
    for path in science:
        stem = path.name.split(".")[0]
        header = fits.getheader(output / f"sprat_{stem}_spec1d.fits")
        assert header["TRACEROW"] == pytest.approx(129, abs=2)
        assert header["WAVECAL"] == "nominal" and header["AIRORVAC"] == "air"
        reduction = next(r for r in record["reductions"] if r["target"] == str(path))
        decisions = {d["file"]: d for d in reduction["association"]}
        slit = decisions["v_slit_red_1.fits.gz"]
        assert slit["used_as"] is None
        assert any("another night" in r and "2018-11-29" in r for r in slit["reasons"])
        assert any("GRATROT '1'" in r for r in slit["reasons"])
        arc = decisions["v_a_20180810_13_1_0_1.fits.gz"]
        assert any("closest arc" in r for r in arc["reasons"])
        assert any("not used: wavelength_solution = nominal" in r for r in arc["reasons"])
    # by default the run asks for the Xe references before doing anything long
    proc = run_script(science[:1], tmp_path / "sprat-fit")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "[ERROR] no arc template or line list for lt-sprat (lamps Xe)" in proc.stdout
    assert "[STAGE] master bias" not in proc.stdout


def test_missing_calibration_fails_with_its_name(longslit_data, tmp_path):
    night = tmp_path / "night"
    night.mkdir()
    for name in ("b27.fits.gz", "b21.fits.gz", "b22.fits.gz"):
        (night / name).write_bytes((longslit_data / KAST / name).read_bytes())
    proc = run_script([night / "b27.fits.gz"], tmp_path / "run")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    error = next(x for x in proc.stdout.splitlines() if x.startswith("[ERROR]"))
    assert "no flat for b27.fits.gz" in error and "no arc for b27.fits.gz" in error


def test_unknown_reference_lamp_is_a_message_not_a_traceback(longslit_data, tmp_path):
    spec = importlib.util.find_spec("goodman_pipeline")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("goodman-pipeline is not installed (its reference lamps are the test data)")
    library = Path(next(iter(spec.submodule_search_locations))) / "data" / "ref_comp"
    frame = longslit_data / KAST / "b27.fits.gz"
    # (an unknown lamp mix of a known mode: test_longslit_wavecal)
    proc = run_script(
        [frame], tmp_path / "run", lamp_library=str(library), lamp_mode="400_M9", lamp_mix="HgArNe"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "[ERROR] no reference lamp for 400_M9/HgArNe" in proc.stdout


def test_night_of_the_kast_frames_is_one(longslit_data):
    nights = {
        profiles.frame_info(p, fits.getheader(p)).night
        for p in (longslit_data / KAST).glob("b*.fits.gz")
    }
    assert nights == {dt.date(2015, 5, 19)}
