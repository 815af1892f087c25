"""Quick-look spectral fits with sherpa: absorbed power law (point sources), absorbed APEC
(extended sources), on OGIP PHA files with their background, grouping and responses.

What is fitted: the source spectrum as sherpa's ``load_pha`` reads it (BACKFILE, GROUPING,
QUALITY, RESPFILE and ANCRFILE found next to the spectrum), channels of bad quality ignored, the
band ``emin``-``emax`` noticed, the background subtracted (scaled by BACKSCAL and EXPOSURE), and
the ``chi2gehrels`` statistic (grouped spectra; Gehrels errors stay sensible for small counts).
A spectrum needs an RMF *and* an ARF (or an RMF holding the effective area, HDUCLAS3 'FULL'):
with a canned RMF alone the fitted slope and every flux would be wrong, so it is not fitted.

Models (energies in keV):

- absorption: ``xsphabs`` when sherpa has its XSPEC models, else :class:`WabsMM`, the
  Morrison & McCammon (1983) photo-electric cross-sections (XSPEC's ``wabs``), written here;
- point source: ``powlaw1d`` (photon index ``gamma``, ``ampl`` photons/cm^2/s/keV at 1 keV);
- extended source: ``xsapec`` (kT, abundance 0.3 solar, redshift fixed) when XSPEC models exist,
  else :class:`ThermalBremsstrahlung` (a continuum with no lines; the log says so).

Errors are 90 % confidence intervals (``conf`` with sigma 1.645). Fluxes [erg/cm^2/s] are
``calc_energy_flux`` in 0.5-2 and 2-10 keV, observed (absorbed) and unabsorbed (the emission
component alone).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

#: Morrison & McCammon (1983) table: upper energy [keV] of each range and c0, c1, c2 of
#: sigma(E) = (c0 + c1 E + c2 E^2) E^-3 x 1e-24 cm^2 per hydrogen atom (solar abundances).
MM83 = np.array([
    (0.100, 17.3, 608.1, -2150.0), (0.284, 34.6, 267.9, -476.1), (0.400, 78.1, 18.8, 4.3),
    (0.532, 71.4, 66.8, -51.4), (0.707, 95.5, 145.8, -61.1), (0.867, 308.9, -380.6, 294.0),
    (1.303, 120.6, 169.3, -47.7), (1.840, 141.3, 146.8, -31.5), (2.471, 202.7, 104.7, -17.0),
    (3.210, 342.7, 18.7, 0.0), (4.038, 352.2, 18.7, 0.0), (7.111, 433.9, -2.4, 0.75),
    (8.331, 629.0, 30.9, 0.0), (10.000, 701.2, 25.2, 0.0),
])  # fmt: skip
CONF_SIGMA = 1.6449  # 90 % for one parameter
FLUX_BANDS = ((0.5, 2.0), (2.0, 10.0))


def mm83_cross_section(energy_kev: np.ndarray) -> np.ndarray:
    """Photo-electric cross-section per H atom [cm^2] (beyond 10 keV: the last range's law)."""
    e = np.clip(np.asarray(energy_kev, dtype=float), 0.03, None)
    k = np.minimum(np.searchsorted(MM83[:, 0], e, side="left"), len(MM83) - 1)
    c0, c1, c2 = MM83[k, 1], MM83[k, 2], MM83[k, 3]
    return (c0 + c1 * e + c2 * e * e) / e**3 * 1e-24


def _model_classes():
    from sherpa.models.model import ArithmeticModel
    from sherpa.models.parameter import Parameter

    class WabsMM(ArithmeticModel):
        """exp(-nH sigma(E)), nH in 10^22 cm^-2, Morrison & McCammon (1983)."""

        def __init__(self, name: str = "wabs"):
            self.nH = Parameter(
                name, "nH", 0.05, min=0.0, max=100.0, hard_min=0.0, hard_max=1e6, units="10^22"
            )
            ArithmeticModel.__init__(self, name, (self.nH,))

        def calc(self, p, lo, hi=None, *args, **kwargs):
            e = np.asarray(lo) if hi is None else 0.5 * (np.asarray(lo) + np.asarray(hi))
            return np.exp(-p[0] * 1e22 * mm83_cross_section(e))

    class ThermalBremsstrahlung(ArithmeticModel):
        """norm kT^-1/2 E^-1 exp(-E/kT) photons/cm^2/s/keV (Gaunt factor 1), integrated."""

        def __init__(self, name: str = "brems"):
            self.kT = Parameter(name, "kT", 3.0, min=0.1, max=50.0, hard_min=0.01, units="keV")
            self.norm = Parameter(name, "norm", 1e-3, min=0.0, max=1e10, hard_min=0.0)
            ArithmeticModel.__init__(self, name, (self.kT, self.norm))

        def calc(self, p, lo, hi=None, *args, **kwargs):
            kt, norm = p
            if hi is None:
                e = np.asarray(lo, dtype=float)
                return norm * kt**-0.5 * np.exp(-e / kt) / e
            lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
            # exact integral of E^-1 exp(-E/kT) is E1; Simpson on each bin is plenty here
            mid = 0.5 * (lo + hi)

            def f(e):
                return np.exp(-e / kt) / e

            return norm * kt**-0.5 * (hi - lo) * (f(lo) + 4 * f(mid) + f(hi)) / 6.0

    return WabsMM, ThermalBremsstrahlung


def have_xspec() -> bool:
    try:
        import sherpa.astro.xspec  # noqa: F401
    except ImportError:
        return False
    return True


def quiet_sherpa() -> None:
    """Sherpa logs its progress at INFO; keep the run's log to our own lines."""
    logging.getLogger("sherpa").setLevel(logging.WARNING)


@dataclass
class FitResult:
    spectrum: str
    status: str  # 'fitted' or the reason it was not
    model: str = ""
    statistic: str = ""
    stat: float = math.nan
    dof: int = 0
    params: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # value, lo, hi
    fluxes: dict[str, float] = field(default_factory=dict)
    counts: int = 0
    band: tuple[float, float] = (0.0, 0.0)
    notes: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> bool:
        return self.status == "fitted"

    @property
    def reduced(self) -> float:
        return self.stat / self.dof if self.dof > 0 else math.nan


def response_problem(path: Path) -> str | None:
    """Why the spectrum at ``path`` cannot be fitted (None: it can)."""
    h = fits.getheader(path, "SPECTRUM")
    resp, arf = str(h.get("RESPFILE", "NONE")).strip(), str(h.get("ANCRFILE", "NONE")).strip()
    if resp.upper() in ("NONE", ""):
        return "no response (RESPFILE 'NONE'): nothing to fit with"
    rmf_path = path.parent / resp if not Path(resp).is_absolute() else Path(resp)
    if not rmf_path.is_file():
        return f"its RMF {resp} is missing"
    if arf.upper() in ("NONE", ""):
        full = any(
            str(hdu.header.get("HDUCLAS3", "")).strip().upper() == "FULL"
            for hdu in fits.open(rmf_path)[1:]
        )
        if not full:
            return "an RMF without ARF (ANCRFILE 'NONE'): slope and fluxes would be wrong; make the ARF with arfgen"
    return None


def fit_spectrum(
    path: Path,
    *,
    extended: bool,
    band: tuple[float, float] = (0.3, 10.0),
    rmf: Path | None = None,
    arf: Path | None = None,
    nh_start: float = 0.05,
) -> tuple[FitResult, dict[str, Any] | None]:
    """Fit one source spectrum; ``rmf``/``arf`` override the header's files.

    Returns the result and what the plot needs (None when not fitted).
    """
    import sherpa.astro.ui as ui
    from sherpa.astro import io as sherpa_io  # noqa: F401 (the FITS backend must load)

    quiet_sherpa()
    ui.clean()
    result = FitResult(spectrum=path.name, status="fitted", band=band)
    if rmf is None and arf is None:
        problem = response_problem(path)
        if problem:
            result.status = f"not fitted: {problem}"
            return result, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sherpa's FITS reading notes non-standard units
        ui.load_pha(1, str(path), use_errors=False)
        if rmf is not None:
            ui.load_rmf(1, str(rmf))
        if arf is not None:
            ui.load_arf(1, str(arf))
    data = ui.get_data(1)
    result.counts = int(np.sum(data.counts))
    ui.set_analysis(1, "energy")
    band = _band_without_bad_channels(ui, data, band)
    result.band = band
    ui.notice_id(1, band[0], band[1])
    has_bkg = bool(data.background_ids)
    if has_bkg:
        ui.subtract(1)
    ui.set_stat("chi2gehrels")
    ui.set_method("levmar")
    wabs_cls, brems_cls = _model_classes()
    xspec = have_xspec()
    if xspec:
        absorber = ui.create_model_component("xsphabs", "nh")
        absorber.nH = nh_start
    else:
        absorber = wabs_cls("nh")
        absorber.nH = nh_start
    if extended:
        if xspec:
            emission = ui.create_model_component("xsapec", "thermal")
            emission.kT = 3.0
            emission.Abundanc = 0.3
            result.model = "phabs * apec"
        else:
            emission = brems_cls("thermal")
            result.model = "wabs(MM83) * bremsstrahlung"
            result.notes.append(
                "APEC needs sherpa's XSPEC models, absent here: fitted a thermal bremsstrahlung "
                "continuum (no lines)"
            )
    else:
        emission = ui.create_model_component("powlaw1d", "pl")
        emission.gamma = 1.8
        emission.ampl = 1e-3
        result.model = ("phabs" if xspec else "wabs(MM83)") + " * powerlaw"
    ui.set_source(1, absorber * emission)
    # a few starting columns (local minima are common between soft and absorbed solutions);
    # each start has its normalisation set to the level of the data
    best = None
    for start in (nh_start, 0.5, 5.0, 30.0):
        absorber.nH = start
        if extended:
            emission.kT = 3.0
        else:
            emission.gamma = 1.8
        _guess_norm(ui, emission, extended)
        ui.fit(1)
        fit = ui.get_fit_results()
        if best is None or fit.statval < best[0] - 1e-6:
            best = (fit.statval, [p.val for p in ui.get_source(1).pars])
    for par, value in zip(ui.get_source(1).pars, best[1], strict=True):
        par.val = value
    ui.fit(1)
    fit = ui.get_fit_results()
    result.statistic = str(fit.statname)
    result.stat, result.dof = float(fit.statval), int(fit.dof)
    ui.set_conf_opt("sigma", CONF_SIGMA)
    ui.set_conf_opt("max_rstat", 1e6)
    ui.conf(1)
    conf = ui.get_conf_results()
    for name, value, lo, hi in zip(
        conf.parnames, conf.parvals, conf.parmins, conf.parmaxes, strict=True
    ):
        short = name.split(".", 1)[1]
        result.params[short] = (
            float(value),
            float(lo) if lo is not None else math.nan,
            float(hi) if hi is not None else math.nan,
        )
    for lo, hi in FLUX_BANDS:
        key = f"{lo:g}-{hi:g}keV"
        result.fluxes[f"flux_{key}"] = float(ui.calc_energy_flux(lo, hi, 1))
        result.fluxes[f"unabsorbed_flux_{key}"] = float(
            ui.calc_energy_flux(lo, hi, 1, model=emission)
        )
    if not has_bkg:
        result.notes.append("no background spectrum: fitted the gross spectrum")
    plot = _plot_data(ui, result)
    plot["label"] = "data" + (" (background subtracted)" if has_bkg else "")
    return result, plot


def _band_without_bad_channels(ui, data, band: tuple[float, float]) -> tuple[float, float]:
    """The band narrowed so that no channel of bad QUALITY lies inside it.

    (sherpa 4.19's ``ignore_bad`` on grouped data breaks the filters that follow it, so bad
    channels, which grppha-like grouping leaves at the ends of the spectrum, are kept out by the
    band itself.)
    """
    if data.quality is None or not np.any(data.quality):
        return band
    rmf = ui.get_rmf(1)
    e_lo, e_hi = np.asarray(rmf.e_min), np.asarray(rmf.e_max)
    bad = np.flatnonzero(np.asarray(data.quality) != 0)
    bad = bad[bad < len(e_lo)]
    lo, hi = band
    mid = 0.5 * (lo + hi)
    for k in bad:
        if e_hi[k] <= lo or e_lo[k] >= hi:
            continue
        if e_lo[k] >= mid:
            hi = min(hi, float(e_lo[k]))
        else:
            lo = max(lo, float(e_hi[k]))
    return lo, hi


def _guess_norm(ui, emission, extended: bool) -> None:
    """Scale the emission's normalisation so the model's counts match the data's."""
    param = emission.norm if extended and hasattr(emission, "norm") else emission.ampl
    model = float(np.sum(ui.get_model_plot(1).y))
    data = float(np.sum(ui.get_data_plot(1).y))
    if model > 0 and data > 0:
        param.val = min(max(param.val * data / model, param.min * 1.0001 + 1e-30), param.max)


def _plot_data(ui, result: FitResult) -> dict[str, Any]:
    d, m = ui.get_data_plot(1), ui.get_model_plot(1)
    r = ui.get_delchi_plot(1)
    return {
        "x": np.asarray(d.x), "xerr": np.asarray(d.xerr) / 2 if d.xerr is not None else None,
        "y": np.asarray(d.y), "yerr": np.asarray(d.yerr),
        "model_lo": np.asarray(m.xlo), "model_hi": np.asarray(m.xhi), "model": np.asarray(m.y),
        "delchi": np.asarray(r.y), "title": f"{result.spectrum}: {result.model}",
    }  # fmt: skip


def plot_fit(path: Path, plot: dict[str, Any], result: FitResult) -> None:
    """Data and folded model (counts/s/keV) over the band, residuals (data - model)/sigma below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axr) = plt.subplots(
        2, 1, figsize=(6.6, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.errorbar(plot["x"], plot["y"], xerr=plot["xerr"], yerr=plot["yerr"], fmt=".", ms=3,
                lw=0.7, label=plot.get("label", "data"))  # fmt: skip
    edges = np.r_[plot["model_lo"], plot["model_hi"][-1:]]
    ax.stairs(plot["model"], edges, color="tab:red", lw=1.0, label=result.model)
    ax.set_yscale("log")
    ax.set_ylabel("counts s$^{-1}$ keV$^{-1}$")
    text = ", ".join(f"{k} {v[0]:.3g}" for k, v in result.params.items())
    ax.set_title(f"{result.spectrum}\n{text}; {result.statistic} {result.stat:.1f}/{result.dof}",
                 fontsize=8)  # fmt: skip
    ax.legend(fontsize=7)
    axr.axhline(0, color="0.5", lw=0.8)
    axr.errorbar(plot["x"], plot["delchi"], xerr=plot["xerr"], yerr=1.0, fmt=".", ms=3, lw=0.7)
    axr.set_ylabel("(data-model)/$\\sigma$")
    axr.set_xlabel("Energy (keV)")
    axr.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
