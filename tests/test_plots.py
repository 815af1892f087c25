"""Plot arrays read from open products (app.plots): the background a header names is opened only
inside the run's output folder; spectra regrouped without losing counts, with Poisson or STAT_ERR
errors, on the energy grid and band of the instrument registry (a real SAS MOS1 spectrum and
synthetic OGIP files); light curves in mission time and MJD (checked against astropy's Time),
with their errors and good time intervals; optical 1-D spectra with their error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time, TimeDelta
from hypothesis import given, settings
from hypothesis import strategies as st

from app import plots, runs
from indexer import instruments


def write_pha(path, counts, backfile="NONE", backscal=1.0):
    columns = [
        fits.Column(name="CHANNEL", format="J", array=np.arange(len(counts))),
        fits.Column(name="COUNTS", format="J", array=np.asarray(counts)),
    ]
    hdu = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    hdu.header.update(
        {"EXPOSURE": 1000.0, "BACKSCAL": backscal, "SPECDELT": 5, "BACKFILE": backfile}
    )
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "run" / runs.OUTPUT).mkdir(parents=True)
    return tmp_path / "run"


def plot(run_dir, name):
    def sibling(other):
        return runs.open_product(run_dir, other)

    with runs.open_product(run_dir, name) as stream:
        return plots.from_fits(stream, sibling)


def test_the_background_beside_the_spectrum_is_scaled(run_dir):
    out = run_dir / runs.OUTPUT
    counts = np.full(2400, 10)
    write_pha(out / "src.pha", counts, backfile="bkg.pha", backscal=1.0)
    write_pha(out / "bkg.pha", counts * 4, backscal=4.0)
    data = plot(run_dir, "src.pha")
    assert data["kind"] == "spectrum"
    source, background = (
        np.array(data["series"][k], dtype=float) for k in ("source", "background")
    )
    np.testing.assert_allclose(background, source)  # 4x the counts over 4x the area


@pytest.mark.parametrize("backfile", ["../../secret.pha", "/etc/passwd", "link.pha"])
def test_a_background_outside_the_folder_or_through_a_link_is_not_read(run_dir, backfile):
    out = run_dir / runs.OUTPUT
    write_pha(run_dir.parent / "secret.pha", np.full(2400, 99))
    (out / "link.pha").symlink_to(run_dir.parent / "secret.pha")
    write_pha(out / "src.pha", np.full(2400, 10), backfile=backfile)
    data = plot(run_dir, "src.pha")
    assert "background" not in data["series"]


def test_not_plottable_files_say_so(run_dir):
    (run_dir / runs.OUTPUT / "notes.fits").write_bytes(b"not fits at all")
    with pytest.raises(plots.NotPlottable):
        plot(run_dir, "notes.fits")


# ------------------------------------------------------------------ spectra: rebinning, errors

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sas-reference"
MOS_SPECTRUM = "MNLup_2138_0670580101_EMOS1_S001_spec.15grp"
MOS_BACKGROUND = "MNLup_2138_0670580101_EMOS1_S001_specbg.fits"


@pytest.fixture(scope="module")
def sas_spectra(tmp_path_factory):
    """A private copy of the real SAS MOS1 spectrum and its background (``sas-reference``)."""
    if not (REFERENCE / MOS_SPECTRUM).is_file():
        if os.environ.get("CI"):
            raise RuntimeError(f"the SAS reference files are missing: {REFERENCE}")
        pytest.skip(f"SAS reference files not found at {REFERENCE} (../shared/data)")
    out = tmp_path_factory.mktemp("sas-spectra") / "run"
    (out / runs.OUTPUT).mkdir(parents=True)
    for name in (MOS_SPECTRUM, MOS_BACKGROUND):
        shutil.copyfile(REFERENCE / name, out / runs.OUTPUT / name)
    return out


def read_pha(path):
    with fits.open(path) as hdul:
        hdu = hdul["SPECTRUM"]
        return dict(hdu.header), {n: np.asarray(hdu.data[n]) for n in hdu.columns.names}


@pytest.mark.parametrize("min_counts", [1, 20, 50])
def test_a_real_sas_spectrum_is_regrouped_without_losing_counts(sas_spectra, min_counts):
    head, cols = read_pha(sas_spectra / runs.OUTPUT / MOS_SPECTRUM)
    with runs.open_product(sas_spectra, MOS_SPECTRUM) as stream:
        data = plots.from_fits(
            stream, lambda o: runs.open_product(sas_spectra, o), min_counts=min_counts
        )
    # independently: the MOS channel k holds PI (eV) 15k .. 15k+14; EPIC's band is 0.2-12 keV
    low_kev = cols["CHANNEL"] * head["SPECDELT"] / 1000.0
    inside = (low_kev + 0.015 > 0.2) & (low_kev < 12.0) & (cols["QUALITY"] == 0)
    counts = np.array(data["counts"])
    assert counts.sum() == cols["COUNTS"][inside].sum()  # rebinning conserves the counts
    assert (counts >= min_counts).all()
    lo, hi = np.array(data["x_low"]), np.array(data["x_high"])
    assert lo.min() >= 0.2 - 0.015 and hi.max() <= 12.0 + 0.015
    assert (lo[1:] >= hi[:-1] - 1e-9).all()  # bins do not overlap
    source = np.array(data["series"]["source"])
    error = np.array(data["series"]["source_error"])
    exposure = head["EXPOSURE"]
    widths = source * exposure / counts  # 1 / keV of each bin
    np.testing.assert_allclose(error, np.sqrt(counts) * widths / exposure)  # Poisson errors
    assert data["energy_range"] == [0.2, 12.0] and data["x_decimals"] == 2  # 15 eV channels


def test_the_real_background_is_scaled_by_backscal_and_exposure(sas_spectra):
    src_head, _ = read_pha(sas_spectra / runs.OUTPUT / MOS_SPECTRUM)
    bkg_head, bkg = read_pha(sas_spectra / runs.OUTPUT / MOS_BACKGROUND)
    with runs.open_product(sas_spectra, MOS_SPECTRUM) as stream:
        data = plots.from_fits(stream, lambda o: runs.open_product(sas_spectra, o), 10**4)
    # one bin at this minimum: the background rate is its scaled counts over the whole band
    counts = np.array(data["counts"])
    scale = (src_head["BACKSCAL"] / bkg_head["BACKSCAL"]) * (
        src_head["EXPOSURE"] / bkg_head["EXPOSURE"]
    )
    low_kev = bkg["CHANNEL"] * 0.015
    _, src = read_pha(sas_spectra / runs.OUTPUT / MOS_SPECTRUM)
    inside = (low_kev + 0.015 > 0.2) & (low_kev < 12.0) & (src["QUALITY"] == 0)
    source = np.array(data["series"]["source"])
    background = np.array(data["series"]["background"])
    np.testing.assert_allclose(
        background.sum() / source.sum(), bkg["COUNTS"][inside].sum() * scale / counts.sum()
    )
    b_err = np.array(data["series"]["background_error"])
    np.testing.assert_allclose(b_err / background, 1 / np.sqrt(bkg["COUNTS"][inside].sum()))


def write_spectrum(path, counts, header, stat_err=None, first=0):
    columns = [
        fits.Column(name="CHANNEL", format="J", array=np.arange(first, first + len(counts))),
        fits.Column(name="COUNTS", format="E", array=np.asarray(counts, dtype=float)),
    ]
    if stat_err is not None:
        columns.append(fits.Column(name="STAT_ERR", format="E", array=stat_err))
    hdu = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    hdu.header["TLMIN1"] = first
    hdu.header.update({"EXPOSURE": 500.0, "BACKSCAL": 1.0, "BACKFILE": "NONE", **header})
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def test_stat_err_is_used_when_the_counts_are_not_poisson(run_dir):
    rng = np.random.default_rng(5)
    counts = rng.normal(30, 5, 4096)  # OoT-subtracted pn: real counts with STAT_ERR
    stat_err = rng.uniform(4, 8, 4096)
    header = {"TELESCOP": "XMM", "INSTRUME": "EPN", "SPECDELT": 5, "POISSERR": False}
    write_spectrum(run_dir / runs.OUTPUT / "pn.pha", counts, header, stat_err)
    data = plot(run_dir, "pn.pha")
    energies = np.arange(4096) * 0.005
    inside = (energies + 0.005 > 0.2) & (energies < 12.0)
    assert np.isclose(sum(data["counts"]), counts[inside].astype(np.float32).sum(), rtol=1e-5)
    # each bin's error is the quadrature sum of its channels' STAT_ERR: check the total variance
    error = np.array(data["series"]["source_error"])
    rate = np.array(data["series"]["source"])
    variance_counts = (error / rate * np.array(data["counts"])) ** 2
    np.testing.assert_allclose(
        variance_counts.sum(), (stat_err[inside].astype(np.float32) ** 2).sum(), rtol=1e-4
    )


def test_the_energy_axis_comes_from_the_instrument_registry(run_dir, monkeypatch):
    acis = instruments.get("chandra-acis")
    header = {"TELESCOP": "CHANDRA", "INSTRUME": "ACIS", "SPECDELT": 1}
    write_spectrum(run_dir / runs.OUTPUT / "acis.pi", np.full(1024, 50.0), header, first=1)
    data = plot(run_dir, "acis.pi")
    assert data["energy_range"] == list(acis.energy_range_kev) == [0.3, 10.0]
    # channel k covers [(k-1), k) x 14.6 eV: the bins start and end on that grid
    assert np.isclose(data["x_low"][0], 20 * 0.0146)  # channel 21 is the first above 0.3 keV
    assert np.isclose(data["x_high"][-1], 685 * 0.0146)  # channel 685 holds 10 keV
    monkeypatch.setattr(type(acis), "energy_range_kev", (1.0, 2.0))
    narrowed = plot(run_dir, "acis.pi")
    assert narrowed["energy_range"] == [1.0, 2.0]
    assert min(narrowed["x_low"]) >= 1.0 - 0.0146 and max(narrowed["x_high"]) <= 2.0 + 0.0146
    # a detector the registry does not know: every channel, no band
    write_spectrum(run_dir / runs.OUTPUT / "other.pha", np.full(100, 50.0), {"TELESCOP": "X"})
    assert plot(run_dir, "other.pha")["energy_range"] is None


@settings(max_examples=60)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=300),
    minimum=st.integers(1, 100),
)
def test_grouping_conserves_counts_and_reaches_the_minimum(counts, minimum):
    values = np.array(counts, dtype=float)
    group = plots.group_channels(values, minimum)
    assert (np.diff(group) >= 0).all() and (np.diff(group) <= 1).all()  # adjacent channels
    sums = np.bincount(group, values)
    assert sums.sum() == values.sum()
    if values.sum() >= minimum:
        assert (sums >= minimum).all()
    else:
        assert len(sums) == 1


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "abc", "10001"])
def test_a_bad_minimum_is_refused(value):
    with pytest.raises(ValueError, match="min_counts"):
        plots.parse_min_counts(value)


# --------------------------------------------------------------------------- light curves


def write_lightcurve(path, *, net=False):
    time = 1000.0 + 100.0 * np.arange(50) + 50.0  # bin centres
    rate = np.linspace(1.0, 2.0, 50)
    rate_hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="TIME", format="D", array=time),
            fits.Column(name="RATE", format="E", array=rate),
            fits.Column(name="ERROR", format="E", array=np.sqrt(rate * 100) / 100),
            fits.Column(name="BACKV", format="E", array=np.full(50, 0.1)),
            fits.Column(name="BACKE", format="E", array=np.full(50, 0.03)),
        ],
        name="RATE",
    )
    rate_hdu.header.update(
        {"MJDREFI": 50814, "MJDREFF": 7.428703703703703e-04, "TIMEZERO": 2.5,
         "TIMESYS": "TT", "TIMEUNIT": "s", "TIMEDEL": 100.0}
    )  # fmt: skip
    hdus = [fits.PrimaryHDU(), rate_hdu]
    if net:
        quality = np.zeros(50, dtype=int)
        quality[[3, 4]] = 1
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(name="TIME", format="D", array=time),
                    fits.Column(name="NET_RATE", format="E", array=rate - 0.1),
                    fits.Column(name="NET_ERROR", format="E", array=np.full(50, 0.2)),
                    fits.Column(name="BKG_RATE", format="E", array=np.full(50, 0.1)),
                    fits.Column(name="QUALITY", format="I", array=quality),
                ],
                name="NETRATE",
            )
        )
    gti = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="START", format="D", array=[1000.0, 3500.0]),
            fits.Column(name="STOP", format="D", array=[3000.0, 6000.0]),
        ],
        name="GTI",
    )
    fits.HDUList([*hdus, gti]).writeto(path)
    return time, rate


def test_light_curve_times_in_mjd_agree_with_astropy(run_dir):
    time, rate = write_lightcurve(run_dir / runs.OUTPUT / "lc.fits")
    data = plot(run_dir, "lc.fits")
    reference = Time(50814, 7.428703703703703e-04, format="mjd", scale="tt") + TimeDelta(
        time + 2.5, format="sec"
    )
    np.testing.assert_allclose(data["x_mjd"], reference.tt.mjd, rtol=0, atol=1e-9)  # < 0.1 ms
    np.testing.assert_allclose(data["x"], time + 2.5)  # mission time: s since MJDREF
    assert data["timesys"] == "TT" and data["timedel"] == 100.0
    assert "MJD" in data["x_label_mjd"] and "TT" in data["x_label"]
    assert data["x_decimals"] == 0 and data["x_decimals_mjd"] == 3  # 100 s = 0.00116 d
    np.testing.assert_allclose(data["series"]["rate"], rate, rtol=1e-6)
    np.testing.assert_allclose(data["series"]["rate_error"], np.sqrt(rate * 100) / 100, rtol=1e-6)
    np.testing.assert_allclose(data["series"]["background_error"], 0.03, rtol=1e-6)


def test_light_curve_good_time_intervals_are_returned(run_dir):
    write_lightcurve(run_dir / runs.OUTPUT / "lc.fits")
    data = plot(run_dir, "lc.fits")
    assert data["gti"] == [[1000.0, 3000.0], [3500.0, 6000.0]]
    starts = Time(50814, 7.428703703703703e-04, format="mjd", scale="tt") + TimeDelta(
        [1000.0, 3500.0], format="sec"
    )
    np.testing.assert_allclose([g[0] for g in data["gti_mjd"]], starts.mjd, atol=1e-9)


def test_the_net_curve_is_preferred_and_low_exposure_bins_left_out(run_dir):
    write_lightcurve(run_dir / runs.OUTPUT / "lc.fits", net=True)
    data = plot(run_dir, "lc.fits")
    net = data["series"]["net rate"]
    assert net[3] is None and net[4] is None and data["flagged"] == 2
    assert np.isclose(net[0], 0.9) and np.isclose(data["series"]["net rate_error"][0], 0.2)
    assert np.isclose(data["series"]["background"][0], 0.1)


def test_optical_spectra_keep_flux_and_error(run_dir):
    wave = np.linspace(3500.0, 5500.0, 1001)
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="WAVE", format="D", array=wave),
            fits.Column(name="FLUX", format="E", unit="erg/s/cm2/Angstrom", array=np.ones(1001)),
            fits.Column(name="ERR", format="E", array=np.full(1001, 0.1)),
            fits.Column(name="MASK", format="J", array=np.where(np.arange(1001) == 7, 1, 0)),
        ],
        name="SPEC1D",
    )
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(run_dir / runs.OUTPUT / "spec1d.fits")
    data = plot(run_dir, "spec1d.fits")
    assert data["kind"] == "optical-spectrum" and data["x_decimals"] == 0  # 2 A pixels
    assert data["series"]["flux"][7] is None and data["series"]["flux_error"][0] == pytest.approx(
        0.1
    )


# ------------------------------------------------- real Chandra products (stingray's M82 list)


@pytest.fixture(scope="module")
def m82_products(tmp_path_factory):
    """chandra_spectra and chandra_lightcurves run on stingray's ACIS list of M82 (ObsID 10027),
    as the runner runs them; their output folders are run folders' ``output``."""
    from importlib.util import find_spec

    from tests.science_helpers import build_input, run_script
    from tests.test_science_chandra import M82_BKG, M82_RADIUS, M82_SOURCE, annulus, circle

    if find_spec("stingray") is None:
        pytest.skip("stingray (and its Chandra test list) is not installed")
    source = Path(find_spec("stingray").origin).parent / "tests" / "data" / "chandra_test.fits"
    base = tmp_path_factory.mktemp("m82-plots")
    events = base / "acisf10027_cutout_evt2.fits"
    shutil.copyfile(source, events)
    runs_made = {}
    for script, params in (
        ("chandra_spectra", {}),
        ("chandra_lightcurves", {"bin_size": 50.0, "emin": 0.5, "emax": 7.0}),
    ):
        run_dir = base / script
        inp = build_input(
            script,
            [events],
            circle(*M82_SOURCE, M82_RADIUS),
            annulus(*M82_SOURCE, *M82_BKG),
            run_dir / runs.OUTPUT,
            params,
        )
        proc = run_script(script, inp, run_dir)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs_made[script] = run_dir
    return runs_made


