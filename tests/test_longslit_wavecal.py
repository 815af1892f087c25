"""Wavelength calibration (``scripts/longslit/wavecal.py``): a synthetic arc with a known
solution, the real Kast arc against its template and line lists, and the Goodman reference
lamps (``goodman-pipeline`` wheel) shifted by known amounts.

Truths: the synthetic arc's own polynomial; the data set's line lists; the Goodman lamps' own
solutions (their ``GSP_*`` Chebyshev coefficients, evaluated here with numpy, not the module).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from indexer.instruments import longslit as profiles  # noqa: E402
from longslit import ccd, extract, wavecal  # noqa: E402

KAST = "kast_blue_2015-05-20"
LINE_LISTS = ("CdI_lines_vacuum.dat", "HgI_lines_vacuum.dat", "HeI_lines_vacuum.dat")


def gaussians(x, centres, amplitudes, sigma):
    out = np.zeros_like(x, dtype=float)
    for c, a in zip(centres, amplitudes, strict=True):
        out += a * np.exp(-0.5 * ((x - c) / sigma) ** 2)
    return out


def test_synthetic_arc_solution_is_recovered():
    rng = np.random.default_rng(14)
    npix = 1500
    x = np.arange(npix, dtype=float)
    # a known, mildly non-linear solution and a line list across it
    truth = lambda p: 4000.0 + 1.2 * p + 2.0e-5 * p**2 - 4.0e-9 * p**3  # noqa: E731
    lines = np.sort(rng.uniform(truth(20), truth(npix - 20), 25))
    amps = rng.uniform(500, 5000, len(lines))
    inverse = lambda w: np.interp(w, truth(x), x)  # noqa: E731
    arc = gaussians(x, inverse(lines), amps, 1.3) + 50 + rng.normal(0, 3, npix)
    # the template: the same lamp seen 41.6 pixels further along, on a longer detector
    tx = np.arange(npix + 200, dtype=float)
    template_wave = truth(tx - 41.6)
    template = gaussians(tx, inverse(lines) + 41.6, amps, 1.3)
    reference = wavecal.Reference("synthetic", template_wave, template, lines, [""] * 25, "air")
    solution = wavecal.calibrate(arc, reference)
    assert solution.shift == pytest.approx(41.6, abs=0.1)
    assert solution.nlines >= 20
    assert np.max(np.abs(solution(x) - truth(x))) < 0.02  # Angstrom, 1/60 of a pixel
    assert solution.rms_pixels == pytest.approx(
        solution.rms_angstrom / 1.2, rel=0.1
    )  # dispersion ~1.2 A/pixel


def test_too_few_lines_is_a_clear_error():
    x = np.arange(800, dtype=float)
    arc = gaussians(x, [300.0], [1000.0], 1.5) + np.random.default_rng(1).normal(0, 1, 800)
    reference = wavecal.Reference(
        "one-line", 5000 + x, gaussians(x, [300.0], [1000.0], 1.5), np.array([5300.0]), [""], "air"
    )
    with pytest.raises(wavecal.CalibrationError, match="line"):
        wavecal.calibrate(arc, reference)


# --- Kast ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kast_arc(longslit_data) -> tuple[np.ndarray, wavecal.Reference]:
    folder = longslit_data / KAST
    infos = {p.name: profiles.frame_info(p, fits.getheader(p)) for p in folder.glob("b*.fits.gz")}
    bias = ccd.master_bias([infos[f"b2{i}.fits.gz"] for i in (1, 2, 3)])
    arc = ccd.process(infos["b1.fits.gz"], bias, None, cosmic_rays=False)
    spectrum = extract.arc_spectrum(arc, np.full(arc.data.shape[1], 176.0), 16.0)
    reference = wavecal.template_reference(
        folder / "template_shane_kast_blue_600.fits", [folder / n for n in LINE_LISTS], "vacuum"
    )
    return spectrum, reference


def test_kast_arc_lines_and_rms(kast_arc):
    arc, reference = kast_arc
    solution = wavecal.calibrate(arc, reference)
    used = solution.wave[solution.used]
    assert solution.nlines >= 12
    assert used.min() <= 3470 and used.max() >= 5460
    assert solution.rms_angstrom <= 0.15
    # every line used is a line of the lists, at most a few tenths of an Angstrom off the fit
    listed = np.concatenate([wavecal.read_line_list(p)[0] for p in reference.files[1:]])
    assert all(np.min(np.abs(listed - w)) < 1e-6 for w in used)
    assert np.max(np.abs(solution.residuals[solution.used])) < 0.3
    # monotonic, about 1 A per pixel, covering the blue arm's 3430-5515 A
    wave = solution.wavelengths()
    assert np.all(np.diff(wave) > 0)
    assert 3400 < wave[0] < 3460 and 5490 < wave[-1] < 5540


@pytest.mark.parametrize("error", [-20, 20])
def test_kast_solution_does_not_depend_on_the_initial_guess(kast_arc, error):
    arc, reference = kast_arc
    free = wavecal.calibrate(arc, reference)  # every shift searched
    guessed = wavecal.calibrate(arc, reference, shift=free.shift + error, max_shift=25)
    assert guessed.shift == pytest.approx(free.shift, abs=1e-9)
    np.testing.assert_array_equal(guessed.wave, free.wave)
    x = np.arange(arc.size)
    assert np.max(np.abs(guessed(x) - free(x))) < 1e-9


# --- Goodman reference lamps --------------------------------------------------------------------


@pytest.fixture(scope="module")
def goodman_library() -> Path:
    spec = importlib.util.find_spec("goodman_pipeline")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI"):
            raise RuntimeError("goodman-pipeline (requirements-dev.txt) is not installed")
        pytest.skip("goodman-pipeline is not installed (its reference lamps are the test data)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "ref_comp"


def lamp_solution(header: fits.Header, x: np.ndarray) -> np.ndarray:
    """The lamp's own solution: numpy's Chebyshev series of the 0-based pixel (no domain)."""
    order = int(header["GSP_ORDR"])
    coeffs = [float(header[f"GSP_C{i:03d}"]) for i in range(order + 1)]
    return np.polynomial.chebyshev.chebval(x, coeffs)


def test_goodman_400m2_lamps_shifted_are_recovered(goodman_library):
    lamps = []
    for path in sorted(goodman_library.glob("*.fits")):
        header = fits.getheader(path)
        if str(header.get("WAVMODE", "")).strip() == "400_M2":
            lamps.append((wavecal.lamp_mix(header), header, fits.getdata(path).astype(float)))
    assert len(lamps) >= 6
    for mix, header, flux in lamps:
        reference = wavecal.library_reference(goodman_library, "400_M2", mix)
        x = np.arange(flux.size, dtype=float)
        for shift in (-37.0, 12.5, 55.25):
            observed = np.interp(x + shift, x, flux)  # observed pixel x = lamp pixel x + shift
            solution = wavecal.calibrate(observed, reference)
            truth = lamp_solution(header, x + shift)
            used = solution.x[solution.used]
            span = (x >= used.min()) & (x <= used.max())
            error = np.max(np.abs(solution(x) - truth)[span])
            assert error < 0.2, (mix, shift, error)
            assert solution.shift == pytest.approx(shift, abs=0.2)


def test_unknown_goodman_mode_or_lamps_is_a_clear_message(goodman_library):
    with pytest.raises(wavecal.ReferenceError, match=r"no reference lamp for 400_M9/HgArNe"):
        wavecal.library_reference(goodman_library, "400_M9", "HgArNe")
    with pytest.raises(wavecal.ReferenceError, match=r"no reference lamp for 400_M2/XeNe") as err:
        wavecal.library_reference(goodman_library, "400_M2", "XeNe")
    assert "HgArNe" in str(err.value)  # says which lamps the mode has


def test_line_list_formats(tmp_path):
    pipe = tmp_path / "pipe.dat"
    pipe.write_text(
        "# comment\n| ion | wave | NIST |\n| HgI | 4359.56 | 1 |\n| CdI |  3611.5375 | 1 |\n"
    )
    plain = tmp_path / "plain.txt"
    plain.write_text("# wave ion\n5460.75 HgI\n4046.56\n\n")
    assert wavecal.read_line_list(pipe) == (pytest.approx([3611.5375, 4359.56]), ["CdI", "HgI"])
    waves, ions = wavecal.read_line_list(plain)
    assert list(waves) == [4046.56, 5460.75] and ions == ["", "HgI"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(wavecal.ReferenceError, match="no wavelengths"):
        wavecal.read_line_list(empty)
    with pytest.raises(wavecal.ReferenceError, match="cannot read"):
        wavecal.read_line_list(tmp_path / "missing.dat")