def test_a_real_acis_spectrum_is_drawn_on_the_acis_grid_and_band(m82_products):
    run_dir = m82_products["chandra_spectra"]
    name = next(p.name for p in (run_dir / runs.OUTPUT).glob("*_src.pha"))
    head, cols = read_pha(run_dir / runs.OUTPUT / name)
    data = plot(run_dir, name)
    assert data["energy_range"] == list(instruments.get("chandra-acis").energy_range_kev)
    assert "background" in data["series"]
    # channel k covers [(k-1), k) x 14.6 eV: the counts of the channels touching 0.3-10 keV
    low = (cols["CHANNEL"] - 1) * 0.0146
    inside = (low + 0.0146 > 0.3) & (low < 10.0)
    assert sum(data["counts"]) == cols["COUNTS"][inside].sum() > 0
    assert min(data["x_low"]) >= 0.3 - 0.0146 and max(data["x_high"]) <= 10.0 + 0.0146


def test_a_real_acis_light_curve_in_mjd_agrees_with_astropy(m82_products):
    run_dir = m82_products["chandra_lightcurves"]
    name = next(p.name for p in (run_dir / runs.OUTPUT).glob("*lc*.fits"))
    data = plot(run_dir, name)
    with fits.open(run_dir / runs.OUTPUT / name) as hdul:
        head = hdul["RATE"].header
        time = np.asarray(hdul["RATE"].data["TIME"], dtype=float)
        gti = hdul["GTI"].data
        mjdref = head.get("MJDREF", head.get("MJDREFI", 0) + head.get("MJDREFF", 0.0))
        scale = str(head["TIMESYS"]).strip().lower()
        expected = Time(mjdref, format="mjd", scale=scale) + TimeDelta(
            time + head.get("TIMEZERO", 0.0), format="sec"
        )
        first_gti = [float(gti["START"][0]), float(gti["STOP"][0])]
        timedel = float(head["TIMEDEL"])
    step = data["bins_per_point"]
    np.testing.assert_allclose(data["x_mjd"], expected.mjd[::step], rtol=0, atol=1e-8)
    # the bin asked for (50 s), as a whole number of ACIS frames: the file's TIMEDEL
    assert data["timedel"] == pytest.approx(timedel) and abs(timedel - 50.0) < 5
    assert first_gti in data["gti"]
    rate_name = next(k for k in data["series"] if not k.endswith("_error") and k != "background")
    errors = np.array(data["series"][f"{rate_name}_error"], dtype=float)
    assert np.nanmax(errors) > 0
